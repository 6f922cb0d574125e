//! The one HTTP client for every call a plugin makes, the cloud SDKs' calls
//! included (their transports are built on it): rustls, short timeouts, a cap
//! on every answer, no redirects, and retries with backoff and jitter on
//! throttling and server errors, all inside a budget that keeps one exec well
//! under the kubelet's 60 s limit.
//!
//! It also holds the one rule for proxies. A node's metadata services (the
//! link-local addresses, AWS's fd00:ec2::/32 where IMDS and EKS Pod Identity
//! answer, and the names the clouds give them) are always called direct: a
//! proxy cannot reach them, must never see the node's identity tokens, and
//! must never be trusted to answer for them. Every other call honours
//! `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY` (either case) as
//! curl reads them. A plugin never chooses.
//!
//! A call answers with a [`Reply`] whatever its status: a 401 or 403 means
//! something different to each cloud, so the caller reads it. Only transport
//! failures (and retries that ran out on a 429 or 5xx) become errors here.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{Client, Method, RequestBuilder, StatusCode, Url};
use serde::de::DeserializeOwned;

use crate::clock;
use crate::error::Error;
use crate::secret;

/// How long a TCP and TLS connection may take to open.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one attempt may take, answer included.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one call may take, retries and waits included.
pub const CALL_BUDGET: Duration = Duration::from_secs(20);
/// Attempts per call, the first included.
pub const MAX_ATTEMPTS: u32 = 4;
/// The longest `Retry-After` honoured; a longer one ends the call instead.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);
/// The largest answer read: token answers are a few kilobytes. A longer one
/// is refused as soon as it passes this, never read to its end.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// The names the clouds give their metadata services (GCE's, IBM Cloud
/// VPC's), called direct like the link-local addresses they stand for.
const METADATA_NAMES: &[&str] =
    &["metadata.google.internal", "metadata.goog", "metadata", "api.metadata.cloud.ibm.com"];

/// The client. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Http {
    /// For everything but metadata services: the environment's proxies.
    proxied: Client,
    /// For metadata services: never a proxy.
    direct: Client,
}

impl Http {
    /// The client: metadata services direct, the rest through the proxies
    /// the environment names.
    pub fn new() -> Result<Http, Error> {
        Ok(Http { proxied: build(Client::builder())?, direct: build(Client::builder().no_proxy())? })
    }

    /// A client for `host` alone, on a private network: it dials `address`
    /// whatever DNS says of `host`, verifies TLS for `host` against `roots`
    /// (PEM certificates) and nothing else, and never uses a proxy, which
    /// could not reach `address`. For AKS's identity bindings, served by the
    /// cluster's API server under a name of its own.
    pub fn pinned(host: &str, address: std::net::SocketAddr, roots: &[u8]) -> Result<Http, Error> {
        let roots = reqwest::Certificate::from_pem_bundle(roots).map_err(|e| {
            Error::Config(format!("the CA certificates for {host} cannot be read: {}", innermost_cause(&e)))
        })?;
        if roots.is_empty() {
            return Err(Error::Config(format!("no CA certificate for {host}")));
        }
        let client = build_with_roots(Client::builder().no_proxy().resolve(host, address).tls_certs_only(roots))?;
        Ok(Http { proxied: client.clone(), direct: client })
    }

    /// A request to `url`, on the connection the proxy rule picks for it.
    pub fn request(&self, method: Method, url: &str) -> RequestBuilder {
        match Url::parse(url) {
            Ok(parsed) if goes_direct(&parsed) => self.direct.request(method, parsed),
            Ok(parsed) => self.proxied.request(method, parsed),
            // reqwest says what is wrong with the URL when the request is sent.
            Err(_) => self.proxied.request(method, url),
        }
    }

    pub fn get(&self, url: &str) -> RequestBuilder {
        self.request(Method::GET, url)
    }

    pub fn post(&self, url: &str) -> RequestBuilder {
        self.request(Method::POST, url)
    }

    pub fn put(&self, url: &str) -> RequestBuilder {
        self.request(Method::PUT, url)
    }

    /// Sends `request`, retrying transport failures, 408, 429 and 5xx with
    /// backoff and jitter (or the server's `Retry-After`), within [`CALL_BUDGET`].
    /// `service` names the API in errors and logs.
    pub async fn send(&self, service: &str, request: RequestBuilder) -> Result<Reply, Error> {
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let this = request
                .try_clone()
                .ok_or_else(|| Error::cloud(service, "the request has a body that cannot be re-sent"))?;
            let remaining = CALL_BUDGET.saturating_sub(started.elapsed());
            // At -v, so that an operator watching a stuck pull sees which call, and which try, it waits on.
            tracing::info!("{service}: attempt {attempt} of {MAX_ATTEMPTS}");
            let outcome = tokio::time::timeout(remaining.min(ATTEMPT_TIMEOUT), send_once(this)).await;
            let (result, server_wait) = match outcome {
                Ok(Ok(reply)) if !is_retryable(reply.status) => return Ok(reply),
                Ok(Ok(reply)) => {
                    let wait = retry_after(&reply.headers);
                    (Ok(reply), wait)
                }
                Ok(Err(e)) if !e.is_transient() => return Err(e.into_error(service)),
                Ok(Err(e)) => (Err(e.into_error(service)), None),
                Err(_) => (
                    Err(Error::unreachable(
                        service,
                        format!("no answer within {}s", remaining.min(ATTEMPT_TIMEOUT).as_secs()),
                    )),
                    None,
                ),
            };
            let wait = match server_wait {
                Some(wait) if wait > MAX_RETRY_AFTER => return result,
                Some(wait) => wait,
                None => backoff(attempt),
            };
            if attempt >= MAX_ATTEMPTS || started.elapsed() + wait >= CALL_BUDGET {
                return result;
            }
            let why = match &result {
                Ok(reply) => format!("HTTP {}", reply.status.as_u16()),
                Err(Error::Cloud { message, .. } | Error::Unreachable { message, .. }) => secret::scrub(message),
                Err(e) => secret::scrub(&e.to_string()),
            };
            tracing::info!("{service}: attempt {attempt} failed ({why}); retrying in {} ms", wait.as_millis());
            tokio::time::sleep(wait).await;
        }
    }

    /// Sends `request` once, with this client's timeouts and no retry: for an
    /// SDK that retries on its own (the AWS SDK, azure_identity). The body is
    /// read whole, up to the same limit as [`Http::send`]'s.
    pub async fn send_once(&self, request: RequestBuilder) -> Result<Reply, SendError> {
        send_once(request).await
    }
}

fn build(builder: reqwest::ClientBuilder) -> Result<Client, Error> {
    build_with_roots(builder.tls_certs_only(tls_roots().iter().cloned()))
}

/// The TLS roots every client verifies with, read once per process (a
/// fetch builds two clients, and a node's store is a few hundred files):
/// the node's own CA store wherever there is one (`SSL_CERT_FILE`,
/// `SSL_CERT_DIR`, or a distribution's bundle and directory, read as OpenSSL
/// reads them), so that an operator's additions and removals hold; else
/// Mozilla's roots built into the binary (see [`node_has_ca_store`]).
fn tls_roots() -> &'static [reqwest::Certificate] {
    static ROOTS: std::sync::OnceLock<Vec<reqwest::Certificate>> = std::sync::OnceLock::new();
    ROOTS.get_or_init(|| {
        let node = match node_has_ca_store(&openssl_probe::probe()) {
            true => rustls_native_certs::load_native_certs().certs,
            false => Vec::new(),
        };
        let roots: Vec<reqwest::Certificate> =
            node.iter().filter_map(|der| reqwest::Certificate::from_der(der.as_ref()).ok()).collect();
        if !roots.is_empty() {
            return roots;
        }
        tracing::info!("no CA store on this node; verifying TLS with the roots built into the binary");
        webpki_root_certs::TLS_SERVER_ROOT_CERTS
            .iter()
            .filter_map(|der| reqwest::Certificate::from_der(der).ok())
            .collect()
    })
}

/// A client from `builder`, which names its TLS roots, with the settings
/// every call shares.
fn build_with_roots(builder: reqwest::ClientBuilder) -> Result<Client, Error> {
    builder
        .user_agent(concat!("kubelet-credential-providers/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(ATTEMPT_TIMEOUT)
        // A redirect could carry an Authorization header elsewhere; no
        // identity or registry API we call redirects.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| Error::Config(format!("cannot set up the HTTP client: {}", innermost_cause(&e))))
}

/// Whether `url` names a metadata service, which is called direct, never
/// through a proxy: a link-local address (169.254.0.0/16, fe80::/10), an
/// address of AWS's fd00:ec2::/32 (IMDS's `fd00:ec2::254`, EKS Pod
/// Identity's `fd00:ec2::23`), or one of the clouds' metadata host names.
pub fn goes_direct(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(v4)) => is_metadata_address(IpAddr::V4(v4)),
        Some(url::Host::Ipv6(v6)) => is_metadata_address(IpAddr::V6(v6)),
        Some(url::Host::Domain(name)) => {
            let name = name.strip_suffix('.').unwrap_or(name);
            METADATA_NAMES.iter().any(|known| known.eq_ignore_ascii_case(name))
        }
        None => false,
    }
}

/// Whether `url` is an http(s) URL of a metadata service ([`goes_direct`]):
/// the one kind of plain-http endpoint a credentials file may name.
pub fn is_metadata_service(url: &str) -> bool {
    Url::parse(url).is_ok_and(|url| matches!(url.scheme(), "http" | "https") && goes_direct(&url))
}

fn is_metadata_address(address: IpAddr) -> bool {
    const AWS_INTERNAL: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0);
    match address {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.is_link_local(),
            None => v6.segments()[0] & 0xffc0 == 0xfe80 || v6.segments()[..2] == AWS_INTERNAL.segments()[..2],
        },
    }
}

/// Why one attempt got no answer to read.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The transport failed: no connection, a timeout, a reset.
    #[error(transparent)]
    Transport(#[from] reqwest::Error),
    /// The answer passed [`MAX_BODY_BYTES`]; the rest was not read.
    #[error("{endpoint} sent an answer larger than {} MiB", MAX_BODY_BYTES / (1024 * 1024))]
    TooLarge { endpoint: String },
}

impl SendError {
    /// Whether a second attempt may not meet it: the connection, not the request.
    pub fn is_transient(&self) -> bool {
        match self {
            SendError::Transport(e) => e.is_connect() || e.is_timeout() || e.is_request() || e.is_body(),
            SendError::TooLarge { .. } => false,
        }
    }

    /// The error an exec reports, naming `service`.
    pub fn into_error(self, service: &str) -> Error {
        match self {
            SendError::Transport(e) => Error::unreachable(service, Unreachable::from_reqwest(&e).to_string()),
            too_large @ SendError::TooLarge { .. } => Error::cloud(service, too_large.to_string()),
        }
    }
}

async fn send_once(request: RequestBuilder) -> Result<Reply, SendError> {
    let mut response = request.send().await?;
    let status = response.status();
    let headers = response.headers().clone();
    let too_large = |url: &Url| SendError::TooLarge { endpoint: endpoint_of(url) };
    if response.content_length().is_some_and(|length| length > MAX_BODY_BYTES as u64) {
        return Err(too_large(response.url()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(too_large(response.url()));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Reply { status, headers, body })
}

/// A URL without its query: where, without what was asked.
fn endpoint_of(url: &Url) -> String {
    format!("{}://{}{}", url.scheme(), url.authority(), url.path())
}

fn is_retryable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
}

/// `Retry-After` in seconds. (The HTTP-date form is not used by the APIs we call.)
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// 250 ms doubling per attempt, capped at 4 s, each wait drawn between half
/// and all of it so that processes that failed together retry apart.
fn backoff(attempt: u32) -> Duration {
    let full =
        Duration::from_millis(250).saturating_mul(1 << attempt.saturating_sub(1).min(4)).min(Duration::from_secs(4));
    full.mul_f64(0.5 + clock::random_fraction() / 2.0)
}

/// Whether the node has a CA store for the TLS verifier to read: the node's
/// own trust (`SSL_CERT_FILE`, `SSL_CERT_DIR`, or a distribution's bundle or
/// directory) is used wherever there is one, so that an operator's additions
/// and removals hold. A static binary dropped on a node without one, or run
/// from an image without one, falls back to Mozilla's roots built into the
/// binary (webpki-root-certs) rather than fail every handshake.
fn node_has_ca_store(probe: &openssl_probe::ProbeResult) -> bool {
    probe.cert_file.is_some() || !probe.cert_dir.is_empty()
}

/// An endpoint that could not be reached, and why (a refused connection, an
/// unreachable network, a timeout): the words an operator on a broken node
/// needs, whichever client made the call. Plugins whose SDK wraps transport
/// errors put this in the chain, and find it again for their error line.
#[derive(Debug, thiserror::Error)]
#[error("cannot reach {endpoint}: {cause}")]
pub struct Unreachable {
    /// The URL without its query: where, without what was asked.
    pub endpoint: String,
    pub cause: String,
}

impl Unreachable {
    /// `url` (without its query) could not be reached because of `error`,
    /// said in the transport's own words.
    pub fn new(url: &reqwest::Url, error: &(dyn std::error::Error + 'static)) -> Unreachable {
        Unreachable::with_cause(url, innermost_cause(error))
    }

    fn with_cause(url: &reqwest::Url, cause: String) -> Unreachable {
        Unreachable { endpoint: endpoint_of(url), cause }
    }

    /// A reqwest failure, with the URL it names.
    pub fn from_reqwest(e: &reqwest::Error) -> Unreachable {
        let cause = if e.is_timeout() { "timed out".to_string() } else { innermost_cause(e) };
        match e.url() {
            Some(url) => Unreachable::with_cause(url, cause),
            None => Unreachable { endpoint: "an endpoint".into(), cause },
        }
    }
}

/// The first error of type `T` in `error`'s chain of sources, itself included:
/// how a plugin finds what it knows under an SDK's wrapping.
pub fn find_source<'a, T: std::error::Error + 'static>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a T> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}

/// The innermost cause of an error: the transport's own words ("Connection
/// refused (os error 111)"); the outer messages only repeat the URL.
pub fn innermost_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut current = e;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}

/// An answer, read whole.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl fmt::Debug for Reply {
    // The body may hold a token: never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reply").field("status", &self.status).field("body_bytes", &self.body.len()).finish()
    }
}

impl Reply {
    pub fn is_success(&self) -> bool {
        self.status.is_success()
    }

    /// The header `name`, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as `T`, or an error naming `service` if it is not.
    pub fn json<T: DeserializeOwned>(&self, service: &str) -> Result<T, Error> {
        serde_json::from_slice(&self.body).map_err(|e| {
            // serde's message says where and what was expected, never the value.
            Error::http(
                service,
                self.status.as_u16(),
                format!("the answer is not what the API documents (HTTP {}): {e}", self.status.as_u16()),
            )
        })
    }

    /// The body as `T` if the call succeeded, else the cloud's error.
    pub fn success_json<T: DeserializeOwned>(&self, service: &str) -> Result<T, Error> {
        if self.is_success() { self.json(service) } else { Err(self.error(service)) }
    }

    /// The body as text if the call succeeded, else the cloud's error.
    pub fn success_text(&self, service: &str) -> Result<String, Error> {
        if !self.is_success() {
            return Err(self.error(service));
        }
        String::from_utf8(self.body.clone()).map_err(|_| Error::cloud(service, "the answer is not UTF-8 text"))
    }

    /// The cloud's refusal as an error: the status and what the cloud said.
    /// 401 and 403 are [`Error::Denied`]; `check` reports them as such.
    pub fn error(&self, service: &str) -> Error {
        Error::http(service, self.status.as_u16(), self.describe())
    }

    /// `HTTP 403 Forbidden: <the cloud's message>`, on one line, scrubbed.
    pub fn describe(&self) -> String {
        let code = self.status.as_u16();
        let head = match self.status.canonical_reason() {
            Some(reason) => format!("HTTP {code} {reason}"),
            None => format!("HTTP {code}"),
        };
        let message = self.cloud_message();
        if message.is_empty() { head } else { format!("{head}: {message}") }
    }

    /// What the cloud said, from the error shapes the identity APIs use
    /// (OAuth's `error_description`, Google's and Azure's `error.message`,
    /// the registries' `errors[].message`), or the start of the text.
    pub fn cloud_message(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let message = match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(json) => json_message(&json).unwrap_or_default(),
            Err(_) => text.chars().take(300).collect(),
        };
        secret::scrub(&message.split_whitespace().collect::<Vec<_>>().join(" "))
    }
}

fn json_message(json: &serde_json::Value) -> Option<String> {
    let text = |v: &serde_json::Value| v.as_str().map(str::to_string);
    let field = |name: &str| json.get(name).and_then(text);
    if let (Some(code), Some(description)) = (field("error"), field("error_description")) {
        return Some(format!("{code}: {description}"));
    }
    field("error_description")
        .or_else(|| json.get("error").and_then(|e| e.get("message")).and_then(text))
        .or_else(|| json.pointer("/errors/0/message").and_then(text))
        .or_else(|| field("message"))
        .or_else(|| field("Message"))
        .or_else(|| field("errorMessage"))
        .or_else(|| field("error"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, body: &str) -> Reply {
        Reply {
            status: StatusCode::from_u16(status).expect("status"),
            headers: HeaderMap::new(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn reads_the_clouds_error_shapes() {
        assert_eq!(
            reply(400, r#"{"error":"invalid_grant","error_description":"bad token"}"#).describe(),
            "HTTP 400 Bad Request: invalid_grant: bad token"
        );
        assert_eq!(
            reply(403, r#"{"error":{"code":403,"message":"Permission denied"}}"#).describe(),
            "HTTP 403 Forbidden: Permission denied"
        );
        assert_eq!(
            reply(401, r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#).describe(),
            "HTTP 401 Unauthorized: authentication required"
        );
        assert_eq!(
            reply(502, "<html>\n bad gateway\n</html>").describe(),
            "HTTP 502 Bad Gateway: <html> bad gateway </html>"
        );
        assert_eq!(reply(500, "").describe(), "HTTP 500 Internal Server Error");
    }

    #[test]
    fn backoff_grows_and_stays_bounded() {
        for attempt in 1..10 {
            let wait = backoff(attempt);
            let full = Duration::from_millis(250 * (1 << (attempt - 1).min(4))).min(Duration::from_secs(4));
            assert!(wait >= full / 2 && wait <= full, "{attempt}: {wait:?}");
        }
        let fraction = clock::random_fraction();
        assert!((0.0..1.0).contains(&fraction));
    }

    #[test]
    fn the_built_in_roots_are_a_fallback_only() {
        let none = openssl_probe::ProbeResult { cert_file: None, cert_dir: Vec::new() };
        assert!(!node_has_ca_store(&none));
        let file = openssl_probe::ProbeResult {
            cert_file: Some("/etc/ssl/certs/ca-certificates.crt".into()),
            cert_dir: Vec::new(),
        };
        assert!(node_has_ca_store(&file));
        let dir = openssl_probe::ProbeResult { cert_file: None, cert_dir: vec!["/etc/ssl/certs".into()] };
        assert!(node_has_ca_store(&dir));
        assert!(webpki_root_certs::TLS_SERVER_ROOT_CERTS.iter().all(|der| reqwest::Certificate::from_der(der).is_ok()));
        assert!(webpki_root_certs::TLS_SERVER_ROOT_CERTS.len() > 100);
    }

    #[test]
    fn metadata_services_go_direct_and_nothing_else_does() {
        let direct = |url: &str| goes_direct(&Url::parse(url).expect(url));
        for url in [
            "http://169.254.169.254/latest/api/token",
            "http://169.254.170.23/v1/credentials",
            "http://169.254.170.2/v2/credentials/x",
            "http://[fd00:ec2::254]/latest/api/token",
            "http://[fd00:ec2::23]/v1/credentials",
            "http://[fe80::a9fe:a9fe]/",
            "http://[::ffff:169.254.169.254]/",
            "http://metadata.google.internal/computeMetadata/v1/",
            "http://METADATA.google.internal./computeMetadata/v1/",
            "http://metadata.goog/",
            "http://metadata/computeMetadata/v1/",
            "http://api.metadata.cloud.ibm.com/identity/v1/token",
        ] {
            assert!(direct(url), "{url}");
        }
        for url in [
            "https://api.ecr.us-east-1.amazonaws.com/",
            "https://oauth2.googleapis.com/token",
            "https://login.microsoftonline.com/t/oauth2/v2.0/token",
            "http://metadata.google.internal.evil.io/",
            "http://169.254.169.254.nip.io/",
            "http://127.0.0.1:8080/",
            "http://[::1]/",
            "http://[fd00:ec3::23]/",
            "http://10.0.0.1/",
        ] {
            assert!(!direct(url), "{url}");
        }
    }

    #[test]
    fn debug_never_shows_the_body() {
        let text = format!("{:?}", reply(200, r#"{"access_token":"sekrit-value"}"#));
        assert!(!text.contains("sekrit"), "{text}");
    }
}
