//! Connections: their ids, kinds, health, metadata and the reasons they end (SPEC §2).

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::task::AtomicWaker;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::message::{unix_millis, Frame};

/// A connection's id, unique in the hub for its lifetime. Displays as `c<number>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub(crate) u64);

impl ConnectionId {
    /// The number inside the id.
    #[must_use]
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}", self.0)
    }
}

impl Serialize for ConnectionId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// The transport of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConnectionKind {
    /// A WebSocket.
    WebSocket,
    /// A Server-Sent-Events stream.
    Sse,
}

impl ConnectionKind {
    /// `"websocket"` or `"sse"`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::WebSocket => "websocket",
            Self::Sse => "sse",
        }
    }

    /// The metrics label of this kind.
    #[must_use]
    pub const fn transport(self) -> dualcast_layers::metrics::Transport {
        match self {
            Self::WebSocket => dualcast_layers::metrics::Transport::WebSocket,
            Self::Sse => dualcast_layers::metrics::Transport::Sse,
        }
    }
}

/// How well a connection keeps up (SPEC §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Keeping up.
    Healthy,
    /// Its outbox is above the high-water mark.
    Degraded,
    /// It is ending and receives nothing more.
    Dead,
}

/// Why a connection ended: a stable code, a reconnect hint and a WebSocket close code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// The client closed it, or vanished.
    ClientClosed,
    /// The player logged out; all of its connections end.
    Logout,
    /// A new game session began; the connections of the old one end.
    SessionReplaced,
    /// The token expired while the connection was open.
    AuthExpired,
    /// The credentials were refused.
    Unauthorized,
    /// The client broke the protocol.
    ProtocolError,
    /// No sign of life within the heartbeat timeout.
    HeartbeatTimeout,
    /// The outbox overflowed: the client reads too slowly.
    SlowConsumer,
    /// The server is shutting down.
    ServerShutdown,
}

/// What a client should do after a disconnect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct ReconnectHint {
    /// Should the client connect again?
    pub reconnect: bool,
    /// Should it ask for the messages it missed (`Last-Event-ID` / `last_event_id`)?
    pub recover: bool,
}

impl DisconnectReason {
    const ALL: [Self; 9] = [
        Self::ClientClosed,
        Self::Logout,
        Self::SessionReplaced,
        Self::AuthExpired,
        Self::Unauthorized,
        Self::ProtocolError,
        Self::HeartbeatTimeout,
        Self::SlowConsumer,
        Self::ServerShutdown,
    ];

    /// The stable code, e.g. `"slow_consumer"`.
    #[must_use]
    pub const fn code(self) -> &'static str {
        match self {
            Self::ClientClosed => "client_closed",
            Self::Logout => "logout",
            Self::SessionReplaced => "session_replaced",
            Self::AuthExpired => "auth_expired",
            Self::Unauthorized => "unauthorized",
            Self::ProtocolError => "protocol_error",
            Self::HeartbeatTimeout => "heartbeat_timeout",
            Self::SlowConsumer => "slow_consumer",
            Self::ServerShutdown => "server_shutdown",
        }
    }

    /// The WebSocket close code sent with this reason: standard codes where one fits
    /// (1000 normal, 1001 going away, 1002 protocol error), 4000–4005 otherwise.
    #[must_use]
    pub const fn close_code(self) -> u16 {
        match self {
            Self::ClientClosed => 1000,
            Self::ServerShutdown => 1001,
            Self::ProtocolError => 1002,
            Self::Logout => 4000,
            Self::SessionReplaced => 4001,
            Self::AuthExpired => 4002,
            Self::Unauthorized => 4003,
            Self::HeartbeatTimeout => 4004,
            Self::SlowConsumer => 4005,
        }
    }

    /// Should the client reconnect, and recover what it missed?
    #[must_use]
    pub const fn hint(self) -> ReconnectHint {
        let (reconnect, recover) = match self {
            Self::ClientClosed | Self::Logout | Self::SessionReplaced | Self::Unauthorized => {
                (false, false)
            }
            Self::AuthExpired | Self::ProtocolError => (true, false),
            Self::HeartbeatTimeout | Self::SlowConsumer | Self::ServerShutdown => (true, true),
        };
        ReconnectHint { reconnect, recover }
    }

    /// The JSON a client is told before the close:
    /// `{"reason":"slow_consumer","code":4005,"reconnect":true,"recover":true}`.
    #[must_use]
    pub fn to_json(self) -> String {
        let hint = self.hint();
        format!(
            r#"{{"reason":"{}","code":{},"reconnect":{},"recover":{}}}"#,
            self.code(),
            self.close_code(),
            hint.reconnect,
            hint.recover
        )
    }

    fn to_u8(self) -> u8 {
        // Position + 1, so that 0 means "not ended".
        Self::ALL
            .iter()
            .position(|r| *r == self)
            .map_or(0, |i| i as u8 + 1)
    }

    fn from_u8(value: u8) -> Option<Self> {
        Self::ALL.get(usize::from(value).checked_sub(1)?).copied()
    }
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl Serialize for DisconnectReason {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code())
    }
}

/// A snapshot of one connection's metadata (the seeds' `ConnectionMetadata`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnectionInfo {
    /// The connection id.
    pub id: ConnectionId,
    /// The player it belongs to.
    pub player_id: Arc<str>,
    /// Its transport.
    pub kind: ConnectionKind,
    /// The game session it joined, if any.
    pub session_id: Option<Arc<str>>,
    /// When it was registered.
    #[serde(serialize_with = "serialize_time")]
    pub established_at: SystemTime,
    /// When the client last showed a sign of life.
    #[serde(serialize_with = "serialize_time")]
    pub last_seen: SystemTime,
    /// Its health.
    pub health: Health,
}

fn serialize_time<S: serde::Serializer>(
    time: &SystemTime,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&dualcast_layers::error::rfc3339(*time))
}

/// The Hub's record of a live connection, shared by the Hub and the transport.
pub(crate) struct Connection {
    pub(crate) id: ConnectionId,
    pub(crate) player_id: Arc<str>,
    pub(crate) kind: ConnectionKind,
    pub(crate) session_id: Option<Arc<str>>,
    pub(crate) established_at: SystemTime,
    last_seen_ms: AtomicU64,
    health: AtomicU8,
    end_reason: AtomicU8,
    end_waker: AtomicWaker,
    pub(crate) outbox: mpsc::Sender<Frame>,
}

impl Connection {
    pub(crate) fn new(
        id: ConnectionId,
        player_id: Arc<str>,
        kind: ConnectionKind,
        session_id: Option<Arc<str>>,
        outbox: mpsc::Sender<Frame>,
    ) -> Self {
        let now = SystemTime::now();
        Self {
            id,
            player_id,
            kind,
            session_id,
            established_at: now,
            last_seen_ms: AtomicU64::new(unix_millis(now)),
            health: AtomicU8::new(Health::Healthy as u8),
            end_reason: AtomicU8::new(0),
            end_waker: AtomicWaker::new(),
            outbox,
        }
    }

    pub(crate) fn info(&self) -> ConnectionInfo {
        ConnectionInfo {
            id: self.id,
            player_id: self.player_id.clone(),
            kind: self.kind,
            session_id: self.session_id.clone(),
            established_at: self.established_at,
            last_seen: UNIX_EPOCH
                + Duration::from_millis(self.last_seen_ms.load(Ordering::Relaxed)),
            health: self.health(),
        }
    }

    pub(crate) fn touch(&self) {
        self.last_seen_ms
            .store(unix_millis(SystemTime::now()), Ordering::Relaxed);
    }

    pub(crate) fn health(&self) -> Health {
        match self.health.load(Ordering::Relaxed) {
            0 => Health::Healthy,
            1 => Health::Degraded,
            _ => Health::Dead,
        }
    }

    /// Sets the health; a connection that is `Dead` stays dead.
    pub(crate) fn set_health(&self, health: Health) {
        let new = health as u8;
        let _ = self
            .health
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
                (current != new && current != Health::Dead as u8).then_some(new)
            });
    }

    /// Asks the transport to end with `reason`; the first reason given wins.
    /// Returns whether this call set it.
    pub(crate) fn end(&self, reason: DisconnectReason) -> bool {
        let set = self
            .end_reason
            .compare_exchange(0, reason.to_u8(), Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if set {
            self.health.store(Health::Dead as u8, Ordering::Release);
            self.end_waker.wake();
        }
        set
    }

    pub(crate) fn end_reason(&self) -> Option<DisconnectReason> {
        DisconnectReason::from_u8(self.end_reason.load(Ordering::Acquire))
    }

    /// Ready with the reason once [`end`](Self::end) was called.
    pub(crate) fn poll_end(&self, cx: &mut Context<'_>) -> Poll<DisconnectReason> {
        if let Some(reason) = self.end_reason() {
            return Poll::Ready(reason);
        }
        self.end_waker.register(cx.waker());
        match self.end_reason() {
            Some(reason) => Poll::Ready(reason),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_round_trip_and_have_distinct_codes() {
        let mut codes = std::collections::HashSet::new();
        for reason in DisconnectReason::ALL {
            assert_eq!(DisconnectReason::from_u8(reason.to_u8()), Some(reason));
            assert!(codes.insert(reason.close_code()));
        }
        assert_eq!(DisconnectReason::from_u8(0), None);
        assert_eq!(
            DisconnectReason::SlowConsumer.to_json(),
            r#"{"reason":"slow_consumer","code":4005,"reconnect":true,"recover":true}"#
        );
    }

    #[test]
    fn the_first_end_reason_wins() {
        let (tx, _rx) = mpsc::channel(1);
        let connection =
            Connection::new(ConnectionId(1), "p".into(), ConnectionKind::Sse, None, tx);
        assert!(connection.end(DisconnectReason::SlowConsumer));
        assert!(!connection.end(DisconnectReason::ServerShutdown));
        assert_eq!(
            connection.end_reason(),
            Some(DisconnectReason::SlowConsumer)
        );
        assert_eq!(connection.health(), Health::Dead);
    }
}
