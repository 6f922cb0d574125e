//! `kubelet-simulator`: does what the kubelet does with a credential provider
//! config, a bin dir and an image, and shows it; `kubelet-simulator check`
//! checks a release's images across clouds, each with the providers the
//! kubelet would run for it.
//!
//! Exit codes: 0, the config is valid (and with `--image`, every provider
//! that ran answered and some credential is tried; with `check`, every image
//! passed); 1, the command line or the config is invalid; 2, a provider failed
//! or no credential would be tried (with `check`: an image did not pass).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use credential_provider::check::CheckArgs;
use credential_provider::image::ImageRef;
use kubelet_config as config;
use kubelet_simulator::check::CheckServiceAccount;
use kubelet_simulator::report;
use kubelet_simulator::simulate::{EXEC_TIMEOUT, ServiceAccountInput, simulate};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Output {
    Table,
    Json,
}

/// Do what the kubelet does with a credential provider config, a bin dir and an image.
#[derive(Debug, Parser)]
#[command(name = "kubelet-simulator", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<SimulatorCommand>,

    /// The kubelet's --image-credential-provider-config: a file, or a directory (kubelet 1.34+). Required.
    #[arg(long = "image-credential-provider-config", value_name = "PATH", global = true)]
    config: Option<PathBuf>,

    /// The kubelet's --image-credential-provider-bin-dir (needed with --image and check).
    #[arg(long = "image-credential-provider-bin-dir", value_name = "DIR", global = true)]
    bin_dir: Option<PathBuf>,

    /// The image to pull, as typed (nginx:1.25) or as the kubelet sends it; without it, only the config is validated.
    #[arg(long, value_name = "IMAGE", requires = "bin_dir")]
    image: Option<String>,

    /// The pod's service account, NAMESPACE/NAME (for providers with tokenAttributes).
    #[arg(long, value_name = "NAMESPACE/NAME")]
    service_account: Option<String>,

    /// The token the kubelet would request for the provider's audience.
    #[arg(long, value_name = "FILE", requires = "service_account")]
    service_account_token_file: Option<PathBuf>,

    /// An annotation of the service account.
    #[arg(long = "service-account-annotation", value_name = "KEY=VALUE", requires = "service_account")]
    service_account_annotations: Vec<String>,

    /// Print passwords instead of their length.
    #[arg(long)]
    show_secrets: bool,

    /// The kubelet's limit on one exec.
    #[arg(long, value_name = "DURATION", value_parser = humantime_duration, default_value = "60s", global = true)]
    timeout: Duration,

    /// How to print the result.
    #[arg(long, value_enum, default_value = "table")]
    output: Output,
}

#[derive(Debug, clap::Subcommand)]
enum SimulatorCommand {
    /// Check that every image of a release can be pulled: each by the providers the kubelet would run for it.
    /// A service account's token and annotations go to the providers whose tokenAttributes would send them.
    Check {
        #[command(flatten)]
        args: CheckArgs,
        /// Check PROVIDER's images for PRINCIPAL, through its cloud's policy evaluation (its check --as; may be repeated).
        #[arg(long = "as", value_name = "PROVIDER=PRINCIPAL")]
        as_principals: Vec<String>,
    },
}

fn humantime_duration(text: &str) -> Result<Duration, String> {
    credential_provider::protocol::parse_go_duration(text)
        .filter(|s| *s > 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("{text:?} is not a duration such as 60s"))
}

fn main() -> ExitCode {
    let cli = match credential_provider::runner::parse_tool_command_line::<Cli>() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let Some(config_path) = &cli.config else {
        eprintln!("kubelet-simulator: --image-credential-provider-config is required (see --help)");
        return ExitCode::from(1);
    };
    let providers = match config::load(config_path) {
        Ok(providers) => providers,
        Err(errors) => {
            match cli.output {
                Output::Table => eprint!("{}", report::config_errors(&errors)),
                Output::Json => print!("{}", report::config_errors_json(&errors)),
            }
            return ExitCode::from(1);
        }
    };
    if let Some(SimulatorCommand::Check { args, as_principals }) = &cli.command {
        let Some(bin_dir) = &cli.bin_dir else {
            eprintln!("kubelet-simulator: check needs --image-credential-provider-bin-dir");
            return ExitCode::from(1);
        };
        return check(&providers, bin_dir, args, as_principals, cli.timeout);
    }
    if cli.image.is_some() != cli.bin_dir.is_some() {
        eprintln!("kubelet-simulator: --image and --image-credential-provider-bin-dir go together (see --help)");
        return ExitCode::from(1);
    }
    let (Some(image), Some(bin_dir)) = (&cli.image, &cli.bin_dir) else {
        match cli.output {
            Output::Table => print!("{}", report::config_table(config_path, &providers)),
            Output::Json => println!("{}", serde_json::json!({ "valid": true, "providers": providers.len() })),
        }
        return ExitCode::SUCCESS;
    };
    let image = match ImageRef::parse(image) {
        Ok(image) => image.repository(),
        Err(e) => {
            eprintln!("kubelet-simulator: {e}");
            return ExitCode::from(1);
        }
    };
    let mut annotations = BTreeMap::new();
    for annotation in &cli.service_account_annotations {
        let Some((key, value)) = annotation.split_once('=') else {
            eprintln!("kubelet-simulator: --service-account-annotation {annotation:?} is not KEY=VALUE");
            return ExitCode::from(1);
        };
        annotations.insert(key.to_string(), value.to_string());
    }
    let token = match &cli.service_account_token_file {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(token) => Some(token.trim().to_string()),
            Err(e) => {
                eprintln!("kubelet-simulator: cannot read {}: {e}", path.display());
                return ExitCode::from(1);
            }
        },
        None => None,
    };
    let service_account = ServiceAccountInput { name: cli.service_account.clone(), token, annotations };
    let timeout = if cli.timeout > EXEC_TIMEOUT { EXEC_TIMEOUT } else { cli.timeout };
    let simulation = simulate(&providers, bin_dir, &image, &service_account, timeout, cli.show_secrets);
    match cli.output {
        Output::Table => print!("{}", report::simulation_table(&simulation)),
        Output::Json => print!("{}", report::simulation_json(&simulation)),
    }
    if simulation.succeeded() { ExitCode::SUCCESS } else { ExitCode::from(2) }
}

/// `kubelet-simulator check`: the images given and those the manifests
/// deploy, checked by the providers that match them; the report on stdout.
fn check(
    providers: &[config::Provider],
    bin_dir: &std::path::Path,
    args: &CheckArgs,
    as_principals: &[String],
    timeout: Duration,
) -> ExitCode {
    let inputs = args.wanted().map_err(|e| e.to_string()).and_then(|wanted| Ok((wanted, args.annotations()?)));
    let (wanted, annotations) = match inputs {
        Ok(inputs) => inputs,
        Err(e) => {
            eprintln!("kubelet-simulator: {e}");
            return ExitCode::from(1);
        }
    };
    let mut principals = BTreeMap::new();
    for pair in as_principals {
        let Some((provider, principal)) = pair.split_once('=') else {
            eprintln!("kubelet-simulator: --as {pair:?} is not PROVIDER=PRINCIPAL");
            return ExitCode::from(1);
        };
        if !providers.iter().any(|p| p.spec.name == provider) {
            eprintln!("kubelet-simulator: --as {pair:?}: no provider of the config is named {provider}");
            return ExitCode::from(1);
        }
        principals.insert(provider.to_string(), principal.to_string());
    }
    let service_account =
        CheckServiceAccount { token_file: args.service_account_token_file.clone(), annotations, principals };
    let timeout = if timeout > EXEC_TIMEOUT { EXEC_TIMEOUT } else { timeout };
    let run = kubelet_simulator::check::check(providers, bin_dir, &wanted, &service_account, timeout);
    print!("{}", run.render(args.output));
    if run.allowed { ExitCode::SUCCESS } else { ExitCode::from(2) }
}
