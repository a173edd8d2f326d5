//! The management and monitoring routes of seed `004`, with its paths, field names and
//! nesting, every figure from the hub's own state ([`Hub::census`], [`Hub::performance`],
//! [`Hub::health_trends`]):
//!
//! - `GET /api/connections/{player_id}`: the player's connections by kind, presence and
//!   health (the player itself, `service` or `admin`);
//! - `GET /api/connections/stats`, `GET /monitoring/dual-connections`,
//!   `GET /monitoring/performance`, `GET /monitoring/connection-health` (`service` or
//!   `admin`).
//!
//! Percentages are of live connections (100 when there are none); timestamps are RFC 3339
//! UTC; a figure not known yet (a trend before its first sample, the last activity of a
//! kind with no connection) is `null`.

use std::time::SystemTime;

use dualcast_layers::error::rfc3339;
use http::{Response, StatusCode};
use serde::Serialize;
use utoipa::ToSchema;

use super::json_response;
use crate::body::ResponseBody;
use crate::connection::{ConnectionInfo, ConnectionKind, Health};
use crate::error::ApiError;
use crate::hub::{percentage, Census, ClusterFigures, HealthCount, Hub, Presence};

/// A monitoring view: the last segment of `/monitoring/{view}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MonitoringView {
    /// `/monitoring/dual-connections`.
    DualConnections,
    /// `/monitoring/performance`.
    Performance,
    /// `/monitoring/connection-health`.
    ConnectionHealth,
}

impl MonitoringView {
    /// The view a path segment names.
    pub(crate) fn from_segment(segment: &str) -> Option<Self> {
        match segment {
            "dual-connections" => Some(Self::DualConnections),
            "performance" => Some(Self::Performance),
            "connection-health" => Some(Self::ConnectionHealth),
            _ => None,
        }
    }

    /// The route template.
    pub(crate) fn template(self) -> &'static str {
        match self {
            Self::DualConnections => "/monitoring/dual-connections",
            Self::Performance => "/monitoring/performance",
            Self::ConnectionHealth => "/monitoring/connection-health",
        }
    }
}

/// Connections counted with their health, in seed `004`'s words.
#[derive(Serialize, ToSchema)]
pub(crate) struct HealthFigures {
    /// Live connections counted.
    total_connections: usize,
    /// Of them, healthy.
    healthy_connections: usize,
    /// Of them, degraded or ending.
    unhealthy_connections: usize,
    /// Healthy ones in percent, one decimal (100 with none).
    health_percentage: f64,
}

impl From<HealthCount> for HealthFigures {
    fn from(count: HealthCount) -> Self {
        Self {
            total_connections: count.total,
            healthy_connections: count.healthy,
            unhealthy_connections: count.unhealthy(),
            health_percentage: count.percentage(),
        }
    }
}

/// On a node of a cluster: whose figures an answer holds.
#[derive(Serialize, ToSchema)]
pub(crate) struct ClusterAnswered {
    /// The nodes whose figures are in, this node first.
    nodes: Vec<String>,
    /// The live nodes that had not answered within the wait: their connections' health
    /// and their deliveries are not counted.
    unanswered: Vec<String>,
}

impl ClusterAnswered {
    fn of(figures: &ClusterFigures) -> Option<Self> {
        let names = |list: &Option<Vec<std::sync::Arc<str>>>| -> Option<Vec<String>> {
            list.as_ref()
                .map(|list| list.iter().map(|n| n.to_string()).collect())
        };
        Some(Self {
            nodes: names(&figures.nodes)?,
            unanswered: names(&figures.unanswered).unwrap_or_default(),
        })
    }
}

fn average_per_session(census: &Census) -> f64 {
    if census.sessions == 0 {
        return 0.0;
    }
    let average = census.connections().total as f64 / census.sessions as f64;
    (average * 100.0).round() / 100.0
}

/// The answer of `GET /api/connections/stats`.
#[derive(Serialize, ToSchema)]
pub(crate) struct ConnectionStats {
    /// Players with at least one live connection.
    total_players: usize,
    /// Live connections, both kinds.
    total_connections: usize,
    connection_distribution: StatsDistribution,
    session_statistics: SessionStatistics,
    health_statistics: HealthStatistics,
    /// On a node of a cluster: the nodes counted, and those that did not answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<ClusterAnswered>,
}

/// Players by the kinds of connection they hold.
#[derive(Serialize, ToSchema)]
pub(crate) struct StatsDistribution {
    /// Players with WebSockets only.
    websocket_only: usize,
    /// Players with SSE streams only.
    sse_only: usize,
    /// Players with both kinds.
    dual_connections: usize,
}

/// Sessions of connected players.
#[derive(Serialize, ToSchema)]
pub(crate) struct SessionStatistics {
    /// Connected players with a current session.
    total_sessions: usize,
    /// Live connections per such session, two decimals (0 with none).
    average_connections_per_session: f64,
}

/// Health of every live connection.
#[derive(Serialize, ToSchema)]
pub(crate) struct HealthStatistics {
    /// Healthy connections.
    healthy_connections: usize,
    /// Degraded or ending connections.
    unhealthy_connections: usize,
    /// Healthy ones in percent, one decimal (100 with none).
    health_percentage: f64,
}

/// `GET /api/connections/stats`.
pub(crate) fn connection_stats(
    figures: &ClusterFigures,
) -> Result<Response<ResponseBody>, ApiError> {
    let census = figures.census;
    let connections = census.connections();
    ok(&ConnectionStats {
        total_players: census.players,
        total_connections: connections.total,
        connection_distribution: StatsDistribution {
            websocket_only: census.websocket_only,
            sse_only: census.sse_only,
            dual_connections: census.dual,
        },
        session_statistics: SessionStatistics {
            total_sessions: census.sessions,
            average_connections_per_session: average_per_session(&census),
        },
        health_statistics: HealthStatistics {
            healthy_connections: connections.healthy,
            unhealthy_connections: connections.unhealthy(),
            health_percentage: connections.percentage(),
        },
        cluster: ClusterAnswered::of(figures),
    })
}

/// The answer of `GET /monitoring/dual-connections`.
#[derive(Serialize, ToSchema)]
pub(crate) struct DualConnections {
    connection_distribution: DualDistribution,
    connection_health: HealthFigures,
    session_analytics: SessionAnalytics,
    /// On a node of a cluster: the nodes counted, and those that did not answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<ClusterAnswered>,
}

/// Players by the kinds of connection they hold.
#[derive(Serialize, ToSchema)]
pub(crate) struct DualDistribution {
    /// Players with at least one live connection.
    total_players: usize,
    /// Players with both kinds.
    dual_connection_players: usize,
    /// Players with WebSockets only.
    websocket_only_players: usize,
    /// Players with SSE streams only.
    sse_only_players: usize,
    /// Dual players among all, in percent, one decimal (100 with no player).
    dual_connection_percentage: f64,
}

/// Sessions of connected players.
#[derive(Serialize, ToSchema)]
pub(crate) struct SessionAnalytics {
    /// Connected players with a current session.
    total_sessions: usize,
    /// The same: a session counts only while its player is connected.
    sessions_with_connections: usize,
    /// Live connections per such session, two decimals (0 with none).
    average_connections_per_session: f64,
}

/// `GET /monitoring/dual-connections`.
pub(crate) fn dual_connections(
    figures: &ClusterFigures,
) -> Result<Response<ResponseBody>, ApiError> {
    let census = figures.census;
    ok(&DualConnections {
        connection_distribution: DualDistribution {
            total_players: census.players,
            dual_connection_players: census.dual,
            websocket_only_players: census.websocket_only,
            sse_only_players: census.sse_only,
            dual_connection_percentage: percentage(census.dual, census.players),
        },
        connection_health: census.connections().into(),
        session_analytics: SessionAnalytics {
            total_sessions: census.sessions,
            sessions_with_connections: census.sessions,
            average_connections_per_session: average_per_session(&census),
        },
        cluster: ClusterAnswered::of(figures),
    })
}

/// The answer of `GET /monitoring/performance`.
#[derive(Serialize, ToSchema)]
pub(crate) struct PerformanceView {
    connection_establishment: ConnectionEstablishment,
    message_delivery: MessageDelivery,
    /// When this answer was made.
    #[schema(format = DateTime)]
    timestamp: String,
    /// On a node of a cluster: the nodes counted, and those that did not answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<ClusterAnswered>,
}

/// Live connections and measured establishment times since the server started.
#[derive(Serialize, ToSchema)]
pub(crate) struct ConnectionEstablishment {
    /// Live connections, both kinds.
    total_connections: usize,
    /// Live WebSockets.
    websocket_connections: usize,
    /// Live SSE streams.
    sse_connections: usize,
    /// Mean WebSocket establishment, from the request to registration, in ms (0 with none).
    avg_websocket_establishment_ms: f64,
    /// Mean SSE establishment, in ms (0 with none).
    avg_sse_establishment_ms: f64,
    /// Longest WebSocket establishment, in ms.
    max_websocket_establishment_ms: f64,
    /// Longest SSE establishment, in ms.
    max_sse_establishment_ms: f64,
}

/// Publishes and deliveries since the server started.
#[derive(Serialize, ToSchema)]
pub(crate) struct MessageDelivery {
    /// Messages published, each once however many connections it went to.
    total_messages_sent: u64,
    /// Deliveries that reached a connection's outbox.
    successful_deliveries: u64,
    /// Deliveries that found their connection ending, gone or overflowing.
    failed_deliveries: u64,
    /// Successful deliveries among all, in percent, one decimal (100 with none).
    delivery_success_rate: f64,
}

/// `GET /monitoring/performance`.
pub(crate) fn performance(figures: &ClusterFigures) -> Result<Response<ResponseBody>, ApiError> {
    let performance = figures.performance;
    let census = figures.census;
    ok(&PerformanceView {
        connection_establishment: ConnectionEstablishment {
            total_connections: census.connections().total,
            websocket_connections: census.websocket.total,
            sse_connections: census.sse.total,
            avg_websocket_establishment_ms: performance.websocket.average_ms,
            avg_sse_establishment_ms: performance.sse.average_ms,
            max_websocket_establishment_ms: performance.websocket.max_ms,
            max_sse_establishment_ms: performance.sse.max_ms,
        },
        message_delivery: MessageDelivery {
            total_messages_sent: performance.messages_sent,
            successful_deliveries: performance.successful_deliveries,
            failed_deliveries: performance.failed_deliveries,
            delivery_success_rate: performance.delivery_success_rate(),
        },
        timestamp: rfc3339(SystemTime::now()),
        cluster: ClusterAnswered::of(figures),
    })
}

/// The answer of `GET /monitoring/connection-health`.
#[derive(Serialize, ToSchema)]
pub(crate) struct ConnectionHealthView {
    overall_health: HealthFigures,
    connection_type_health: ConnectionTypeHealth,
    health_trends: HealthTrendsView,
    /// On a node of a cluster: the nodes counted, and those that did not answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<ClusterAnswered>,
}

/// Health by transport.
#[derive(Serialize, ToSchema)]
pub(crate) struct ConnectionTypeHealth {
    websocket: KindHealth,
    sse: KindHealth,
}

/// The health of one transport's live connections.
#[derive(Serialize, ToSchema)]
pub(crate) struct KindHealth {
    /// Live connections of the kind.
    total: usize,
    /// Of them, healthy.
    healthy: usize,
    /// Of them, degraded or ending.
    unhealthy: usize,
    /// Healthy ones in percent, one decimal (100 with none).
    health_percentage: f64,
}

impl From<HealthCount> for KindHealth {
    fn from(count: HealthCount) -> Self {
        Self {
            total: count.total,
            healthy: count.healthy,
            unhealthy: count.unhealthy(),
            health_percentage: count.percentage(),
        }
    }
}

/// The share of healthy connections over rolling windows, sampled by the server each
/// minute.
#[derive(Serialize, ToSchema)]
pub(crate) struct HealthTrendsView {
    /// Over the last hour; `null` before a sample saw a connection.
    #[schema(required = true)]
    last_hour_health_percentage: Option<f64>,
    /// Over the last 24 hours; `null` before a sample saw a connection.
    #[schema(required = true)]
    last_24_hours_health_percentage: Option<f64>,
}

/// `GET /monitoring/connection-health`.
pub(crate) fn connection_health(
    figures: &ClusterFigures,
) -> Result<Response<ResponseBody>, ApiError> {
    let census = figures.census;
    let trends = figures.trends;
    ok(&ConnectionHealthView {
        overall_health: census.connections().into(),
        connection_type_health: ConnectionTypeHealth {
            websocket: census.websocket.into(),
            sse: census.sse.into(),
        },
        health_trends: HealthTrendsView {
            last_hour_health_percentage: trends.last_hour,
            last_24_hours_health_percentage: trends.last_24_hours,
        },
        cluster: ClusterAnswered::of(figures),
    })
}

/// `GET /monitoring/{view}`.
pub(crate) fn monitoring(
    figures: &ClusterFigures,
    view: MonitoringView,
) -> Result<Response<ResponseBody>, ApiError> {
    match view {
        MonitoringView::DualConnections => dual_connections(figures),
        MonitoringView::Performance => performance(figures),
        MonitoringView::ConnectionHealth => connection_health(figures),
    }
}

/// The answer of `GET /api/connections/{player_id}`.
#[derive(Serialize, ToSchema)]
pub(crate) struct PlayerConnections<'a> {
    /// The player asked about.
    player_id: &'a str,
    /// Its current session; `null` when it has none.
    #[schema(required = true)]
    session_id: Option<&'a str>,
    connections: ConnectionsByKind,
    presence: PresenceView,
    health: PlayerHealth,
    /// On a node of a cluster: every connection of the player, on whichever node holds
    /// it, oldest first on each node.
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<Vec<ClusterConnection>>,
}

/// One connection of a player in a cluster.
#[derive(Serialize, ToSchema)]
pub(crate) struct ClusterConnection {
    /// Its id, with the node that holds it: `c12@node-a`.
    connection_id: String,
    /// The node that holds it.
    node: String,
    kind: ConnectionKind,
    /// The session it joined.
    #[schema(required = true)]
    session_id: Option<String>,
    /// When it was established.
    #[schema(format = DateTime)]
    established_at: String,
    /// Its health, which only the node that holds it knows: `null` for another node's.
    #[schema(required = true)]
    health: Option<Health>,
}

/// The player's live connections by transport.
#[derive(Serialize, ToSchema)]
pub(crate) struct ConnectionsByKind {
    websocket: KindConnections,
    sse: KindConnections,
}

/// The player's live connections of one transport.
#[derive(Serialize, ToSchema)]
pub(crate) struct KindConnections {
    /// How many.
    count: usize,
    /// Their ids (`c12`), oldest first.
    connection_ids: Vec<String>,
    /// The latest activity among them (a frame or pong from the client, or the stream's
    /// opening for SSE); `null` with none.
    #[schema(format = DateTime, required = true)]
    last_activity: Option<String>,
}

/// The player's presence.
#[derive(Serialize, ToSchema)]
pub(crate) struct PresenceView {
    status: Presence,
    /// Its newest sign of life: the latest activity of its live connections, or, with
    /// none, when its last one ended; `null` when the hub holds no state of it.
    #[schema(format = DateTime, required = true)]
    last_seen: Option<String>,
    /// Live connections, both kinds.
    total_connections: usize,
}

/// The worst health among the player's connections, overall and by transport; `null`
/// where there is none.
#[derive(Serialize, ToSchema)]
pub(crate) struct PlayerHealth {
    #[schema(required = true)]
    overall_health: Option<Health>,
    #[schema(required = true)]
    websocket_health: Option<Health>,
    #[schema(required = true)]
    sse_health: Option<Health>,
}

/// The worst health of `connections`: `healthy`, `degraded` or `dead`.
fn worst(connections: &[&ConnectionInfo]) -> Option<Health> {
    connections
        .iter()
        .map(|c| c.health)
        .max_by_key(|health| match health {
            Health::Healthy => 0,
            Health::Degraded => 1,
            Health::Dead => 2,
        })
}

/// `GET /api/connections/{player_id}`.
pub(crate) fn player_connections(
    hub: &Hub,
    player_id: &str,
) -> Result<Response<ResponseBody>, ApiError> {
    let connections = hub.connections_of(player_id);
    let remote = hub.remote_connections_of(player_id);
    let node = hub.cluster_node();
    // In a cluster, ids are per node: each is said with its node.
    let qualified = |id: String, at: Option<&str>| match at {
        Some(node) => format!("{id}@{node}"),
        None => id,
    };
    let of_kind = |kind: ConnectionKind| -> Vec<&ConnectionInfo> {
        connections.iter().filter(|c| c.kind == kind).collect()
    };
    let (websocket, sse) = (
        of_kind(ConnectionKind::WebSocket),
        of_kind(ConnectionKind::Sse),
    );
    let by_kind = |list: &[&ConnectionInfo], kind: ConnectionKind| {
        let elsewhere: Vec<_> = remote.iter().filter(|r| r.kind == kind).collect();
        KindConnections {
            count: list.len() + elsewhere.len(),
            connection_ids: list
                .iter()
                .map(|c| qualified(c.id.to_string(), node))
                .chain(
                    elsewhere
                        .iter()
                        .map(|r| qualified(r.id.to_string(), Some(&r.node))),
                )
                .collect(),
            last_activity: list.iter().map(|c| c.last_seen).max().map(rfc3339),
        }
    };
    let cluster = node.map(|node| {
        let here = connections.iter().map(|c| ClusterConnection {
            connection_id: qualified(c.id.to_string(), Some(node)),
            node: node.to_owned(),
            kind: c.kind,
            session_id: c.session_id.as_deref().map(str::to_owned),
            established_at: rfc3339(c.established_at),
            health: Some(c.health),
        });
        let elsewhere = remote.iter().map(|r| ClusterConnection {
            connection_id: qualified(r.id.to_string(), Some(&r.node)),
            node: r.node.to_string(),
            kind: r.kind,
            session_id: r.session_id.as_deref().map(str::to_owned),
            established_at: rfc3339(r.established_at),
            health: None,
        });
        here.chain(elsewhere).collect()
    });
    let all: Vec<&ConnectionInfo> = connections.iter().collect();
    let session = hub.session_of(player_id);
    ok(&PlayerConnections {
        player_id,
        session_id: session.session_id.as_deref(),
        connections: ConnectionsByKind {
            websocket: by_kind(&websocket, ConnectionKind::WebSocket),
            sse: by_kind(&sse, ConnectionKind::Sse),
        },
        presence: PresenceView {
            status: hub.presence(player_id),
            last_seen: hub.last_seen(player_id).map(rfc3339),
            total_connections: connections.len() + remote.len(),
        },
        health: PlayerHealth {
            overall_health: worst(&all),
            websocket_health: worst(&websocket),
            sse_health: worst(&sse),
        },
        cluster,
    })
}

fn ok<T: Serialize>(value: &T) -> Result<Response<ResponseBody>, ApiError> {
    json_response(StatusCode::OK, value)
}
