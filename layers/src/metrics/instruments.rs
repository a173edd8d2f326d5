//! [`Metrics`]: every dualcast metric, registered once in a host's `Registry`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use super::histogram::DurationHistogram;
use super::{Observer, Transport};

/// The close reasons whose series exist from the start, so closing with one of them is an
/// atomic add. Any other reason is counted too, through a lookup in the family.
/// The refusal causes of the session and track layers, created up front.
const KNOWN_REFUSAL_CAUSES: [&str; 5] = [
    "stale_session",
    "unknown_session",
    "player_limit",
    "player_rate",
    "address_rate",
];

const KNOWN_CLOSE_REASONS: [&str; 9] = [
    "client_closed",
    "logout",
    "session_replaced",
    "auth_expired",
    "unauthorized",
    "protocol_error",
    "heartbeat_timeout",
    "slow_consumer",
    "server_shutdown",
];

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ClosedLabels {
    kind: &'static str,
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CauseLabels {
    cause: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CompleteLabels {
    complete: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// The reasons a pending message is dropped, and the outcomes of an acknowledgement wait,
/// whose series exist from the start.
const PENDING_DROP_REASONS: [&str; 2] = ["expired", "overflow"];
const ACK_OUTCOMES: [&str; 3] = ["acked", "expired", "dropped"];

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    method: &'static str,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
    method: &'static str,
}

/// One child per transport, created up front.
#[derive(Debug)]
struct PerKind<T> {
    websocket: T,
    sse: T,
}

impl<T> PerKind<T> {
    fn new(mut child: impl FnMut(Transport) -> T) -> Self {
        Self {
            websocket: child(Transport::WebSocket),
            sse: child(Transport::Sse),
        }
    }

    fn get(&self, kind: Transport) -> &T {
        match kind {
            Transport::WebSocket => &self.websocket,
            Transport::Sse => &self.sse,
        }
    }
}

/// Every dualcast metric (see the [module docs](super) for the list), registered in a
/// `Registry` the host owns and exposes.
///
/// Cheap to clone: clones share the same series. It is the [`Observer`] of dualcast's hub,
/// and [`MetricsLayer`](super::MetricsLayer) records HTTP requests in it. The series a hot
/// path touches (everything by transport, connections closed for a known reason) are
/// created in [`Metrics::new`] and kept, so recording them is an atomic add: no lock, no
/// hash, no allocation.
///
/// ```
/// use std::time::Duration;
///
/// use dualcast_layers::metrics::{encode_text, Metrics, Observer, Transport};
/// use prometheus_client::registry::Registry;
///
/// let mut registry = Registry::default();
/// let metrics = Metrics::new(&mut registry);
/// metrics.connection_opened(Transport::WebSocket, Duration::from_millis(4));
/// metrics.delivered(Transport::WebSocket, 3);
/// assert_eq!(metrics.live_connections(Transport::WebSocket), 1);
/// assert_eq!(metrics.messages_delivered(Transport::WebSocket), 3);
///
/// let text = encode_text(&registry).unwrap();
/// assert!(text.contains("dualcast_connections{kind=\"websocket\"} 1\n"));
/// assert!(text.contains("dualcast_messages_delivered_total{kind=\"websocket\"} 3\n"));
/// ```
#[derive(Clone)]
pub struct Metrics {
    instruments: Arc<Instruments>,
}

struct Instruments {
    live_connections: PerKind<Gauge>,
    connections_opened: PerKind<Counter>,
    /// The series of [`KNOWN_CLOSE_REASONS`], in that order.
    connections_closed_known: PerKind<[Counter; KNOWN_CLOSE_REASONS.len()]>,
    connections_closed: Family<ClosedLabels, Counter>,
    establishment: PerKind<DurationHistogram>,
    messages_delivered: PerKind<Counter>,
    delivery_failures: Counter,
    outbox_overflows: Counter,
    sessions_replaced: Counter,
    admissions_refused: Family<CauseLabels, Counter>,
    pending_queue_depth: Gauge,
    pending_queued: Counter,
    pending_dropped: Family<ReasonLabels, Counter>,
    recoveries: Family<CompleteLabels, Counter>,
    messages_replayed: Counter,
    acks: Family<OutcomeLabels, Counter>,
    messages_resent: Counter,
    http_requests: Family<RequestLabels, Counter>,
    http_request_duration: Family<RouteLabels, DurationHistogram>,
}

impl Metrics {
    /// Registers every dualcast metric in `registry`, under the prefix `dualcast`, and
    /// returns the handle that records them. Call it once per registry: registering twice
    /// exposes every name twice.
    #[must_use]
    pub fn new(registry: &mut Registry) -> Self {
        let registry = registry.sub_registry_with_prefix("dualcast");

        let live_connections = Family::<KindLabels, Gauge>::default();
        let connections_opened = Family::<KindLabels, Counter>::default();
        let connections_closed = Family::<ClosedLabels, Counter>::default();
        let establishment = Family::<KindLabels, DurationHistogram>::new_with_constructor(
            DurationHistogram::establishment as fn() -> DurationHistogram,
        );
        let messages_delivered = Family::<KindLabels, Counter>::default();
        let delivery_failures = Counter::default();
        let outbox_overflows = Counter::default();
        let sessions_replaced = Counter::default();
        let admissions_refused = Family::<CauseLabels, Counter>::default();
        // The causes dualcast's layers refuse with, at 0 from the start, so that a
        // dashboard (and an alert on their rate) sees them before the first refusal.
        for cause in KNOWN_REFUSAL_CAUSES {
            drop(admissions_refused.get_or_create(&CauseLabels { cause }));
        }
        let pending_queue_depth = Gauge::default();
        let pending_queued = Counter::default();
        let pending_dropped = Family::<ReasonLabels, Counter>::default();
        for reason in PENDING_DROP_REASONS {
            drop(pending_dropped.get_or_create(&ReasonLabels { reason }));
        }
        let recoveries = Family::<CompleteLabels, Counter>::default();
        for complete in ["true", "false"] {
            drop(recoveries.get_or_create(&CompleteLabels { complete }));
        }
        let messages_replayed = Counter::default();
        let acks = Family::<OutcomeLabels, Counter>::default();
        for outcome in ACK_OUTCOMES {
            drop(acks.get_or_create(&OutcomeLabels { outcome }));
        }
        let messages_resent = Counter::default();
        let http_requests = Family::<RequestLabels, Counter>::default();
        let http_request_duration = Family::<RouteLabels, DurationHistogram>::new_with_constructor(
            DurationHistogram::request_duration as fn() -> DurationHistogram,
        );

        registry.register(
            "connections",
            "Live connections, by transport",
            live_connections.clone(),
        );
        registry.register(
            "connections_opened",
            "Connections opened, by transport",
            connections_opened.clone(),
        );
        registry.register(
            "connections_closed",
            "Connections closed, by transport and reason",
            connections_closed.clone(),
        );
        registry.register_with_unit(
            "connection_establishment",
            "Time from a connection's request to its registration, by transport",
            Unit::Seconds,
            establishment.clone(),
        );
        registry.register(
            "messages_delivered",
            "Messages handed to a connection's outbox, by transport",
            messages_delivered.clone(),
        );
        registry.register(
            "delivery_failures",
            "Deliveries that failed because the connection was ending or overflowed",
            delivery_failures.clone(),
        );
        registry.register(
            "outbox_overflows",
            "Connection outboxes that overflowed (the connection ends as a slow consumer)",
            outbox_overflows.clone(),
        );
        registry.register(
            "sessions_replaced",
            "Sessions replaced by a newer one",
            sessions_replaced.clone(),
        );
        registry.register(
            "admissions_refused",
            "Connection requests refused by an admission layer, by cause",
            admissions_refused.clone(),
        );
        registry.register(
            "pending_queue_depth",
            "Messages waiting in pending queues for offline players",
            pending_queue_depth.clone(),
        );
        registry.register(
            "pending_queued",
            "Messages put in a pending queue (one per player without a live connection)",
            pending_queued.clone(),
        );
        registry.register(
            "pending_dropped",
            "Messages dropped from pending queues or never queued, by reason (expired, overflow)",
            pending_dropped.clone(),
        );
        registry.register(
            "recoveries",
            "Resumes answered with a recovery event, by whether the replay was complete",
            recoveries.clone(),
        );
        registry.register(
            "messages_replayed",
            "Messages replayed to resuming connections",
            messages_replayed.clone(),
        );
        registry.register(
            "acks",
            "Acknowledgement waits ended, by outcome (acked, expired, dropped)",
            acks.clone(),
        );
        registry.register(
            "messages_resent",
            "Resends of messages awaiting acknowledgement (one per message per player)",
            messages_resent.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests answered, by route template, method and status",
            http_requests.clone(),
        );
        registry.register_with_unit(
            "http_request_duration",
            "Time until the response head was ready, by route template and method",
            Unit::Seconds,
            http_request_duration.clone(),
        );

        let by_kind = |kind: Transport| KindLabels {
            kind: kind.as_str(),
        };
        let instruments = Instruments {
            live_connections: PerKind::new(|kind| {
                live_connections.get_or_create_owned(&by_kind(kind))
            }),
            connections_opened: PerKind::new(|kind| {
                connections_opened.get_or_create_owned(&by_kind(kind))
            }),
            connections_closed_known: PerKind::new(|kind| {
                KNOWN_CLOSE_REASONS.map(|reason| {
                    connections_closed.get_or_create_owned(&ClosedLabels {
                        kind: kind.as_str(),
                        reason,
                    })
                })
            }),
            connections_closed,
            establishment: PerKind::new(|kind| establishment.get_or_create_owned(&by_kind(kind))),
            messages_delivered: PerKind::new(|kind| {
                messages_delivered.get_or_create_owned(&by_kind(kind))
            }),
            delivery_failures,
            outbox_overflows,
            sessions_replaced,
            admissions_refused,
            pending_queue_depth,
            pending_queued,
            pending_dropped,
            recoveries,
            messages_replayed,
            acks,
            messages_resent,
            http_requests,
            http_request_duration,
        };
        Self {
            instruments: Arc::new(instruments),
        }
    }

    /// Counts a connection request refused by an admission layer, by its stable `cause`
    /// (`dualcast_admissions_refused_total{cause}`). [`MetricsLayer`](super::MetricsLayer)
    /// calls it for every response carrying an
    /// [`AdmissionRefused`](crate::error::AdmissionRefused).
    pub fn admission_refused(&self, cause: &'static str) {
        self.instruments
            .admissions_refused
            .get_or_create(&CauseLabels { cause })
            .inc();
    }

    /// The messages waiting in pending queues (`dualcast_pending_queue_depth`).
    #[must_use]
    pub fn pending_depth(&self) -> i64 {
        self.instruments.pending_queue_depth.get()
    }

    /// How many messages were put in pending queues (`dualcast_pending_queued_total`).
    #[must_use]
    pub fn pending_queued(&self) -> u64 {
        self.instruments.pending_queued.get()
    }

    /// How many pending messages were dropped for `reason`, `expired` or `overflow`
    /// (`dualcast_pending_dropped_total{reason}`).
    #[must_use]
    pub fn pending_dropped_for(&self, reason: &'static str) -> u64 {
        self.instruments
            .pending_dropped
            .get_or_create(&ReasonLabels { reason })
            .get()
    }

    /// How many resumes were answered complete (`true`) or not
    /// (`dualcast_recoveries_total{complete}`).
    #[must_use]
    pub fn recoveries(&self, complete: bool) -> u64 {
        self.instruments
            .recoveries
            .get_or_create(&CompleteLabels {
                complete: if complete { "true" } else { "false" },
            })
            .get()
    }

    /// How many messages were replayed (`dualcast_messages_replayed_total`).
    #[must_use]
    pub fn messages_replayed(&self) -> u64 {
        self.instruments.messages_replayed.get()
    }

    /// How many acknowledgement waits ended with `outcome`: `acked`, `expired` or
    /// `dropped` (`dualcast_acks_total{outcome}`).
    #[must_use]
    pub fn acks(&self, outcome: &'static str) -> u64 {
        self.instruments
            .acks
            .get_or_create(&OutcomeLabels { outcome })
            .get()
    }

    /// How many resends of unacknowledged messages went out
    /// (`dualcast_messages_resent_total`).
    #[must_use]
    pub fn messages_resent(&self) -> u64 {
        self.instruments.messages_resent.get()
    }

    /// How many connections of `kind` are live (`dualcast_connections{kind}`).
    #[must_use]
    pub fn live_connections(&self, kind: Transport) -> i64 {
        self.instruments.live_connections.get(kind).get()
    }

    /// How many connections of `kind` opened (`dualcast_connections_opened_total{kind}`).
    #[must_use]
    pub fn connections_opened(&self, kind: Transport) -> u64 {
        self.instruments.connections_opened.get(kind).get()
    }

    /// How many messages were delivered to connections of `kind`
    /// (`dualcast_messages_delivered_total{kind}`).
    #[must_use]
    pub fn messages_delivered(&self, kind: Transport) -> u64 {
        self.instruments.messages_delivered.get(kind).get()
    }

    /// How many deliveries failed (`dualcast_delivery_failures_total`).
    #[must_use]
    pub fn delivery_failures(&self) -> u64 {
        self.instruments.delivery_failures.get()
    }

    /// How many outboxes overflowed (`dualcast_outbox_overflows_total`).
    #[must_use]
    pub fn outbox_overflows(&self) -> u64 {
        self.instruments.outbox_overflows.get()
    }

    /// How many sessions were replaced (`dualcast_sessions_replaced_total`).
    #[must_use]
    pub fn sessions_replaced(&self) -> u64 {
        self.instruments.sessions_replaced.get()
    }

    /// Counts one answered HTTP request and observes its duration.
    pub(super) fn record_request(
        &self,
        route: &'static str,
        method: &'static str,
        status: StatusCode,
        duration: Duration,
    ) {
        let instruments = &*self.instruments;
        instruments
            .http_requests
            .get_or_create(&RequestLabels {
                route,
                method,
                status: status.as_u16(),
            })
            .inc();
        instruments
            .http_request_duration
            .get_or_create(&RouteLabels { route, method })
            .observe(duration);
    }

    /// How many handles share these series (for the tests of what a request keeps).
    #[cfg(test)]
    pub(super) fn handles(&self) -> usize {
        Arc::strong_count(&self.instruments)
    }
}

impl Observer for Metrics {
    /// Counts the connection as live and opened, and observes its establishment time (a
    /// zero `establishment`, "unknown", is not observed).
    fn connection_opened(&self, kind: Transport, establishment: Duration) {
        let instruments = &*self.instruments;
        instruments.live_connections.get(kind).inc();
        instruments.connections_opened.get(kind).inc();
        if !establishment.is_zero() {
            instruments.establishment.get(kind).observe(establishment);
        }
    }

    /// Counts the connection as no longer live, and closed for `reason`: an atomic add for
    /// the known reasons, a lookup in the family for any other.
    fn connection_closed(&self, kind: Transport, reason: &'static str) {
        let instruments = &*self.instruments;
        instruments.live_connections.get(kind).dec();
        match KNOWN_CLOSE_REASONS
            .iter()
            .position(|&known| known == reason)
            .and_then(|index| instruments.connections_closed_known.get(kind).get(index))
        {
            Some(closed) => {
                closed.inc();
            }
            None => {
                instruments
                    .connections_closed
                    .get_or_create(&ClosedLabels {
                        kind: kind.as_str(),
                        reason,
                    })
                    .inc();
            }
        }
    }

    fn delivered(&self, kind: Transport, count: u64) {
        self.instruments.messages_delivered.get(kind).inc_by(count);
    }

    fn delivery_failed(&self, count: u64) {
        self.instruments.delivery_failures.inc_by(count);
    }

    fn outbox_overflow(&self) {
        self.instruments.outbox_overflows.inc();
    }

    fn session_replaced(&self) {
        self.instruments.sessions_replaced.inc();
    }

    fn queued(&self, count: u64, depth: u64) {
        self.instruments.pending_queued.inc_by(count);
        self.instruments
            .pending_queue_depth
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }

    fn pending_dropped(&self, reason: &'static str, count: u64) {
        self.instruments
            .pending_dropped
            .get_or_create(&ReasonLabels { reason })
            .inc_by(count);
    }

    fn recovered(&self, complete: bool, replayed: u64) {
        self.instruments
            .recoveries
            .get_or_create(&CompleteLabels {
                complete: if complete { "true" } else { "false" },
            })
            .inc();
        self.instruments.messages_replayed.inc_by(replayed);
    }

    fn ack_settled(&self, outcome: &'static str) {
        self.instruments
            .acks
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    fn resent(&self, count: u64) {
        self.instruments.messages_resent.inc_by(count);
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics")
            .field(
                "live_websocket",
                &self.live_connections(Transport::WebSocket),
            )
            .field("live_sse", &self.live_connections(Transport::Sse))
            .finish_non_exhaustive()
    }
}
