//! The command line every plugin shares, and the flow of one request.
//!
//! With no subcommand a plugin reads one request from stdin (or builds it from
//! `--image`), answers on stdout and exits. Nothing but that one JSON line ever
//! reaches stdout; logs and errors go to stderr, scrubbed of secrets.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io::{self, IsTerminal, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::prelude::*;

use crate::cache::{self, Cache, CacheKey, CachedCredential, FORMAT_VERSION, Freshness};
use crate::check::OutputFormat;
use crate::endpoints::Endpoints;
use crate::error::Error;
use crate::image::ImageRef;
use crate::memo::{self, Invocation};
use crate::protocol::{
    ApiVersion, AuthConfig, CacheKeyType, CredentialProviderRequest, CredentialProviderResponse, RequestError,
    ServiceAccount,
};
use crate::provider::{Credential, Plan, Provider, ResponseOverrides};
use crate::secret::{self, ScrubbingStderr, Secret};
use crate::session::Sessions;

/// The most a request may weigh; the kubelet's are a few hundred bytes.
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;
/// How long an exec waits for another process renewing the same entry. With
/// the fetch budget this stays well inside the kubelet's 60 s exec limit.
pub const LOCK_WAIT: Duration = Duration::from_secs(15);
/// The most one fetch from the cloud may take, retries included.
pub const FETCH_BUDGET: Duration = Duration::from_secs(30);
/// How long the kubelet may keep a stale credential served because the cloud
/// failed: short, so that the next pull tries the cloud again soon.
pub const STALE_CACHE_DURATION: Duration = Duration::from_secs(30);
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

    #[command(flatten)]
    plugin: A,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check that this node's identity has every permission a pull of IMAGE needs.
    Check {
        /// The image to check, e.g. 123456789012.dkr.ecr.us-east-1.amazonaws.com/app:1.0
        #[arg(long, value_name = "IMAGE")]
        image: String,
        /// How to print the report.
        #[arg(long, value_enum, default_value = "table")]
        output: OutputFormat,
    },
    /// Renew every cached credential that is past its refresh point.
    Refresh {
        /// Keep running, renewing every DURATION (e.g. 5m) with a little jitter.
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        every: Option<Duration>,
    },
}

/// Runs a plugin and exits the process with its exit code.
pub fn run<P: Provider>() -> ! {
    let binary = P::BINARY;
    // A panic message may quote data; print only where it happened.
    std::panic::set_hook(Box::new(move |info| {
        let place = info.location().map_or_else(String::new, |l| format!(" at {}:{}", l.file(), l.line()));
        eprintln!("{binary}: internal error{place}; please report it");
    }));
    let args: Vec<OsString> = std::env::args_os().collect();
    let outcome = fast_path::<P>(&args).and_then(|fast| match fast {
        FastPath::Answered => Ok(()),
        FastPath::Declined { stdin, invocation } => run_with_args::<P>(&args, stdin, invocation),
    });
    let code = match outcome {
        Ok(()) => 0,
        Err(error) => {
            let message = secret::scrub(&error.to_string());
            eprintln!("{binary}: error: {}", message.replace('\n', " "));
            error.exit_code()
        }
    };
    std::process::exit(code)
}

/// What the fast path did.
enum FastPath {
    /// It answered on stdout.
    Answered,
    /// It did not: the full path runs, with the request if the fast path read
    /// it, and the invocation if it worked it out.
    Declined { stdin: Option<Vec<u8>>, invocation: Option<Invocation> },
}

/// Answers a request that this same invocation answered before, from the
/// entry that answered it then, when the memos say nothing has changed since
/// (see [`memo`]): no flag parsing, no plugin, no logger. Reads stdin only
/// for a command line that the full path has seen carry a request.
fn fast_path<P: Provider>(args: &[OsString]) -> Result<FastPath, Error> {
    let declined = |stdin, invocation| Ok(FastPath::Declined { stdin, invocation });
    let Some(cache) = cache_dir_of(args).and_then(|dir| Cache::open_existing(&dir).ok()) else {
        return declined(None, None);
    };
    let Some(invocation) = Invocation::current(P::NAME, args) else {
        return declined(None, None);
    };
    let Some(overrides) = memo::recall_invocation(&cache, &invocation) else {
        return declined(None, Some(invocation));
    };
    let stdin = read_stdin()?;
    let request = (stdin.len() <= MAX_REQUEST_BYTES).then(|| CredentialProviderRequest::decode(&stdin).ok()).flatten();
    let entry = memo::recall_request(&cache, &invocation, &stdin)
        .filter(|entry| entry.freshness(cache::unix_now()) == Freshness::Fresh);
    let (Some(request), Some(entry)) = (request, entry) else {
        return declined(Some(stdin), Some(invocation));
    };
    let (credential, cache_duration) = served(&entry);
    write_stdout(&respond(request.api_version, entry.registry, credential, cache_duration, overrides).encode())?;
    Ok(FastPath::Answered)
}

/// The cache directory, read from the raw command line as clap would read it.
/// A wrong guess only costs time: memos are found only where the full path
/// wrote them, for the same command line.
fn cache_dir_of(args: &[OsString]) -> Option<PathBuf> {
    let mut dir = None;
    let mut rest = args.iter().skip(1);
    while let Some(arg) = rest.next() {
        if arg == "--no-cache" {
            return None;
        } else if arg == "--" {
            break;
        } else if arg == "--cache-dir" {
            dir = Some(PathBuf::from(rest.next()?));
        } else if let Some(value) = arg.as_bytes().strip_prefix(b"--cache-dir=") {
            dir = Some(PathBuf::from(OsStr::from_bytes(value)));
        }
    }
    dir.or_else(|| std::env::var_os(CACHE_DIR_VARIABLE).filter(|v| !v.is_empty()).map(PathBuf::from))
        .or_else(|| Some(cache::default_dir()))
}

/// The full path: the command line parsed, the plugin built, the logger on.
/// Out of line: its frame is large, and the fast path must not pay for it.
#[inline(never)]
fn run_with_args<P: Provider>(
    original_args: &[OsString],
    stdin: Option<Vec<u8>>,
    invocation: Option<Invocation>,
) -> Result<(), Error> {
    let mut args = original_args.to_vec();
    if args.get(1).is_some_and(|first| P::COMPAT_SUBCOMMANDS.iter().any(|name| first == name)) {
        args.remove(1);
    }
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
    let command = Cli::<P::Args>::command()
        .name(P::BINARY)
        .bin_name(P::BINARY)
        .about(P::ABOUT)
        .version(env!("CARGO_PKG_VERSION"));
    let matches = match command.try_get_matches_from(args) {
        Ok(matches) => matches,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                print!("{e}");
                return Ok(());
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
    let cli = Cli::<P::Args>::from_arg_matches(&matches).map_err(|e| Error::Config(e.to_string()))?;
    init_logging(cli.verbose, P::BINARY);

    let endpoints = Endpoints::from_env()?;
    let open_cache = |no_cache: bool| -> Result<Option<Cache>, Error> {
        if no_cache {
            return Ok(None);
        }
        let dir = cli.cache_dir.clone().unwrap_or_else(cache::default_dir);
        Ok(Some(Cache::open(&dir)?))
    };

    match cli.command {
        Some(Command::Check { image, output }) => {
            let cache = open_cache(cli.no_cache)?;
            let provider = P::new(cli.plugin, endpoints)?;
            check(&provider, cache.as_ref(), &image, output)
        }
        Some(Command::Refresh { every }) => {
            let Some(cache) = open_cache(cli.no_cache)? else {
                return Err(Error::Config("refresh renews the cache; it cannot run with --no-cache".into()));
            };
            let provider = P::new(cli.plugin, endpoints)?;
            crate::refresh::run(&provider, &cache, every)
        }
        None => {
            let (request, body) = match &cli.image {
                Some(image) => {
                    let request = request_from_flags(
                        image,
                        cli.service_account_token_file.as_deref(),
                        &cli.service_account_annotations,
                    )?;
                    (request, None)
                }
                None => {
                    let body = match stdin {
                        Some(body) => body,
                        None => read_stdin()?,
                    };
                    (decode_request(&body)?, Some(body))
                }
            };
            let cache = open_cache(cli.no_cache)?;
            let provider = P::new(cli.plugin, endpoints)?;
            let (response, entry) = answer(&provider, cache.as_ref(), &request)?;
            write_stdout(&response.encode())?;
            // The kubelet's path, as the fast path would answer it: remember it.
            if let (Some(cache), Some(entry), Some(body)) = (&cache, &entry, &body)
                && cli.verbose == 0
                && !provider.verifies_credentials()
                && let Some(invocation) = invocation.or_else(|| Invocation::current(P::NAME, original_args))
            {
                let files = provider.config_files();
                memo::remember(cache, &invocation, provider.response_overrides(), &files, body, entry);
            }
            Ok(())
        }
    }
}

/// `PLUGIN check --image IMAGE`: the report on stdout, and an error unless
/// every step passed. Out of line, so that its futures stay off the stack of
/// the kubelet's path.
#[inline(never)]
fn check<P: Provider>(provider: &P, cache: Option<&Cache>, image: &str, output: OutputFormat) -> Result<(), Error> {
    let image = ImageRef::parse(image)?;
    let sessions = Sessions::new(cache, P::NAME);
    let report = block_on(provider.check(&image, &sessions))?;
    // A credential cached before a permission was granted must not outlive
    // the check that shows the change: the next exec fetches.
    if let (Some(cache), Ok(plan)) = (cache, provider.plan(&image, None)) {
        cache.remove_entry(P::NAME, &cache_key::<P>(&plan));
    }
    let text = match output {
        OutputFormat::Table => report.to_table(),
        OutputFormat::Json => report.to_json(),
    };
    write_stdout(&text)?;
    if report.all_allowed() {
        Ok(())
    } else {
        let failing = report.steps.iter().filter(|s| s.outcome != crate::check::Outcome::Allowed).count();
        Err(Error::CheckFailed(format!("{failing} of {} checks did not pass for {}", report.steps.len(), report.image)))
    }
}

/// Answers one request: plan, then the cache, then the cloud. Also returns
/// the cache entry the answer came from, when it came fresh from one.
fn answer<P: Provider>(
    provider: &P,
    cache: Option<&Cache>,
    request: &CredentialProviderRequest,
) -> Result<(CredentialProviderResponse, Option<CachedCredential>), Error> {
    let image = ImageRef::parse(&request.image)?;
    let plan = provider.plan(&image, request.service_account.as_ref())?;
    tracing::debug!(registry = %plan.registry, target = ?plan.target, "planned");
    let mut obtained = obtain(provider, cache, &plan, &request.image)?;
    if provider.verifies_credentials() {
        obtained = verified(provider, cache, &plan, &request.image, obtained)?;
    }
    let Obtained { credential, cache_duration, entry } = obtained;
    let response =
        respond(request.api_version, plan.registry, credential, cache_duration, provider.response_overrides());
    Ok((response, entry))
}

/// A response for one registry: the kubelet may keep it `cache_duration`,
/// unless the plugin overrides that (never beyond the credential's expiry).
fn respond(
    api_version: ApiVersion,
    registry: String,
    credential: Credential,
    cache_duration: Duration,
    overrides: ResponseOverrides,
) -> CredentialProviderResponse {
    let cache_duration = match overrides.cache_duration {
        Some(chosen) => chosen.min(Duration::from_secs(credential.expires_at.saturating_sub(cache::unix_now()))),
        None => cache_duration,
    };
    let mut auth = BTreeMap::new();
    auth.insert(registry, AuthConfig { username: credential.username, password: credential.password });
    CredentialProviderResponse {
        api_version,
        cache_key_type: overrides.cache_key_type.unwrap_or(CacheKeyType::Registry),
        cache_duration,
        auth,
    }
}

/// `obtained`, proven by the plugin's `verify`; a refused credential is
/// forgotten and replaced once. Out of line: its futures are large, and
/// a cache hit of a plugin that does not verify must not pay for their stack.
#[inline(never)]
fn verified<P: Provider>(
    provider: &P,
    cache: Option<&Cache>,
    plan: &Plan<P::Target>,
    image: &str,
    obtained: Obtained,
) -> Result<Obtained, Error> {
    let sessions = Sessions::new(cache, P::NAME);
    match block_on(provider.verify(plan, &obtained.credential, &sessions)) {
        Err(Error::Denied { service, message }) => {
            tracing::info!("{service} refused the credential ({message}); fetching a new one");
            if let Some(cache) = cache {
                cache.remove_entry(P::NAME, &cache_key::<P>(plan));
            }
            let obtained = obtain(provider, cache, plan, image)?;
            block_on(provider.verify(plan, &obtained.credential, &sessions))?;
            Ok(obtained)
        }
        _ => Ok(obtained),
    }
}

/// The cache key of a plan: the plugin's inputs, the registry, and the hash of
/// the service-account token when the credential comes from one.
pub(crate) fn cache_key<P: Provider>(plan: &Plan<P::Target>) -> CacheKey {
    let mut parts = vec![plan.registry.clone()];
    parts.extend(plan.key_parts.iter().cloned());
    if let Some(token) = &plan.service_account_token {
        parts.push(format!("service-account-token-sha256={}", cache::secret_digest(token)));
    }
    CacheKey::derive(P::NAME, &parts)
}

/// A credential, how long the kubelet may keep it, and the fresh cache entry
/// it came from, if it did.
struct Obtained {
    credential: Credential,
    cache_duration: Duration,
    entry: Option<CachedCredential>,
}

impl Obtained {
    fn from_entry(entry: CachedCredential) -> Obtained {
        let (credential, cache_duration) = served(&entry);
        Obtained { credential, cache_duration, entry: Some(entry) }
    }

    fn uncached(credential: Credential, cache_duration: Duration) -> Obtained {
        Obtained { credential, cache_duration, entry: None }
    }
}

fn obtain<P: Provider>(
    provider: &P,
    cache: Option<&Cache>,
    plan: &Plan<P::Target>,
    image: &str,
) -> Result<Obtained, Error> {
    let Some(cache) = cache else {
        let credential = fetch(provider, None, plan)?;
        let now = cache::unix_now();
        let refresh_at = CachedCredential::refresh_point(now, credential.expires_at, P::REFRESH_FRACTION);
        return Ok(Obtained::uncached(credential, Duration::from_secs(refresh_at.saturating_sub(now))));
    };
    let key = cache_key::<P>(plan);
    let cached = cache.read(P::NAME, &key);
    if let Some(entry) = cached.as_ref().filter(|e| e.freshness(cache::unix_now()) == Freshness::Fresh) {
        tracing::info!(registry = %plan.registry, "answered from the cache");
        return Ok(Obtained::from_entry(entry.clone()));
    }
    match renew(provider, cache, &key, plan, image, cached) {
        Ok(Renewal::ByAnother(entry)) => {
            tracing::info!(registry = %plan.registry, "renewed by another process; answered from the cache");
            Ok(Obtained::from_entry(entry))
        }
        Ok(Renewal::Fetched(entry)) => {
            // A new generation: the memos of the old one are dead weight.
            // (`refresh` prunes once after all its renewals instead.)
            memo::prune(cache, P::NAME);
            Ok(Obtained::from_entry(entry))
        }
        Ok(Renewal::AlreadyExpired(credential)) => Ok(Obtained::uncached(credential, Duration::ZERO)),
        Err(failure) => {
            let now = cache::unix_now();
            match failure.cached.filter(|e| e.freshness(now) == Freshness::Stale) {
                Some(entry) => {
                    tracing::warn!(
                        "renewing the credential for {} failed ({}); serving the cached one, valid for {}s more",
                        plan.registry,
                        secret::scrub(&failure.error.to_string()),
                        entry.expires_at - now
                    );
                    let duration = STALE_CACHE_DURATION.min(Duration::from_secs(entry.expires_at - now));
                    Ok(Obtained::uncached(to_credential(&entry), duration))
                }
                None => Err(failure.error),
            }
        }
    }
}

/// What a renewal under the lock came to.
pub(crate) enum Renewal {
    /// Another process renewed the entry while this one waited for the lock.
    ByAnother(CachedCredential),
    /// This process fetched and stored a new credential.
    Fetched(CachedCredential),
    /// The cloud's credential was already past its expiry (a skewed clock, or
    /// an emulator): usable once, not worth caching.
    AlreadyExpired(Credential),
}

/// A failed renewal, with the entry that was cached before it, if any.
pub(crate) struct RenewalFailure {
    pub(crate) error: Error,
    cached: Option<CachedCredential>,
}

/// Renews one entry under its lock, so that of all the processes that find it
/// stale at once only one asks the cloud; the others find it renewed. Out of
/// line, like everything that may fetch: a cache hit must not pay the stack
/// of the cloud's futures.
#[inline(never)]
pub(crate) fn renew<P: Provider>(
    provider: &P,
    cache: &Cache,
    key: &CacheKey,
    plan: &Plan<P::Target>,
    image: &str,
    cached: Option<CachedCredential>,
) -> Result<Renewal, Box<RenewalFailure>> {
    let _lock = match cache.lock(P::NAME, key, LOCK_WAIT) {
        Ok(Some(lock)) => Some(lock),
        Ok(None) => {
            tracing::warn!(
                "another process has been renewing this credential for {}s; fetching without waiting longer",
                LOCK_WAIT.as_secs()
            );
            None
        }
        Err(e) => {
            tracing::warn!("cannot lock the cache entry ({e}); fetching without the lock");
            None
        }
    };
    let cached = cache.read(P::NAME, key).or(cached);
    if let Some(entry) = cached.as_ref().filter(|e| e.freshness(cache::unix_now()) == Freshness::Fresh) {
        return Ok(Renewal::ByAnother(entry.clone()));
    }
    let credential = match fetch(provider, Some(cache), plan) {
        Ok(credential) => credential,
        Err(error) => return Err(Box::new(RenewalFailure { error, cached })),
    };
    let now = cache::unix_now();
    if credential.expires_at <= now {
        tracing::warn!(
            "the credential from the cloud expired already (at {}, now {now}); is the clock skewed? answering without caching it",
            credential.expires_at
        );
        return Ok(Renewal::AlreadyExpired(credential));
    }
    let entry = CachedCredential {
        format: FORMAT_VERSION,
        plugin: P::NAME.to_string(),
        key: key.as_str().to_string(),
        image: image.to_string(),
        registry: plan.registry.clone(),
        needs_service_account_token: plan.service_account_token.is_some(),
        issued_at: now,
        refresh_at: CachedCredential::refresh_point(now, credential.expires_at, P::REFRESH_FRACTION),
        expires_at: credential.expires_at,
        username: credential.username,
        password: credential.password,
    };
    if let Err(e) = cache.write(&entry) {
        tracing::warn!("cannot write the cache ({e}); answering anyway");
    }
    tracing::info!(registry = %plan.registry, expires_at = entry.expires_at, "fetched a new credential");
    Ok(Renewal::Fetched(entry))
}

/// A cached entry as an answer: the kubelet may keep it until our refresh point.
fn served(entry: &CachedCredential) -> (Credential, Duration) {
    let left = entry.refresh_at.saturating_sub(cache::unix_now());
    (to_credential(entry), Duration::from_secs(left))
}

fn to_credential(entry: &CachedCredential) -> Credential {
    Credential { username: entry.username.clone(), password: entry.password.clone(), expires_at: entry.expires_at }
}

#[inline(never)]
fn fetch<P: Provider>(provider: &P, cache: Option<&Cache>, plan: &Plan<P::Target>) -> Result<Credential, Error> {
    let sessions = Sessions::new(cache, P::NAME);
    block_on(async {
        match tokio::time::timeout(FETCH_BUDGET, provider.fetch(plan, &sessions)).await {
            Ok(result) => result,
            Err(_) => Err(Error::cloud(
                P::NAME,
                format!(
                    "no credential within {}s; is the cloud's endpoint reachable from this node?",
                    FETCH_BUDGET.as_secs()
                ),
            )),
        }
    })
}

/// Runs a future on a fresh single-threaded runtime. Only built when the cloud
/// must be asked: a cache hit never starts one.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime.block_on(future),
        Err(e) => {
            // Cannot happen short of the process being out of file descriptors.
            eprintln!("cannot start the async runtime: {e}");
            std::process::exit(crate::error::EXIT_USAGE)
        }
    }
}

/// Reads stdin, where the kubelet writes its request: at most one byte more
/// than [`MAX_REQUEST_BYTES`], so that a larger one is seen and refused.
fn read_stdin() -> Result<Vec<u8>, Error> {
    let stdin = io::stdin();
    if stdin.is_terminal() {
        return Err(Error::Config(
            "no request: pipe a CredentialProviderRequest to stdin, or pass --image IMAGE".into(),
        ));
    }
    let mut body = Vec::new();
    stdin
        .lock()
        .take(MAX_REQUEST_BYTES as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| Error::Config(format!("cannot read stdin: {e}")))?;
    Ok(body)
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
    let token = match token_file {
        Some(path) => {
            let token = std::fs::read_to_string(path)
                .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
            Some(Secret::new(token.trim().to_string()))
        }
        None => None,
    };
    let mut parsed = BTreeMap::new();
    for annotation in annotations {
        let Some((key, value)) = annotation.split_once('=') else {
            return Err(Error::Config(format!("--service-account-annotation {annotation:?} is not KEY=VALUE")));
        };
        parsed.insert(key.to_string(), value.to_string());
    }
    let service_account =
        (token.is_some() || !parsed.is_empty()).then_some(ServiceAccount { token, annotations: parsed });
    Ok(CredentialProviderRequest { api_version: ApiVersion::V1, image: image.to_string(), service_account })
}

/// Writes all of `text` to stdout at once, or fails.
fn write_stdout(text: &str) -> Result<(), Error> {
    let mut stdout = io::stdout().lock();
    stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()).map_err(Error::Output)
}

/// Logs to stderr through the secret scrubber. Our crates log at the level
/// asked for; the SDKs and HTTP stacks stay quieter until `-vvv`.
fn init_logging(verbose: u8, binary: &str) {
    let ours = match verbose {
        0 => LevelFilter::WARN,
        1 => LevelFilter::INFO,
        2 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    };
    // The SDKs' own warnings repeat what our one error line says, with debug
    // dumps attached: they appear from -v on.
    let theirs = match verbose {
        0 => LevelFilter::ERROR,
        1 | 2 => LevelFilter::WARN,
        _ => LevelFilter::DEBUG,
    };
    let filter = Targets::new()
        .with_default(theirs)
        .with_target("credential_provider", ours)
        .with_target(binary.replace('-', "_"), ours);
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(|| ScrubbingStderr)
        .with_ansi(false)
        .with_target(verbose >= 2)
        .without_time()
        .with_filter(filter);
    let _ = tracing_subscriber::registry().with(layer).try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fast_path_reads_the_cache_directory_as_clap_would() {
        let args = |list: &[&str]| list.iter().map(OsString::from).collect::<Vec<_>>();
        let dir = |list: &[&str]| cache_dir_of(&args(list));
        assert_eq!(dir(&["p", "--cache-dir", "/a"]), Some(PathBuf::from("/a")));
        assert_eq!(dir(&["p", "--cache-dir=/b", "--flag"]), Some(PathBuf::from("/b")));
        assert_eq!(dir(&["p", "--no-cache", "--cache-dir=/b"]), None, "no cache, no memos");
        assert_eq!(dir(&["p", "--cache-dir"]), None, "a flag without its value is clap's to refuse");
        assert_ne!(dir(&["p", "--", "--cache-dir=/d"]), Some(PathBuf::from("/d")), "not a flag after --");
    }

    #[test]
    fn flags_build_a_v1_request() {
        let request = request_from_flags("a.example/b", None, &["k=v=w".to_string()]).expect("request");
        assert_eq!(request.api_version, ApiVersion::V1);
        let sa = request.service_account.expect("annotations");
        assert_eq!(sa.annotations.get("k").map(String::as_str), Some("v=w"));
        assert!(request_from_flags("a.example/b", None, &["novalue".to_string()]).is_err());
    }
}
