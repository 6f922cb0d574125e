//! The transport azure_identity's calls go through: the core's HTTP client,
//! and the endpoint overrides applied by origin.
//!
//! azure_identity insists on an https authority host, which is right for a
//! node and impossible for a test server on loopback. So the credentials are
//! built for the cloud's real authority and IMDS addresses, and this transport
//! sends what is addressed there to the override (`AZURE_AUTHORITY_HOST` or
//! the endpoint `login`; the endpoint `imds`), which the core has already
//! checked is https or loopback.

use std::sync::Arc;

use azure_core::http::{AsyncRawResponse, HttpClient, Request, Transport, Url};

/// The IMDS origin azure_identity calls for managed identities.
pub const IMDS_ORIGIN: &str = "http://169.254.169.254";

/// Sends requests through `client`, rewriting the origins in `routes`.
#[derive(Debug)]
pub struct RoutedTransport {
    client: reqwest::Client,
    /// (origin as the credential addresses it, base URL to use instead).
    routes: Vec<(String, String)>,
}

impl RoutedTransport {
    pub fn new(client: reqwest::Client, routes: Vec<(String, String)>) -> RoutedTransport {
        RoutedTransport { client, routes }
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
        let routed = self.route(request.url());
        if &routed == request.url() {
            return self.client.execute_request(request).await;
        }
        let mut request = request.clone();
        *request.url_mut() = routed;
        self.client.execute_request(&request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_only_the_routed_origins() {
        let transport = RoutedTransport::new(
            reqwest::Client::new(),
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
