//! Metrics: [`MetricsLayer`] and the [`Observer`] of hub-side figures (SPEC §9).
// SKELETON: the helper fills in Metrics, the layer and the text encoding; the types below
// are the agreed interface.

use std::time::Duration;

/// The transport of a connection, as a metrics label (`kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// A WebSocket (`"websocket"`).
    WebSocket,
    /// A Server-Sent-Events stream (`"sse"`).
    Sse,
}

impl Transport {
    /// The label value: `"websocket"` or `"sse"`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::WebSocket => "websocket",
            Self::Sse => "sse",
        }
    }
}

/// The route template of a request (`"/sse/{player_id}"`, never the raw path), put in the
/// request extensions by the router so that [`MetricsLayer`] labels requests by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RouteTemplate(pub &'static str);

/// When a connection request arrived, put in the request extensions by [`MetricsLayer`]:
/// the handler passes it on so that establishment time can be observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestStart(pub std::time::Instant);

/// Figures only the hub sees, reported as they happen. Every method has an empty default;
/// calls sit on the delivery path, so an implementation must not allocate or block.
pub trait Observer: Send + Sync + 'static {
    /// A connection opened, `establishment` after its request arrived (zero if unknown).
    fn connection_opened(&self, kind: Transport, establishment: Duration) {
        let _ = (kind, establishment);
    }

    /// A connection closed with `reason` (a stable code such as `"client_closed"`).
    fn connection_closed(&self, kind: Transport, reason: &'static str) {
        let _ = (kind, reason);
    }

    /// `count` messages were delivered to connections of `kind` (one call per publish).
    fn delivered(&self, kind: Transport, count: u64) {
        let _ = (kind, count);
    }

    /// `count` deliveries failed (the connection was ending or overflowed).
    fn delivery_failed(&self, count: u64) {
        let _ = count;
    }

    /// A connection's outbox overflowed (it ends as a slow consumer).
    fn outbox_overflow(&self) {}

    /// A session was replaced by a new one.
    fn session_replaced(&self) {}
}
