//! [`serve`]: an HTTP/1.1 accept loop with upgrades and graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::time::Duration;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::{Service, ServiceExt};

use crate::body::ResponseBody;
use crate::direct_sse::{self, FirstRequest};
use crate::hub::Hub;
use crate::service::Dualcast;

/// How long a client has to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long shutdown waits for connections to finish before returning anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `signal` resolves, then shuts down gracefully: it stops
/// accepting, ends every realtime connection with `server_shutdown` (a WebSocket close
/// frame 1001; an SSE `disconnect` event), lets in-flight requests finish, and returns
/// once all are done, or aborts what is left once [`SHUTDOWN_GRACE`] has passed.
///
/// Accepted sockets get `TCP_NODELAY`; a client has 10 s to send its request headers. An
/// SSE stream opened by a connection's first request is written by `serve` itself rather
/// than through hyper, which keeps an idle stream's memory small (see `direct_sse`); the
/// client sees the same stream, close-delimited.
pub async fn serve<A>(
    listener: TcpListener,
    app: Dualcast<A>,
    signal: impl Future<Output = ()>,
) -> io::Result<()>
where
    Dualcast<A>: Service<Request<Incoming>, Response = Response<ResponseBody>, Error = Infallible>
        + Service<Request<Empty<Bytes>>, Response = Response<ResponseBody>, Error = Infallible>,
    <Dualcast<A> as Service<Request<Incoming>>>::Future: Send + 'static,
    <Dualcast<A> as Service<Request<Empty<Bytes>>>>::Future: Send + 'static,
    A: Clone + Send + Sync + 'static,
{
    let hub = app.hub().clone();
    serve_with_hub(listener, hub, app, signal).await
}

/// [`serve`] for any service that embeds `hub`'s endpoints, e.g. [`Dualcast`] wrapped in
/// more layers. On `signal`, `hub` is shut down with the HTTP connections.
pub async fn serve_with_hub<S, B>(
    listener: TcpListener,
    hub: Hub,
    service: S,
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
    let (stop, stopped) = watch::channel(false);
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    let builder = Arc::new(builder);
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
                        // Out of file descriptors, typically: back off instead of spinning.
                        tracing::warn!("accept failed: {error}");
                        tokio::select! {
                            () = &mut signal => break,
                            () = tokio::time::sleep(Duration::from_millis(50)) => continue,
                        }
                    }
                };
                let _ = stream.set_nodelay(true);
                let service = service.clone();
                let builder = Arc::clone(&builder);
                let mut stopped = stopped.clone();
                connections.spawn(async move {
                    let first = tokio::select! {
                        first = direct_sse::first_request(&stream, HEADER_TIMEOUT) => first,
                        _ = stopped.changed() => return,
                    };
                    let (request, head_len) = match first {
                        FirstRequest::Sse(request, head_len) => (request, head_len),
                        FirstRequest::Nothing => return,
                        FirstRequest::Other => {
                            serve_with_hyper(&builder, stream, service, stopped, peer).await;
                            return;
                        }
                    };
                    direct_sse::serve_sse(stream, request, head_len, service).await;
                });
            }
        }
    }
    drop(listener);
    tracing::info!(open = connections.len(), "shutting down");
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
            open = connections.len(),
            "shutdown grace period over: closing what is still open"
        );
        connections.shutdown().await;
    }
    Ok(())
}

/// Serves one connection through hyper, with upgrades, until it ends or `stopped` asks it
/// to finish gracefully.
async fn serve_with_hyper<S, B>(
    builder: &http1::Builder,
    stream: TcpStream,
    service: S,
    mut stopped: watch::Receiver<bool>,
    peer: SocketAddr,
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
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        ServiceExt::<Request<Incoming>>::oneshot(service.clone(), request)
    });
    let connection = builder
        .serve_connection(TokioIo::new(stream), service)
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
