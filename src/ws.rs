//! WebSocket over a raw hyper upgrade (SPEC §4, §5, §7).
//!
//! The handler checks the upgrade request, registers the connection with the hub, answers
//! `101 Switching Protocols` (the [`AuthLayer`](crate::AuthLayer) around it selects the
//! `bearer` subprotocol when the client offered it) and spawns one task. The task awaits `hyper::upgrade::on`, wraps the IO in
//! `TokioIo` and a tungstenite `WebSocketStream` with deliberately small buffers, and then
//! runs until the connection ends: it drains every frame that is ready in the outbox and
//! flushes once per batch, reads the client's frames, and ends the connection with a close
//! frame carrying the reason's code (e.g. `4005 slow_consumer`, `1001 server_shutdown`).

use std::future::poll_fn;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;

use crate::body::ResponseBody;
use crate::connection::DisconnectReason;
use crate::error::ApiError;
use crate::hub::{ConnectionGuard, Outbox};
use crate::message::Frame;

/// Settings of WebSocket connections.
#[derive(Debug, Clone)]
#[must_use]
pub struct WebSocketSettings {
    read_buffer_size: usize,
    write_buffer_size: usize,
    max_message_size: usize,
    close_timeout: Duration,
}

impl Default for WebSocketSettings {
    fn default() -> Self {
        Self {
            read_buffer_size: 2 * 1024,
            write_buffer_size: 16 * 1024,
            max_message_size: 64 * 1024,
            close_timeout: Duration::from_secs(2),
        }
    }
}

impl WebSocketSettings {
    /// Default settings.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes of read buffer allocated up front for every connection; it grows for larger
    /// frames. tungstenite's own default is 128 KiB, which dominates the memory of an idle
    /// connection. Default: 2 KiB. Minimum: 256 bytes.
    pub fn read_buffer_size(mut self, bytes: usize) -> Self {
        self.read_buffer_size = bytes.max(256);
        self
    }

    /// Bytes of outgoing frames collected before a write; a batch is flushed at its end in
    /// any case. Allocated only when there is something to write. Default: 16 KiB.
    pub fn write_buffer_size(mut self, bytes: usize) -> Self {
        self.write_buffer_size = bytes;
        self
    }

    /// Largest message or frame a client may send, in bytes. Default: 64 KiB
    /// (SPEC §6). Larger input ends the connection with `protocol_error`.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// How long a closing connection waits for its close frame to be written and answered.
    /// Default: 2 s.
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    fn tungstenite(&self) -> WebSocketConfig {
        WebSocketConfig::default()
            .read_buffer_size(self.read_buffer_size)
            .write_buffer_size(self.write_buffer_size)
            .max_write_buffer_size(usize::MAX)
            .max_message_size(Some(self.max_message_size))
            .max_frame_size(Some(self.max_message_size))
    }
}

/// Why a request is not a usable WebSocket upgrade, or `None` when it is.
fn check_upgrade(headers: &HeaderMap) -> Option<&'static str> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|value| {
            value
                .to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if !has_token(header::CONNECTION, "upgrade") || !has_token(header::UPGRADE, "websocket") {
        return Some(
            "this endpoint needs a WebSocket upgrade (Connection: Upgrade, Upgrade: websocket)",
        );
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v != "13")
    {
        return Some("only WebSocket version 13 is supported");
    }
    if headers.get(header::SEC_WEBSOCKET_KEY).is_none() {
        return Some("the Sec-WebSocket-Key header is missing");
    }
    None
}

/// Checks a WebSocket upgrade request, before anything is registered.
pub(crate) fn validate<B>(request: &Request<B>) -> Result<(), ApiError> {
    if let Some(problem) = check_upgrade(request.headers()) {
        return Err(ApiError::bad_request("BAD_WEBSOCKET_UPGRADE", problem));
    }
    if request.extensions().get::<OnUpgrade>().is_none() {
        return Err(ApiError::system(
            "this connection cannot be upgraded: serve it with hyper's `with_upgrades()`",
        ));
    }
    Ok(())
}

/// Answers `101` and spawns the connection's task. Call [`validate`] first.
pub(crate) fn upgrade<B>(
    mut request: Request<B>,
    guard: ConnectionGuard,
    outbox: Outbox,
    settings: &WebSocketSettings,
    expires_at: Option<Instant>,
) -> Result<Response<ResponseBody>, ApiError> {
    let accept = request
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|key| derive_accept_key(key.as_bytes()))
        .ok_or_else(|| {
            ApiError::bad_request(
                "BAD_WEBSOCKET_UPGRADE",
                "the Sec-WebSocket-Key header is missing",
            )
        })?;
    let accept =
        HeaderValue::from_str(&accept).map_err(|_| ApiError::system("invalid accept key"))?;
    let on_upgrade = request
        .extensions_mut()
        .remove::<OnUpgrade>()
        .ok_or_else(|| ApiError::system("this connection cannot be upgraded"))?;

    tokio::spawn(run(on_upgrade, guard, outbox, settings.clone(), expires_at));

    let mut response = Response::new(ResponseBody::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    Ok(response)
}

type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// The life of one WebSocket connection; the guard drops when it returns.
async fn run(
    on_upgrade: OnUpgrade,
    guard: ConnectionGuard,
    mut outbox: Outbox,
    settings: WebSocketSettings,
    expires_at: Option<Instant>,
) {
    let upgraded = match on_upgrade.await {
        Ok(upgraded) => upgraded,
        Err(error) => {
            tracing::debug!(connection_id = %guard.id(), "upgrade failed: {error}");
            guard.end(DisconnectReason::ClientClosed);
            return;
        }
    };
    let mut socket = WebSocketStream::from_raw_socket(
        TokioIo::new(upgraded),
        Role::Server,
        Some(settings.tungstenite()),
    )
    .await;
    let expiry = async {
        match expires_at {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(expiry);

    let reason = loop {
        tokio::select! {
            biased;
            reason = poll_fn(|cx| guard.poll_end(cx)) => break reason,
            () = &mut expiry => break DisconnectReason::AuthExpired,
            frame = outbox.recv() => {
                let Some(frame) = frame else { break DisconnectReason::ClientClosed };
                tokio::select! {
                    biased;
                    reason = poll_fn(|cx| guard.poll_end(cx)) => break reason,
                    written = write_batch(&mut socket, frame, &mut outbox) => {
                        if let Err(error) = written {
                            tracing::debug!(connection_id = %guard.id(), "write failed: {error}");
                            break DisconnectReason::ClientClosed;
                        }
                    }
                }
            }
            incoming = socket.next() => match incoming {
                Some(Ok(WsMessage::Close(_))) | None => break DisconnectReason::ClientClosed,
                Some(Ok(_)) => guard.touch(),
                Some(Err(error)) => break read_error_reason(&guard, &error),
            },
        }
    };
    guard.end(reason);
    let reason = guard.end_reason().unwrap_or(reason);
    close(&mut socket, reason, settings.close_timeout).await;
}

/// Feeds `first` and every frame already waiting, then flushes once.
async fn write_batch(
    socket: &mut Socket,
    first: Frame,
    outbox: &mut Outbox,
) -> Result<(), WsError> {
    socket.feed(WsMessage::Text(first.websocket_text())).await?;
    while let Some(frame) = outbox.try_recv() {
        socket.feed(WsMessage::Text(frame.websocket_text())).await?;
    }
    socket.flush().await
}

fn read_error_reason(guard: &ConnectionGuard, error: &WsError) -> DisconnectReason {
    match error {
        WsError::Capacity(CapacityError::MessageTooLong { size, max_size }) => {
            tracing::info!(connection_id = %guard.id(), size, max_size, "client message too large");
            DisconnectReason::ProtocolError
        }
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
            DisconnectReason::ClientClosed
        }
        WsError::Protocol(problem) => {
            tracing::info!(connection_id = %guard.id(), "client broke the WebSocket protocol: {problem}");
            DisconnectReason::ProtocolError
        }
        WsError::Utf8(_) | WsError::Capacity(_) | WsError::AttackAttempt => {
            DisconnectReason::ProtocolError
        }
        _ => DisconnectReason::ClientClosed,
    }
}

/// Sends the close frame for `reason` (or answers the client's), bounded in time.
async fn close(socket: &mut Socket, reason: DisconnectReason, timeout: Duration) {
    let frame = (reason != DisconnectReason::ClientClosed).then(|| CloseFrame {
        code: CloseCode::from(reason.close_code()),
        reason: reason.code().into(),
    });
    let closing = async {
        // Answers a client's close, or starts ours; then waits for the other side's.
        if socket.close(frame).await.is_ok() {
            while let Some(Ok(_)) = socket.next().await {}
        }
    };
    let _ = tokio::time::timeout(timeout, closing).await;
}
