//! The transport azure_identity's calls go through: the core's HTTP client
//! (its proxy rule, so IMDS is never proxied, and its cap on answers), and
//! the endpoint overrides applied by origin.
//!
//! azure_identity insists on an https authority host, which is right for a
//! node and impossible for a test server on loopback. So the credentials are
//! built for the cloud's real authority and IMDS addresses, and this transport
//! sends what is addressed there to the override (`AZURE_AUTHORITY_HOST` or
//! the endpoint `login`; the endpoint `imds`), which the core has already
//! checked is https or loopback.
//!
//! azure_identity retries a call that fails to connect, with waits that grow
//! past ten seconds for IMDS; an endpoint that refuses connections or never
//! answers would hold the exec for its whole budget and end in a bare
//! timeout. So the transport lets one such failure be retried and makes the
//! second final, saying what failed and where.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use azure_core::error::ErrorKind;
use azure_core::http::headers::{HeaderName, HeaderValue, Headers};
use azure_core::http::{AsyncRawResponse, Body, HttpClient, Request, Transport, Url};
use credential_provider::http::{Http, SendError, Unreachable};

/// The IMDS origin azure_identity calls for managed identities.
pub const IMDS_ORIGIN: &str = "http://169.254.169.254";

/// Transport failures (a refused connection, an unreachable network, a
/// connection that timed out) after which the next is not retried.
const RETRIED_TRANSPORT_FAILURES: u32 = 1;

/// Sends requests through `http`, rewriting the origins in `routes`.
#[derive(Debug)]
pub struct RoutedTransport {
    http: Http,
    /// (origin as the credential addresses it, base URL to use instead).
    routes: Vec<(String, String)>,
    /// Transport failures so far: the transport lives for one fetch.
    failures: AtomicU32,
}

impl RoutedTransport {
    pub fn new(http: Http, routes: Vec<(String, String)>) -> RoutedTransport {
        RoutedTransport { http, routes, failures: AtomicU32::new(0) }
    }

    pub fn into_transport(self) -> Transport {
        Transport::new(Arc::new(self))
    }

    /// `url` with its origin replaced when a route names it.
    fn route(&self, url: &Url) -> Url {
        let origin = url.origin().ascii_serialization();
        for (from, to) in &self.routes {
            if origin.eq_ignore_ascii_case(from.trim_end_matches('/'))
                && let Ok(mut routed) = Url::parse(to)
            {
                let base = routed.path().trim_end_matches('/').to_string();
                routed.set_path(&format!("{base}{}", url.path()));
                routed.set_query(url.query());
                return routed;
            }
        }
        url.clone()
    }
}

#[async_trait::async_trait]
impl HttpClient for RoutedTransport {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        let url = self.route(request.url());
        let method = reqwest::Method::from_bytes(request.method().as_str().as_bytes())
            .map_err(|e| azure_core::Error::new(ErrorKind::Other, e))?;
        let mut builder = self.http.request(method, url.as_str());
        for (name, value) in request.headers().iter() {
            builder = builder.header(name.as_str(), value.as_str());
        }
        builder = match request.body() {
            Body::Bytes(bytes) => builder.body(bytes.clone()),
            // Entra ID's and IMDS's token calls send forms, never streams.
            _ => return Err(azure_core::Error::with_message(ErrorKind::Other, "a streamed request body is not sent")),
        };
        let reply = self.http.send_once(builder).await.map_err(|e| self.send_failure(e, &url))?;
        let headers: HashMap<HeaderName, HeaderValue> = reply
            .headers
            .iter()
            .filter_map(|(name, value)| {
                let value = value.to_str().ok()?;
                Some((HeaderName::from(name.as_str().to_owned()), HeaderValue::from(value.to_owned())))
            })
            .collect();
        Ok(AsyncRawResponse::from_bytes(reply.status.as_u16().into(), Headers::from(headers), reply.body))
    }
}

impl RoutedTransport {
    /// A failure to reach `url`, with its cause and the endpoint (without its
    /// query); retried by azure_identity the first time only. An answer over
    /// the core's size limit is final.
    fn send_failure(&self, e: SendError, url: &Url) -> azure_core::Error {
        let e = match e {
            SendError::Transport(e) => e,
            too_large @ SendError::TooLarge { .. } => return azure_core::Error::new(ErrorKind::Other, too_large),
        };
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let failure = Unreachable::new(url, &e);
        tracing::info!("{failure} (attempt {failures})");
        let kind = match (failures > RETRIED_TRANSPORT_FAILURES, e.is_connect()) {
            (true, _) => ErrorKind::Other,
            (false, true) => ErrorKind::Connection,
            (false, false) => ErrorKind::Io,
        };
        azure_core::Error::new(kind, failure)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_only_the_routed_origins() {
        let transport = RoutedTransport::new(
            Http::new().expect("client"),
            vec![
                ("https://login.microsoftonline.com".into(), "http://127.0.0.1:9000/prefix".into()),
                (IMDS_ORIGIN.into(), "http://127.0.0.1:9001".into()),
            ],
        );
        let route = |url: &str| transport.route(&Url::parse(url).expect("url")).to_string();
        assert_eq!(
            route("https://login.microsoftonline.com/t/oauth2/v2.0/token?x=1"),
            "http://127.0.0.1:9000/prefix/t/oauth2/v2.0/token?x=1"
        );
        assert_eq!(
            route("http://169.254.169.254/metadata/identity/oauth2/token?resource=r"),
            "http://127.0.0.1:9001/metadata/identity/oauth2/token?resource=r"
        );
        assert_eq!(route("https://login.microsoftonline.us/t"), "https://login.microsoftonline.us/t");
        assert_eq!(route("https://login.microsoftonline.com.evil.io/t"), "https://login.microsoftonline.com.evil.io/t");
    }
}
