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
use serde_json::{json, Value};

use super::json_response;
use crate::body::ResponseBody;
use crate::connection::{ConnectionInfo, ConnectionKind, Health};
use crate::error::ApiError;
use crate::hub::{Census, HealthCount, Hub};

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

fn ok(value: &Value) -> Result<Response<ResponseBody>, ApiError> {
    json_response(StatusCode::OK, value)
}

fn health_counts(count: HealthCount) -> Value {
    json!({
        "total_connections": count.total,
        "healthy_connections": count.healthy,
        "unhealthy_connections": count.unhealthy(),
        "health_percentage": count.percentage(),
    })
}

fn average_per_session(census: &Census) -> f64 {
    if census.sessions == 0 {
        return 0.0;
    }
    let average = census.connections().total as f64 / census.sessions as f64;
    (average * 100.0).round() / 100.0
}

/// `GET /api/connections/stats`.
pub(crate) fn connection_stats(hub: &Hub) -> Result<Response<ResponseBody>, ApiError> {
    let census = hub.census();
    let connections = census.connections();
    ok(&json!({
        "total_players": census.players,
        "total_connections": connections.total,
        "connection_distribution": {
            "websocket_only": census.websocket_only,
            "sse_only": census.sse_only,
            "dual_connections": census.dual,
        },
        "session_statistics": {
            "total_sessions": census.sessions,
            "average_connections_per_session": average_per_session(&census),
        },
        "health_statistics": {
            "healthy_connections": connections.healthy,
            "unhealthy_connections": connections.unhealthy(),
            "health_percentage": connections.percentage(),
        },
    }))
}

/// `GET /monitoring/{view}`.
pub(crate) fn monitoring(
    hub: &Hub,
    view: MonitoringView,
) -> Result<Response<ResponseBody>, ApiError> {
    match view {
        MonitoringView::DualConnections => {
            let census = hub.census();
            ok(&json!({
                "connection_distribution": {
                    "total_players": census.players,
                    "dual_connection_players": census.dual,
                    "websocket_only_players": census.websocket_only,
                    "sse_only_players": census.sse_only,
                    "dual_connection_percentage": crate::hub::percentage(census.dual, census.players),
                },
                "connection_health": health_counts(census.connections()),
                "session_analytics": {
                    "total_sessions": census.sessions,
                    "sessions_with_connections": census.sessions,
                    "average_connections_per_session": average_per_session(&census),
                },
            }))
        }
        MonitoringView::Performance => {
            let performance = hub.performance();
            let census = hub.census();
            ok(&json!({
                "connection_establishment": {
                    "total_connections": census.connections().total,
                    "websocket_connections": census.websocket.total,
                    "sse_connections": census.sse.total,
                    "avg_websocket_establishment_ms": performance.websocket.average_ms,
                    "avg_sse_establishment_ms": performance.sse.average_ms,
                    "max_websocket_establishment_ms": performance.websocket.max_ms,
                    "max_sse_establishment_ms": performance.sse.max_ms,
                },
                "message_delivery": {
                    "total_messages_sent": performance.messages_sent,
                    "successful_deliveries": performance.successful_deliveries,
                    "failed_deliveries": performance.failed_deliveries,
                    "delivery_success_rate": performance.delivery_success_rate(),
                },
                "timestamp": rfc3339(SystemTime::now()),
            }))
        }
        MonitoringView::ConnectionHealth => {
            let census = hub.census();
            let trends = hub.health_trends();
            let by_kind = |count: HealthCount| {
                json!({
                    "total": count.total,
                    "healthy": count.healthy,
                    "unhealthy": count.unhealthy(),
                    "health_percentage": count.percentage(),
                })
            };
            ok(&json!({
                "overall_health": health_counts(census.connections()),
                "connection_type_health": {
                    "websocket": by_kind(census.websocket),
                    "sse": by_kind(census.sse),
                },
                "health_trends": {
                    "last_hour_health_percentage": trends.last_hour,
                    "last_24_hours_health_percentage": trends.last_24_hours,
                },
            }))
        }
    }
}

/// The worst health of `connections` (`null` with none): `healthy`, `degraded` or `dead`.
fn worst(connections: &[&ConnectionInfo]) -> Value {
    let worst = connections
        .iter()
        .map(|c| c.health)
        .max_by_key(|health| match health {
            Health::Healthy => 0,
            Health::Degraded => 1,
            Health::Dead => 2,
        });
    worst.map_or(Value::Null, |health| json!(health))
}

/// `GET /api/connections/{player_id}`.
pub(crate) fn player_connections(
    hub: &Hub,
    player_id: &str,
) -> Result<Response<ResponseBody>, ApiError> {
    let connections = hub.connections_of(player_id);
    let of_kind = |kind: ConnectionKind| -> Vec<&ConnectionInfo> {
        connections.iter().filter(|c| c.kind == kind).collect()
    };
    let (websocket, sse) = (
        of_kind(ConnectionKind::WebSocket),
        of_kind(ConnectionKind::Sse),
    );
    let by_kind = |list: &[&ConnectionInfo]| {
        json!({
            "count": list.len(),
            "connection_ids": list.iter().map(|c| c.id.to_string()).collect::<Vec<_>>(),
            "last_activity": list.iter().map(|c| c.last_seen).max().map(rfc3339),
        })
    };
    let all: Vec<&ConnectionInfo> = connections.iter().collect();
    ok(&json!({
        "player_id": player_id,
        "session_id": hub.session_of(player_id).session_id.as_deref(),
        "connections": {
            "websocket": by_kind(&websocket),
            "sse": by_kind(&sse),
        },
        "presence": {
            "status": hub.presence(player_id),
            "last_seen": hub.last_seen(player_id).map(rfc3339),
            "total_connections": connections.len(),
        },
        "health": {
            "overall_health": worst(&all),
            "websocket_health": worst(&websocket),
            "sse_health": worst(&sse),
        },
    }))
}
