//! The HTTP client the AWS SDK's calls go through: the core's (reqwest on
//! rustls over aws-lc-rs, proxies from the environment), so that the plugin
//! carries one HTTP stack instead of the SDK's own beside the core's.
//!
//! The SDK keeps its timeouts, retries and error classification: each call
//! here is one attempt. When the SDK retries after a transient error it asks
//! for the connection to be dropped ("poisoned"); reqwest does not hand out
//! its connections, so the whole pool is replaced instead, which a plugin
//! that makes a handful of calls per exec never notices. The core's proxy
//! rule holds here as for every call: IMDS and EKS Pod Identity direct, AWS's
//! APIs through the environment's proxy.

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
use credential_provider::http::{Http, SendError, Unreachable, goes_direct};

/// The SDK's HTTP client, on the core's.
#[derive(Clone, Debug)]
pub struct SdkTransport {
    /// The client and its pool of connections, replaced when the SDK poisons one.
    pool: Arc<Mutex<Http>>,
}

impl SdkTransport {
    pub fn new() -> Result<SdkTransport, Error> {
        Ok(SdkTransport { pool: Arc::new(Mutex::new(Http::new()?)) })
    }

    pub fn into_shared(self) -> SharedHttpClient {
        SharedHttpClient::new(self)
    }

    /// Replaces every pooled connection: the SDK's "poison" of one.
    fn poison(&self) {
        match (Http::new(), self.pool.lock()) {
            (Ok(fresh), Ok(mut pool)) => *pool = fresh,
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
        let direct = goes_direct(&url);
        let http = match self.pool.lock() {
            Ok(pool) => pool.clone(),
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
        let mut builder = http.request(method, url.as_str()).body(body);
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
/// finds again under the SDK's wrapping. An answer over the core's size limit
/// is final.
fn connector_error(e: SendError) -> ConnectorError {
    let e = match e {
        SendError::Transport(e) => e,
        too_large @ SendError::TooLarge { .. } => return ConnectorError::other(too_large.into(), None),
    };
    if e.is_timeout() {
        ConnectorError::timeout(Box::new(Unreachable::from_reqwest(&e)))
    } else if e.is_connect() || e.is_request() || e.is_body() {
        ConnectorError::io(Box::new(Unreachable::from_reqwest(&e)))
    } else {
        ConnectorError::other(e.into(), None)
    }
}
