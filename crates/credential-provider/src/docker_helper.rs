//! The docker credential-helper protocol, spoken by every plugin from the
//! same identity chain and the same cache as its kubelet side, so that CI
//! runners and laptops pull with the tool the nodes use.
//!
//! A client (docker, podman, buildah, skopeo, crane) runs
//! `docker-credential-NAME OPERATION`, a link to a plugin, with the operation's
//! input on stdin:
//! - `get`: a server URL (`host`, `host:port`, `https://host/v2/`…) in; out,
//!   `{"ServerURL":…,"Username":…,"Secret":…}`. For a registry the plugin
//!   does not serve, the protocol's "credentials not found in native
//!   keychain" and exit 1, which clients read as "no credentials here" and
//!   pull anonymously;
//! - `list`: the registries with a credential in the cache, and its username;
//! - `store`, `erase`: refused, since the cloud issues these credentials;
//! - `version`.
//!
//! The protocol puts errors on stdout, where clients read them: here every
//! error goes there, as one scrubbed line, and nowhere else.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::cache::{Cache, Freshness};
use crate::clock;
use crate::credentials;
use crate::docker_config::{self, EntryChange, HELPER_PREFIX, LinkChange};
use crate::error::Error;
use crate::image::ImageRef;
use crate::platform;
use crate::provider::{Provider, binary_name};
use crate::secret::Secret;
use crate::stdio;

/// What the protocol answers for a registry the helper has nothing for.
pub const NOT_FOUND: &str = "credentials not found in native keychain";

/// The subcommand a `docker-credential-NAME` invocation runs.
pub const SUBCOMMAND: &str = "docker-helper";

/// The repository a helper's request is planned and cached under: the
/// protocol names a registry, never a repository.
pub const REPOSITORY: &str = "docker-credential-helper";

/// A server URL is one line; anything much larger is not one.
const MAX_INPUT_BYTES: usize = 64 * 1024;

/// The operations of the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Operation {
    /// Print the credential for the server URL on stdin.
    Get,
    /// Print the registries with a cached credential, and its username.
    List,
    /// Refused: the cloud issues these credentials.
    Store,
    /// Refused: the cloud issues these credentials.
    Erase,
    /// Print the helper's version.
    Version,
}

/// The command line of a plugin run as `docker-credential-NAME ARGS…`: the
/// plugin's `docker-helper` subcommand with the name it was run under. Any
/// other command line is returned as it is.
pub fn args_as_subcommand(mut args: Vec<OsString>) -> Vec<OsString> {
    let invoked_as = args
        .first()
        .and_then(|argv0| Path::new(argv0).file_name())
        .and_then(|name| name.to_str())
        .map(crate::platform::program_name)
        .filter(|name| name.starts_with(HELPER_PREFIX))
        .map(str::to_string);
    if let Some(name) = invoked_as {
        args.splice(1..1, [SUBCOMMAND.into(), "--invoked-as".into(), name.into()]);
    }
    args
}

/// The registry a server URL names, as the image reference a request for it
/// would carry (`REGISTRY/docker-credential-helper`); `None` for anything that
/// names no registry host, which is then one the helper has nothing for.
pub fn image_for_server(server_url: &str) -> Option<ImageRef> {
    let rest = match server_url.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") || scheme.eq_ignore_ascii_case("http") => rest,
        Some(_) => return None,
        None => server_url,
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let image = ImageRef::parse(&format!("{authority}/{REPOSITORY}")).ok()?;
    // A name that the reference grammar reads as a Docker Hub repository
    // (`myhost`) or renames (`index.docker.io`) is not what was asked.
    (image.registry() == authority.to_ascii_lowercase()).then_some(image)
}

/// What `get` prints.
#[derive(Serialize)]
struct GetAnswer<'a> {
    #[serde(rename = "ServerURL")]
    server_url: &'a str,
    #[serde(rename = "Username")]
    username: &'a str,
    #[serde(rename = "Secret")]
    secret: &'a Secret,
}

/// Why an operation gave no answer.
enum Failure {
    /// The protocol's "no credentials here".
    NotFound,
    Error(Error),
}

impl From<Error> for Failure {
    fn from(error: Error) -> Failure {
        Failure::Error(error)
    }
}

/// Runs one operation of the protocol and prints its answer or its error on
/// stdout. The provider and the cache are made only by the operations that
/// use them, so `version` works anywhere.
pub fn serve<P: Provider>(
    operation: Operation,
    invoked_as: &str,
    provider: impl FnOnce() -> Result<P, Error>,
    cache: impl FnOnce() -> Result<Option<Cache>, Error>,
) -> Result<(), Error> {
    let answer = match operation {
        Operation::Version => Ok(format!(
            "{invoked_as} ({} of kubelet-credential-providers) {}\n",
            binary_name::<P>(),
            env!("CARGO_PKG_VERSION")
        )),
        Operation::Get => {
            read_input().map_err(Failure::from).and_then(|server_url| get(&provider()?, cache()?.as_ref(), &server_url))
        }
        Operation::List => cache().map_err(Failure::from).and_then(|cache| list::<P>(cache.as_ref())),
        Operation::Store | Operation::Erase => {
            // `docker login` and `docker logout` call these; failing them
            // would fail the login of every CI script that still logs in out
            // of habit. What the client sends is read, so that it sees this
            // answer rather than a broken pipe, and dropped: it may be a
            // credential, and `get` answers from the cloud's identity anyway.
            let _ = read_input();
            tracing::info!(
                "{}: nothing to do: {} gets credentials from the cloud's identity and stores none",
                if operation == Operation::Store { "store (docker login)" } else { "erase (docker logout)" },
                binary_name::<P>()
            );
            Ok(String::new())
        }
    };
    match answer {
        Ok(text) => stdio::write_stdout(&text),
        Err(failure) => {
            let (line, exit_code) = match failure {
                Failure::NotFound => (NOT_FOUND.to_string(), crate::error::EXIT_USAGE),
                Failure::Error(error) => (stdio::error_line(&error), error.exit_code()),
            };
            stdio::write_stdout(&format!("{line}\n"))?;
            Err(Error::AnsweredOnStdout { exit_code })
        }
    }
}

/// `get`: the credential for the registry `server_url` names, through the
/// cache the kubelet's execs share.
fn get<P: Provider>(provider: &P, cache: Option<&Cache>, server_url: &str) -> Result<String, Failure> {
    let Some(image) = image_for_server(server_url) else {
        // Not echoed: a server URL may carry a password (`https://user:pass@…`).
        tracing::info!("the server URL names no registry host");
        return Err(Failure::NotFound);
    };
    let plan = match provider.plan(&image, None) {
        Ok(plan) => plan,
        Err(error @ Error::UnsupportedRegistry { .. }) => {
            tracing::info!("{error}");
            return Err(Failure::NotFound);
        }
        Err(error) => return Err(error.into()),
    };
    let lease = credentials::get_unverified(provider, cache, &plan, &image.to_string())?;
    let answer = GetAnswer { server_url, username: &lease.credential.username, secret: &lease.credential.password };
    let json = serde_json::to_string(&answer).map_err(|e| Error::Output(io::Error::other(e)))?;
    Ok(format!("{json}\n"))
}

/// `list`: every registry of this plugin with a usable credential in the
/// cache, and its username. Credentials of service-account tokens are a
/// pod's, not this machine's, and are left out.
fn list<P: Provider>(cache: Option<&Cache>) -> Result<String, Failure> {
    let now = clock::unix_now();
    let registries: BTreeMap<String, String> = cache
        .map(|cache| cache.entries(P::NAME))
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(_, entry)| entry)
        .filter(|entry| !entry.needs_service_account_token && entry.freshness(now) != Freshness::Expired)
        .map(|entry| (entry.registry, entry.username))
        .collect();
    let json = serde_json::to_string(&registries).map_err(|e| Error::Output(io::Error::other(e)))?;
    Ok(format!("{json}\n"))
}

/// The operation's input: all of stdin, trimmed.
fn read_input() -> Result<String, Error> {
    let body = stdio::read_stdin(
        MAX_INPUT_BYTES,
        "no input: the server URL goes on stdin, e.g. echo HOST | docker-credential-NAME get",
    )?;
    if body.len() > MAX_INPUT_BYTES {
        return Err(Error::Usage(format!("the input is larger than {} KiB: not a server URL", MAX_INPUT_BYTES / 1024)));
    }
    let text = String::from_utf8(body).map_err(|_| Error::Usage("the input is not UTF-8: not a server URL".into()))?;
    Ok(text.trim().to_string())
}

/// What `install-docker-helper` was asked to set up.
#[derive(Debug)]
pub struct Installation {
    /// The registries, as the user named them (hosts or server URLs).
    pub registries: Vec<String>,
    /// The docker config to edit [default: docker's].
    pub config: Option<PathBuf>,
    /// The helper's name [default: the plugin's short name].
    pub helper: Option<String>,
    /// A directory on `PATH` to link `docker-credential-NAME` in.
    pub bin_dir: Option<PathBuf>,
}

/// `install-docker-helper`: the `credHelpers` entries for `registries`, and
/// the helper's link if asked. Every registry must be one this plugin
/// serves, and the helper name must not be another program's on `PATH`;
/// otherwise nothing is changed.
pub fn install<P: Provider>(provider: &P, installation: &Installation) -> Result<(), Error> {
    let helper = installation.helper.clone().unwrap_or_else(|| P::NAME.to_string());
    let executable = docker_config::helper_executable(&helper)?;
    let mut registries = Vec::new();
    for named in &installation.registries {
        let image = image_for_server(named)
            .ok_or_else(|| Error::Usage(format!("{named:?} is not a registry host (HOST or HOST:PORT)")))?;
        match provider.plan(&image, None) {
            Ok(_) => {}
            Err(error @ Error::UnsupportedRegistry { .. }) => return Err(error),
            Err(error) => tracing::warn!(
                "{}: as configured here, a pull would fail: {}",
                image.registry(),
                stdio::error_line(&error)
            ),
        }
        registries.push(image.registry());
    }
    let program = std::env::current_exe()
        .and_then(|exe| exe.canonicalize())
        .map_err(|e| Error::Config(format!("cannot tell where this program is: {e}")))?;
    // What clients would run now: another program first on PATH under the
    // helper's name shadows any link made here, so it is refused before
    // anything changes (one in --bin-dir itself is refused by the link).
    let on_path = docker_config::find_on_path(&executable);
    if let Some(found) = &on_path
        && !docker_config::runs_program(found, &program)
        && installation.bin_dir.as_deref() != found.parent()
    {
        return Err(docker_config::DockerConfigError::HelperTaken {
            found: format!("first on PATH, not {}", program.display()),
            path: found.clone(),
        }
        .into());
    }
    let mut report = String::new();
    match (&installation.bin_dir, &on_path) {
        (Some(dir), _) => {
            let (link, change) = docker_config::link_helper(dir, &executable, &program)?;
            let what = if change == LinkChange::Created { "linked" } else { "already linked" };
            report += &format!("{}: {what} to {}\n", link.display(), program.display());
            if !docker_config::is_on_path(dir) {
                tracing::warn!("{} is not on PATH, so clients will not find {executable}: add it", dir.display());
            }
        }
        (None, Some(found)) => report += &format!("{}: on PATH, runs {}\n", found.display(), program.display()),
        (None, None) => tracing::warn!(
            "{executable} is not on PATH, so clients will not find it: rerun with --bin-dir DIR (a directory on PATH), or: {}",
            platform::helper_link_command(&program, &executable)
        ),
    }
    let config = match &installation.config {
        Some(config) => config.clone(),
        None => docker_config::default_config_path()?,
    };
    for (registry, change) in docker_config::add_cred_helpers(&config, &helper, &registries)? {
        let what = match change {
            EntryChange::Added => "added".to_string(),
            EntryChange::Unchanged => "already there".to_string(),
            EntryChange::Replaced(previous) => format!("replaced {previous:?}"),
        };
        report += &format!("{}: credHelpers {registry:?}: {helper:?} ({what})\n", config.display());
    }
    stdio::write_stdout(&report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_name_their_registry() {
        let registry = |url: &str| image_for_server(url).map(|image| image.registry());
        let ecr = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
        for url in [
            ecr.to_string(),
            format!("https://{ecr}"),
            format!("https://{ecr}/v2/"),
            format!("HTTPS://{}/", ecr.to_uppercase()),
            format!("http://{ecr}?x#y"),
        ] {
            assert_eq!(registry(&url).as_deref(), Some(ecr), "{url}");
        }
        assert_eq!(registry("myacr.azurecr.io:443").as_deref(), Some("myacr.azurecr.io:443"));
        assert_eq!(registry("localhost:5000/v2/").as_deref(), Some("localhost:5000"));
        assert_eq!(image_for_server(ecr).expect("image").to_string(), format!("{ecr}/{REPOSITORY}"));
        // Names no registry host the helper could serve.
        for url in [
            "",
            "https://",
            "myhost",
            "https://index.docker.io/v1/",
            "ftp://x.example",
            "https://user@x.example",
            "x.example:0",
            "[::1]:5000",
            "a b.example",
        ] {
            assert_eq!(registry(url), None, "{url:?}");
        }
    }

    #[test]
    fn only_docker_credential_names_become_the_subcommand() {
        let args = |list: &[&str]| list.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            args_as_subcommand(args(&["/usr/local/bin/docker-credential-ecr", "get"])),
            args(&["/usr/local/bin/docker-credential-ecr", SUBCOMMAND, "--invoked-as", "docker-credential-ecr", "get"])
        );
        let plain = args(&["/usr/bin/ecr-credential-provider", "get"]);
        assert_eq!(args_as_subcommand(plain.clone()), plain);
        assert_eq!(args_as_subcommand(Vec::new()), Vec::<OsString>::new());
    }
}
