//! Connections: their ids, kinds, health, metadata and the reasons they end (SPEC §2).

use std::fmt;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use futures_util::task::AtomicWaker;
use serde::Serialize;

use crate::inbound::InboundBudget;
use crate::queue::FrameQueue;
use dualcast_layers::Role;
use tokio::time::Instant;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Keeping up.
    Healthy,
    /// Its outbox is above the high-water mark, or a ping has gone unanswered for longer
    /// than [`HeartbeatSettings::late_after`](crate::hub::HeartbeatSettings::late_after).
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
    pub(crate) role: Role,
    pub(crate) session_id: Option<Arc<str>>,
    pub(crate) established_at: SystemTime,
    /// When it opened, on tokio's clock (which tests pause): the origin of the times below.
    opened: Instant,
    /// Milliseconds from `opened` to the client's last sign of life.
    last_seen_ms: AtomicU64,
    /// Milliseconds from `opened` to the last ping the hub asked for, plus one; 0: none yet.
    last_ping_ms: AtomicU64,
    /// `HEARTBEATS`, `PING_WANTED`, `OUTBOX_HIGH`, `PONG_LATE`, `OUTSTANDING`.
    flags: AtomicU8,
    end_reason: AtomicU8,
    /// Woken when the connection ends, and when the hub wants a ping sent.
    waker: AtomicWaker,
    /// The inbound rate limit (SPEC §6), shared by the WebSocket task and `POST /api/messages`.
    pub(crate) inbound: Mutex<InboundBudget>,
    /// Client messages of this connection the host's handler is working on.
    pub(crate) in_flight: AtomicU16,
    /// The frames published to it, drained by its transport.
    pub(crate) outbox: FrameQueue,
}

/// The hub pings this connection and ends it when it falls silent (WebSocket).
const HEARTBEATS: u8 = 1;
/// The hub asked the transport to send a ping.
const PING_WANTED: u8 = 2;
/// The outbox is above its high-water mark.
const OUTBOX_HIGH: u8 = 4;
/// A ping has been unanswered for too long.
const PONG_LATE: u8 = 8;
/// A ping was asked for and no frame or pong came since.
const OUTSTANDING: u8 = 16;
/// On a clustered hub: its opening came back from the cluster's log, so it is before
/// anything applied from the log after that.
const IN_LOG: u8 = 32;

/// What the hub's heartbeat sweep made of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pulse {
    /// Nothing to do.
    Quiet,
    /// A ping was asked for; the transport was woken.
    PingAsked,
    /// Silent for the whole timeout: dead.
    Dead,
}

/// The parts of a new [`Connection`] that come from its registration.
pub(crate) struct NewConnection {
    pub(crate) id: ConnectionId,
    pub(crate) player_id: Arc<str>,
    pub(crate) kind: ConnectionKind,
    pub(crate) role: Role,
    pub(crate) session_id: Option<Arc<str>>,
    pub(crate) heartbeats: bool,
    pub(crate) inbound: InboundBudget,
    /// The bound of its outbox.
    pub(crate) outbox_capacity: usize,
}

impl Connection {
    pub(crate) fn new(new: NewConnection) -> Self {
        Self {
            id: new.id,
            player_id: new.player_id,
            kind: new.kind,
            role: new.role,
            session_id: new.session_id,
            established_at: SystemTime::now(),
            opened: Instant::now(),
            last_seen_ms: AtomicU64::new(0),
            last_ping_ms: AtomicU64::new(0),
            flags: AtomicU8::new(if new.heartbeats { HEARTBEATS } else { 0 }),
            end_reason: AtomicU8::new(0),
            waker: AtomicWaker::new(),
            inbound: Mutex::new(new.inbound),
            in_flight: AtomicU16::new(0),
            outbox: FrameQueue::new(new.outbox_capacity),
        }
    }

    pub(crate) fn info(&self) -> ConnectionInfo {
        ConnectionInfo {
            id: self.id,
            player_id: self.player_id.clone(),
            kind: self.kind,
            session_id: self.session_id.clone(),
            established_at: self.established_at,
            last_seen: self.established_at
                + Duration::from_millis(self.last_seen_ms.load(Ordering::Relaxed)),
            health: self.health(),
        }
    }

    /// Time since the connection opened, on tokio's clock.
    pub(crate) fn elapsed(&self) -> Duration {
        self.opened.elapsed()
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A sign of life from the client: any frame, or a pong. Answers the hub's ping, late
    /// or not.
    pub(crate) fn touch(&self) {
        self.last_seen_ms
            .store(self.elapsed_ms(), Ordering::Relaxed);
        if self.flags.load(Ordering::Relaxed) & (OUTSTANDING | PONG_LATE) != 0 {
            self.flags
                .fetch_and(!(OUTSTANDING | PONG_LATE), Ordering::AcqRel);
        }
    }

    /// Whether the hub pings this connection.
    pub(crate) fn has_heartbeats(&self) -> bool {
        self.flags.load(Ordering::Relaxed) & HEARTBEATS != 0
    }

    /// The heartbeat rules (SPEC §5), applied at `now` (time since the connection opened):
    /// dead after `timeout` without a sign of life; a ping asked for once `interval` passed
    /// without a sign of life or a ping; a pong late once a ping has been unanswered for
    /// `late_after`.
    pub(crate) fn pulse(
        &self,
        interval: Duration,
        timeout: Duration,
        late_after: Duration,
    ) -> Pulse {
        let now = self.elapsed_ms();
        let seen = self.last_seen_ms.load(Ordering::Relaxed);
        let silent = now.saturating_sub(seen);
        if silent >= millis(timeout) {
            return Pulse::Dead;
        }
        let pinged = self.last_ping_ms.load(Ordering::Relaxed);
        let outstanding = self.flags.load(Ordering::Acquire) & OUTSTANDING != 0;
        if outstanding && now.saturating_sub(pinged.saturating_sub(1)) >= millis(late_after) {
            // Late only while still unanswered: a `touch` between the load above and here
            // clears `OUTSTANDING`, and then this sets nothing.
            let _ = self
                .flags
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |flags| {
                    (flags & OUTSTANDING != 0 && flags & PONG_LATE == 0)
                        .then_some(flags | PONG_LATE)
                });
        }
        let since_ping = if pinged == 0 {
            now
        } else {
            now.saturating_sub(pinged - 1)
        };
        if silent >= millis(interval) && since_ping >= millis(interval) {
            self.last_ping_ms.store(now + 1, Ordering::Relaxed);
            self.flags
                .fetch_or(PING_WANTED | OUTSTANDING, Ordering::AcqRel);
            self.waker.wake();
            return Pulse::PingAsked;
        }
        Pulse::Quiet
    }

    /// Whether the hub asked for a ping that was not sent yet.
    pub(crate) fn ping_requested(&self) -> bool {
        self.flags.load(Ordering::Relaxed) & PING_WANTED != 0
    }

    /// Whether the hub asked for a ping since the last call.
    pub(crate) fn take_ping_request(&self) -> bool {
        self.flags.load(Ordering::Relaxed) & PING_WANTED != 0
            && self.flags.fetch_and(!PING_WANTED, Ordering::AcqRel) & PING_WANTED != 0
    }

    /// The health (SPEC §5): dead once ending; degraded while the outbox is above its
    /// high-water mark or a pong is late.
    pub(crate) fn health(&self) -> Health {
        if self.end_reason.load(Ordering::Acquire) != 0 {
            return Health::Dead;
        }
        if self.flags.load(Ordering::Acquire) & (OUTBOX_HIGH | PONG_LATE) != 0 {
            Health::Degraded
        } else {
            Health::Healthy
        }
    }

    /// Marks the outbox as above (or back below) its high-water mark.
    /// Marks that its opening came back from the cluster's log.
    pub(crate) fn set_in_log(&self) {
        self.flags.fetch_or(IN_LOG, Ordering::AcqRel);
    }

    /// Whether its opening came back from the cluster's log.
    pub(crate) fn is_in_log(&self) -> bool {
        self.flags.load(Ordering::Acquire) & IN_LOG != 0
    }

    pub(crate) fn set_outbox_high(&self, high: bool) {
        let set = self.flags.load(Ordering::Relaxed) & OUTBOX_HIGH != 0;
        if set != high {
            if high {
                self.flags.fetch_or(OUTBOX_HIGH, Ordering::AcqRel);
            } else {
                self.flags.fetch_and(!OUTBOX_HIGH, Ordering::AcqRel);
            }
        }
    }

    /// Whether the outbox was marked above its high-water mark.
    pub(crate) fn outbox_high(&self) -> bool {
        self.flags.load(Ordering::Relaxed) & OUTBOX_HIGH != 0
    }

    /// Asks the transport to end with `reason`; the first reason given wins.
    /// Returns whether this call set it.
    pub(crate) fn end(&self, reason: DisconnectReason) -> bool {
        let set = self
            .end_reason
            .compare_exchange(0, reason.to_u8(), Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if set {
            self.waker.wake();
        }
        set
    }

    pub(crate) fn end_reason(&self) -> Option<DisconnectReason> {
        DisconnectReason::from_u8(self.end_reason.load(Ordering::Acquire))
    }

    /// Ready with the reason once [`end`](Self::end) was called. Registers the task for
    /// the hub's ping requests too.
    pub(crate) fn poll_end(&self, cx: &mut Context<'_>) -> Poll<DisconnectReason> {
        if let Some(reason) = self.end_reason() {
            return Poll::Ready(reason);
        }
        self.waker.register(cx.waker());
        match self.end_reason() {
            Some(reason) => Poll::Ready(reason),
            None => Poll::Pending,
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inbound::InboundSettings;

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
        let connection = Connection::new(NewConnection {
            id: ConnectionId(1),
            player_id: "p".into(),
            kind: ConnectionKind::Sse,
            role: Role::Player,
            session_id: None,
            heartbeats: false,
            inbound: InboundBudget::new(&InboundSettings::default()),
            outbox_capacity: 1,
        });
        assert!(connection.end(DisconnectReason::SlowConsumer));
        assert!(!connection.end(DisconnectReason::ServerShutdown));
        assert_eq!(
            connection.end_reason(),
            Some(DisconnectReason::SlowConsumer)
        );
        assert_eq!(connection.health(), Health::Dead);
    }
}
