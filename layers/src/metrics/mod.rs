//! Metrics: [`Metrics`], the [`Observer`] of hub-side figures, and [`MetricsLayer`] for
//! HTTP requests (SPEC §9).
//!
//! [`Metrics::new`] registers every metric in a prometheus-client `Registry` that the host
//! owns, under the prefix `dualcast`; there is no global recorder. The host serves the
//! exposition with [`encode_text`] and [`TEXT_CONTENT_TYPE`].
//!
//! # The metrics
//!
//! As they appear in the exposition (prometheus-client adds `_total` to counters' samples;
//! their `# TYPE` line names them without it):
//!
//! | name | type | labels |
//! |---|---|---|
//! | `dualcast_connections` | gauge | `kind` |
//! | `dualcast_connections_opened_total` | counter | `kind` |
//! | `dualcast_connections_closed_total` | counter | `kind`, `reason` |
//! | `dualcast_connection_establishment_seconds` | histogram | `kind` |
//! | `dualcast_messages_delivered_total` | counter | `kind` |
//! | `dualcast_delivery_failures_total` | counter | |
//! | `dualcast_outbox_overflows_total` | counter | |
//! | `dualcast_sessions_replaced_total` | counter | |
//! | `dualcast_admissions_refused_total` | counter | `cause` |
//! | `dualcast_pending_queue_depth` | gauge | |
//! | `dualcast_pending_queued_total` | counter | |
//! | `dualcast_pending_dropped_total` | counter | `reason` |
//! | `dualcast_recoveries_total` | counter | `complete` |
//! | `dualcast_messages_replayed_total` | counter | |
//! | `dualcast_acks_total` | counter | `outcome` |
//! | `dualcast_messages_resent_total` | counter | |
//! | `dualcast_http_requests_total` | counter | `route`, `method`, `status` |
//! | `dualcast_http_request_duration_seconds` | histogram | `route`, `method` |
//!
//! - `kind` is [`Transport::as_str`]: `websocket` or `sse`.
//! - `reason` is the close reason the hub reports, e.g. `client_closed`, `logout`,
//!   `session_replaced`, `auth_expired`, `unauthorized`, `protocol_error`,
//!   `heartbeat_timeout`, `slow_consumer`, `server_shutdown`.
//! - `cause` is the [`AdmissionRefused`](crate::error::AdmissionRefused) cause of a refusal.
//! - Establishment buckets: 0.5 ms doubling to 8.192 s, then `+Inf`. Request duration
//!   buckets: 0.1 ms doubling to 13.1072 s, then `+Inf`.
//! - The pending queue: `dualcast_pending_queue_depth` is what waits over the hub (set as
//!   it changes by publishes and connects); `reason` of a drop is `expired` (past its TTL,
//!   or its player forgotten) or `overflow` (a bound was full). `complete` of a recovery is
//!   `true` or `false`; `outcome` of an acknowledgement wait is `acked`, `expired` or
//!   `dropped`.
//!
//! The series by `kind` (and closed by `kind` for the reasons above) exist from the start,
//! at 0. A family whose series depend on traffic (`http_*`, `admissions_refused`, a close
//! reason not in the list) appears in the exposition once it has a series.
//!
//! # HTTP requests
//!
//! [`RecordMetrics`] labels a request by the [`RouteTemplate`] in its extensions (put there
//! by the router in front of it; a router inside it may put it in the response extensions
//! instead), or `unmatched`; by its method, one of the nine standard ones or `other`; and
//! by its status. Every label value comes from a bounded set, so no client can make the
//! series grow without bound. It also puts a [`RequestStart`] in the request extensions,
//! for the handler to report establishment time, and counts a response carrying an
//! [`AdmissionRefused`](crate::error::AdmissionRefused) in `admissions_refused_total`.
//!
//! Latency ends when the response head is ready, which is not when a realtime connection
//! ends: for SSE it is the headers (the stream lives on in the body), for a WebSocket the
//! `101` (the connection lives on in a task). Connection lifetimes are the hub's to report,
//! through [`Observer`]. The layer keeps nothing once the response is ready: it pushes no
//! lease and puts nothing in the response. An error from the inner service is passed
//! through and not counted (there is no status to count it under).
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//!
//! use dualcast_layers::metrics::{
//!     encode_text, Metrics, MetricsLayer, Observer, RequestStart, RouteTemplate, Transport,
//! };
//! use http::{Request, Response};
//! use prometheus_client::registry::Registry;
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let mut registry = Registry::default();
//! let metrics = Metrics::new(&mut registry);
//! let service = MetricsLayer::new(metrics.clone()).layer(service_fn(
//!     |request: Request<()>| async move {
//!         // A connection handler passes this on to the hub, for establishment time.
//!         let RequestStart(_arrived) = *request.extensions().get().expect("set by MetricsLayer");
//!         Ok::<_, std::convert::Infallible>(Response::new(()))
//!     },
//! ));
//!
//! let mut request = Request::get("/sse/alice").body(()).unwrap();
//! request.extensions_mut().insert(RouteTemplate("/sse/{player_id}"));
//! service.oneshot(request).await.unwrap();
//!
//! // What the hub reports.
//! metrics.connection_opened(Transport::Sse, Duration::from_millis(3));
//! metrics.delivered(Transport::Sse, 2);
//! metrics.connection_closed(Transport::Sse, "client_closed");
//!
//! let text = encode_text(&registry).unwrap();
//! assert!(text.contains(
//!     "dualcast_http_requests_total{route=\"/sse/{player_id}\",method=\"GET\",status=\"200\"} 1\n"
//! ));
//! assert!(text.contains(
//!     "dualcast_http_request_duration_seconds_count{route=\"/sse/{player_id}\",method=\"GET\"} 1\n"
//! ));
//! assert!(text.contains("dualcast_connections{kind=\"sse\"} 0\n"));
//! assert!(text.contains("dualcast_connections_opened_total{kind=\"sse\"} 1\n"));
//! assert!(text.contains(
//!     "dualcast_connections_closed_total{kind=\"sse\",reason=\"client_closed\"} 1\n"
//! ));
//! assert!(text.contains("dualcast_connection_establishment_seconds_count{kind=\"sse\"} 1\n"));
//! assert!(text.contains("dualcast_messages_delivered_total{kind=\"sse\"} 2\n"));
//! assert!(text.ends_with("# EOF\n"));
//! # });
//! ```

use std::fmt;
use std::time::Duration;

use prometheus_client::registry::Registry;

pub mod future;
mod histogram;
mod instruments;
mod layer;

#[cfg(test)]
mod tests;

pub use self::instruments::Metrics;
pub use self::layer::{MetricsLayer, RecordMetrics};

/// The `Content-Type` of [`encode_text`]'s exposition: OpenMetrics text 1.0.0.
pub const TEXT_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Encodes every metric in `registry` (dualcast's and the host's) in the OpenMetrics text
/// format, `# EOF` included, for a scrape answered with [`TEXT_CONTENT_TYPE`].
///
/// # Errors
///
/// A metric's encoding failed (prometheus-client's own metrics never fail to encode).
pub fn encode_text(registry: &Registry) -> Result<String, fmt::Error> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry)?;
    Ok(text)
}

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
/// request extensions by the router so that [`MetricsLayer`] labels requests by it (a
/// router behind the layer may put it in the response extensions instead).
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

    /// `count` messages went into pending queues (zero: only the depth changed); `depth`
    /// messages now wait over the hub.
    fn queued(&self, count: u64, depth: u64) {
        let _ = (count, depth);
    }

    /// `count` pending messages were dropped for `reason` (`expired` or `overflow`).
    fn pending_dropped(&self, reason: &'static str, count: u64) {
        let _ = (reason, count);
    }

    /// A resuming connection was answered: `complete` or not, `replayed` messages.
    fn recovered(&self, complete: bool, replayed: u64) {
        let _ = (complete, replayed);
    }

    /// A message stopped awaiting acknowledgement: `acked`, `expired` or `dropped`.
    fn ack_settled(&self, outcome: &'static str) {
        let _ = outcome;
    }

    /// `count` resends of unacknowledged messages went out.
    fn resent(&self, count: u64) {
        let _ = count;
    }
}
