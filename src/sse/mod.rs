//! Server-Sent Events: a streaming body that drains the connection's outbox (SPEC §4, §5).
//!
//! The response carries `Content-Type: text/event-stream`, `Cache-Control: no-cache` and
//! `X-Accel-Buffering: no` (so nginx-style proxies do not buffer the stream). Each message
//! is one record whose `id:` is the envelope id, so a browser's `EventSource` sends
//! `Last-Event-ID` when it reconnects. A comment line goes out every
//! [keep-alive interval](SseSettings::keep_alive) so proxies keep the stream open. When the
//! connection ends for a reason the client should know, a final `disconnect` event says
//! why before the stream closes:
//!
//! ```text
//! event: disconnect
//! data: {"reason":"server_shutdown","code":1001,"reconnect":true,"recover":true}
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{header, HeaderValue, Response, StatusCode};
use pin_project::pin_project;
use tokio::time::{Instant, Sleep};

use crate::body::ResponseBody;
use crate::connection::DisconnectReason;
use crate::hub::{ConnectionGuard, EndWatch, Outbox};
use crate::message::Frame;

/// Settings of SSE streams.
#[derive(Debug, Clone)]
#[must_use]
pub struct SseSettings {
    keep_alive: Duration,
}

impl Default for SseSettings {
    fn default() -> Self {
        Self {
            keep_alive: Duration::from_secs(15),
        }
    }
}

impl SseSettings {
    /// Default settings.
    pub fn new() -> Self {
        Self::default()
    }

    /// How often a comment line is sent on an otherwise quiet stream. Default: 15 s.
    /// Minimum: 1 s.
    pub fn keep_alive(mut self, interval: Duration) -> Self {
        self.keep_alive = interval.max(Duration::from_secs(1));
        self
    }
}

const OPENING: &[u8] = b": connected\n\n";
const KEEP_ALIVE: &[u8] = b":\n\n";

/// The `200 text/event-stream` response streaming the connection of `guard`.
///
/// `expires_at` is when the credential that opened it expires: the stream then ends with
/// `auth_expired`.
pub(crate) fn response(
    guard: ConnectionGuard,
    outbox: Outbox,
    settings: &SseSettings,
    expires_at: Option<Instant>,
) -> Response<ResponseBody> {
    let now = Instant::now();
    let first_timer = next_deadline(now + settings.keep_alive, expires_at);
    let control = SseControl {
        end: guard.end_watch(),
        expires_at,
    };
    let stream = SseStream {
        guard,
        outbox,
        keep_alive: settings.keep_alive,
        expires_at,
        timer: tokio::time::sleep_until(first_timer),
        state: State::Opening,
    };
    let mut response = Response::new(ResponseBody::sse(stream));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response.extensions_mut().insert(control);
    response
}

/// Put in the extensions of an SSE response for a server that writes the stream itself:
/// the connection's end signal and its credential's expiry, which it must honour even
/// while a write to a client that stopped reading is blocked (and the body is not polled).
#[derive(Clone)]
pub(crate) struct SseControl {
    pub(crate) end: EndWatch,
    pub(crate) expires_at: Option<Instant>,
}

fn next_deadline(keep_alive_at: Instant, expires_at: Option<Instant>) -> Instant {
    expires_at.map_or(keep_alive_at, |expiry| expiry.min(keep_alive_at))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Opening,
    Streaming,
    Done,
}

/// The event stream of one SSE connection; owns the connection's guard.
#[pin_project]
pub(crate) struct SseStream {
    guard: ConnectionGuard,
    outbox: Outbox,
    keep_alive: Duration,
    expires_at: Option<Instant>,
    #[pin]
    timer: Sleep,
    state: State,
}

impl SseStream {
    /// The next chunk of the stream; `None` when it is over.
    pub(crate) fn poll_event(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let mut this = self.project();
        match *this.state {
            State::Done => return Poll::Ready(None),
            State::Opening => {
                *this.state = State::Streaming;
                return Poll::Ready(Some(Bytes::from_static(OPENING)));
            }
            State::Streaming => {}
        }
        if let Poll::Ready(reason) = this.guard.poll_end(cx) {
            *this.state = State::Done;
            return Poll::Ready(Some(disconnect_event(reason)));
        }
        // The timer before the outbox, so that a busy stream still expires on time.
        if this.timer.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            if this.expires_at.is_some_and(|expiry| expiry <= now) {
                this.guard.end(DisconnectReason::AuthExpired);
                *this.state = State::Done;
                return Poll::Ready(Some(disconnect_event(DisconnectReason::AuthExpired)));
            }
            this.timer
                .as_mut()
                .reset(next_deadline(now + *this.keep_alive, *this.expires_at));
            return Poll::Ready(Some(Bytes::from_static(KEEP_ALIVE)));
        }
        match this.outbox.poll_recv(cx) {
            Poll::Ready(Some(frame)) => Poll::Ready(Some(batch(frame, this.outbox))),
            Poll::Ready(None) => {
                *this.state = State::Done;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Most bytes gathered into one chunk of the stream.
const MAX_CHUNK: usize = 64 * 1024;

/// `first` alone (shared, no copy) when nothing else is waiting; otherwise `first` and the
/// frames behind it in one chunk, so a burst costs the HTTP layer one chunk, not many.
fn batch(first: Frame, outbox: &mut Outbox) -> Bytes {
    let Some(second) = outbox.try_recv() else {
        return first.sse_event().clone();
    };
    let mut chunk = BytesMut::with_capacity(MAX_CHUNK.min(first.sse_event().len() * 8));
    chunk.extend_from_slice(first.sse_event());
    chunk.extend_from_slice(second.sse_event());
    while chunk.len() < MAX_CHUNK {
        match outbox.try_recv() {
            Some(frame) => chunk.extend_from_slice(frame.sse_event()),
            None => break,
        }
    }
    chunk.freeze()
}

fn disconnect_event(reason: DisconnectReason) -> Bytes {
    Bytes::from(format!("event: disconnect\ndata: {}\n\n", reason.to_json()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::ConnectionKind;
    use crate::hub::Hub;
    use http_body_util::BodyExt;

    async fn next_chunk(body: &mut Pin<Box<ResponseBody>>) -> String {
        let frame = body.frame().await.expect("a chunk").expect("infallible");
        String::from_utf8(frame.into_data().expect("data").to_vec()).expect("UTF-8")
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_stream_still_ends_when_the_credential_expires() {
        let hub = Hub::new();
        let (guard, outbox) = hub.register("p", ConnectionKind::Sse, None).unwrap();
        let started = Instant::now();
        let expiry = started + Duration::from_secs(10);
        let mut body =
            Box::pin(response(guard, outbox, &SseSettings::new(), Some(expiry)).into_body());
        assert_eq!(next_chunk(&mut body).await, ": connected\n\n");
        let message = crate::Message::json("tick", serde_json::Value::Null);
        let mut messages = 0;
        let last = loop {
            // A message is always waiting when the stream is polled.
            hub.send_to_player("p", &message);
            let chunk = next_chunk(&mut body).await;
            if chunk.starts_with("event: disconnect") {
                break chunk;
            }
            messages += chunk.matches("data: ").count();
            assert!(
                started.elapsed() <= Duration::from_secs(10),
                "still streaming after expiry"
            );
            tokio::time::advance(Duration::from_millis(500)).await;
        };
        assert!(last.contains("auth_expired"), "{last}");
        assert!(messages >= 19, "messages flowed until then: {messages}");
    }

    #[tokio::test]
    async fn frames_waiting_together_leave_in_one_chunk() {
        let hub = Hub::new();
        let (guard, outbox) = hub.register("p", ConnectionKind::Sse, None).unwrap();
        let mut body = Box::pin(response(guard, outbox, &SseSettings::new(), None).into_body());
        assert_eq!(next_chunk(&mut body).await, ": connected\n\n");
        let ids: Vec<_> = (0..3)
            .map(|n| {
                hub.send_to_player("p", &crate::Message::json("n", n.into()))
                    .id
            })
            .collect();
        let chunk = next_chunk(&mut body).await;
        assert_eq!(chunk.matches("\n\n").count(), 3, "{chunk}");
        for id in ids {
            assert!(chunk.contains(&format!("id: {id}\n")));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn keep_alives_flow_until_the_credential_expires() {
        let hub = Hub::new();
        let (guard, outbox) = hub.register("p", ConnectionKind::Sse, None).unwrap();
        let settings = SseSettings::new().keep_alive(Duration::from_secs(15));
        let started = Instant::now();
        let mut body = Box::pin(
            response(
                guard,
                outbox,
                &settings,
                Some(started + Duration::from_secs(40)),
            )
            .into_body(),
        );

        assert_eq!(next_chunk(&mut body).await, ": connected\n\n");
        assert_eq!(next_chunk(&mut body).await, ":\n\n");
        assert_eq!(started.elapsed(), Duration::from_secs(15));
        assert_eq!(next_chunk(&mut body).await, ":\n\n");
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        let last = next_chunk(&mut body).await;
        assert_eq!(started.elapsed(), Duration::from_secs(40));
        assert!(
            last.starts_with("event: disconnect\ndata: {\"reason\":\"auth_expired\""),
            "{last}"
        );
        assert!(
            body.frame().await.is_none(),
            "the stream ends after the disconnect event"
        );
        drop(body);
        assert_eq!(
            hub.connection_count(),
            0,
            "dropping the body dropped the guard"
        );
    }
}
