//! The global connection cap of [`serve`](crate::serve()) (SPEC §7) and the accept loop's
//! error log.
//!
//! Every accepted socket holds a [`Permit`] for as long as it is open, whichever task owns
//! it by then (hyper's connection, a direct SSE stream, a WebSocket's own task): the socket
//! is wrapped in [`Counted`]. Past the cap a new connection is not served: it gets a quick
//! `503` with `Retry-After`, except for `GET /healthz`, which is still answered, so that a
//! load balancer does not take a full server for a dead one. The cap sits below the
//! process's descriptor limit, so these answers have descriptors to use.

use std::fs;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use dualcast_layers::error::{ErrorResponse, ErrorType};
use http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// Descriptors kept free below the process's limit by the default cap.
const MAX_RESERVE: usize = 256;

/// The process's soft limit on open descriptors, where the platform tells it (Linux:
/// `/proc/self/limits`); `None` when unknown or unlimited.
fn descriptor_limit() -> Option<usize> {
    let limits = fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The default cap for a descriptor `limit`: the limit minus a reserve of an eighth of it,
/// at most 256 descriptors (for the listener, log files, `/healthz` and the 503 answers).
pub(crate) fn default_max_connections_for(limit: usize) -> usize {
    limit - (limit / 8).min(MAX_RESERVE)
}

/// The default cap of this process, see [`default_max_connections_for`]; unbounded where
/// the descriptor limit cannot be read.
pub(crate) fn default_max_connections() -> usize {
    descriptor_limit().map_or(usize::MAX, default_max_connections_for)
}

/// Settings of the accept loop of [`serve_with_settings`](crate::serve_with_settings()).
///
/// ```
/// use std::time::Duration;
///
/// let settings = dualcast::ServeSettings::new()
///     .max_connections(10_000)
///     .retry_after(Duration::from_secs(5));
/// assert_eq!(settings.get_max_connections(), 10_000);
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct ServeSettings {
    max_connections: usize,
    over_capacity_answers: usize,
    retry_after: Duration,
}

impl Default for ServeSettings {
    fn default() -> Self {
        Self {
            max_connections: default_max_connections(),
            over_capacity_answers: 64,
            retry_after: Duration::from_secs(1),
        }
    }
}

impl ServeSettings {
    /// Default settings.
    pub fn new() -> Self {
        Self::default()
    }

    /// Most connections open at once, of every kind (WebSocket, SSE, plain HTTP). Past it a
    /// new connection gets a quick `503` with `Retry-After`, and `GET /healthz` is still
    /// answered (SPEC §7). Default: the process's limit on open descriptors minus a reserve
    /// of an eighth of it, at most 256 (19,744 for a limit of 20,000), so the answers past
    /// the cap have descriptors to use; unbounded where the limit cannot be read (it is read
    /// from `/proc/self/limits`).
    pub fn max_connections(mut self, connections: usize) -> Self {
        self.max_connections = connections;
        self
    }

    /// How many connections past the cap are answered at a time: each is given up to half a
    /// second to show its request line, then `GET /healthz` is served or the `503` written
    /// after reading what the client sent. Connections beyond these get the `503` written
    /// once, without waiting, and are closed at once, so that a flood past the cap cannot
    /// spend the descriptors the cap keeps in reserve. Default: 64.
    pub fn over_capacity_answers(mut self, connections: usize) -> Self {
        self.over_capacity_answers = connections;
        self
    }

    /// The `Retry-After` of the `503` past the cap, in whole seconds. Default: 1 s.
    /// Minimum: 1 s.
    pub fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = after.max(Duration::from_secs(1));
        self
    }

    /// The cap on open connections.
    #[must_use]
    pub fn get_max_connections(&self) -> usize {
        self.max_connections
    }

    pub(crate) fn get_over_capacity_answers(&self) -> usize {
        self.over_capacity_answers
    }

    pub(crate) fn get_retry_after(&self) -> Duration {
        self.retry_after
    }
}

/// Counts the open connections against a cap.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionLimit {
    open: Arc<AtomicUsize>,
    max: usize,
}

impl ConnectionLimit {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            open: Arc::new(AtomicUsize::new(0)),
            max,
        }
    }

    /// A permit for one more connection, or `None` at the cap.
    pub(crate) fn try_acquire(&self) -> Option<Permit> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < self.max).then_some(open + 1)
            })
            .ok()
            .map(|_| Permit(Arc::clone(&self.open)))
    }
}

/// One open connection, counted until dropped.
#[derive(Debug)]
pub(crate) struct Permit(Arc<AtomicUsize>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A socket that holds its [`Permit`]: the count drops when the socket closes.
#[derive(Debug)]
pub(crate) struct Counted<T> {
    io: T,
    _permit: Permit,
}

impl<T> Counted<T> {
    pub(crate) fn new(io: T, permit: Permit) -> Self {
        Self {
            io,
            _permit: permit,
        }
    }

    /// The socket.
    pub(crate) fn get_ref(&self) -> &T {
        &self.io
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// How often a failing `accept` is logged: once per interval, with the count since.
const ACCEPT_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Rate-limits the log of `accept` failures (out of descriptors, typically, which repeats
/// every back-off until descriptors free up).
#[derive(Debug, Default)]
pub(crate) struct AcceptErrors {
    last_logged: Option<Instant>,
    since_logged: u64,
}

impl AcceptErrors {
    /// Records a failure at `now`; `Some(failures)` when it should be logged, with the
    /// number of failures that one line stands for.
    pub(crate) fn record(&mut self, now: Instant) -> Option<u64> {
        self.since_logged += 1;
        let due = self
            .last_logged
            .is_none_or(|at| now.duration_since(at) >= ACCEPT_ERROR_LOG_INTERVAL);
        if !due {
            return None;
        }
        self.last_logged = Some(now);
        Some(std::mem::take(&mut self.since_logged))
    }
}

/// Whether the start of a request is `GET {health_path}` (which is answered even past the
/// cap).
pub(crate) fn is_health_check(head: &[u8], health_path: &str) -> bool {
    head.strip_prefix(b"GET ")
        .and_then(|rest| rest.strip_prefix(health_path.as_bytes()))
        .is_some_and(|rest| matches!(rest.first(), Some(b' ' | b'?')))
}

/// The quick answer past the cap: `503` with `Retry-After` and the SPEC's error body.
pub(crate) fn over_capacity_response(retry_after: Duration) -> Vec<u8> {
    let retry_after = retry_after.as_secs().max(1);
    let body = ErrorResponse::new(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorType::ConnectionError,
        "the server is at its connection limit; try again later",
    )
    .detail("error_code", "SERVER_AT_CAPACITY")
    .detail("retry_after_seconds", retry_after)
    .to_json();
    closing_response(
        "503 Service Unavailable",
        &format!("retry-after: {retry_after}\r\n"),
        &body,
    )
}

/// The answer to a request head that did not arrive whole within `timeout`: `408` with the
/// SPEC's error body, and the connection closed.
pub(crate) fn head_timeout_response(timeout: Duration) -> Vec<u8> {
    let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    let body = ErrorResponse::new(
        StatusCode::REQUEST_TIMEOUT,
        ErrorType::ConnectionError,
        format!("the request head did not arrive within {timeout_ms} ms"),
    )
    .detail("error_code", "HEAD_TIMEOUT")
    .detail("timeout_ms", timeout_ms)
    .to_json();
    closing_response("408 Request Timeout", "", &body)
}

/// A whole HTTP/1.1 answer with a JSON `body` and `Connection: close`; `headers` are extra
/// lines, each ending in CRLF.
fn closing_response(status: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n{headers}\
         content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    response.extend_from_slice(body);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_cap_keeps_a_reserve_below_the_descriptor_limit() {
        assert_eq!(default_max_connections_for(20_000), 20_000 - 256);
        assert_eq!(default_max_connections_for(1024), 1024 - 128);
        assert_eq!(default_max_connections_for(8), 7);
        if let Some(limit) = descriptor_limit() {
            assert!(default_max_connections() < limit);
        }
    }

    #[test]
    fn permits_stop_at_the_cap_and_come_back_when_dropped() {
        let limit = ConnectionLimit::new(2);
        let first = limit.try_acquire().expect("one");
        let _second = limit.try_acquire().expect("two");
        assert!(limit.try_acquire().is_none(), "at the cap");
        drop(first);
        assert!(limit.try_acquire().is_some(), "a slot freed");
    }

    #[test]
    fn accept_failures_are_logged_once_per_interval_with_a_count() {
        let mut errors = AcceptErrors::default();
        let start = Instant::now();
        assert_eq!(errors.record(start), Some(1), "the first one at once");
        for n in 1..200 {
            assert_eq!(errors.record(start + Duration::from_millis(n * 49)), None);
        }
        assert_eq!(
            errors.record(start + ACCEPT_ERROR_LOG_INTERVAL),
            Some(200),
            "then one line for everything since"
        );
    }

    #[test]
    fn only_get_healthz_is_a_health_check() {
        let check = |head: &[u8]| is_health_check(head, "/healthz");
        assert!(check(b"GET /healthz HTTP/1.1\r\n"));
        assert!(check(b"GET /healthz?deep=1 HTTP/1.1\r\n"));
        assert!(!check(b"GET /healthzz HTTP/1.1\r\n"));
        assert!(!check(b"POST /healthz HTTP/1.1\r\n"));
        assert!(!check(b"GET /sse/p HTTP/1.1\r\n"));
        assert!(is_health_check(
            b"GET /rt/healthz HTTP/1.1\r\n",
            "/rt/healthz"
        ));
        assert!(!is_health_check(
            b"GET /healthz HTTP/1.1\r\n",
            "/rt/healthz"
        ));
    }
}
