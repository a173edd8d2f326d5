//! [`serve`]: an HTTP/1.1 accept loop with upgrades and graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::time::Duration;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use dualcast_layers::track::ClientAddress;
use http::{Request, Response};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::{Service, ServiceExt};

use crate::direct_sse::{self, FirstRequest};
use crate::hub::SHUTDOWN_GRACE;
use crate::limits::{
    head_timeout_response, is_health_check, over_capacity_response, AcceptErrors, ConnectionLimit,
    Counted, ServeSettings,
};
use crate::service::{Dualcast, Endpoints};

/// How long a client has to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `signal` resolves, then shuts down gracefully: it stops
/// accepting, ends every realtime connection with `server_shutdown` (a WebSocket close
/// frame 1001; an SSE `disconnect` event), lets in-flight requests finish, and returns
/// once all are done, or aborts what is left once [`SHUTDOWN_GRACE`] has passed.
///
/// Accepted sockets get `TCP_NODELAY`; a client has 10 s to send its request headers. An
/// SSE stream of one of dualcast's own SSE routes, opened by a connection's first request,
/// is written by `serve` itself rather than through hyper, which keeps an idle stream's
/// memory small (see `direct_sse`); the client sees the same stream, close-delimited. Any
/// other answer to such a request (a host's own route, a refusal) is written as it is.
///
/// `app` is dualcast alone ([`DualcastBuilder::build_service`](crate::DualcastBuilder::build_service))
/// or around a host's service ([`DualcastLayer`](crate::DualcastLayer)); for a service that
/// wraps it in more layers, use [`serve_with_settings`] with its
/// [`Endpoints`](crate::Endpoints).
pub async fn serve<S, T, B>(
    listener: TcpListener,
    app: Dualcast<S, T>,
    signal: impl Future<Output = ()>,
) -> io::Result<()>
where
    Dualcast<S, T>: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Service<Request<Empty<Bytes>>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    <Dualcast<S, T> as Service<Request<Incoming>>>::Future: Send + 'static,
    <Dualcast<S, T> as Service<Request<Empty<Bytes>>>>::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let endpoints = app.endpoints().clone();
    serve_with_settings(listener, endpoints, app, ServeSettings::default(), signal).await
}

/// [`serve`] for any service that embeds the dualcast stack of `endpoints` (e.g.
/// [`Dualcast`] wrapped in more layers), with the accept loop's [`ServeSettings`]: the
/// global connection cap (SPEC §7), past which a new connection gets a quick `503` with
/// `Retry-After` while `GET /healthz` is still answered. On `signal`, the hub of
/// `endpoints` is shut down with the HTTP connections.
///
/// ```no_run
/// use dualcast::{AuthLayer, Dualcast, JwtAuthenticator, ServeSettings};
///
/// # async fn run() -> std::io::Result<()> {
/// let auth = AuthLayer::new(JwtAuthenticator::hs256(b"a secret of at least 32 bytes....."));
/// let (app, _hub) = Dualcast::builder(auth).build_service();
/// let endpoints = app.endpoints().clone();
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
/// let settings = ServeSettings::new().max_connections(50_000);
/// dualcast::serve_with_settings(listener, endpoints, app, settings, async {
///     let _ = tokio::signal::ctrl_c().await;
/// })
/// .await
/// # }
/// ```
pub async fn serve_with_settings<S, B>(
    listener: TcpListener,
    endpoints: Endpoints,
    service: S,
    settings: ServeSettings,
    signal: impl Future<Output = ()>,
) -> io::Result<()>
where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Service<Request<Empty<Bytes>>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    <S as Service<Request<Incoming>>>::Future: Send + 'static,
    <S as Service<Request<Empty<Bytes>>>>::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let hub = endpoints.hub().clone();
    let table = Arc::clone(endpoints.table());
    let health_path: Arc<str> = table.health_path().into();
    let (stop, stopped) = watch::channel(false);
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    // Past the cap a connection is served one request at most, and has little time for it.
    let mut over_capacity = http1::Builder::clone(&builder);
    over_capacity
        .header_read_timeout(OVER_CAPACITY_HEAD_TIMEOUT)
        .keep_alive(false);
    let builder = Arc::new(builder);
    let over_capacity = Arc::new(over_capacity);
    let limit = ConnectionLimit::new(settings.get_max_connections());
    let answering = ConnectionLimit::new(settings.get_over_capacity_answers());
    let retry_after = settings.get_retry_after();
    let mut accept_errors = AcceptErrors::default();
    let mut at_cap = AcceptErrors::default();
    let slow_heads = Arc::new(std::sync::Mutex::new(AcceptErrors::default()));
    tokio::pin!(signal);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = &mut signal => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors, typically: back off instead of spinning,
                        // and say so once per interval, not once per failure.
                        if let Some(failures) = accept_errors.record(tokio::time::Instant::now()) {
                            tracing::warn!(
                                failures,
                                "accept failed: {error}; backing off (logged at most every 10 s)"
                            );
                        }
                        tokio::select! {
                            () = &mut signal => break,
                            () = tokio::time::sleep(Duration::from_millis(50)) => continue,
                        }
                    }
                };
                let _ = stream.set_nodelay(true);
                let service = service.clone();
                let Some(permit) = limit.try_acquire() else {
                    if let Some(connections) = at_cap.record(tokio::time::Instant::now()) {
                        tracing::warn!(
                            connections,
                            max_connections = settings.get_max_connections(),
                            "at the connection cap: new connections are answered 503 \
                             (logged at most every 10 s)"
                        );
                    }
                    // Past the cap, a few connections at a time are answered properly;
                    // the rest get the 503 written once, without waiting, and are closed,
                    // so that a flood cannot spend the descriptors kept in reserve.
                    match answering.try_acquire() {
                        Some(permit) => {
                            let stream = Counted::new(stream, permit);
                            let builder = Arc::clone(&over_capacity);
                            connections.spawn(serve_over_capacity(
                                stream,
                                builder,
                                service,
                                stopped.clone(),
                                peer,
                                OverCapacity { retry_after, health_path: Arc::clone(&health_path) },
                            ));
                        }
                        None => {
                            let _ = stream.try_write(&over_capacity_response(retry_after));
                        }
                    }
                    continue;
                };
                // The socket counts against the cap for as long as it is open, whichever
                // task holds it by then.
                let stream = Counted::new(stream, permit);
                let builder = Arc::clone(&builder);
                let table = Arc::clone(&table);
                let mut stopped = stopped.clone();
                let slow_heads = Arc::clone(&slow_heads);
                connections.spawn(async move {
                    let accepted_at = tokio::time::Instant::now();
                    let first = tokio::select! {
                        first = direct_sse::first_request(stream.get_ref(), HEADER_TIMEOUT, &table) => first,
                        _ = stopped.changed() => return,
                    };
                    let (mut request, unread) = match first {
                        FirstRequest::Sse(request, unread) => (request, unread),
                        FirstRequest::TimedOut => {
                            refuse_slow_head(stream, peer, &slow_heads).await;
                            return;
                        }
                        FirstRequest::Nothing => return,
                        // The plain stream, which an upgrade can take back from hyper.
                        FirstRequest::Other(read) if read.is_empty() => {
                            serve_with_hyper(&builder, stream, service, stopped, peer).await;
                            return;
                        }
                        // Bytes read while the head came in pieces, which hyper reads first,
                        // within what is left of the header timeout. Boxed: this rare path
                        // does not make every connection's task larger.
                        FirstRequest::Other(read) => {
                            let io: crate::prefixed::Prefixed<Counted<TcpStream>> =
                                crate::prefixed::Prefixed::new(read, stream);
                            let mut rest = http1::Builder::clone(&builder);
                            let left = HEADER_TIMEOUT.saturating_sub(accepted_at.elapsed());
                            rest.header_read_timeout(left.max(Duration::from_millis(1)));
                            Box::pin(serve_with_hyper(&rest, io, service, stopped, peer)).await;
                            return;
                        }
                    };
                    request.extensions_mut().insert(ClientAddress(peer));
                    direct_sse::serve_sse(stream, request, unread, service).await;
                });
            }
        }
    }
    drop(listener);
    tracing::info!(
        realtime = hub.connection_count(),
        http = connections.len(),
        "shutting down"
    );
    let hub_drained = hub.shutdown();
    let _ = stop.send(true);
    let finished = async {
        while connections.join_next().await.is_some() {}
        hub_drained.await;
    };
    if tokio::time::timeout(SHUTDOWN_GRACE, finished)
        .await
        .is_err()
    {
        tracing::warn!(
            realtime = hub.connection_count(),
            http = connections.len(),
            "shutdown grace period over: closing what is still open"
        );
        connections.shutdown().await;
    }
    Ok(())
}

/// How long a connection past the cap has to show its request line.
const OVER_CAPACITY_HEAD_TIMEOUT: Duration = Duration::from_millis(500);

/// How a connection past the cap is answered.
struct OverCapacity {
    retry_after: Duration,
    /// The health route (under the stack's prefix), which is still served.
    health_path: Arc<str>,
}

/// A connection past the cap: `GET {prefix}/healthz` is served (one request, then the
/// connection closes); anything else gets the quick `503`. Either way it is over within a
/// few seconds.
async fn serve_over_capacity<S, B>(
    stream: Counted<TcpStream>,
    builder: Arc<http1::Builder>,
    service: S,
    stopped: watch::Receiver<bool>,
    peer: SocketAddr,
    answer: OverCapacity,
) where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    <S as Service<Request<Incoming>>>::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // Enough for `GET `, the path and the byte after it.
    let mut start = vec![0u8; answer.health_path.len() + 5];
    let peeked = tokio::time::timeout(
        OVER_CAPACITY_HEAD_TIMEOUT,
        stream.get_ref().peek(&mut start),
    )
    .await;
    if let Ok(Ok(read)) = peeked {
        if is_health_check(&start[..read], &answer.health_path) {
            serve_with_hyper(&builder, stream, service, stopped, peer).await;
            return;
        }
    }
    tracing::debug!(%peer, "at the connection cap: answered 503");
    let answer = over_capacity_response(answer.retry_after);
    let _ =
        tokio::time::timeout(OVER_CAPACITY_HEAD_TIMEOUT, lingering_close(stream, &answer)).await;
}

/// Answers a connection whose request head did not come whole within the header timeout:
/// `408` and a log line (at most one every 10 s, with the count it stands for, so that a
/// slow-header flood does not flood the log too).
async fn refuse_slow_head(
    stream: Counted<TcpStream>,
    peer: SocketAddr,
    log: &std::sync::Mutex<AcceptErrors>,
) {
    let due = log
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .record(tokio::time::Instant::now());
    if let Some(connections) = due {
        tracing::warn!(
            %peer,
            connections,
            timeout_ms = HEADER_TIMEOUT.as_millis() as u64,
            "request head incomplete within the header timeout: answered 408 and closed \
             (logged at most every 10 s)"
        );
    }
    let answer = head_timeout_response(HEADER_TIMEOUT);
    let _ =
        tokio::time::timeout(OVER_CAPACITY_HEAD_TIMEOUT, lingering_close(stream, &answer)).await;
}

/// Writes `answer`, closes the writing side, and reads what the client still sends until
/// it closes too, so that unread request bytes do not turn the close into a reset that
/// could destroy the answer before the client reads it.
async fn lingering_close(mut stream: Counted<TcpStream>, answer: &[u8]) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if stream.write_all(answer).await.is_err() || stream.shutdown().await.is_err() {
        return;
    }
    let mut scratch = [0u8; 512];
    while matches!(stream.read(&mut scratch).await, Ok(read) if read > 0) {}
}

/// Serves one connection, `io`, through hyper, with upgrades, until it ends or `stopped`
/// asks it to finish gracefully.
async fn serve_with_hyper<I, S, B>(
    builder: &http1::Builder,
    io: I,
    service: S,
    mut stopped: watch::Receiver<bool>,
    peer: SocketAddr,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    <S as Service<Request<Incoming>>>::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(ClientAddress(peer));
        ServiceExt::<Request<Incoming>>::oneshot(service.clone(), request)
    });
    let connection = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = stopped.changed() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%peer, "http connection ended: {error}");
    }
}
