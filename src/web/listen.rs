//! The listener: accepts TCP connections, speaks TLS when the web config says so, and serves the
//! router over HTTP/1.1 (hyper), one task per connection.
//!
//! Bounds, so that no client can hold the server:
//! - at most `max_connections` at once: beyond it bilge stops accepting (the kernel's backlog
//!   holds the rest) until one closes, and says so in the log at most once a minute;
//! - a new connection has `header_timeout` for its TLS handshake and its first request's header,
//!   counted from the accept, and a connection between requests has `idle_timeout` until the
//!   next one starts, then `header_timeout` for that header; a connection past either is closed
//!   (nothing of a request has reached a handler then). Body reads are bounded by the handlers,
//!   which know which requests have bodies;
//! - a handler that panics answers a JSON 500 and the connection goes on;
//! - at shutdown, connections get `shutdown_grace` to finish their requests.
//!
//! [`raise_open_files_limit`] lifts the soft limit on open files to the hard one at start, as Go's
//! runtime does, so thousands of sockets fit.

use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::time::Instant as Clock;

use axum::Router;
use axum::body::Body;
use axum::response::IntoResponse;
use futures_util::FutureExt as _;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use super::Live;
use crate::http_error::AppError;
use crate::sync::lock;

/// The listener's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenSettings {
    /// Most connections open at once.
    pub max_connections: usize,
    /// TLS handshake plus a request's header.
    pub header_timeout: Duration,
    /// Between two requests on one connection.
    pub idle_timeout: Duration,
    /// How long connections may finish their requests at shutdown.
    pub shutdown_grace: Duration,
}

/// Open files kept for everything but client connections (the store, Docker, logs, the web
/// config's files).
pub const RESERVED_FILES: u64 = 64;

/// How often a connection busy in a handler looks again at its clock.
const BUSY_RECHECK: Duration = Duration::from_secs(1);

/// Least time between two "connection limit reached" warnings.
const SATURATED_LOG_EVERY: Duration = Duration::from_secs(60);

/// Raises the soft limit on open files to the hard limit; returns the soft limit in force
/// afterwards (`None` when it cannot be read). A refusal (a seccomp filter, say) is logged and
/// the old limit stays.
pub fn raise_open_files_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    match (limit.current, limit.maximum) {
        (Some(soft), Some(hard)) if soft < hard => {
            let raised = rustix::process::Rlimit {
                current: Some(hard),
                maximum: Some(hard),
            };
            match setrlimit(Resource::Nofile, raised) {
                Ok(()) => {
                    tracing::debug!(from = soft, to = hard, "raised the open files limit");
                    Some(hard)
                }
                Err(e) => {
                    tracing::warn!(soft, hard, error = %e, "cannot raise the open files limit; it limits --web.max-connections");
                    Some(soft)
                }
            }
        }
        (soft, _) => soft,
    }
}

/// The connection cap that fits under an open files limit of `files`, and whether `wanted`
/// had to be lowered for it.
pub fn connection_cap(wanted: usize, files: Option<u64>) -> (usize, bool) {
    let Some(files) = files else {
        return (wanted, false);
    };
    let room = usize::try_from(files.saturating_sub(RESERVED_FILES))
        .unwrap_or(usize::MAX)
        .max(1);
    if wanted > room {
        (room, true)
    } else {
        (wanted, false)
    }
}

/// Serves `app` on `listener` with the web config of `live` until `shutdown` resolves, then
/// lets open connections finish for the grace period.
pub async fn serve(
    listener: TcpListener,
    live: Arc<Live>,
    app: Router,
    settings: ListenSettings,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let max = settings.max_connections.max(1);
    let permits = Arc::new(Semaphore::new(max));
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    tokio::spawn(async move {
        shutdown.await;
        stop.cancel();
    });
    let mut last_saturated: Option<Instant> = None;
    loop {
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if last_saturated.is_none_or(|t| t.elapsed() >= SATURATED_LOG_EVERY) {
                    tracing::warn!(
                        max_connections = max,
                        "connection limit reached; new connections wait until one closes (--web.max-connections)"
                    );
                    last_saturated = Some(Instant::now());
                }
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => break,
                    p = permits.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                }
            }
        };
        let accepted = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            r = listener.accept() => r,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of files (EMFILE/ENFILE) or a connection gone before it was taken: wait a
                // little rather than spin, and go on.
                tracing::debug!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let tls = live.current().tls.clone();
        let app = app.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            connection(tcp, tls, app, settings, cancel).await;
            tracing::trace!(%peer, "connection closed");
            drop(permit);
        });
    }
    drop(listener);
    // Every connection holds a permit: all of them back means all connections are done.
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    if tokio::time::timeout(settings.shutdown_grace, permits.acquire_many(all))
        .await
        .is_err()
    {
        tracing::info!(
            open = max - permits.available_permits(),
            "connections still open after the shutdown grace period are closed"
        );
    }
}

/// Serves one connection to its end, a timeout, or shutdown.
async fn connection(
    tcp: TcpStream,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: Router,
    settings: ListenSettings,
    cancel: CancellationToken,
) {
    let activity = Arc::new(Activity::new());
    match tls {
        None => serve_http(tcp, activity, app, settings, cancel).await,
        Some(config) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            let handshake = tokio::time::timeout(settings.header_timeout, acceptor.accept(tcp));
            let stream = tokio::select! {
                _ = cancel.cancelled() => return,
                r = handshake => match r {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!("TLS handshake timed out");
                        return;
                    }
                },
            };
            serve_http(stream, activity, app, settings, cancel).await;
        }
    }
}

/// HTTP/1.1 over `io` until the client closes, a timeout passes or shutdown asks.
async fn serve_http<IO>(
    io: IO,
    activity: Arc<Activity>,
    app: Router,
    settings: ListenSettings,
    cancel: CancellationToken,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let act = activity.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        act.set(Phase::Busy);
        let app = app.clone();
        let act = act.clone();
        async move {
            let answer = AssertUnwindSafe(app.oneshot(req.map(Body::new)))
                .catch_unwind()
                .await;
            act.set(Phase::Idle);
            Ok::<_, Infallible>(match answer {
                Ok(Ok(resp)) => resp,
                Ok(Err(never)) => match never {},
                Err(_) => AppError::internal("a request handler panicked").into_response(),
            })
        }
    });
    let watched = Watched {
        io,
        activity: activity.clone(),
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    // bilge's own clock (Activity) bounds headers and idle time; hyper's needs a timer.
    builder.keep_alive(true).header_read_timeout(None);
    let conn = builder.serve_connection(TokioIo::new(watched), service);
    tokio::pin!(conn);
    let expired = activity.expired(settings.header_timeout, settings.idle_timeout);
    tokio::pin!(expired);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        _ = &mut expired => tracing::debug!("connection timed out (header or idle)"),
        _ = cancel.cancelled() => {
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = &mut expired => {}
            }
        }
    }
}

/// Where a connection is in its request cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for (the rest of) a request's header, or a TLS handshake.
    Head,
    /// A handler has the request.
    Busy,
    /// Between requests.
    Idle,
}

/// A connection's phase and when it began, shared by its reader, its service and its watchdog.
#[derive(Debug)]
struct Activity {
    /// The phase and its start.
    state: Mutex<(Phase, Clock)>,
}

impl Activity {
    /// A connection just accepted: waiting for a header.
    fn new() -> Activity {
        Activity {
            state: Mutex::new((Phase::Head, Clock::now())),
        }
    }

    /// Enters `phase` now.
    fn set(&self, phase: Phase) {
        *lock(&self.state) = (phase, Clock::now());
    }

    /// Bytes arrived: an idle connection starts a request.
    fn read(&self) {
        let mut s = lock(&self.state);
        if s.0 == Phase::Idle {
            *s = (Phase::Head, Clock::now());
        }
    }

    /// Resolves once the connection overstays its phase's limit.
    async fn expired(&self, header: Duration, idle: Duration) {
        loop {
            let (phase, since) = *lock(&self.state);
            let limit = match phase {
                Phase::Head => header,
                Phase::Idle => idle,
                Phase::Busy => {
                    tokio::time::sleep(BUSY_RECHECK).await;
                    continue;
                }
            };
            let deadline = since + limit;
            if Clock::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// A stream that tells its connection's [`Activity`] when bytes arrive.
#[derive(Debug)]
struct Watched<IO> {
    /// The stream (TCP, or TLS's plaintext side).
    io: IO,
    /// Its connection's clock.
    activity: Arc<Activity>,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read();
        }
        r
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_cap_fits_under_the_open_files_limit() {
        assert_eq!(connection_cap(4096, Some(1_048_576)), (4096, false));
        assert_eq!(connection_cap(4096, Some(1024)), (960, true));
        assert_eq!(connection_cap(4096, None), (4096, false));
        assert_eq!(connection_cap(10, Some(3)), (1, true));
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_times_out_by_its_phase() {
        let a = Activity::new();
        let header = Duration::from_secs(10);
        let idle = Duration::from_secs(60);
        let start = tokio::time::Instant::now();
        a.expired(header, idle).await;
        assert_eq!(
            start.elapsed().as_secs(),
            10,
            "a new connection has the header timeout"
        );
        a.set(Phase::Idle);
        let start = tokio::time::Instant::now();
        a.expired(header, idle).await;
        assert_eq!(
            start.elapsed().as_secs(),
            60,
            "between requests: the idle timeout"
        );
        a.set(Phase::Idle);
        a.read();
        let start = tokio::time::Instant::now();
        a.expired(header, idle).await;
        assert_eq!(
            start.elapsed().as_secs(),
            10,
            "a started request: the header timeout"
        );
    }
}
