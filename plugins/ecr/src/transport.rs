//! The HTTP client the AWS SDK's calls go through: the core's (reqwest on
//! rustls over aws-lc-rs, proxies from the environment), so that the plugin
//! carries one HTTP stack instead of the SDK's own beside the core's.
//!
//! The SDK keeps its timeouts, retries and error classification: each call
//! here is one attempt. When the SDK retries after a transient error it asks
//! for the connection to be dropped ("poisoned"); reqwest does not hand out
//! its connections, so the whole pool is replaced instead, which a plugin
//! that makes a handful of calls per exec never notices. Calls to the
//! instance metadata service (a link-local address) never go through a
//! proxy, which could not reach it and must not see its tokens.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::client::connection::{CaptureSmithyConnection, ConnectionMetadata};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use credential_provider::Error;
use credential_provider::http::{Http, Unreachable};

/// The SDK's HTTP client, on the core's.
#[derive(Clone, Debug)]
pub struct SdkTransport {
    pools: Arc<Mutex<Pools>>,
}

/// The clients, each with its pool of connections.
#[derive(Clone, Debug)]
struct Pools {
    /// For AWS's APIs, through a proxy when the environment names one.
    proxied: Http,
    /// For the instance metadata service.
    direct: Http,
}

impl Pools {
    fn new() -> Result<Pools, Error> {
        Ok(Pools { proxied: Http::new()?, direct: Http::direct()? })
    }
}

impl SdkTransport {
    pub fn new() -> Result<SdkTransport, Error> {
        Ok(SdkTransport { pools: Arc::new(Mutex::new(Pools::new()?)) })
    }

    pub fn into_shared(self) -> SharedHttpClient {
        SharedHttpClient::new(self)
    }

    /// Replaces every pooled connection: the SDK's "poison" of one.
    fn poison(&self) {
        match (Pools::new(), self.pools.lock()) {
            (Ok(fresh), Ok(mut pools)) => *pools = fresh,
            (Err(e), _) => tracing::debug!("cannot replace the connection pool ({e}); keeping it"),
            (_, Err(_)) => {}
        }
    }

    async fn send(self, mut request: HttpRequest) -> Result<HttpResponse, ConnectorError> {
        let body = request.take_body().bytes().map(<[u8]>::to_vec).ok_or_else(|| {
            ConnectorError::user("the SDK sent a streaming body, which this client does not send".into())
        })?;
        let url = reqwest::Url::parse(request.uri()).map_err(|e| ConnectorError::user(e.into()))?;
        let method =
            reqwest::Method::from_bytes(request.method().as_bytes()).map_err(|e| ConnectorError::user(e.into()))?;
        let direct = url.host_str().is_some_and(is_metadata_address);
        let http = match self.pools.lock() {
            Ok(pools) if direct => pools.direct.clone(),
            Ok(pools) => pools.proxied.clone(),
            Err(_) => return Err(ConnectorError::other("the connection pool is unusable".into(), None)),
        };
        if let Some(capture) = request.extension::<CaptureSmithyConnection>() {
            let transport = self.clone();
            capture.set_connection_retriever(move || {
                let transport = transport.clone();
                let metadata =
                    ConnectionMetadata::builder().proxied(!direct).poison_fn(move || transport.poison()).build();
                Some(metadata)
            });
        }
        let mut builder = http.client().request(method, url).body(body);
        for (name, value) in request.headers() {
            builder = builder.header(name, value);
        }
        let reply = http.send_once(builder).await.map_err(connector_error)?;
        let mut response = http::Response::builder().status(reply.status);
        if let Some(headers) = response.headers_mut() {
            *headers = reply.headers;
        }
        let response = response.body(SdkBody::from(reply.body)).map_err(|e| ConnectorError::other(e.into(), None))?;
        HttpResponse::try_from(response).map_err(|e| ConnectorError::other(e.into(), None))
    }
}

impl HttpClient for SdkTransport {
    fn http_connector(&self, _: &HttpConnectorSettings, _: &RuntimeComponents) -> SharedHttpConnector {
        // The core's client has timeouts of its own, the same as the SDK's
        // configuration asks for (see `Ecr::sdk_config`).
        SharedHttpConnector::new(self.clone())
    }
}

impl HttpConnector for SdkTransport {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        HttpConnectorFuture::new(self.clone().send(request))
    }
}

/// A transport failure as the SDK classifies it: timeouts and connection
/// failures are transient (the SDK retries them), anything else is not.
/// Transport failures carry an [`Unreachable`], which the plugin's error line
/// finds again under the SDK's wrapping.
fn connector_error(e: reqwest::Error) -> ConnectorError {
    if e.is_timeout() {
        ConnectorError::timeout(Box::new(Unreachable::from_reqwest(&e)))
    } else if e.is_connect() || e.is_request() || e.is_body() {
        ConnectorError::io(Box::new(Unreachable::from_reqwest(&e)))
    } else {
        ConnectorError::other(e.into(), None)
    }
}

/// Whether `host` (as a URL spells it) is an instance metadata address: a
/// link-local one (169.254.169.254, fe80::/10), or IMDS's IPv6 address.
fn is_metadata_address(host: &str) -> bool {
    match host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => v4.is_link_local(),
        Ok(IpAddr::V6(v6)) => v6.segments()[0] & 0xffc0 == 0xfe80 || v6 == IMDS_IPV6,
        Err(_) => false,
    }
}

/// The instance metadata service's IPv6 address.
const IMDS_IPV6: std::net::Ipv6Addr = std::net::Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_addresses_go_direct() {
        assert!(is_metadata_address("169.254.169.254"));
        assert!(is_metadata_address("[fd00:ec2::254]"));
        assert!(is_metadata_address("[fe80::1]"));
        assert!(!is_metadata_address("api.ecr.us-east-1.amazonaws.com"));
        assert!(!is_metadata_address("127.0.0.1"));
        assert!(!is_metadata_address("[fd00:ec2::253]"));
    }
}
