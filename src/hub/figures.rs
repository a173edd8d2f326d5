//! What the hub measures of itself, for the management and monitoring API of seed `004`
//! (`GET /api/connections/stats`, `/monitoring/dual-connections`, `/monitoring/performance`,
//! `/monitoring/connection-health`): a census of the live connections, establishment times
//! and delivery counts since the hub started, and health trends sampled by the keeper.
//!
//! Every figure comes from the hub's own state and counters, so it is there whether or not
//! a metrics layer is installed, and a backplane can later answer it for the cluster.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::PoisonError;
use std::time::Duration;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::Hub;
use crate::connection::{ConnectionKind, Health};

/// How often the keeper samples the hub's health for its trends.
pub(super) const HEALTH_SAMPLE_EVERY: Duration = Duration::from_secs(60);

/// The longest trend window: samples older than it are dropped.
const LONGEST_TREND: Duration = Duration::from_secs(24 * 3600);

/// Establishment times of one transport, from the request's arrival to its registration.
#[derive(Debug, Default)]
struct Establishment {
    count: AtomicU64,
    total_micros: AtomicU64,
    max_micros: AtomicU64,
}

impl Establishment {
    fn record(&self, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.total_micros.fetch_add(micros, Ordering::Relaxed);
        self.max_micros.fetch_max(micros, Ordering::Relaxed);
    }

    fn figures(&self) -> EstablishmentFigures {
        let measured = self.count.load(Ordering::Relaxed);
        let total = self.total_micros.load(Ordering::Relaxed);
        let max = self.max_micros.load(Ordering::Relaxed);
        let average_ms = if measured == 0 {
            0.0
        } else {
            total as f64 / measured as f64 / 1000.0
        };
        EstablishmentFigures {
            measured,
            average_ms,
            max_ms: max as f64 / 1000.0,
        }
    }
}

/// One health sample: when, and how many of the live connections were healthy.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    healthy: usize,
    total: usize,
}

/// The hub's counters and health samples.
#[derive(Debug, Default)]
pub(super) struct Figures {
    websocket: Establishment,
    sse: Establishment,
    messages_sent: AtomicU64,
    delivered: AtomicU64,
    failed: AtomicU64,
    /// Oldest first, at most a day of them.
    samples: std::sync::Mutex<VecDeque<Sample>>,
}

impl Figures {
    /// A connection of `kind` was established in `took`.
    pub(super) fn established(&self, kind: ConnectionKind, took: Duration) {
        match kind {
            ConnectionKind::WebSocket => self.websocket.record(took),
            ConnectionKind::Sse => self.sse.record(took),
        }
    }

    /// A message was published.
    pub(super) fn published(&self) {
        self.messages_sent.fetch_add(1, Ordering::Relaxed);
    }

    /// A delivery reached `delivered` connections and failed at `failed`.
    pub(super) fn delivered(&self, delivered: usize, failed: usize) {
        if delivered > 0 {
            self.delivered
                .fetch_add(delivered as u64, Ordering::Relaxed);
        }
        if failed > 0 {
            self.failed.fetch_add(failed as u64, Ordering::Relaxed);
        }
    }

    /// When the next health sample is due; `None` before the first, which is due at once.
    pub(super) fn next_sample(&self) -> Option<Instant> {
        let samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        samples.back().map(|last| last.at + HEALTH_SAMPLE_EVERY)
    }

    fn sample(&self, sample: Sample) {
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        while samples
            .front()
            .is_some_and(|oldest| sample.at.saturating_duration_since(oldest.at) > LONGEST_TREND)
        {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    /// The share of healthy connections over the samples of the last `window` before
    /// `now`, in percent; `None` without a sample that saw a connection.
    fn trend(&self, now: Instant, window: Duration) -> Option<f64> {
        let samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        let (healthy, total) = samples
            .iter()
            .filter(|s| now.saturating_duration_since(s.at) <= window)
            .fold((0usize, 0usize), |(h, t), s| (h + s.healthy, t + s.total));
        (total > 0).then(|| percentage(healthy, total))
    }
}

/// `part` of `whole` in percent, rounded to one decimal; 100 when `whole` is zero (no
/// connection is unhealthy).
#[must_use]
pub fn percentage(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        return 100.0;
    }
    (part as f64 * 1000.0 / whole as f64).round() / 10.0
}

/// Establishment times of one transport since the hub started.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EstablishmentFigures {
    /// Connections whose establishment was measured (those registered with
    /// [`Registration::requested_at`](super::Registration::requested_at), as the handlers
    /// do behind a metrics layer).
    pub measured: u64,
    /// Their mean establishment time, in milliseconds (0 with none).
    pub average_ms: f64,
    /// The longest, in milliseconds (0 with none).
    pub max_ms: f64,
}

/// What the hub has measured since it started.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Performance {
    /// WebSocket establishment times.
    pub websocket: EstablishmentFigures,
    /// SSE establishment times.
    pub sse: EstablishmentFigures,
    /// Messages published (each once, however many connections it went to).
    pub messages_sent: u64,
    /// Deliveries that reached a connection's outbox (acknowledgement resends included).
    pub successful_deliveries: u64,
    /// Deliveries that found their connection ending, gone or overflowing.
    pub failed_deliveries: u64,
}

impl Performance {
    /// Successful deliveries among all, in percent (100 with none).
    #[must_use]
    pub fn delivery_success_rate(&self) -> f64 {
        let total = self.successful_deliveries + self.failed_deliveries;
        percentage(
            usize::try_from(self.successful_deliveries).unwrap_or(usize::MAX),
            usize::try_from(total).unwrap_or(usize::MAX),
        )
    }
}

/// Healthy connections among some.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCount {
    /// Connections counted.
    pub total: usize,
    /// Of them, [`Health::Healthy`] (the others are degraded or ending).
    pub healthy: usize,
}

impl HealthCount {
    /// Connections not healthy.
    #[must_use]
    pub fn unhealthy(&self) -> usize {
        self.total - self.healthy
    }

    /// Healthy ones in percent (100 with none).
    #[must_use]
    pub fn percentage(&self) -> f64 {
        percentage(self.healthy, self.total)
    }

    fn add(&mut self, health: Health) {
        self.total += 1;
        self.healthy += usize::from(health == Health::Healthy);
    }

    fn plus(self, other: Self) -> Self {
        Self {
            total: self.total + other.total,
            healthy: self.healthy + other.healthy,
        }
    }
}

/// The live connections now, by player and kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Census {
    /// Players with at least one live connection.
    pub players: usize,
    /// Of them, with WebSockets only.
    pub websocket_only: usize,
    /// Of them, with SSE streams only.
    pub sse_only: usize,
    /// Of them, with both kinds.
    pub dual: usize,
    /// Players with a live connection and a current session (a player has at most one).
    pub sessions: usize,
    /// The WebSockets and their health.
    pub websocket: HealthCount,
    /// The SSE streams and their health.
    pub sse: HealthCount,
}

impl Census {
    /// Counts a player by the kinds it holds (none: not counted) and its session.
    fn count_player(&mut self, websocket: bool, sse: bool, session: bool) {
        if !(websocket || sse) {
            return;
        }
        self.players += 1;
        self.sessions += usize::from(session);
        match (websocket, sse) {
            (true, true) => self.dual += 1,
            (true, false) => self.websocket_only += 1,
            _ => self.sse_only += 1,
        }
    }

    /// Every live connection and its health.
    #[must_use]
    pub fn connections(&self) -> HealthCount {
        self.websocket.plus(self.sse)
    }
}

/// The share of healthy connections over rolling windows, from the keeper's samples (one
/// a minute while the keeper runs: whenever a connection has heartbeats or a credential
/// deadline, as every connection through the default stack does).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HealthTrends {
    /// Over the last hour; `None` before a sample saw a connection.
    pub last_hour: Option<f64>,
    /// Over the last 24 hours; `None` before a sample saw a connection.
    pub last_24_hours: Option<f64>,
}

/// The figures of a cluster (SPEC §10), or of this hub alone without a backplane; see
/// [`Hub::figures`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ClusterFigures {
    /// The live connections of every node, by player and kind: players and kinds from this
    /// node's view of the cluster (exact); health counted by the nodes that answered.
    pub census: Census,
    /// Establishment times and deliveries of the nodes that answered (each publish
    /// counted once).
    pub performance: Performance,
    /// The share of healthy connections, over the nodes that answered (weighted by their
    /// connections).
    pub trends: HealthTrends,
    /// In a cluster: the nodes whose figures are in, this node first.
    pub nodes: Option<Vec<Arc<str>>>,
    /// In a cluster: the live nodes that had not answered within the wait.
    pub unanswered: Option<Vec<Arc<str>>>,
}

/// One node's figures, as it answers another's request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct NodeFigures {
    pub(super) census: Census,
    pub(super) performance: Performance,
    pub(super) trends: HealthTrends,
}

impl ClusterFigures {
    /// This hub's own figures, then the `others` nodes' merged in.
    pub(super) fn merge(
        hub: &Hub,
        players: Census,
        here: NodeFigures,
        others: &[(Arc<str>, NodeFigures)],
    ) -> Self {
        let all = std::iter::once(&here).chain(others.iter().map(|(_, f)| f));
        let mut census = players;
        census.websocket = HealthCount::default();
        census.sse = HealthCount::default();
        let mut performance = here.performance;
        performance.successful_deliveries = 0;
        performance.failed_deliveries = 0;
        let (mut ws, mut sse) = (Vec::new(), Vec::new());
        let (mut hour, mut day) = (Vec::new(), Vec::new());
        for node in all {
            census.websocket = census.websocket.plus(node.census.websocket);
            census.sse = census.sse.plus(node.census.sse);
            performance.successful_deliveries += node.performance.successful_deliveries;
            performance.failed_deliveries += node.performance.failed_deliveries;
            ws.push(node.performance.websocket);
            sse.push(node.performance.sse);
            let weight = node.census.connections().total as f64;
            hour.extend(node.trends.last_hour.map(|p| (p, weight)));
            day.extend(node.trends.last_24_hours.map(|p| (p, weight)));
        }
        performance.websocket = merge_establishment(&ws);
        performance.sse = merge_establishment(&sse);
        Self {
            census,
            performance,
            trends: HealthTrends {
                last_hour: weighted(&hour),
                last_24_hours: weighted(&day),
            },
            nodes: hub.cluster_node().map(|node| {
                std::iter::once(Arc::from(node))
                    .chain(others.iter().map(|(n, _)| n.clone()))
                    .collect()
            }),
            unanswered: None,
        }
    }
}

fn merge_establishment(figures: &[EstablishmentFigures]) -> EstablishmentFigures {
    let measured: u64 = figures.iter().map(|f| f.measured).sum();
    let total_ms: f64 = figures
        .iter()
        .map(|f| f.average_ms * f.measured as f64)
        .sum();
    EstablishmentFigures {
        measured,
        average_ms: if measured == 0 {
            0.0
        } else {
            total_ms / measured as f64
        },
        max_ms: figures.iter().map(|f| f.max_ms).fold(0.0, f64::max),
    }
}

/// The mean of percentages weighted by connections (equal weights when none has any).
fn weighted(values: &[(f64, f64)]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let total: f64 = values.iter().map(|(_, w)| w).sum();
    let mean = if total > 0.0 {
        values.iter().map(|(p, w)| p * w).sum::<f64>() / total
    } else {
        values.iter().map(|(p, _)| p).sum::<f64>() / values.len() as f64
    };
    Some((mean * 10.0).round() / 10.0)
}

impl Hub {
    /// This node's own figures, as it answers another node's request.
    pub(super) fn node_figures(&self) -> NodeFigures {
        NodeFigures {
            census: self.census(),
            performance: self.performance(),
            trends: self.health_trends(),
        }
    }

    /// The players of the cluster as this node sees them (its own connections and those
    /// the other nodes announced), by kind; health left at zero.
    pub(super) fn cluster_players(&self) -> Census {
        let registry = self.read();
        let mut census = Census::default();
        for player in registry.players.values() {
            let has = |kind: ConnectionKind| {
                player.connections.iter().any(|c| c.kind == kind)
                    || player.remote().iter().any(|r| r.kind == kind)
            };
            let (websocket, sse) = (has(ConnectionKind::WebSocket), has(ConnectionKind::Sse));
            census.count_player(websocket, sse, player.session.is_some());
        }
        census
    }

    /// The live connections now, by player and kind, with their health.
    #[must_use]
    pub fn census(&self) -> Census {
        let registry = self.read();
        let mut census = Census::default();
        for player in registry.players.values() {
            let (mut websocket, mut sse) = (false, false);
            for connection in &player.connections {
                match connection.kind {
                    ConnectionKind::WebSocket => {
                        websocket = true;
                        census.websocket.add(connection.health());
                    }
                    ConnectionKind::Sse => {
                        sse = true;
                        census.sse.add(connection.health());
                    }
                }
            }
            census.count_player(websocket, sse, player.session.is_some());
        }
        census
    }

    /// Establishment times and delivery counts since the hub started.
    #[must_use]
    pub fn performance(&self) -> Performance {
        let figures = &self.inner.figures;
        Performance {
            websocket: figures.websocket.figures(),
            sse: figures.sse.figures(),
            messages_sent: figures.messages_sent.load(Ordering::Relaxed),
            successful_deliveries: figures.delivered.load(Ordering::Relaxed),
            failed_deliveries: figures.failed.load(Ordering::Relaxed),
        }
    }

    /// The share of healthy connections over the last hour and day.
    #[must_use]
    pub fn health_trends(&self) -> HealthTrends {
        let now = Instant::now();
        let figures = &self.inner.figures;
        HealthTrends {
            last_hour: figures.trend(now, Duration::from_secs(3600)),
            last_24_hours: figures.trend(now, LONGEST_TREND),
        }
    }

    /// When `player_id` last showed a sign of life: the newest frame of its live
    /// connections, or, with none, when its last one ended; `None` for a player the hub
    /// does not know (never seen, or forgotten after its state TTL).
    #[must_use]
    pub fn last_seen(&self, player_id: &str) -> Option<std::time::SystemTime> {
        let registry = self.read();
        let player = registry.players.get(player_id)?;
        let newest = player
            .connections
            .iter()
            .map(|connection| connection.info().last_seen)
            .max();
        newest.or_else(|| {
            let idle_for = Instant::now().saturating_duration_since(player.idle_since?);
            std::time::SystemTime::now().checked_sub(idle_for)
        })
    }

    /// Takes the keeper's health sample at `now`, if one is due.
    pub(super) fn sample_health(&self, now: Instant) {
        let figures = &self.inner.figures;
        if figures.next_sample().is_some_and(|due| due > now) {
            return;
        }
        let connections = self.census().connections();
        figures.sample(Sample {
            at: now,
            healthy: connections.healthy,
            total: connections.total,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Registration;
    use crate::message::Message;

    fn connect(
        hub: &Hub,
        player: &str,
        kind: ConnectionKind,
    ) -> (crate::hub::ConnectionGuard, crate::hub::Outbox) {
        hub.register(Registration::new(player, kind))
            .expect("registered")
    }

    /// The census moves as connections open, degrade and close.
    #[tokio::test]
    async fn the_census_counts_players_by_kind_and_connections_by_health() {
        let hub = Hub::new();
        assert_eq!(hub.census(), Census::default());
        let alice_ws = connect(&hub, "alice", ConnectionKind::WebSocket);
        let _alice_sse = connect(&hub, "alice", ConnectionKind::Sse);
        let bob_ws = connect(&hub, "bob", ConnectionKind::WebSocket);
        let _carol_sse = connect(&hub, "carol", ConnectionKind::Sse);
        let census = hub.census();
        assert_eq!(
            (
                census.players,
                census.dual,
                census.websocket_only,
                census.sse_only
            ),
            (3, 1, 1, 1)
        );
        assert_eq!(census.sessions, 3, "every connection joins a session");
        assert_eq!(
            census.connections(),
            HealthCount {
                total: 4,
                healthy: 4
            }
        );

        alice_ws.0.connection().set_outbox_high(true);
        let census = hub.census();
        assert_eq!(
            census.websocket,
            HealthCount {
                total: 2,
                healthy: 1
            }
        );
        assert_eq!(census.connections().percentage(), 75.0);

        drop(bob_ws);
        let census = hub.census();
        assert_eq!((census.players, census.websocket_only), (2, 0));
        assert_eq!(census.connections().total, 3);
    }

    /// Publishes, deliveries and failures are counted as they happen; establishment times
    /// as measured from the request.
    #[tokio::test]
    async fn performance_counts_publishes_deliveries_failures_and_establishment() {
        let hub = Hub::new();
        let requested = std::time::Instant::now()
            .checked_sub(Duration::from_millis(20))
            .expect("a process older than 20 ms");
        let (_ws, _ws_outbox) = hub
            .register(Registration::new("alice", ConnectionKind::WebSocket).requested_at(requested))
            .expect("registered");
        let (_sse, sse_outbox) = connect(&hub, "alice", ConnectionKind::Sse);
        hub.send_to_player("alice", &Message::json("x", serde_json::json!(1)));
        drop(sse_outbox);
        hub.send_to_player("alice", &Message::json("x", serde_json::json!(2)));
        let performance = hub.performance();
        assert_eq!(performance.messages_sent, 2);
        assert_eq!(performance.successful_deliveries, 3);
        assert_eq!(performance.failed_deliveries, 1);
        assert_eq!(performance.delivery_success_rate(), 75.0);
        assert_eq!(performance.websocket.measured, 1);
        assert!(performance.websocket.average_ms >= 20.0, "{performance:?}");
        assert!(performance.websocket.max_ms >= performance.websocket.average_ms);
        assert_eq!(performance.sse.measured, 0);
    }

    /// The trends are rolling windows of the keeper's samples: an hour of half-degraded
    /// connections after a day of healthy ones shows in the hour and barely in the day.
    #[tokio::test(start_paused = true)]
    async fn health_trends_are_rolling_windows_of_the_keepers_samples() {
        let hub = Hub::new();
        assert_eq!(hub.health_trends().last_hour, None);
        // Credentials valid for two days: the keeper runs (and samples) for them.
        let far = Instant::now() + Duration::from_secs(48 * 3600);
        let register = |player: &str| {
            hub.register(Registration::new(player, ConnectionKind::Sse).credential_deadline(far))
                .expect("registered")
        };
        let (a, _a) = register("alice");
        let (_b, _b_outbox) = register("bob");
        let hours = |hours: u64| tokio::time::sleep(Duration::from_secs(hours * 3600));
        hours(23).await;
        assert_eq!(hub.health_trends().last_hour, Some(100.0));
        a.connection().set_outbox_high(true);
        hours(1).await;
        let trends = hub.health_trends();
        let hour = trends.last_hour.expect("samples");
        let day = trends.last_24_hours.expect("samples");
        assert!((45.0..=55.0).contains(&hour), "{trends:?}");
        assert!(day > 95.0 && day < 100.0, "{trends:?}");
        let samples = hub.inner.figures.samples.lock().unwrap().len();
        assert!(
            (24 * 60 - 2..=24 * 60 + 2).contains(&samples),
            "{samples} samples"
        );
    }
}
