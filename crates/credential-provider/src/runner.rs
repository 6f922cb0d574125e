//! The command line every plugin shares, and what each command does.
//!
//! With no subcommand a plugin reads one request from stdin (or builds it from
//! `--image`), writes the response on stdout and exits. Nothing but that one
//! JSON document ever reaches stdout; logs and errors go to stderr, scrubbed of
//! secrets (see [`logging`](crate::logging)). The credential itself comes from
//! [`credentials`](crate::credentials), and `refresh` from
//! [`refresh`](crate::refresh). Run as `docker-credential-NAME`, or with the
//! `docker-helper` subcommand, a plugin speaks the docker credential-helper
//! protocol instead, whose errors go to stdout (see
//! [`docker_helper`](crate::docker_helper)).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::cache::{self, Cache};
use crate::check::{CheckArgs, CheckRun, ImageCheck, OutputFormat, Verdict, Wanted};
use crate::clock;
use crate::credentials;
use crate::docker_config;
use crate::docker_helper;
use crate::endpoints::Endpoints;
use crate::error::Error;
use crate::flow::Lease;
use crate::image::ImageRef;
use crate::logging;
use crate::protocol::{
    ApiVersion, AuthConfig, CacheKeyType, CredentialProviderRequest, CredentialProviderResponse, RequestError,
    ServiceAccount,
};
use crate::provider::{Provider, ResponseOverrides, binary_name};
use crate::secret::{self, Secret};
use crate::session::Sessions;
use crate::stdio;

/// The most a request may weigh; the kubelet's are a few hundred bytes.
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;
/// The variable `--cache-dir` defaults to.
pub const CACHE_DIR_VARIABLE: &str = "CREDENTIAL_PROVIDER_CACHE_DIR";

#[derive(Debug, Parser)]
struct Cli<A: clap::Args> {
    #[command(subcommand)]
    command: Option<Command>,

    /// Answer for IMAGE instead of reading a request from stdin (for testing by hand).
    #[arg(long, value_name = "IMAGE")]
    image: Option<String>,

    /// With --image: a file holding a service-account token, as the kubelet would send (KEP-4412).
    #[arg(long, value_name = "FILE", requires = "image")]
    service_account_token_file: Option<PathBuf>,

    /// With --image: a service-account annotation, as the kubelet would send.
    #[arg(long = "service-account-annotation", value_name = "KEY=VALUE", requires = "image")]
    service_account_annotations: Vec<String>,

    /// The cache directory [default: /var/cache/kubelet-credential-providers for root, else $XDG_CACHE_HOME/kubelet-credential-providers].
    #[arg(long, global = true, value_name = "DIR", env = CACHE_DIR_VARIABLE)]
    cache_dir: Option<PathBuf>,

    /// Never read or write the cache: every exec asks the cloud.
    #[arg(long, global = true)]
    no_cache: bool,

    /// More logging on stderr: -v info, -vv debug, -vvv trace. Secrets are never logged.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    /// klog's verbosity (`--v=3`), which kubelet configs written for the upstream Go plugins
    /// pass: accepted, and read as -v (3 info, 4 debug, 5 and more trace).
    #[arg(long = "v", value_name = "LEVEL", global = true, hide = true)]
    klog_verbosity: Option<u8>,

    #[command(flatten)]
    plugin: A,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check that this node's identity (or a pod's service account) has every permission a pull of each image needs.
    Check {
        #[command(flatten)]
        args: CheckArgs,
        /// Check for another principal (e.g. the nodes' role ARN) through the cloud's policy evaluation, from any runner.
        #[arg(long = "as", value_name = "PRINCIPAL", conflicts_with_all = ["service_account_token_file", "service_account_annotations"])]
        as_principal: Option<String>,
    },
    /// Renew every cached credential that is past its refresh point.
    Refresh {
        /// Keep running, renewing every DURATION (at least 1s; e.g. 5m) with a little jitter.
        #[arg(long, value_name = "DURATION", value_parser = crate::refresh::parse_period)]
        every: Option<Duration>,
        /// Also print each pass's report on stdout, one line of JSON (what credential-provider-refresh reads).
        #[arg(long)]
        json: bool,
    },
    /// Speak the docker credential-helper protocol (what a docker-credential-NAME link to this binary runs).
    DockerHelper {
        /// The protocol's operation; its input is read from stdin.
        #[arg(value_enum)]
        operation: docker_helper::Operation,
        /// The name the helper was run under.
        #[arg(long, hide = true, value_name = "NAME")]
        invoked_as: Option<String>,
    },
    /// Make docker, podman, buildah, skopeo and crane get REGISTRY's credentials from this plugin.
    InstallDockerHelper {
        /// The registries to add to the docker config's credHelpers (HOST or HOST:PORT).
        #[arg(value_name = "REGISTRY", required = true)]
        registries: Vec<String>,
        /// The docker config to edit [default: $DOCKER_CONFIG/config.json, else ~/.docker/config.json].
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The helper's name: clients run docker-credential-NAME [default: the plugin's short name, e.g. ecr].
        #[arg(long, value_name = "NAME")]
        helper: Option<String>,
        /// Also link DIR/docker-credential-NAME to this binary (DIR should be on PATH).
        #[arg(long, value_name = "DIR")]
        bin_dir: Option<PathBuf>,
    },
}

/// Runs a plugin and exits the process with its exit code.
pub fn run<P: Provider>() -> ! {
    let binary = binary_name::<P>();
    logging::install_panic_hook(binary.clone());
    let args = docker_helper::args_as_subcommand(std::env::args_os().collect());
    stdio::exit(&binary, run_with_args::<P>(args))
}

/// Parses the command line of one of the workspace's other tools (the
/// simulator, the installer, the refresh agent) into `C`, with the plugins'
/// exit codes: a command-line error exits 1 (clap's own code is 2), and
/// `--help` or `--version` exits 0 once printed.
pub fn parse_tool_command_line<C: clap::Parser>() -> Result<C, std::process::ExitCode> {
    C::try_parse().map_err(|e| {
        let _ = e.print();
        if e.use_stderr() {
            std::process::ExitCode::from(crate::error::EXIT_USAGE as u8)
        } else {
            std::process::ExitCode::SUCCESS
        }
    })
}

/// The plugin's command line: the shared flags, the plugin's own, the subcommands.
fn command<P: Provider>() -> clap::Command {
    let binary = binary_name::<P>();
    Cli::<P::Args>::command().name(binary.clone()).bin_name(binary).about(P::ABOUT).version(env!("CARGO_PKG_VERSION"))
}

/// The command line with the upstream plugin's spellings made ours: its
/// single-dash long flags given their second dash (`-config FILE`, as Go's
/// `flag` package allows), and its subcommand that means "answer a request"
/// (`get-credentials`) dropped wherever a subcommand may stand, that is as
/// the first argument that is neither a flag nor a flag's value
/// (`--cache-dir DIR get-credentials --authFlow gcr`).
fn upstream_args_rewritten<P: Provider>(mut args: Vec<OsString>, command: &clap::Command) -> Vec<OsString> {
    for arg in args.iter_mut().skip(1) {
        let Some(text) = arg.to_str() else { continue };
        let single_dash = P::COMPAT_SINGLE_DASH_FLAGS.iter().any(|flag| {
            text.strip_prefix('-')
                .and_then(|rest| rest.strip_prefix(flag))
                .is_some_and(|tail| tail.is_empty() || tail.starts_with('='))
        });
        if single_dash {
            *arg = format!("-{text}").into();
        }
    }
    let takes_value = |is: &dyn Fn(&clap::Arg) -> bool| {
        command.get_arguments().find(|arg| is(arg)).is_some_and(|arg| arg.get_action().takes_values())
    };
    let mut index = 1;
    while let Some(text) = args.get(index).and_then(|arg| arg.to_str()) {
        let skip = if text == "--" {
            break;
        } else if let Some(long) = text.strip_prefix("--") {
            // `--flag value`, not `--flag=value`.
            !long.contains('=') && takes_value(&|arg| arg.get_long() == Some(long))
        } else if let Some(short) = text.strip_prefix('-').filter(|rest| !rest.is_empty()) {
            // `-a value`, not `-avalue` nor a cluster such as `-vv`.
            let mut letters = short.chars();
            match (letters.next(), letters.next()) {
                (Some(letter), None) => takes_value(&|arg| arg.get_short() == Some(letter)),
                _ => false,
            }
        } else {
            if P::COMPAT_SUBCOMMANDS.contains(&text) {
                args.remove(index);
            }
            break;
        };
        index += if skip { 2 } else { 1 };
    }
    args
}

fn run_with_args<P: Provider>(args: Vec<OsString>) -> Result<(), Error> {
    let command = command::<P>();
    let args = upstream_args_rewritten::<P>(args, &command);
    let Some(cli) = parse::<P>(command, args)? else {
        return Ok(());
    };
    logging::init(cli.verbose.max(klog_as_verbose(cli.klog_verbosity)), &binary_name::<P>());
    // Read before anything else is done, and failed on by each command when
    // it builds the plugin (the docker helper answers such an error on stdout).
    let endpoints = Endpoints::from_env();
    // Opened only once the command is known good: a refused request leaves
    // nothing behind.
    let open_cache = || -> Result<Option<Cache>, Error> {
        match cli.no_cache {
            true => Ok(None),
            false => Ok(Some(Cache::open(&cli.cache_dir.clone().unwrap_or_else(cache::default_dir))?)),
        }
    };
    match cli.command {
        Some(Command::Check { args, as_principal }) => {
            let endpoints = endpoints?;
            let service_account = service_account_from_flags(
                args.service_account_token_file.as_deref(),
                &args.service_account_annotations,
            )?;
            let wanted = args.wanted().map_err(|e| Error::Config(e.to_string()))?;
            let cache = open_cache()?;
            let provider = P::new(cli.plugin, endpoints)?;
            let identity = match (&as_principal, service_account) {
                (Some(principal), _) => CheckIdentity::Principal(principal),
                (None, Some(service_account)) => CheckIdentity::ServiceAccount(service_account),
                (None, None) => CheckIdentity::Own,
            };
            check(&provider, cache.as_ref(), wanted, &identity, args.output)
        }
        Some(Command::Refresh { every, json }) => {
            let endpoints = endpoints?;
            let Some(cache) = open_cache()? else {
                return Err(Error::Config("refresh renews the cache; it cannot run with --no-cache".into()));
            };
            let provider = P::new(cli.plugin, endpoints)?;
            crate::refresh::run(&provider, &cache, every, json)
        }
        Some(Command::DockerHelper { operation, invoked_as }) => {
            let name = invoked_as.unwrap_or_else(|| format!("{}{}", docker_config::HELPER_PREFIX, P::NAME));
            docker_helper::serve::<P>(operation, &name, || P::new(cli.plugin, endpoints?), open_cache)
        }
        Some(Command::InstallDockerHelper { registries, config, helper, bin_dir }) => {
            let provider = P::new(cli.plugin, endpoints?)?;
            docker_helper::install(&provider, &docker_helper::Installation { registries, config, helper, bin_dir })
        }
        None => {
            let endpoints = endpoints?;
            let request = match &cli.image {
                Some(image) => request_from_flags(
                    image,
                    cli.service_account_token_file.as_deref(),
                    &cli.service_account_annotations,
                )?,
                None => decode_request(&stdio::read_stdin(
                    MAX_REQUEST_BYTES,
                    "no request: pipe a CredentialProviderRequest to stdin, or pass --image IMAGE",
                )?)?,
            };
            let cache = open_cache()?;
            let provider = P::new(cli.plugin, endpoints)?;
            let response = respond(&provider, cache.as_ref(), &request)?;
            stdio::write_stdout(&response.encode())
        }
    }
}

/// klog's `--v` level as a count of `-v`: its levels 0 to 2 are a Go
/// program's normal output (warnings here), 3 adds what it is doing (info),
/// 4 is debugging, and 5 and more trace.
fn klog_as_verbose(level: Option<u8>) -> u8 {
    match level.unwrap_or(0) {
        0..=2 => 0,
        3 => 1,
        4 => 2,
        _ => 3,
    }
}

/// The command line, parsed; `None` when it asked for `--help` or
/// `--version`, which are printed here.
fn parse<P: Provider>(command: clap::Command, args: Vec<OsString>) -> Result<Option<Cli<P::Args>>, Error> {
    let matches = match command.try_get_matches_from(args) {
        Ok(matches) => matches,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                print!("{e}");
                return Ok(None);
            }
            // clap's own rendering spans several lines; the kubelet logs one.
            let rendered = e.render().to_string();
            let message: Vec<&str> = rendered
                .lines()
                .map(str::trim)
                .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
                .filter(|l| !l.is_empty() && !l.starts_with("tip:"))
                .collect();
            let message = message.join(" ");
            return Err(Error::Usage(format!("{}; see --help", message.trim_start_matches("error: "))));
        }
    };
    let cli = Cli::<P::Args>::from_arg_matches(&matches).map_err(|e| Error::Usage(e.to_string()))?;
    Ok(Some(cli))
}

/// The kubelet's request answered: the plugin's plan, the credential through
/// the cache, and the response for the requested registry.
fn respond<P: Provider>(
    provider: &P,
    cache: Option<&Cache>,
    request: &CredentialProviderRequest,
) -> Result<CredentialProviderResponse, Error> {
    let image = ImageRef::parse(&request.image)?;
    let plan = provider.plan(&image, request.service_account.as_ref())?;
    let lease = credentials::get(provider, cache, &plan, &request.image)?;
    Ok(response(request, plan.registry, lease, provider.response_overrides()))
}

/// A response for one registry: the kubelet may keep it as long as the lease
/// says, unless the plugin overrides that (never beyond the credential's
/// expiry).
fn response(
    request: &CredentialProviderRequest,
    registry: String,
    lease: Lease,
    overrides: ResponseOverrides,
) -> CredentialProviderResponse {
    let Lease { credential, keep_for } = lease;
    let cache_duration = match overrides.cache_duration {
        Some(chosen) => chosen.min(Duration::from_secs(credential.expires_at.saturating_sub(clock::unix_now()))),
        None => keep_for,
    };
    let mut auth = BTreeMap::new();
    auth.insert(registry, AuthConfig { username: credential.username, password: credential.password });
    CredentialProviderResponse {
        api_version: request.api_version,
        cache_key_type: overrides.cache_key_type.unwrap_or(CacheKeyType::Registry),
        cache_duration,
        auth,
    }
}

/// Whose permissions `check` checks.
enum CheckIdentity<'a> {
    /// This machine's: the node's, on a node.
    Own,
    /// A pod's, with its token and annotations.
    ServiceAccount(ServiceAccount),
    /// Another principal's, through the cloud's policy evaluation (`--as`).
    Principal(&'a str),
}

/// `PLUGIN check`: every image checked (those this plugin does not serve
/// listed as such), the report on stdout, and an error unless every image
/// passed. Nothing at all of this plugin's to check is an error too.
fn check<P: Provider>(
    provider: &P,
    cache: Option<&Cache>,
    wanted: Vec<Wanted>,
    identity: &CheckIdentity<'_>,
    output: OutputFormat,
) -> Result<(), Error> {
    let sessions = Sessions::new(cache, P::NAME);
    let mut images = Vec::with_capacity(wanted.len());
    let mut refused = Vec::new();
    for Wanted { image, used } in wanted {
        let mut checked = match check_one(provider, cache, &sessions, &image, identity) {
            Ok(checked) => checked,
            // What cannot work for one image cannot for any (check --as where the cloud has no evaluation).
            Err(error @ Error::Usage(_)) => return Err(error),
            Err(error @ Error::UnsupportedRegistry { .. }) => {
                let reason = secret::scrub(&error.to_string());
                refused.push(error);
                ImageCheck::new(image, Verdict::NotThisPlugins { reason })
            }
            Err(error) => ImageCheck::new(image, Verdict::Failed { error: secret::scrub(&error.to_string()) }),
        };
        if let Some(used) = &used {
            checked.used_by(used);
        }
        images.push(checked);
    }
    // Asked only about other clouds' images: a mistake, said as for one image.
    if refused.len() == images.len() {
        return Err(match (refused.pop(), images.len()) {
            (Some(error), 1) => error,
            _ => Error::Usage(format!("none of the {} images is served by {}", images.len(), binary_name::<P>())),
        });
    }
    let run = CheckRun::new(images);
    // A cloud's message may quote what it was sent (a token it refused).
    stdio::write_stdout(&secret::scrub(&run.render(output)))?;
    match run.allowed {
        true => Ok(()),
        false => {
            let (images, checks) = run.failures();
            Err(Error::CheckFailed(format!("{images} of {} images did not pass ({checks} checks)", run.images.len())))
        }
    }
}

/// One image's check, as `identity`.
fn check_one<P: Provider>(
    provider: &P,
    cache: Option<&Cache>,
    sessions: &Sessions<'_>,
    image: &str,
    identity: &CheckIdentity<'_>,
) -> Result<ImageCheck, Error> {
    let image = ImageRef::parse(image)?;
    let service_account = match identity {
        CheckIdentity::ServiceAccount(service_account) => Some(service_account),
        _ => None,
    };
    let plan = provider.plan(&image, service_account)?;
    if let CheckIdentity::Principal(principal) = identity {
        // Nothing is fetched or cached as the principal: nothing to forget.
        return Ok(ImageCheck::checked(credentials::block_on(provider.check_as(&plan, &image, principal))??));
    }
    let report = credentials::block_on(provider.check(&plan, &image, sessions))??;
    // A credential cached before a permission was granted must not outlive
    // the check that shows the change: the next exec fetches.
    credentials::forget::<P>(cache, &plan);
    Ok(ImageCheck::checked(report))
}

/// The kubelet's request, from the bytes it wrote.
fn decode_request(body: &[u8]) -> Result<CredentialProviderRequest, Error> {
    if body.len() > MAX_REQUEST_BYTES {
        return Err(RequestError::TooLarge { limit: MAX_REQUEST_BYTES }.into());
    }
    Ok(CredentialProviderRequest::decode(body)?)
}

/// Builds the request the kubelet would send, from `--image` and friends.
fn request_from_flags(
    image: &str,
    token_file: Option<&std::path::Path>,
    annotations: &[String],
) -> Result<CredentialProviderRequest, Error> {
    let service_account = service_account_from_flags(token_file, annotations)?;
    Ok(CredentialProviderRequest { api_version: ApiVersion::V1, image: image.to_string(), service_account })
}

/// The service account the kubelet would send, from the flags that give its
/// token and annotations (none without either).
fn service_account_from_flags(
    token_file: Option<&std::path::Path>,
    annotations: &[String],
) -> Result<Option<ServiceAccount>, Error> {
    let token = match token_file {
        Some(path) => {
            let token = std::fs::read_to_string(path)
                .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
            Some(Secret::new(token.trim().to_string()))
        }
        None => None,
    };
    let parsed = crate::check::parse_annotations(annotations).map_err(Error::Config)?;
    Ok((token.is_some() || !parsed.is_empty()).then_some(ServiceAccount { token, annotations: parsed }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_build_a_v1_request() {
        let request = request_from_flags("a.example/b", None, &["k=v=w".to_string()]).expect("request");
        assert_eq!(request.api_version, ApiVersion::V1);
        let sa = request.service_account.expect("annotations");
        assert_eq!(sa.annotations.get("k").map(String::as_str), Some("v=w"));
        assert!(request_from_flags("a.example/b", None, &["novalue".to_string()]).is_err());
    }
}
