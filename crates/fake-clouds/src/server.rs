//! A loopback HTTP server on its own thread, for tests that are not async.

use std::net::SocketAddr;
use std::thread;
use std::time::Duration;

use axum::Router;
use tokio::sync::oneshot;

/// How a fake cloud's token calls should fail.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// Answer with this status and the cloud's error body (429 carries Retry-After).
    Status(u16),
    /// Answer correctly, after this long.
    Slow(Duration),
    /// Answer 200 with a body that is not JSON.
    Garbage,
    /// Answer with a token that expired an hour ago.
    Expired,
    /// Drop the connection without an answer, as a reset does.
    Reset,
    /// Answer 200 with a JSON body cut short.
    Truncated,
    /// Answer 200 with a body far larger than any token answer (6 MiB).
    Oversized,
}

/// Ends the request by dropping its connection: the handler's task unwinds
/// without a panic message, and the client sees the connection close.
pub fn reset_connection() -> ! {
    std::panic::resume_unwind(Box::new("the fake resets the connection"))
}

/// What `fault` makes of a token call: `Err` is the answer to send instead;
/// `Ok` is the lifetime to give the token, negative when it must be expired.
/// `error` renders a status in the cloud's own error shape; a 429 carries
/// `Retry-After: 1`.
pub async fn apply_fault(
    fault: Option<Fault>,
    lifetime: i64,
    error: impl FnOnce(axum::http::StatusCode) -> axum::response::Response,
) -> Result<i64, axum::response::Response> {
    use axum::http::{HeaderValue, StatusCode};
    use axum::response::IntoResponse as _;
    match fault {
        Some(Fault::Status(status)) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = error(status);
            if status == StatusCode::TOO_MANY_REQUESTS {
                response.headers_mut().insert("retry-after", HeaderValue::from_static("1"));
            }
            Err(response)
        }
        Some(Fault::Slow(delay)) => {
            tokio::time::sleep(delay).await;
            Ok(lifetime)
        }
        Some(Fault::Garbage) => Err((StatusCode::OK, "<html>surprise</html>").into_response()),
        Some(Fault::Reset) => reset_connection(),
        Some(Fault::Truncated) => Err(truncated_json()),
        Some(Fault::Oversized) => Err(oversized_json()),
        Some(Fault::Expired) => Ok(-3600),
        None => Ok(lifetime),
    }
}

/// A 200 whose JSON body stops halfway.
pub fn truncated_json() -> axum::response::Response {
    use axum::response::IntoResponse as _;
    (axum::http::StatusCode::OK, [("content-type", "application/json")], "{\"access_token\": \"ya29.cut")
        .into_response()
}

/// A 200 whose JSON body is 6 MiB long, past what a client should read.
pub fn oversized_json() -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let body = format!("{{\"access_token\": \"{}\"}}", "x".repeat(6 * 1024 * 1024));
    (axum::http::StatusCode::OK, [("content-type", "application/json")], body).into_response()
}

/// Binds `address` and runs `serve` with its listener on a thread and a
/// runtime of its own, until the returned sender is dropped or sent to (the
/// receiver `serve` is given). Connections still open are dropped with the
/// runtime. The address bound, and the sender.
pub fn serve_at<F, Fut>(address: &str, serve: F) -> (SocketAddr, oneshot::Sender<()>)
where
    F: FnOnce(tokio::net::TcpListener, oneshot::Receiver<()>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let listener = std::net::TcpListener::bind(address).unwrap_or_else(|e| panic!("bind {address}: {e}"));
    listener.set_nonblocking(true).expect("non-blocking listener");
    let addr = listener.local_addr().expect("local address");
    let (shutdown, stopped) = oneshot::channel::<()>();
    thread::spawn(move || {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("server runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            serve(listener, stopped).await;
        });
        runtime.shutdown_background();
    });
    (addr, shutdown)
}

/// A running server; it stops when dropped.
#[derive(Debug)]
pub struct FakeServer {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
}

impl FakeServer {
    /// Serves `router` on 127.0.0.1 at a free port.
    pub fn start(router: Router) -> FakeServer {
        FakeServer::start_at(router, "127.0.0.1:0")
    }

    /// Serves `router` at `address`: a metadata service's own address and
    /// port, inside a test's private network namespace ([`crate::netns`]).
    pub fn start_at(router: Router, address: &str) -> FakeServer {
        let (addr, shutdown) = serve_at(address, |listener, stopped| async move {
            let server = axum::serve(listener, router).with_graceful_shutdown(async {
                let _ = stopped.await;
            });
            let _ = server.await;
        });
        FakeServer { addr, shutdown: Some(shutdown) }
    }

    /// `http://127.0.0.1:<port>` (or the address it serves at; an IPv6 one in brackets).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// Locks a fake's state. A test that panicked while holding the lock has
/// already failed; the others may go on reading the state it left.
pub fn lock<T>(state: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A JWT with `claims` and a signature nobody checks, as the fakes issue.
pub fn fake_jwt(claims: &serde_json::Value) -> String {
    use base64::Engine as _;
    let encode = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    format!(
        "{}.{}.{}",
        encode(br#"{"alg":"RS256","typ":"JWT"}"#),
        encode(claims.to_string().as_bytes()),
        encode(nonce().as_bytes())
    )
}

/// A value no test can guess, for secrets the fakes hand out: tests then
/// search stderr for exactly these strings.
pub fn nonce() -> String {
    use std::hash::{BuildHasher, Hasher};
    let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
    format!("{random:016x}")
}

/// An endpoint nothing listens on: connections to it are refused at once.
pub fn refusing_address() -> SocketAddr {
    // A port the kernel just handed out and took back: nothing listens there.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    listener.local_addr().expect("its address")
}

/// An endpoint that accepts connections and never answers, as a metadata
/// address behind a firewall that drops packets looks to a client that
/// connected: it waits until its read timeout. Stops when dropped.
#[derive(Debug)]
pub struct SilentServer {
    listener: std::net::TcpListener,
}

impl SilentServer {
    pub fn start() -> SilentServer {
        // The kernel completes the handshakes into the backlog; nothing reads.
        SilentServer { listener: std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port") }
    }

    pub fn address(&self) -> SocketAddr {
        self.listener.local_addr().expect("its address")
    }
}
