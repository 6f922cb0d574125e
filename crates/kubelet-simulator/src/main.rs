//! `kubelet-simulator`: does what the kubelet does with a credential provider
//! config, a bin dir and an image, and shows it.
//!
//! Exit codes: 0, the config is valid (and with `--image`, every provider
//! that ran answered and some credential is tried); 1, the command line or the
//! config is invalid; 2, a provider failed or no credential would be tried.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use credential_provider::image::ImageRef;
use kubelet_config as config;
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
    /// The kubelet's --image-credential-provider-config: a file, or a directory (kubelet 1.34+).
    #[arg(long = "image-credential-provider-config", value_name = "PATH")]
    config: PathBuf,

    /// The kubelet's --image-credential-provider-bin-dir (needed with --image).
    #[arg(long = "image-credential-provider-bin-dir", value_name = "DIR", requires = "image")]
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
    #[arg(long, value_name = "DURATION", value_parser = humantime_duration, default_value = "60s")]
    timeout: Duration,

    /// How to print the result.
    #[arg(long, value_enum, default_value = "table")]
    output: Output,
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
    let providers = match config::load(&cli.config) {
        Ok(providers) => providers,
        Err(errors) => {
            match cli.output {
                Output::Table => eprint!("{}", report::config_errors(&errors)),
                Output::Json => print!("{}", report::config_errors_json(&errors)),
            }
            return ExitCode::from(1);
        }
    };
    let (Some(image), Some(bin_dir)) = (&cli.image, &cli.bin_dir) else {
        match cli.output {
            Output::Table => print!("{}", report::config_table(&cli.config, &providers)),
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
