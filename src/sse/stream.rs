//! The event stream of one SSE connection: owns the connection's guard, drains its outbox,
//! sends keep-alive comments and, when the hub ends the connection, a `disconnect` event.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pin_project::pin_project;
use tokio::time::{Instant, Sleep};

use crate::connection::DisconnectReason;
use crate::hub::{ConnectionGuard, EndWatch, Outbox};
use crate::message::Frame;

/// The first chunk of every stream: a comment, so the client knows at once it is open.
const OPENING: &[u8] = b": connected\n\n";
/// What a quiet stream sends every keep-alive interval: a comment by default.
const KEEP_ALIVE: &[u8] = b":\n\n";
/// The keep-alive of a stream opened with `keepalive=event`: an event a browser's
/// `EventSource` hands to the page (an empty `data:` line, so that it is dispatched).
const PING_EVENT: &[u8] = b"event: ping\ndata:\n\n";

/// How a stream keeps itself alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum KeepAlive {
    /// A comment line, which an `EventSource` does not surface.
    #[default]
    Comment,
    /// An `event: ping`, which a page sees: a client's watchdog can tell a live stream.
    PingEvent,
}

impl KeepAlive {
    fn bytes(self) -> &'static [u8] {
        match self {
            Self::Comment => KEEP_ALIVE,
            Self::PingEvent => PING_EVENT,
        }
    }
}

/// Put in the extensions of an SSE response dualcast made, for a server that writes the
/// stream itself: the connection's end signal, which it must honour even while a write to
/// a client that stopped reading is blocked (and the body is not polled). Its presence is
/// also how that server knows the response is dualcast's own stream.
#[derive(Clone, Debug)]
pub(crate) struct SseControl {
    pub(crate) end: EndWatch,
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
    #[pin]
    timer: Sleep,
    state: State,
    style: KeepAlive,
}

impl SseStream {
    /// The stream of `guard`'s connection, with a keep-alive of `style` every
    /// `keep_alive`, and the control a server writing it directly watches.
    pub(crate) fn new(
        guard: ConnectionGuard,
        outbox: Outbox,
        keep_alive: Duration,
        style: KeepAlive,
    ) -> (Self, SseControl) {
        let control = SseControl {
            end: guard.end_watch(),
        };
        let stream = Self {
            guard,
            outbox,
            keep_alive,
            timer: tokio::time::sleep_until(Instant::now() + keep_alive),
            state: State::Opening,
            style,
        };
        (stream, control)
    }

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
        // The end signal before the outbox, so that a busy stream still ends at once.
        if let Poll::Ready(reason) = this.guard.poll_end(cx) {
            *this.state = State::Done;
            return Poll::Ready(Some(disconnect_event(reason)));
        }
        if this.timer.as_mut().poll(cx).is_ready() {
            this.timer.as_mut().reset(Instant::now() + *this.keep_alive);
            return Poll::Ready(Some(Bytes::from_static(this.style.bytes())));
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
    use crate::hub::{Hub, Registration};

    /// The stream of a new SSE connection of `p` on `hub`, with `registration`'s deadline.
    fn stream_of(hub: &Hub, deadline: Option<Instant>) -> Pin<Box<SseStream>> {
        let mut registration = Registration::new("p", ConnectionKind::Sse);
        if let Some(deadline) = deadline {
            registration = registration.credential_deadline(deadline);
        }
        let (guard, outbox) = hub.register(registration).unwrap();
        Box::pin(SseStream::new(guard, outbox, Duration::from_secs(15), KeepAlive::Comment).0)
    }

    async fn next_chunk(stream: &mut Pin<Box<SseStream>>) -> String {
        let chunk = std::future::poll_fn(|cx| stream.as_mut().poll_event(cx))
            .await
            .expect("a chunk");
        String::from_utf8(chunk.to_vec()).expect("UTF-8")
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_stream_still_ends_when_the_hub_expires_the_credential() {
        let hub = Hub::new();
        let started = Instant::now();
        let mut stream = stream_of(&hub, Some(started + Duration::from_secs(10)));
        assert_eq!(next_chunk(&mut stream).await, ": connected\n\n");
        let message = crate::Message::json("tick", serde_json::Value::Null);
        let mut messages = 0;
        let last = loop {
            // A message is always waiting when the stream is polled.
            hub.send_to_player("p", &message);
            let chunk = next_chunk(&mut stream).await;
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
        let mut stream = stream_of(&hub, None);
        assert_eq!(next_chunk(&mut stream).await, ": connected\n\n");
        let ids: Vec<_> = (0..3)
            .map(|n| {
                hub.send_to_player("p", &crate::Message::json("n", n.into()))
                    .id
            })
            .collect();
        let chunk = next_chunk(&mut stream).await;
        assert_eq!(chunk.matches("\n\n").count(), 3, "{chunk}");
        for id in ids {
            assert!(chunk.contains(&format!("id: {id}\n")));
        }
    }

    /// `keepalive=event`: the keep-alive is an event an `EventSource` dispatches (an
    /// `event:` line and an empty `data:` line), and it has no `id:`, so the browser's
    /// `Last-Event-ID` stays the last message's.
    #[tokio::test(start_paused = true)]
    async fn a_ping_event_stream_keeps_alive_with_visible_events() {
        let hub = Hub::new();
        let (guard, outbox) = hub
            .register(Registration::new("p", ConnectionKind::Sse))
            .unwrap();
        let (stream, _control) =
            SseStream::new(guard, outbox, Duration::from_secs(15), KeepAlive::PingEvent);
        let mut stream = Box::pin(stream);
        let started = Instant::now();
        assert_eq!(next_chunk(&mut stream).await, ": connected\n\n");
        assert_eq!(next_chunk(&mut stream).await, "event: ping\ndata:\n\n");
        assert_eq!(started.elapsed(), Duration::from_secs(15));
    }

    #[tokio::test(start_paused = true)]
    async fn keep_alives_flow_until_the_credential_expires() {
        let hub = Hub::new();
        let started = Instant::now();
        let mut stream = stream_of(&hub, Some(started + Duration::from_secs(40)));
        assert_eq!(next_chunk(&mut stream).await, ": connected\n\n");
        assert_eq!(next_chunk(&mut stream).await, ":\n\n");
        assert_eq!(started.elapsed(), Duration::from_secs(15));
        assert_eq!(next_chunk(&mut stream).await, ":\n\n");
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        let last = next_chunk(&mut stream).await;
        assert_eq!(started.elapsed(), Duration::from_secs(40));
        assert!(
            last.starts_with("event: disconnect\ndata: {\"reason\":\"auth_expired\""),
            "{last}"
        );
        assert!(
            std::future::poll_fn(|cx| stream.as_mut().poll_event(cx))
                .await
                .is_none(),
            "the stream ends after the disconnect event"
        );
        drop(stream);
        assert_eq!(
            hub.connection_count(),
            0,
            "dropping the stream dropped the guard"
        );
    }
}
