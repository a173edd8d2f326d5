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
use hyper_util::rt::TokioIo;
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
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = &mut ctrl_c => break,
        };
        let connection = http1::Builder::new()
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()))
            .with_upgrades();
        tokio::spawn(connection);
    }
    let _ = tokio::time::timeout(dualcast::SHUTDOWN_GRACE, hub.shutdown()).await;
    Ok(())
}
