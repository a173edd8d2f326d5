//! Seed 004's management and monitoring routes over a real server with live WebSocket and
//! SSE connections behind them: each answer field by field, figures that move as
//! connections open and close and as messages go out, and who may read what.

mod common;

use common::*;
use dualcast::Role;
use http::StatusCode;
use serde_json::{json, Value};

async fn get(server: &TestServer, path: &str, token: Option<&str>) -> (StatusCode, Value) {
    server.request("GET", path, token, None).await
}

async fn get_ok(server: &TestServer, path: &str) -> Value {
    let (status, body) = get(server, path, Some(&service_token())).await;
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    body
}

/// The keys of a JSON object, sorted.
fn keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

fn assert_rfc3339(value: &Value, what: &str) {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("{what}: not a string: {value}"));
    assert!(
        text.len() >= 20 && text.ends_with('Z') && text.as_bytes()[10] == b'T',
        "{what}: not RFC 3339 UTC: {text}"
    );
}

fn assert_error(status: StatusCode, body: &Value, expected: StatusCode, error_type: &str) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["error"], true, "{body}");
    assert_eq!(body["error_type"], error_type, "{body}");
    assert!(body["message"].is_string(), "{body}");
    assert!(body["details"]["error_code"].is_string(), "{body}");
    assert_rfc3339(&body["timestamp"], "timestamp");
}

/// alice holds a WebSocket and an SSE stream, bob a WebSocket, carol an SSE stream.
async fn three_players(server: &TestServer) -> (WsClient, SseClient, WsClient, SseClient) {
    let alice_ws = server.ws("/api/ws", &player_token("alice")).await;
    let alice_sse = server.sse("/api/sse", &player_token("alice")).await;
    let bob_ws = server.ws("/api/ws", &player_token("bob")).await;
    let carol_sse = server.sse("/api/sse", &player_token("carol")).await;
    poll_until("four connections registered", || {
        (server.hub.connection_count() == 4).then_some(())
    })
    .await;
    (alice_ws, alice_sse, bob_ws, carol_sse)
}

#[tokio::test]
async fn a_players_connections_are_listed_by_kind_with_presence_and_health() {
    let server = TestServer::start().await;
    let alice = player_token("alice");
    let (alice_ws, _alice_sse, _bob, _carol) = three_players(&server).await;

    let (status, body) = get(&server, "/api/connections/alice", Some(&alice)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        keys(&body),
        [
            "connections",
            "health",
            "player_id",
            "presence",
            "session_id"
        ]
    );
    assert_eq!(body["player_id"], "alice");
    assert!(body["session_id"].is_string(), "{body}");
    assert_eq!(keys(&body["connections"]), ["sse", "websocket"]);
    let ids: Vec<String> = server
        .hub
        .connections_of("alice")
        .iter()
        .map(|c| c.id.to_string())
        .collect();
    for kind in ["websocket", "sse"] {
        let of_kind = &body["connections"][kind];
        assert_eq!(keys(of_kind), ["connection_ids", "count", "last_activity"]);
        assert_eq!(of_kind["count"], 1, "{kind}");
        let id = of_kind["connection_ids"][0].as_str().expect("an id");
        assert!(ids.iter().any(|known| known == id), "{id} in {ids:?}");
        assert_rfc3339(&of_kind["last_activity"], kind);
    }
    assert_eq!(
        keys(&body["presence"]),
        ["last_seen", "status", "total_connections"]
    );
    assert_eq!(body["presence"]["status"], "online");
    assert_eq!(body["presence"]["total_connections"], 2);
    assert_rfc3339(&body["presence"]["last_seen"], "last_seen");
    assert_eq!(
        body["health"],
        json!({"overall_health": "healthy", "websocket_health": "healthy", "sse_health": "healthy"})
    );

    // The WebSocket closes: the figures follow.
    drop(alice_ws);
    poll_until("alice's WebSocket gone", || {
        (server.hub.connections_of("alice").len() == 1).then_some(())
    })
    .await;
    let body = get_ok(&server, "/api/connections/alice").await;
    assert_eq!(
        body["connections"]["websocket"],
        json!({"count": 0, "connection_ids": [], "last_activity": null})
    );
    assert_eq!(body["presence"]["total_connections"], 1);
    assert_eq!(body["health"]["websocket_health"], Value::Null);
    assert_eq!(body["health"]["overall_health"], "healthy");

    // A player reads only itself; no token is 401.
    let (status, body) = get(
        &server,
        "/api/connections/alice",
        Some(&player_token("bob")),
    )
    .await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "authorization_error");
    let (status, body) = get(&server, "/api/connections/alice", None).await;
    assert_error(
        status,
        &body,
        StatusCode::UNAUTHORIZED,
        "authentication_error",
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_player_that_left_is_reconnecting_then_known_by_its_last_sign_of_life() {
    let server = TestServer::start().await;
    let ws = server.ws("/api/ws", &player_token("dave")).await;
    poll_until("registered", || {
        (server.hub.connection_count() == 1).then_some(())
    })
    .await;
    drop(ws);
    poll_until("gone", || {
        (server.hub.connection_count() == 0).then_some(())
    })
    .await;
    let body = get_ok(&server, "/api/connections/dave").await;
    assert_eq!(body["presence"]["status"], "reconnecting");
    assert_eq!(body["presence"]["total_connections"], 0);
    assert_rfc3339(&body["presence"]["last_seen"], "last_seen");
    assert_eq!(body["health"]["overall_health"], Value::Null);
    let body = get_ok(&server, "/api/connections/nobody").await;
    assert_eq!(body["presence"]["status"], "offline");
    assert_eq!(body["presence"]["last_seen"], Value::Null);
    server.shutdown().await;
}

#[tokio::test]
async fn connection_stats_and_dual_connections_count_the_live_connections() {
    let server = TestServer::start().await;
    let empty = get_ok(&server, "/api/connections/stats").await;
    assert_eq!(empty["total_connections"], 0);
    assert_eq!(empty["health_statistics"]["health_percentage"], 100.0);

    let (_alice_ws, _alice_sse, bob, _carol) = three_players(&server).await;
    let stats = get_ok(&server, "/api/connections/stats").await;
    assert_eq!(
        stats,
        json!({
            "total_players": 3,
            "total_connections": 4,
            "connection_distribution": {"websocket_only": 1, "sse_only": 1, "dual_connections": 1},
            "session_statistics": {"total_sessions": 3, "average_connections_per_session": 1.33},
            "health_statistics": {
                "healthy_connections": 4, "unhealthy_connections": 0, "health_percentage": 100.0
            },
        })
    );
    let dual = get_ok(&server, "/monitoring/dual-connections").await;
    assert_eq!(
        dual,
        json!({
            "connection_distribution": {
                "total_players": 3,
                "dual_connection_players": 1,
                "websocket_only_players": 1,
                "sse_only_players": 1,
                "dual_connection_percentage": 33.3,
            },
            "connection_health": {
                "total_connections": 4,
                "healthy_connections": 4,
                "unhealthy_connections": 0,
                "health_percentage": 100.0,
            },
            "session_analytics": {
                "total_sessions": 3,
                "sessions_with_connections": 3,
                "average_connections_per_session": 1.33,
            },
        })
    );

    drop(bob);
    poll_until("bob gone", || {
        (server.hub.connection_count() == 3).then_some(())
    })
    .await;
    let stats = get_ok(&server, "/api/connections/stats").await;
    assert_eq!(stats["total_players"], 2);
    assert_eq!(stats["connection_distribution"]["websocket_only"], 0);
    assert_eq!(
        stats["session_statistics"]["average_connections_per_session"],
        1.5
    );
    server.shutdown().await;
}

#[tokio::test]
async fn performance_counts_what_was_sent_and_how_long_connections_took() {
    let server = TestServer::start().await;
    let (mut alice_ws, mut alice_sse, _bob, _carol) = three_players(&server).await;
    let before = get_ok(&server, "/monitoring/performance").await;
    for n in 0..2 {
        let (status, _) = server
            .post(
                "/api/players/alice/messages",
                &service_token(),
                json!({"type": "n", "data": n}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        alice_ws.next_json().await;
        alice_sse.next_json().await;
    }
    let after = get_ok(&server, "/monitoring/performance").await;
    assert_eq!(
        keys(&after),
        ["connection_establishment", "message_delivery", "timestamp"]
    );
    assert_rfc3339(&after["timestamp"], "timestamp");
    let establishment = &after["connection_establishment"];
    assert_eq!(establishment["total_connections"], 4);
    assert_eq!(establishment["websocket_connections"], 2);
    assert_eq!(establishment["sse_connections"], 2);
    for kind in ["websocket", "sse"] {
        let average = establishment[format!("avg_{kind}_establishment_ms")]
            .as_f64()
            .expect("a number");
        let max = establishment[format!("max_{kind}_establishment_ms")]
            .as_f64()
            .expect("a number");
        assert!(max >= average && average >= 0.0, "{establishment}");
    }
    let sent = |body: &Value, key: &str| body["message_delivery"][key].as_u64().expect(key);
    assert_eq!(
        sent(&after, "total_messages_sent") - sent(&before, "total_messages_sent"),
        2
    );
    assert_eq!(
        sent(&after, "successful_deliveries") - sent(&before, "successful_deliveries"),
        4
    );
    assert_eq!(sent(&after, "failed_deliveries"), 0);
    assert_eq!(after["message_delivery"]["delivery_success_rate"], 100.0);
    server.shutdown().await;
}

#[tokio::test]
async fn connection_health_has_every_kind_and_the_trends() {
    let server = TestServer::start().await;
    let (_alice_ws, _alice_sse, _bob, _carol) = three_players(&server).await;
    let health = get_ok(&server, "/monitoring/connection-health").await;
    assert_eq!(
        keys(&health),
        ["connection_type_health", "health_trends", "overall_health"]
    );
    assert_eq!(
        health["overall_health"],
        json!({"total_connections": 4, "healthy_connections": 4, "unhealthy_connections": 0, "health_percentage": 100.0})
    );
    for kind in ["websocket", "sse"] {
        assert_eq!(
            health["connection_type_health"][kind],
            json!({"total": 2, "healthy": 2, "unhealthy": 0, "health_percentage": 100.0}),
            "{kind}"
        );
    }
    let trends = &health["health_trends"];
    assert_eq!(
        keys(trends),
        [
            "last_24_hours_health_percentage",
            "last_hour_health_percentage"
        ]
    );
    for window in [
        "last_hour_health_percentage",
        "last_24_hours_health_percentage",
    ] {
        // The keeper samples once a minute from its start: a number once it has, with
        // every connection healthy so far.
        let value = &trends[window];
        assert!(value.is_null() || value == 100.0, "{window}: {value}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn the_service_routes_refuse_players_and_requests_without_a_token() {
    let server = TestServer::start().await;
    for path in [
        "/api/connections/stats",
        "/monitoring/dual-connections",
        "/monitoring/performance",
        "/monitoring/connection-health",
    ] {
        let (status, body) = get(&server, path, Some(&player_token("alice"))).await;
        assert_error(status, &body, StatusCode::FORBIDDEN, "authorization_error");
        let (status, body) = get(&server, path, None).await;
        assert_error(
            status,
            &body,
            StatusCode::UNAUTHORIZED,
            "authentication_error",
        );
        let (status, body) = get(&server, path, Some(&token("ops", Role::Admin))).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        let (status, body) = server
            .request("POST", path, Some(&service_token()), Some(json!({})))
            .await;
        assert_error(
            status,
            &body,
            StatusCode::METHOD_NOT_ALLOWED,
            "validation_error",
        );
    }
    let (status, _) = get(&server, "/monitoring/nothing", Some(&service_token())).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    server.shutdown().await;
}

/// A WebSocket whose client reads nothing leaves its ping unanswered and turns degraded:
/// every route's health figures count it unhealthy, and healthy again once the client
/// sends a frame.
#[tokio::test]
async fn a_degraded_connection_moves_every_health_figure_and_back() {
    use dualcast::{HeartbeatSettings, Hub};
    use std::time::Duration;

    let heartbeat = HeartbeatSettings::new()
        .interval(Duration::from_secs(1))
        .late_after(Duration::from_secs(1))
        .timeout(Duration::from_secs(30));
    let server = TestServer::start_with(Hub::builder().heartbeat(heartbeat).build(), |a| a).await;
    let mut alice_ws = server.ws("/api/ws", &player_token("alice")).await;
    let _alice_sse = server.sse("/api/sse", &player_token("alice")).await;
    let health_of = |kind: dualcast::ConnectionKind| {
        server
            .hub
            .connections_of("alice")
            .into_iter()
            .find(|c| c.kind == kind)
            .map(|c| c.health)
    };
    let websocket = dualcast::ConnectionKind::WebSocket;
    poll_until("the unread WebSocket degrades", || {
        (health_of(websocket) == Some(dualcast::Health::Degraded)).then_some(())
    })
    .await;

    let health = get_ok(&server, "/monitoring/connection-health").await;
    assert_eq!(
        health["overall_health"]["unhealthy_connections"], 1,
        "{health}"
    );
    assert_eq!(health["overall_health"]["health_percentage"], 50.0);
    assert_eq!(
        health["connection_type_health"]["websocket"]["unhealthy"],
        1
    );
    assert_eq!(
        health["connection_type_health"]["websocket"]["health_percentage"],
        0.0
    );
    assert_eq!(health["connection_type_health"]["sse"]["healthy"], 1);
    let stats = get_ok(&server, "/api/connections/stats").await;
    assert_eq!(
        stats["health_statistics"]["unhealthy_connections"], 1,
        "{stats}"
    );
    assert_eq!(stats["health_statistics"]["health_percentage"], 50.0);
    let dual = get_ok(&server, "/monitoring/dual-connections").await;
    assert_eq!(
        dual["connection_health"]["unhealthy_connections"], 1,
        "{dual}"
    );
    let alice = get_ok(&server, "/api/connections/alice").await;
    assert_eq!(
        alice["health"],
        json!({"overall_health": "degraded", "websocket_health": "degraded", "sse_health": "healthy"}),
        "{alice}"
    );

    // A frame from the client: healthy again, and so are the figures.
    alice_ws
        .send_json(&json!({"type": "ping", "id": "back"}))
        .await;
    poll_until("the WebSocket is healthy again", || {
        (health_of(websocket) == Some(dualcast::Health::Healthy)).then_some(())
    })
    .await;
    let health = get_ok(&server, "/monitoring/connection-health").await;
    assert_eq!(
        health["overall_health"]["unhealthy_connections"], 0,
        "{health}"
    );
    assert_eq!(health["overall_health"]["health_percentage"], 100.0);
    let alice = get_ok(&server, "/api/connections/alice").await;
    assert_eq!(alice["health"]["overall_health"], "healthy");
    server.shutdown().await;
}
