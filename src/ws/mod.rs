//! WebSocket over a raw hyper upgrade (SPEC §4, §5, §7): [`WebSocketHandler`].
//!
//! The handler checks the upgrade request, registers the connection with the hub, answers
//! `101 Switching Protocols` (the [`AuthLayer`](crate::AuthLayer) around it selects the
//! `bearer` subprotocol when the client offered it) and spawns one task. The task awaits `hyper::upgrade::on`, wraps the IO in
//! `TokioIo` and a tungstenite `WebSocketStream` with deliberately small buffers, and then
//! runs until the connection ends: it drains every frame that is ready in the outbox and
//! flushes once per batch, reads the client's frames, and ends the connection with a close
//! frame carrying the reason's code (e.g. `4005 slow_consumer`, `1001 server_shutdown`).

mod frame_limit;
mod handler;

pub use handler::WebSocketHandler;

use frame_limit::FrameLimit;

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use futures_util::stream::FuturesUnordered;
use futures_util::{SinkExt, StreamExt};
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;

use crate::body::ResponseBody;
use crate::connection::DisconnectReason;
use crate::error::{ApiError, ErrorType};
use crate::hub::{ConnectionGuard, Content, Handling, Outbox, Received};
use crate::inbound::Transport;
use crate::limits::Counted;
use crate::message::Frame;
use crate::write_batch::WriteBatch;

/// The largest [`WebSocketSettings::write_buffer_size`].
const MAX_WRITE_BUFFER: usize = 64 * 1024 * 1024;

/// Settings of WebSocket connections.
#[derive(Debug, Clone)]
#[must_use]
pub struct WebSocketSettings {
    read_buffer_size: usize,
    write_buffer_size: usize,
    max_message_size: usize,
    max_pong_backlog: usize,
    close_timeout: Duration,
}

impl Default for WebSocketSettings {
    fn default() -> Self {
        Self {
            read_buffer_size: 2 * 1024,
            write_buffer_size: 16 * 1024,
            max_message_size: 64 * 1024,
            max_pong_backlog: 16 * 1024,
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

    /// Bytes of tungstenite's own outgoing frames (pongs, the close frame; messages are
    /// written around it) collected before a write; they are flushed as they are queued in
    /// any case. Allocated only when there is something to write. Default: 16 KiB.
    /// Maximum: 64 MiB.
    pub fn write_buffer_size(mut self, bytes: usize) -> Self {
        self.write_buffer_size = bytes.min(MAX_WRITE_BUFFER);
        self
    }

    /// Largest frame a client may send, in bytes. Default: 64 KiB (SPEC §6). A larger
    /// single-frame message (up to 1 MiB) is skipped unread and answered with a
    /// `MESSAGE_TOO_LARGE` error, and the connection stays; a larger fragment, a message of
    /// fragments above it, or a frame over 1 MiB ends the connection with
    /// `protocol_error`. The hub's
    /// [`InboundSettings::max_message_size`](crate::inbound::InboundSettings) applies to
    /// the text too.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Bytes of pong replies a client may leave unread before it is ended with
    /// `slow_consumer` (SPEC §7: the pong backlog is bounded). Every ping is answered; a
    /// client that keeps pinging while it reads nothing piles the answers up in the server,
    /// and this is as far as that pile may grow. Default: 16 KiB (over a hundred pongs of
    /// the largest size). Minimum: 256 bytes; maximum: 64 MiB.
    pub fn max_pong_backlog(mut self, bytes: usize) -> Self {
        self.max_pong_backlog = bytes.clamp(256, MAX_WRITE_BUFFER);
        self
    }

    /// How long a closing connection may take to finish a half-written batch, send its close
    /// frame and get the answer; past it the socket is dropped. Default: 2 s.
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    fn tungstenite(&self) -> WebSocketConfig {
        // tungstenite's own write buffer holds only control frames (pongs, the close frame):
        // messages are written around it. The pong backlog ends the connection before this
        // bound is reached; the slack leaves room for the close frame.
        let max_write_buffer = self
            .write_buffer_size
            .saturating_add(self.max_pong_backlog)
            .saturating_add(1024);
        WebSocketConfig::default()
            .read_buffer_size(self.read_buffer_size)
            .write_buffer_size(self.write_buffer_size)
            .max_write_buffer_size(max_write_buffer)
            .max_message_size(Some(self.max_message_size))
            .max_frame_size(Some(self.max_message_size))
    }
}

/// Checks the headers of an opening handshake (RFC 6455 §4.2.1).
fn check_upgrade(headers: &HeaderMap) -> Result<(), ApiError> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|value| {
            value
                .to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    let bad = |problem: &'static str| ApiError::bad_request("BAD_WEBSOCKET_UPGRADE", problem);
    if !has_token(header::CONNECTION, "upgrade") || !has_token(header::UPGRADE, "websocket") {
        return Err(bad(
            "this endpoint needs a WebSocket upgrade (Connection: Upgrade, Upgrade: websocket)",
        ));
    }
    let Some(version) = headers.get(header::SEC_WEBSOCKET_VERSION) else {
        // RFC 6455 §4.2.1: a handshake without it is malformed (400); one that names
        // another version is told which one is understood (426, below).
        return Err(bad(
            "the Sec-WebSocket-Version header is missing (13 is understood)",
        ));
    };
    if version != "13" {
        // RFC 6455 §4.4: say which version is understood; RFC 9110 §15.5.22: and which
        // protocol a 426 asks for.
        return Err(ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            ErrorType::ValidationError,
            "UNSUPPORTED_WEBSOCKET_VERSION",
            "only WebSocket version 13 is supported",
        )
        .detail("supported_versions", "13")
        .header(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        )
        .header(header::UPGRADE, HeaderValue::from_static("websocket"))
        .header(header::CONNECTION, HeaderValue::from_static("upgrade")));
    }
    let mut keys = headers.get_all(header::SEC_WEBSOCKET_KEY).iter();
    match (keys.next(), keys.next()) {
        (Some(key), None) if is_websocket_key(key.as_bytes()) => Ok(()),
        (None, _) => Err(bad("the Sec-WebSocket-Key header is missing")),
        _ => Err(bad(
            "Sec-WebSocket-Key must be one value of 16 bytes in base64",
        )),
    }
}

/// Whether `key` is 16 bytes in base64: 22 characters of the alphabet and `==`.
fn is_websocket_key(key: &[u8]) -> bool {
    let is_base64 = |b: &u8| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/';
    key.len() == 24 && key[..22].iter().all(is_base64) && &key[22..] == b"=="
}

/// Checks a WebSocket upgrade request, before anything is registered.
fn validate<B>(request: &Request<B>) -> Result<(), ApiError> {
    check_upgrade(request.headers())?;
    if request.extensions().get::<OnUpgrade>().is_none() {
        return Err(ApiError::system(
            "this connection cannot be upgraded: serve it with hyper's `with_upgrades()`",
        ));
    }
    Ok(())
}

/// Answers `101` and spawns the connection's task. Call [`validate`] first.
fn upgrade<B>(
    request: &mut Request<B>,
    guard: ConnectionGuard,
    outbox: Outbox,
    settings: &WebSocketSettings,
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

    tokio::spawn(run(on_upgrade, guard, outbox, settings.clone()));

    let mut response = Response::new(ResponseBody::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    Ok(response)
}

/// Awaits the upgrade, then starts the connection's own task; a failed upgrade drops the
/// guard here.
async fn run(
    on_upgrade: OnUpgrade,
    guard: ConnectionGuard,
    outbox: Outbox,
    settings: WebSocketSettings,
) {
    let upgraded = match on_upgrade.await {
        Ok(upgraded) => upgraded,
        Err(error) => {
            tracing::debug!(connection_id = %guard.id(), "upgrade failed: {error}");
            guard.end(DisconnectReason::ClientClosed);
            return;
        }
    };
    let config = Some(settings.tungstenite());
    // Served by `dualcast::serve`, the connection is a plain TCP stream: take it back from
    // hyper, so that hyper's read buffer (8 KiB, kept until the client's first frame) and
    // its boxed IO are freed. Any other server's IO stays wrapped.
    match upgraded.downcast::<TokioIo<Counted<TcpStream>>>() {
        Ok(parts) => {
            let mut stream = FrameLimit::new(parts.io.into_inner(), settings.max_message_size);
            // Bytes the client sent after its handshake, if any; copied out so that the
            // buffer they sit in (hyper's whole read buffer) is freed now.
            let early = (!parts.read_buf.is_empty()).then(|| parts.read_buf.to_vec());
            drop(parts.read_buf);
            let socket = match early {
                None => WebSocketStream::from_raw_socket(stream, Role::Server, config).await,
                Some(mut early) => {
                    stream.filter_early(&mut early);
                    WebSocketStream::from_partially_read(stream, early, Role::Server, config).await
                }
            };
            // A task of its own, sized for this connection's life alone (not for the
            // upgrade that came before it).
            tokio::spawn(drive(socket, guard, outbox, &settings));
        }
        Err(upgraded) => {
            let io = FrameLimit::new(TokioIo::new(upgraded), settings.max_message_size);
            let socket = WebSocketStream::from_raw_socket(io, Role::Server, config).await;
            tokio::spawn(drive(socket, guard, outbox, &settings));
        }
    }
}

/// Runs an open WebSocket until it ends, then closes it.
fn drive<S: AsyncRead + AsyncWrite + Unpin>(
    socket: WebSocketStream<FrameLimit<S>>,
    guard: ConnectionGuard,
    outbox: Outbox,
    settings: &WebSocketSettings,
) -> impl Future<Output = ()> {
    let mut live = Live {
        guard,
        socket,
        outbox,
        batch: WriteBatch::new(|frame: &Frame| frame.websocket_frame()),
        handling: None,
        close_timeout: settings.close_timeout,
        pong_backlog: 0,
        max_pong_backlog: u32::try_from(settings.max_pong_backlog).unwrap_or(u32::MAX),
        close_code: None,
    };
    // The block captures `live` and works on it in place: the task holds each piece once
    // (an `async fn` taking `mut self` would hold a second copy).
    async move {
        let reason = poll_fn(|cx| live.poll_all(cx)).await;
        live.finish(reason).await;
    }
}

/// A running connection: tungstenite reads the client's frames and answers its control
/// frames; outgoing messages, already framed once per publish, are written straight to
/// the socket, every ready one in one `writev`.
struct Live<S> {
    guard: ConnectionGuard,
    socket: WebSocketStream<FrameLimit<S>>,
    outbox: Outbox,
    /// Frames being written.
    batch: WriteBatch<Frame>,
    /// The host's handler at work on this connection's messages; allocated (and boxed, to
    /// keep an idle task one word bigger only) while it is.
    handling: Option<Box<FuturesUnordered<Handling>>>,
    close_timeout: Duration,
    /// Bytes of pongs queued since the socket last took everything tungstenite had; while
    /// it is not zero, the rest is retried whenever the connection is polled.
    pong_backlog: u32,
    max_pong_backlog: u32,
    /// The close code to send instead of the reason's own (1007 for invalid UTF-8).
    close_code: Option<u16>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Live<S> {
    /// Ready with a reason once the connection ends: ended by the hub (which also ends it
    /// when its credential expires), or by what happened on the socket.
    fn poll_all(&mut self, cx: &mut Context<'_>) -> Poll<DisconnectReason> {
        if let Poll::Ready(reason) = self.guard.poll_end(cx) {
            return Poll::Ready(reason);
        }
        self.poll(cx)
    }

    /// Records the ending and closes the socket with the reason's close frame. A batch
    /// left half written is finished first, within the close timeout, so the client never
    /// sees a cut frame; if it cannot be, the socket is dropped without a close frame.
    async fn finish(&mut self, reason: DisconnectReason) {
        // The handler's calls for this connection are cancelled with it.
        self.handling = None;
        self.guard.end(reason);
        let reason = self.guard.end_reason().unwrap_or(reason);
        let frame = (reason != DisconnectReason::ClientClosed).then(|| CloseFrame {
            code: CloseCode::from(self.close_code.unwrap_or(reason.close_code())),
            reason: reason.code().into(),
        });
        // A client ended for what it sent is first told the rest of what it was answered
        // (the `rate_limited` errors before a flood's `protocol_error`, say); other endings
        // leave the outbox unsent.
        let drain = reason == DisconnectReason::ProtocolError;
        // Boxed: needed once, at the end, and should not size the live task.
        Box::pin(async {
            let deadline = Instant::now() + self.close_timeout;
            loop {
                if drain && !self.batch.is_half_written() {
                    while !self.batch.is_full() {
                        match self.outbox.try_recv() {
                            Some(frame) => self.batch.push(frame),
                            None => break,
                        }
                    }
                }
                let unsent = if drain {
                    !self.batch.is_empty()
                } else {
                    self.batch.is_half_written()
                };
                if !unsent {
                    break;
                }
                let rest = tokio::time::timeout_at(deadline, poll_fn(|cx| self.poll_batch(cx)));
                if !matches!(rest.await, Ok(Ok(()))) {
                    return;
                }
                if !drain {
                    break;
                }
            }
            close(&mut self.socket, frame, deadline).await;
        })
        .await;
    }

    /// Reads and writes as far as the socket allows; ready with a reason when it ends.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<DisconnectReason> {
        loop {
            // While a batch is half written, tungstenite must not write (a pong or a ping,
            // say) into the middle of a frame, and it may when reading; so reading waits
            // for the batch.
            if !self.batch.is_half_written() {
                // Pongs the socket would not take when they were queued: tungstenite's own
                // read does not retry them, so they are retried here until they are out.
                if self.pong_backlog > 0 {
                    if let Poll::Ready(Err(_)) = self.poll_control_frames(cx) {
                        return Poll::Ready(DisconnectReason::ClientClosed);
                    }
                }
                // The hub's heartbeat sweep asked for a ping (and woke this task).
                if self.guard.connection().take_ping_request() {
                    let _ = self
                        .socket
                        .start_send_unpin(WsMessage::Ping(Default::default()));
                    if let Poll::Ready(reason) = self.poll_control(0, cx) {
                        return Poll::Ready(reason);
                    }
                }
                if let Poll::Ready(reason) = self.poll_read(cx) {
                    return Poll::Ready(reason);
                }
            }
            self.poll_handling(cx);
            match self.poll_write(cx) {
                Poll::Ready(Some(reason)) => return Poll::Ready(reason),
                // A full batch went out: read, and send a ping that is due, before the
                // next one, so that a busy connection still hears its client.
                Poll::Ready(None) => {}
                // A ping asked for while a batch was half written goes out once it is whole.
                Poll::Pending
                    if !self.batch.is_half_written()
                        && self.guard.connection().ping_requested() => {}
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Writes out whatever tungstenite queued (pongs, the answer to a close frame); once
    /// all of it is out, no pong is owed.
    fn poll_control_frames(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        let flushed = ready!(self.socket.poll_flush_unpin(cx));
        if flushed.is_ok() {
            self.pong_backlog = 0;
        }
        Poll::Ready(flushed)
    }

    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<DisconnectReason> {
        loop {
            match self.socket.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(WsMessage::Close(_))) | None) => {
                    return Poll::Ready(DisconnectReason::ClientClosed)
                }
                Poll::Ready(Some(Ok(WsMessage::Ping(payload)))) => {
                    self.guard.touch();
                    if let Poll::Ready(reason) = self.poll_control(payload.len(), cx) {
                        return Poll::Ready(reason);
                    }
                }
                Poll::Ready(Some(Ok(WsMessage::Text(text)))) => {
                    self.guard.touch();
                    let content = match self.oversized(text.is_empty()) {
                        Some(oversized) => oversized,
                        None => Content::Text(text.as_str()),
                    };
                    if let Some(reason) = self.receive(content) {
                        return Poll::Ready(reason);
                    }
                }
                Poll::Ready(Some(Ok(WsMessage::Binary(bytes)))) => {
                    self.guard.touch();
                    let content = self.oversized(bytes.is_empty()).unwrap_or(Content::Binary);
                    if let Some(reason) = self.receive(content) {
                        return Poll::Ready(reason);
                    }
                }
                Poll::Ready(Some(Ok(_))) => self.guard.touch(),
                Poll::Ready(Some(Err(error))) => {
                    if matches!(error, WsError::Utf8(_)) {
                        self.close_code = Some(u16::from(CloseCode::Invalid)); // 1007
                    }
                    return Poll::Ready(read_error_reason(&self.guard, &error));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// The frame the frame limit discarded, when an `empty` message stands for it.
    fn oversized(&mut self, empty: bool) -> Option<Content<'static>> {
        if !empty {
            return None;
        }
        let size = self.socket.get_mut().take_oversized()?;
        Some(Content::Oversized {
            size,
            limit: self.socket.get_ref().limit(),
        })
    }

    /// Hands a client message to the hub and sends its answer back to this connection;
    /// a reason when the connection must end.
    fn receive(&mut self, content: Content<'_>) -> Option<DisconnectReason> {
        let hub = self.guard.hub();
        let connection = self.guard.connection();
        match hub.receive(connection, content, Transport::WebSocket) {
            Received::Reply(message) => hub.reply(connection, &message),
            Received::Refused(error) => hub.reply(connection, &error.to_message()),
            // Driven by this task, so it ends with the connection (at most
            // `max_in_flight` of them).
            Received::Handling(reply) => self.handling.get_or_insert_with(Box::default).push(reply),
            Received::Taken => {}
            Received::Ended => return Some(DisconnectReason::ProtocolError),
        }
        None
    }

    /// Sends the control frame tungstenite queued (a pong for a ping of `payload` bytes, or
    /// our own empty ping). A client that pings without reading leaves the pongs piling up
    /// in the server; past the [backlog bound](WebSocketSettings::max_pong_backlog) it is a
    /// slow consumer.
    fn poll_control(&mut self, payload: usize, cx: &mut Context<'_>) -> Poll<DisconnectReason> {
        let frame = u32::try_from(payload + 2).unwrap_or(u32::MAX);
        self.pong_backlog = self.pong_backlog.saturating_add(frame);
        match self.poll_control_frames(cx) {
            Poll::Ready(Ok(())) => Poll::Pending,
            Poll::Ready(Err(_)) => Poll::Ready(DisconnectReason::ClientClosed),
            Poll::Pending if self.pong_backlog > self.max_pong_backlog => {
                tracing::info!(
                    connection_id = %self.guard.id(),
                    backlog_bytes = self.pong_backlog,
                    "client pings without reading the pongs"
                );
                Poll::Ready(DisconnectReason::SlowConsumer)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// Writes what the outbox holds: `Ready(Some(reason))` when the connection ends,
    /// `Ready(None)` after a full batch or one the socket had stopped taking (the
    /// connection is busy: the caller reads before the next, so that it still hears its
    /// client), `Pending` once the outbox is empty or the socket full.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<Option<DisconnectReason>> {
        loop {
            if self.batch.is_empty() {
                // Every ready frame up to a batch, under one lock of the outbox.
                let outbox = &mut self.outbox;
                self.batch
                    .fill(|frames, room| outbox.poll_recv_many(cx, frames, room));
                if self.batch.is_empty() {
                    return Poll::Pending;
                }
            }
            // A batch the socket had stopped taking, or a full one: the connection is busy.
            let busy = self.batch.is_full() || self.batch.is_half_written();
            match self.poll_batch(cx) {
                Poll::Ready(Ok(())) if busy => return Poll::Ready(None),
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(_)) => return Poll::Ready(Some(DisconnectReason::ClientClosed)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Sends the replies of the host's handler that are ready (into this connection's
    /// outbox, behind what is queued); frees the set once it is empty.
    fn poll_handling(&mut self, cx: &mut Context<'_>) {
        let Some(handling) = self.handling.as_mut() else {
            return;
        };
        while let Poll::Ready(Some(reply)) = handling.poll_next_unpin(cx) {
            if let Some(message) = reply {
                self.guard.hub().reply(self.guard.connection(), &message);
            }
        }
        if handling.is_empty() {
            self.handling = None;
        }
    }

    /// Writes the rest of the current batch; ready once all of it is out.
    fn poll_batch(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if !self.batch.is_half_written() {
            // Whatever tungstenite queued (a pong, say, maybe half written) goes out whole
            // before our frames.
            if let Err(error) = ready!(self.poll_control_frames(cx)) {
                return Poll::Ready(Err(std::io::Error::other(error)));
            }
        }
        self.batch.poll_write(Pin::new(self.socket.get_mut()), cx)
    }
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

/// Sends `frame` and waits for the client's close frame, until `deadline`. Without a
/// frame to send (the client closed or vanished), sends tungstenite's answer to the
/// client's close frame, if it sent one (RFC 6455 §5.5.1: the same code back).
async fn close<S: AsyncRead + AsyncWrite + Unpin>(
    socket: &mut WebSocketStream<S>,
    frame: Option<CloseFrame>,
    deadline: Instant,
) {
    let closing = async {
        let sent = match frame {
            // Fails once the client's close frame was read: the answer is queued instead.
            Some(frame) => socket.close(Some(frame)).await.is_ok(),
            None => false,
        };
        // Flushes the answer to the client's close frame (or starts a close without a code).
        if !sent && SinkExt::close(socket).await.is_err() {
            return;
        }
        while let Some(Ok(_)) = socket.next().await {}
    };
    let _ = tokio::time::timeout_at(deadline, closing).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Memory per idle connection is a design constraint: the task of a live WebSocket
    /// holds the socket, the outbox handle and a few words, each once (160 bytes around the
    /// socket before client messages; the handler's calls in progress add one word, the
    /// outbox's catch-up one more).
    #[tokio::test]
    async fn a_live_connection_task_stays_small() {
        let hub = crate::Hub::new();
        let (guard, outbox) = hub
            .register(crate::Registration::new(
                "p",
                crate::ConnectionKind::WebSocket,
            ))
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let socket =
            WebSocketStream::from_raw_socket(FrameLimit::new(stream, 1024), Role::Server, None)
                .await;
        let socket_size = std::mem::size_of_val(&socket);
        let task = drive(socket, guard, outbox, &WebSocketSettings::default());
        let task_size = std::mem::size_of_val(&task);
        assert!(
            task_size <= socket_size + 176,
            "the task is {task_size} bytes around a {socket_size}-byte socket"
        );
    }

    /// A WebSocket of player `p` on a new hub, driven with `settings` over an in-memory pipe
    /// of `capacity` bytes each way: the client's end of the pipe, the hub, its events
    /// (subscribed before the connection registered) and the connection's task.
    async fn piped_connection(
        capacity: usize,
        settings: &WebSocketSettings,
        expires_at: Option<Instant>,
    ) -> (
        tokio::io::DuplexStream,
        crate::Hub,
        tokio::sync::broadcast::Receiver<crate::HubEvent>,
        tokio::task::JoinHandle<()>,
    ) {
        let hub = crate::Hub::new();
        let events = hub.subscribe();
        let mut registration = crate::Registration::new("p", crate::ConnectionKind::WebSocket);
        if let Some(deadline) = expires_at {
            registration = registration.credential_deadline(deadline);
        }
        let (guard, outbox) = hub.register(registration).unwrap();
        let (client, server) = tokio::io::duplex(capacity);
        let server = WebSocketStream::from_raw_socket(
            FrameLimit::new(server, settings.max_message_size),
            Role::Server,
            Some(settings.tungstenite()),
        )
        .await;
        let task = tokio::spawn(drive(server, guard, outbox, settings));
        (client, hub, events, task)
    }

    /// A client that reads nothing, over an in-memory pipe of 1 KiB, so that a write of
    /// the first 4 KiB message is cut short and blocks; the connection is driven on tokio's
    /// paused clock. Returns the client's end, the hub's events and the messages published.
    async fn blocked_connection(
        expires_in: Option<Duration>,
    ) -> (
        WebSocketStream<tokio::io::DuplexStream>,
        crate::Hub,
        tokio::sync::broadcast::Receiver<crate::HubEvent>,
        usize,
    ) {
        let expires_at = expires_in.map(|after| Instant::now() + after);
        let (client, hub, mut events, _) =
            piped_connection(1024, &WebSocketSettings::default(), expires_at).await;
        let published = 40;
        let message = crate::Message::json("big", "x".repeat(4096).into());
        for _ in 0..published {
            assert_eq!(hub.send_to_player("p", &message).failed, 0);
        }
        let client = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
        assert!(matches!(
            events.recv().await,
            Ok(crate::HubEvent::Connected { .. })
        ));
        (client, hub, events, published)
    }

    async fn ending(
        events: &mut tokio::sync::broadcast::Receiver<crate::HubEvent>,
    ) -> DisconnectReason {
        loop {
            let event = tokio::time::timeout(Duration::from_secs(600), events.recv())
                .await
                .expect("the connection ended")
                .unwrap();
            if let crate::HubEvent::Disconnected { reason, .. } = event {
                return reason;
            }
        }
    }

    /// Reads what the client got: the number of whole messages, and the close frame's
    /// code if one came.
    async fn read_all(
        client: &mut WebSocketStream<tokio::io::DuplexStream>,
    ) -> (usize, Option<u16>) {
        let mut messages = 0;
        loop {
            match client.next().await {
                Some(Ok(WsMessage::Text(_))) => messages += 1,
                Some(Ok(WsMessage::Close(frame))) => {
                    return (messages, frame.map(|f| u16::from(f.code)))
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return (messages, None),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_blocked_mid_frame_does_not_hold_the_connection_past_its_expiry() {
        let (mut client, hub, mut events, published) =
            blocked_connection(Some(Duration::from_secs(30))).await;
        // Nothing but the expiry can end it: the client neither reads nor closes.
        assert_eq!(ending(&mut events).await, DisconnectReason::AuthExpired);
        assert_eq!(hub.connection_count(), 0);
        // The client reads again: part of the messages (the write was blocked), and no
        // close frame, since the half-written batch could not be finished.
        let (received, close) = read_all(&mut client).await;
        assert!(
            received < published,
            "{received} of {published}: never blocked"
        );
        assert_eq!(close, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_blocked_connection_ended_by_the_hub_finishes_its_frame_then_sends_the_close() {
        let (mut client, hub, mut events, published) = blocked_connection(None).await;
        let shutdown = hub.shutdown();
        // The client reads within the close timeout: the cut frame is finished, then the
        // close frame says why; the frames still in the outbox are not sent.
        let (received, close) = read_all(&mut client).await;
        assert!(
            received < published,
            "{received} of {published}: never blocked"
        );
        assert_eq!(close, Some(1001));
        assert_eq!(ending(&mut events).await, DisconnectReason::ServerShutdown);
        tokio::time::timeout(Duration::from_secs(5), shutdown)
            .await
            .expect("every guard dropped");
    }

    /// A connection whose socket never keeps up (every write ends half way through a batch)
    /// still reads its client's frames between batches: the client's pings move
    /// `last_seen`, so a slow but answering client is not taken for dead.
    #[tokio::test(start_paused = true)]
    async fn a_connection_kept_busy_writing_still_reads_its_client() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, hub, _events, _task) =
            piped_connection(1024, &WebSocketSettings::default(), None).await;
        let message = crate::Message::json("big", "x".repeat(1000).into());
        for _ in 0..200 {
            assert_eq!(hub.send_to_player("p", &message).failed, 0);
        }
        let seen_at_first = hub.connections_of("p")[0].last_seen;
        let mut buffer = [0u8; 512];
        let mut moved = false;
        for _ in 0..200 {
            tokio::time::advance(Duration::from_millis(5)).await;
            // An empty masked ping from the client, then a little reading: the server's
            // socket is always full again at once.
            // (Within a timeout: a server that never reads fills the pipe, and the write
            // would wait forever.)
            let ping = client.write_all(&[0x89, 0x80, 1, 2, 3, 4]);
            tokio::time::timeout(Duration::from_secs(5), ping)
                .await
                .expect("the server reads its client while busy")
                .unwrap();
            let _ = client.read(&mut buffer).await.unwrap();
            if hub.connections_of("p")[0].last_seen > seen_at_first {
                moved = true;
                break;
            }
        }
        assert!(moved, "the client's pings were never read");
    }

    #[tokio::test]
    async fn extreme_buffer_settings_are_clamped_not_a_panic() {
        let settings = WebSocketSettings::new()
            .write_buffer_size(usize::MAX)
            .max_pong_backlog(usize::MAX);
        let (_client, server) = tokio::io::duplex(64);
        // tungstenite asserts that its write bound is above its write buffer.
        let _socket =
            WebSocketStream::from_raw_socket(server, Role::Server, Some(settings.tungstenite()))
                .await;
    }

    /// Property tests of the inbound frame path: whatever a client sends, the connection's
    /// task does not panic, ends (with `client_closed` or `protocol_error`) once the client's
    /// bytes end, and what it wrote back is well-formed frames; a client that sends only
    /// valid frames and then closes gets every ping answered and its close code back.
    mod inbound {
        use super::*;
        use proptest::collection::vec;
        use proptest::prelude::*;
        use std::io::{Read, Write};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio_tungstenite::tungstenite::protocol::WebSocket;

        /// One frame as a client puts it on the wire.
        #[derive(Debug, Clone)]
        struct RawFrame {
            fin: bool,
            rsv: u8,
            opcode: u8,
            masked: bool,
            payload: Vec<u8>,
        }

        impl RawFrame {
            fn encode(&self, mask: [u8; 4], out: &mut Vec<u8>) {
                out.push(u8::from(self.fin) << 7 | (self.rsv & 7) << 4 | (self.opcode & 15));
                let mask_bit = u8::from(self.masked) << 7;
                let len = self.payload.len();
                if len < 126 {
                    out.push(mask_bit | len as u8);
                } else if len <= usize::from(u16::MAX) {
                    out.push(mask_bit | 126);
                    out.extend_from_slice(&(len as u16).to_be_bytes());
                } else {
                    out.push(mask_bit | 127);
                    out.extend_from_slice(&(len as u64).to_be_bytes());
                }
                if self.masked {
                    out.extend_from_slice(&mask);
                    out.extend(
                        self.payload
                            .iter()
                            .enumerate()
                            .map(|(i, b)| b ^ mask[i % 4]),
                    );
                } else {
                    out.extend_from_slice(&self.payload);
                }
            }
        }

        /// Anything: every opcode, reserved bits, unmasked frames, fragments, sizes around
        /// the limit (1 KiB here), invalid UTF-8, and raw garbage between frames.
        fn any_input() -> impl Strategy<Value = Vec<u8>> {
            let frame = (
                any::<bool>(),
                prop_oneof![8 => Just(0u8), 1 => 0u8..8],
                prop_oneof![
                    3 => Just(1u8), 2 => Just(2u8), 2 => Just(9u8), 1 => Just(10u8),
                    1 => Just(8u8), 1 => Just(0u8), 1 => 0u8..16
                ],
                prop_oneof![9 => Just(true), 1 => Just(false)],
                prop_oneof![
                    6 => vec(any::<u8>(), 0..130),
                    2 => "[a-z{}\":, ]{0,200}".prop_map(String::into_bytes),
                    1 => vec(any::<u8>(), 1000..1100),
                ],
            )
                .prop_map(|(fin, rsv, opcode, masked, payload)| {
                    let mut bytes = Vec::new();
                    let frame = RawFrame {
                        fin,
                        rsv,
                        opcode,
                        masked,
                        payload,
                    };
                    frame.encode([0x37, 0xfa, 0x21, 0x3d], &mut bytes);
                    bytes
                });
            let piece = prop_oneof![9 => frame, 1 => vec(any::<u8>(), 1..40)];
            vec(piece, 0..24).prop_map(|pieces| pieces.concat())
        }

        /// Valid frames only (texts, binaries, pings, pongs), then a close with `code`.
        fn valid_then_close() -> impl Strategy<Value = (Vec<RawFrame>, u16)> {
            let frame = prop_oneof![
                "[ -~]{0,300}".prop_map(|t| (1u8, t.into_bytes())),
                vec(any::<u8>(), 0..300).prop_map(|b| (2u8, b)),
                vec(any::<u8>(), 0..126).prop_map(|b| (9u8, b)),
                vec(any::<u8>(), 0..126).prop_map(|b| (10u8, b)),
            ]
            .prop_map(|(opcode, payload)| RawFrame {
                fin: true,
                rsv: 0,
                opcode,
                masked: true,
                payload,
            });
            let code = prop_oneof![Just(1000u16), Just(1001), Just(1008), 3000u16..5000];
            (vec(frame, 0..20), code)
        }

        /// A client's reading end over the bytes the server wrote (its own writes, the
        /// answer to a close, go nowhere).
        struct Written(std::io::Cursor<Vec<u8>>);

        impl Read for Written {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                Read::read(&mut self.0, buf)
            }
        }

        impl Write for Written {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }

        /// What the server wrote, as a client reads it: every message, and whether the
        /// bytes ended cleanly (no protocol error on the client's side).
        fn as_client(written: Vec<u8>) -> (Vec<WsMessage>, Result<(), WsError>) {
            let mut client = WebSocket::from_raw_socket(
                Written(std::io::Cursor::new(written)),
                Role::Client,
                None,
            );
            let mut messages = Vec::new();
            loop {
                match client.read() {
                    Ok(message) => messages.push(message),
                    Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => {
                        return (messages, Ok(()))
                    }
                    Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)) => {
                        return (messages, Ok(()))
                    }
                    Err(WsError::Io(error)) if error.kind() == std::io::ErrorKind::WouldBlock => {
                        return (messages, Ok(()))
                    }
                    Err(error) => return (messages, Err(error)),
                }
            }
        }

        /// Whether `message` is an envelope the server answers a client message with.
        fn is_reply(message: &WsMessage) -> bool {
            let WsMessage::Text(text) = message else {
                return false;
            };
            let envelope: serde_json::Value = match serde_json::from_str(text.as_str()) {
                Ok(envelope) => envelope,
                Err(_) => return false,
            };
            matches!(envelope["type"].as_str(), Some("error" | "pong"))
        }

        /// Runs a connection that reads `input` and then the end of the client's bytes;
        /// the reason it ended and what it wrote.
        fn run_connection(input: &[u8]) -> (DisconnectReason, Vec<u8>) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .start_paused(true)
                .build()
                .unwrap();
            runtime.block_on(async {
                let settings = WebSocketSettings::default().max_message_size(1024);
                let (mut client, hub, mut events, task) =
                    piped_connection(1 << 20, &settings, None).await;
                client.write_all(input).await.unwrap();
                client.shutdown().await.unwrap();
                let mut written = Vec::new();
                tokio::time::timeout(Duration::from_secs(60), client.read_to_end(&mut written))
                    .await
                    .expect("the server closed its side")
                    .unwrap();
                tokio::time::timeout(Duration::from_secs(60), task)
                    .await
                    .expect("the task ended")
                    .expect("the task did not panic");
                assert_eq!(hub.connection_count(), 0, "the connection left the hub");
                let reason = loop {
                    match events.try_recv() {
                        Ok(crate::HubEvent::Disconnected { reason, .. }) => break reason,
                        Ok(_) => continue,
                        Err(error) => panic!("no disconnect event: {error}"),
                    }
                };
                (reason, written)
            })
        }

        #[tokio::test(start_paused = true)]
        async fn every_ping_is_answered_even_when_the_socket_was_full_as_its_pong_was_queued() {
            // Room for two pongs of 127 bytes, not four.
            let (mut client, _hub, _, _) =
                piped_connection(300, &WebSocketSettings::default(), None).await;
            // Two pings, answered; two more while those answers sit unread, so the third
            // pong is cut short and the fourth waits behind it. (The runtime has one thread:
            // yielding lets the connection's task read what was sent.)
            for pair in [0..2u8, 2..4] {
                let mut pings = Vec::new();
                for n in pair {
                    let ping = RawFrame {
                        fin: true,
                        rsv: 0,
                        opcode: 9,
                        masked: true,
                        payload: vec![n; 125],
                    };
                    ping.encode([1, 2, 3, 4], &mut pings);
                }
                client.write_all(&pings).await.unwrap();
                for _ in 0..16 {
                    tokio::task::yield_now().await;
                }
            }
            let mut answers = vec![0u8; 4 * 127];
            tokio::time::timeout(Duration::from_secs(60), client.read_exact(&mut answers))
                .await
                .expect("every pong, once the client reads")
                .unwrap();
            let (messages, _) = as_client(answers);
            let pongs: Vec<WsMessage> = (0..4u8)
                .map(|n| WsMessage::Pong(vec![n; 125].into()))
                .collect();
            assert_eq!(messages, pongs);
        }

        proptest! {
            #![proptest_config(crate::proptest_config(128))]

            #[test]
            fn whatever_a_client_sends_the_connection_ends_cleanly(input in any_input()) {
                let (reason, written) = run_connection(&input);
                prop_assert!(
                    matches!(reason, DisconnectReason::ClientClosed | DisconnectReason::ProtocolError),
                    "ended with {reason}"
                );
                let (messages, end) = as_client(written);
                prop_assert!(end.is_ok(), "the server wrote a broken frame: {end:?}");
                for message in &messages {
                    prop_assert!(
                        matches!(message, WsMessage::Pong(_) | WsMessage::Close(_))
                            || is_reply(message),
                        "unexpected {message:?}"
                    );
                }
                if reason == DisconnectReason::ProtocolError {
                    let close = messages.iter().rev().find_map(|m| match m {
                        WsMessage::Close(frame) => Some(frame.as_ref().map(|f| u16::from(f.code))),
                        _ => None,
                    });
                    prop_assert!(
                        matches!(close, Some(Some(1002 | 1007))),
                        "a protocol error is told with 1002 or 1007: {close:?}"
                    );
                }
            }

            #[test]
            fn valid_frames_are_answered_and_the_close_code_comes_back(
                (frames, code) in valid_then_close()
            ) {
                let mut input = Vec::new();
                for frame in &frames {
                    frame.encode([1, 2, 3, 4], &mut input);
                }
                let close = RawFrame {
                    fin: true,
                    rsv: 0,
                    opcode: 8,
                    masked: true,
                    payload: [&code.to_be_bytes()[..], b"bye"].concat(),
                };
                close.encode([9, 8, 7, 6], &mut input);
                let (reason, written) = run_connection(&input);
                prop_assert_eq!(reason, DisconnectReason::ClientClosed);
                let (messages, end) = as_client(written);
                prop_assert!(end.is_ok(), "{:?}", end);
                let pings: Vec<&[u8]> = frames
                    .iter()
                    .filter(|f| f.opcode == 9)
                    .map(|f| f.payload.as_slice())
                    .collect();
                let pongs: Vec<&[u8]> = messages
                    .iter()
                    .filter_map(|m| match m {
                        WsMessage::Pong(payload) => Some(payload.as_ref()),
                        _ => None,
                    })
                    .collect();
                prop_assert_eq!(pongs, pings, "every ping answered, in order");
                match messages.last() {
                    Some(WsMessage::Close(Some(frame))) => {
                        prop_assert_eq!(u16::from(frame.code), code);
                    }
                    other => prop_assert!(false, "expected the close answer, got {:?}", other),
                }
            }
        }
    }
}
