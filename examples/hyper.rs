//! A plain hyper server that stacks dualcast's pieces by hand, with no router and no
//! `dualcast::serve`: JWT auth in front of the WebSocket handler at `/play` and of the SSE
//! handler at `/events`, and the host publishing a `tick` to everyone every second.
//!
//! ```text
//! DUALCAST_JWT_SECRET=a-secret-of-at-least-32-bytes-long cargo run --example hyper
//! ```
//!
//! `DUALCAST_ADDR` (default `127.0.0.1:3001`) is where it listens. Ctrl-C ends every
//! connection with `server_shutdown` and waits for them to close.

use std::convert::Infallible;

use dualcast::{
    AuthLayer, Hub, JwtAuthenticator, Message, ResponseBody, SseHandler, WebSocketHandler,
};
use futures_util::future::Either;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tower::{Layer, ServiceExt};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let secret = std::env::var("DUALCAST_JWT_SECRET").expect("set DUALCAST_JWT_SECRET");
    let hub = Hub::new();
    let auth = AuthLayer::new(JwtAuthenticator::hs256(secret.as_bytes()));
    let play = auth.layer(WebSocketHandler::new(hub.clone()));
    let events = auth.layer(SseHandler::new(hub.clone()));
    let app = tower::service_fn(
        move |request: Request<Incoming>| match request.uri().path() {
            "/play" => Either::Left(play.clone().oneshot(request)),
            "/events" => Either::Right(Either::Left(events.clone().oneshot(request))),
            _ => Either::Right(Either::Right(std::future::ready(Ok::<_, Infallible>(
                Response::builder()
                    .status(StatusCode::NOT_FOUND)
                    .body(ResponseBody::empty())
                    .expect("a valid response"),
            )))),
        },
    );
    let ticker = hub.clone();
    tokio::spawn(async move {
        let mut every_second = tokio::time::interval(std::time::Duration::from_secs(1));
        for n in 0u64.. {
            every_second.tick().await;
            ticker.broadcast_global(&Message::json("tick", n.into()), &[]);
        }
    });
    let addr = std::env::var("DUALCAST_ADDR").unwrap_or_else(|_| "127.0.0.1:3001".into());
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut connections = tokio::task::JoinSet::new();
    let (stop, stopped) = tokio::sync::watch::channel(());
    let mut http = http1::Builder::new();
    // A client has 10 s to send its request head (hyper needs a timer for that).
    http.timer(TokioTimer::new())
        .header_read_timeout(std::time::Duration::from_secs(10));
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of descriptors, say: keep serving the connections already open.
                    eprintln!("accept failed: {error}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut ctrl_c => break,
        };
        let service = TowerToHyperService::new(app.clone());
        let connection = http.serve_connection(TokioIo::new(stream), service);
        let mut stopped = stopped.clone();
        connections.spawn(async move {
            let mut connection = std::pin::pin!(connection.with_upgrades());
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = stopped.changed() => {
                    // No new request on this connection; the one in flight may finish.
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
    // Every realtime connection is told and closed; then the HTTP connections finish.
    let drain = async {
        hub.shutdown().await;
        let _ = stop.send(());
        while connections.join_next().await.is_some() {}
    };
    let _ = tokio::time::timeout(dualcast::SHUTDOWN_GRACE, drain).await;
    Ok(())
}
