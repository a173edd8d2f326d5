//! A connection's life as one value: [`ConnectionGuard`], and the [`Outbox`] its transport
//! drains.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use dualcast_layers::OwnedLeases;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::Hub;
use crate::connection::{
    Connection, ConnectionId, ConnectionInfo, ConnectionKind, DisconnectReason,
};
use crate::message::Frame;

/// Keeps one connection in the hub; dropping it removes the connection, logs the ending
/// with its reason, emits [`HubEvent::Disconnected`](super::HubEvent::Disconnected), and
/// then drops the connection's leases.
///
/// Owned by the WebSocket task or the SSE body, so every way a connection can end cleans
/// up the same way.
pub struct ConnectionGuard {
    hub: Hub,
    connection: Arc<Connection>,
    /// When the hub ends it with `auth_expired`; kept here rather than in the connection
    /// record, which every delivery reads.
    credential_deadline: Option<Instant>,
    /// Dropped after the connection has left the hub (fields drop after `Drop::drop`).
    _leases: OwnedLeases,
}

/// A connection's end signal without its ownership: lets the code that writes a stream
/// notice that the connection ended even while it cannot poll the stream's body.
#[derive(Clone)]
pub(crate) struct EndWatch(Arc<Connection>);

impl fmt::Debug for EndWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("EndWatch").field(&self.0.id).finish()
    }
}

impl EndWatch {
    pub(crate) fn poll_end(&self, cx: &mut Context<'_>) -> Poll<DisconnectReason> {
        self.0.poll_end(cx)
    }
}

impl ConnectionGuard {
    pub(super) fn new(
        hub: Hub,
        connection: Arc<Connection>,
        credential_deadline: Option<Instant>,
        leases: OwnedLeases,
    ) -> Self {
        Self {
            hub,
            connection,
            credential_deadline,
            _leases: leases,
        }
    }

    /// The hub's record of the connection.
    pub(crate) fn connection(&self) -> &Arc<Connection> {
        &self.connection
    }

    /// The hub the connection is in.
    pub(crate) fn hub(&self) -> &Hub {
        &self.hub
    }

    pub(crate) fn end_watch(&self) -> EndWatch {
        EndWatch(self.connection.clone())
    }

    /// The connection's id.
    #[must_use]
    pub fn id(&self) -> ConnectionId {
        self.connection.id
    }

    /// The connection's player.
    #[must_use]
    pub fn player_id(&self) -> &str {
        &self.connection.player_id
    }

    /// The connection's transport.
    #[must_use]
    pub fn kind(&self) -> ConnectionKind {
        self.connection.kind
    }

    /// A snapshot of the connection's metadata.
    #[must_use]
    pub fn info(&self) -> ConnectionInfo {
        self.connection.info()
    }

    /// Records a sign of life from the client (moves `last_seen`).
    pub fn touch(&self) {
        self.connection.touch();
    }

    /// Whether the hub asked for a ping since the last call (a connection registered with
    /// [`heartbeats`](super::Registration::heartbeats) that has been quiet for the ping
    /// interval). The hub wakes the task that last called [`poll_end`](Self::poll_end)
    /// when it asks; that task sends a ping, and calls [`touch`](Self::touch) when the pong
    /// (or any frame) comes.
    pub fn take_ping_request(&self) -> bool {
        self.connection.take_ping_request()
    }

    /// Ends the connection with `reason`, unless it already has one; the transport sees it
    /// through [`poll_end`](Self::poll_end). Transports call this for what they see on the
    /// wire (the client closed, broke the protocol); the hub's own endings go through
    /// [`Hub::disconnect_player`] and the hub's internal paths.
    pub fn end(&self, reason: DisconnectReason) {
        self.connection.end(reason);
    }

    /// The reason the connection is ending, once it is.
    #[must_use]
    pub fn end_reason(&self) -> Option<DisconnectReason> {
        self.connection.end_reason()
    }

    /// Ready with the reason once the hub (or anyone) ended the connection. The task
    /// polling it is also woken when the hub asks for a ping
    /// ([`take_ping_request`](Self::take_ping_request)).
    pub fn poll_end(&self, cx: &mut Context<'_>) -> Poll<DisconnectReason> {
        self.connection.poll_end(cx)
    }
}

impl Drop for Outbox {
    /// The transport is done with it: what is queued is freed, and deliveries to the
    /// connection fail from now on (it is removed as closed, if it was not already).
    fn drop(&mut self) {
        self.connection.outbox.close();
    }
}

impl fmt::Debug for ConnectionGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionGuard")
            .field("connection", &self.connection.id)
            .finish_non_exhaustive()
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.connection.end(DisconnectReason::ClientClosed);
        let reason = self
            .connection
            .end_reason()
            .unwrap_or(DisconnectReason::ClientClosed);
        self.hub
            .remove(&self.connection, reason, self.credential_deadline);
        if let Some(observer) = self.hub.observer() {
            observer.connection_closed(self.connection.kind.transport(), reason.code());
        }
        let lived = self.connection.established_at.elapsed().unwrap_or_default();
        tracing::info!(
            connection_id = %self.connection.id,
            player_id = &*self.connection.player_id,
            kind = self.connection.kind.as_str(),
            session_id = self.connection.session_id.as_deref().unwrap_or(""),
            reason = reason.code(),
            lived_ms = lived.as_millis() as u64,
            "connection closed"
        );
        if self.hub.inner.guards.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.hub.inner.guards_gone.notify_waiters();
        }
    }
}

/// The queue of frames published to one connection, drained by its transport.
#[derive(Debug)]
pub struct Outbox {
    /// What the connection is sent before anything live (replay, pending queue, the
    /// `recovery` event); `None` once sent, or if there was none. Boxed so that the
    /// idle connection pays one word for it.
    catch_up: Option<Box<CatchUp>>,
    /// Its queue is in the connection, which the hub's deliveries fill.
    connection: Arc<Connection>,
}

/// A connection's catch-up.
#[derive(Debug)]
struct CatchUp {
    frames: VecDeque<Frame>,
    /// On a clustered hub, a resume this node's replay buffer could not serve: the
    /// catch-up read from the cluster's log, sent before anything else.
    fetching: Option<oneshot::Receiver<VecDeque<Frame>>>,
    /// The log ids that catch-up replayed: the reader may deliver some of them live too
    /// (they were in the log before the connection, applied after); skipped once.
    replayed: Vec<Arc<str>>,
    /// The last of them in the log's order: a live frame after it ends the skipping.
    replayed_up_to: Option<(u64, u64)>,
}

impl Outbox {
    pub(super) fn new(
        connection: Arc<Connection>,
        catch_up: VecDeque<Frame>,
        fetching: Option<oneshot::Receiver<VecDeque<Frame>>>,
    ) -> Self {
        let catch_up = (!catch_up.is_empty() || fetching.is_some()).then(|| {
            Box::new(CatchUp {
                frames: catch_up,
                fetching,
                replayed: Vec::new(),
                replayed_up_to: None,
            })
        });
        Self {
            catch_up,
            connection,
        }
    }

    /// The next catch-up frame, freeing the catch-up after the last (`Pending` while the
    /// log is being read for it).
    fn poll_catch_up(&mut self, cx: Option<&mut Context<'_>>) -> Poll<Option<Frame>> {
        let Some(catch_up) = self.catch_up.as_mut() else {
            return Poll::Ready(None);
        };
        if let Some(fetching) = catch_up.fetching.as_mut() {
            let fetched = match cx {
                Some(cx) => match Pin::new(fetching).poll(cx) {
                    Poll::Ready(fetched) => fetched.ok(),
                    Poll::Pending => return Poll::Pending,
                },
                None => match fetching.try_recv() {
                    Ok(fetched) => Some(fetched),
                    Err(oneshot::error::TryRecvError::Empty) => return Poll::Pending,
                    Err(oneshot::error::TryRecvError::Closed) => None,
                },
            };
            catch_up.fetching = None;
            if let Some(fetched) = fetched {
                catch_up.replayed = fetched
                    .iter()
                    .filter(|frame| super::backplane::log_order(frame.id()).is_some())
                    .map(Frame::shared_id)
                    .collect();
                catch_up.replayed_up_to = catch_up
                    .replayed
                    .iter()
                    .filter_map(|id| super::backplane::log_order(id))
                    .max();
                catch_up.frames = fetched;
            }
        }
        let frame = catch_up.frames.pop_front();
        if catch_up.frames.is_empty() && catch_up.replayed.is_empty() {
            self.catch_up = None;
        }
        Poll::Ready(frame)
    }

    /// Whether a live `frame` was replayed already; past the replayed ids, stops looking.
    fn replayed_already(&mut self, frame: &Frame) -> bool {
        let Some(catch_up) = self.catch_up.as_mut() else {
            return false;
        };
        if catch_up.replayed.iter().any(|id| **id == *frame.id()) {
            return true;
        }
        let past = super::backplane::log_order(frame.id()).is_some()
            && super::backplane::log_order(frame.id()) > catch_up.replayed_up_to;
        if past && catch_up.frames.is_empty() {
            self.catch_up = None;
        }
        false
    }

    /// The next frame; `None` once the hub can send no more.
    pub async fn recv(&mut self) -> Option<Frame> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Polls for the next frame.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Frame>> {
        match self.poll_catch_up(Some(cx)) {
            Poll::Ready(Some(frame)) => return Poll::Ready(Some(frame)),
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => {}
        }
        loop {
            match self.connection.outbox.poll_recv(cx) {
                Poll::Ready(frame) if self.replayed_already(&frame) => continue,
                Poll::Ready(frame) => return Poll::Ready(Some(frame)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// A frame if one is ready now.
    pub fn try_recv(&mut self) -> Option<Frame> {
        match self.poll_catch_up(None) {
            Poll::Ready(Some(frame)) => return Some(frame),
            Poll::Pending => return None,
            Poll::Ready(None) => {}
        }
        loop {
            let frame = self.connection.outbox.try_recv()?;
            if !self.replayed_already(&frame) {
                return Some(frame);
            }
        }
    }

    /// Moves up to `max` ready frames to `out`, taking the queue's lock once when no
    /// catch-up is left to send; how many it moved. With none ready, the task is woken when
    /// one comes.
    pub(crate) fn poll_recv_many(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut Vec<Frame>,
        max: usize,
    ) -> usize {
        if self.catch_up.is_none() {
            return self.connection.outbox.poll_recv_many(cx, out, max);
        }
        let mut moved = 0;
        while moved < max {
            match self.poll_recv(cx) {
                Poll::Ready(Some(frame)) => out.push(frame),
                Poll::Ready(None) | Poll::Pending => break,
            }
            moved += 1;
        }
        moved
    }

    /// The connection this outbox feeds.
    #[must_use]
    pub fn connection_id(&self) -> ConnectionId {
        self.connection.id
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}
