//! dualcast embedded in a host's own hyper server, with an IO type of the host's: the SSE
//! stream goes through hyper (chunked), the WebSocket through hyper's boxed upgrade.

mod common;

use std::pin::Pin;
use std::task::{Context, Poll};

use common::*;
use dualcast::{AuthLayer, Dualcast, Hub, HubEvent, JwtAuthenticator};
use futures_util::StreamExt;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tower::Service;

/// A host's own connection type, so dualcast cannot take the TCP stream back from hyper.
struct HostIo(TcpStream);

impl AsyncRead for HostIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for HostIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn a_host_serving_dualcast_through_its_own_hyper_loop_gets_the_same_behaviour() {
    let hub = Hub::new();
    let (app, _) = Dualcast::builder(AuthLayer::new(JwtAuthenticator::hs256(SECRET)))
        .hub(hub.clone())
        .build_service();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accept = tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let app = app.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |request: http::Request<hyper::body::Incoming>| app.clone().call(request),
                );
                let connection = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(HostIo(stream)), service)
                    .with_upgrades();
                let _ = connection.await;
            });
        }
    });

    let token = player_token("ivy");
    let mut request = format!("ws://{addr}/api/ws").into_client_request_with_bearer(&token);
    request
        .headers_mut()
        .insert("x-host", "embedded".parse().unwrap());
    let (mut ws, response) =
        tokio_tungstenite::client_async(request, TcpStream::connect(addr).await.unwrap())
            .await
            .unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "bearer");

    let sse_request = http::Request::get("/sse/ivy")
        .header("host", addr.to_string())
        .header("authorization", format!("Bearer {token}"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let response = sender.send_request(sse_request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["transfer-encoding"],
        "chunked",
        "served by hyper"
    );
    assert_eq!(response.headers()["x-accel-buffering"], "no");
    let mut body = response.into_body();
    let mut text = String::new();

    let report = hub.send_to_player("ivy", &dualcast::Message::json("hello", json!({"n": 1})));
    assert_eq!((report.websocket, report.sse), (1, 1));
    let frame = tokio::time::timeout(WAIT, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let envelope: serde_json::Value = serde_json::from_str(frame.to_text().unwrap()).unwrap();
    assert_eq!(envelope["id"].as_str(), Some(&*report.id));
    read_until(&mut body, &mut text, &report.id).await;

    let mut events = hub.subscribe();
    let shutdown = tokio::spawn(hub.shutdown());
    read_until(&mut body, &mut text, "event: disconnect").await;
    assert!(text.contains("server_shutdown"));
    let close = tokio::time::timeout(WAIT, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        matches!(close, tokio_tungstenite::tungstenite::Message::Close(Some(ref f)) if u16::from(f.code) == 1001),
        "{close:?}"
    );
    drop(ws);
    drop(body);
    wait_for(&mut events, |e| {
        matches!(
            e,
            HubEvent::Presence {
                presence: dualcast::Presence::Reconnecting,
                ..
            }
        )
    })
    .await;
    tokio::time::timeout(WAIT, shutdown).await.unwrap().unwrap();
    accept.abort();
}

/// Appends what the stream sends to `text` until it contains `needle`.
async fn read_until(body: &mut hyper::body::Incoming, text: &mut String, needle: &str) {
    while !text.contains(needle) {
        let frame = tokio::time::timeout(WAIT, body.frame())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        text.push_str(std::str::from_utf8(&frame.into_data().unwrap()).unwrap());
    }
}

trait BearerRequest {
    fn into_client_request_with_bearer(self, token: &str) -> http::Request<()>;
}

impl BearerRequest for String {
    fn into_client_request_with_bearer(self, token: &str) -> http::Request<()> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = self.into_client_request().unwrap();
        request.headers_mut().insert(
            "sec-websocket-protocol",
            format!("bearer, {token}").parse().unwrap(),
        );
        request
    }
}
