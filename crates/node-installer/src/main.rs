//! `credential-provider-install`: what the installer image runs on each node.
//!
//! It copies the plugin binaries into the kubelet's
//! `--image-credential-provider-bin-dir` and the provider configs into its
//! `--image-credential-provider-config` directory, each file atomically (a
//! temporary name in the same directory, fsync, rename), so that a kubelet
//! exec never sees half a binary and a node never holds half a config. The
//! configs are validated by the kubelet's rules first, merged with what the
//! config directory already holds, and every provider they name must have its
//! binary: nothing is written unless the result is a config the kubelet would
//! load. The image needs no shell for any of it.
//!
//! Exit codes: 0 installed (or already up to date), 1 a bad command line or a
//! config the kubelet would refuse, 2 a file that could not be written.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use credential_provider::{files, platform};
use kubelet_config as config;

/// Install the credential provider plugins and their configs on this node.
#[derive(Debug, Parser)]
#[command(name = "credential-provider-install", version)]
struct Cli {
    /// The directory of binaries to install (the image's).
    #[arg(long, value_name = "DIR")]
    from_bin: PathBuf,

    /// The directory of provider configs to install (a ConfigMap's mount).
    #[arg(long, value_name = "DIR")]
    from_config: Option<PathBuf>,

    /// The kubelet's --image-credential-provider-bin-dir, on the host.
    #[arg(long = "image-credential-provider-bin-dir", value_name = "DIR")]
    bin_dir: PathBuf,

    /// The kubelet's --image-credential-provider-config directory, on the host (kubelet 1.34+).
    #[arg(long = "image-credential-provider-config", value_name = "DIR", requires = "from_config")]
    config_dir: Option<PathBuf>,
}

/// Why an install stopped.
#[derive(Debug)]
enum InstallError {
    /// The configs are not what the kubelet would load.
    Invalid(Vec<String>),
    /// A file could not be read or written.
    Io(String),
}

fn main() -> ExitCode {
    let cli = match credential_provider::runner::parse_tool_command_line::<Cli>() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    match install(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(InstallError::Invalid(problems)) => {
            for problem in problems {
                eprintln!("credential-provider-install: {problem}");
            }
            eprintln!("credential-provider-install: nothing was installed");
            ExitCode::from(1)
        }
        Err(InstallError::Io(message)) => {
            eprintln!("credential-provider-install: {message}");
            ExitCode::from(2)
        }
    }
}

fn install(cli: &Cli) -> Result<(), InstallError> {
    let binaries = files_of(&cli.from_bin)?;
    if let (Some(from_config), Some(config_dir)) = (&cli.from_config, &cli.config_dir) {
        let configs = files_of(from_config)?;
        validate(&configs, config_dir, &binaries, &cli.bin_dir)?;
        install_files(&binaries, &cli.bin_dir, 0o755)?;
        install_files(&configs, config_dir, 0o644)?;
    } else {
        install_files(&binaries, &cli.bin_dir, 0o755)?;
    }
    Ok(())
}

/// The regular files of `dir` (a ConfigMap mount's `..data` links included,
/// its hidden entries not), sorted.
fn files_of(dir: &Path) -> Result<Vec<PathBuf>, InstallError> {
    let entries = fs::read_dir(dir).map_err(|e| InstallError::Io(format!("cannot list {}: {e}", dir.display())))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.file_name().and_then(|n| n.to_str()).is_some_and(|n| !n.starts_with('.')))
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// The config directory as it will be once `configs` are in it (a file of
/// the same name replaced), validated as the kubelet validates a directory,
/// with a binary for every provider it names.
fn validate(configs: &[PathBuf], config_dir: &Path, binaries: &[PathBuf], bin_dir: &Path) -> Result<(), InstallError> {
    let incoming: BTreeSet<&str> = configs.iter().filter_map(|c| c.file_name()?.to_str()).collect();
    let mut merged: Vec<PathBuf> = match config_dir.is_dir() {
        true => config::config_files(config_dir).unwrap_or_default(),
        false => Vec::new(),
    };
    merged.retain(|existing| existing.file_name().and_then(|n| n.to_str()).is_none_or(|n| !incoming.contains(n)));
    merged.extend(configs.iter().filter(|c| config::is_config_file_name(c)).cloned());
    // As the kubelet reads a directory: in the order of the names.
    merged.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    if merged.is_empty() {
        return Err(InstallError::Invalid(vec!["no *.json, *.yaml or *.yml config to install".into()]));
    }
    let providers = config::load_files(&merged)
        .map_err(|errors| InstallError::Invalid(errors.iter().map(ToString::to_string).collect()))?;
    // A provider is its binary's name, without `.exe` on Windows.
    let shipped: BTreeSet<&str> =
        binaries.iter().filter_map(|b| b.file_name()?.to_str()).map(platform::program_name).collect();
    let missing: Vec<String> = providers
        .iter()
        .map(|p| p.spec.name.as_str())
        .filter(|name| !shipped.contains(name) && !config::plugin_path(bin_dir, name).is_file())
        .map(|name| format!("provider {name} has no binary in the image nor in {}", bin_dir.display()))
        .collect();
    if missing.is_empty() { Ok(()) } else { Err(InstallError::Invalid(missing)) }
}

/// Copies each file into `dir` under its own name, atomically, with `mode`;
/// a file already there with the same content (and mode) is left alone. A
/// Windows executable (`NAME.exe`) is installed as `NAME` too, as AKS does:
/// kubelets before 1.29 (kubernetes#120291) look a plugin up without `.exe`.
fn install_files(files: &[PathBuf], dir: &Path, mode: u32) -> Result<(), InstallError> {
    fs::create_dir_all(dir).map_err(|e| InstallError::Io(format!("cannot create {}: {e}", dir.display())))?;
    for file in files {
        let name = file_name(file)?;
        let content = fs::read(file).map_err(|e| InstallError::Io(format!("cannot read {}: {e}", file.display())))?;
        let mut names = vec![name];
        if platform::program_name(name) != name {
            names.push(platform::program_name(name));
        }
        for name in names {
            let target = dir.join(name);
            let unchanged = fs::read(&target).is_ok_and(|existing| existing == content)
                && fs::metadata(&target).is_ok_and(|m| platform::has_mode(&m, mode));
            if unchanged {
                println!("up to date: {}", target.display());
                continue;
            }
            files::write_atomically(&target, &content, mode)
                .map_err(|e| InstallError::Io(format!("cannot install {}: {e}", target.display())))?;
            println!("installed: {}", target.display());
        }
    }
    Ok(())
}

fn file_name(path: &Path) -> Result<&str, InstallError> {
    path.file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| InstallError::Io(format!("{} has no usable file name", path.display())))
}
