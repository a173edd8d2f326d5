//! Sessions (SPEC §3), admission (§1, §7), logout (§2) and `/metrics` (§9), over real
//! sockets: real WebSocket and SSE clients against `dualcast::serve` on 127.0.0.1:0.

mod common;

use bytes::Bytes;
use common::*;
use dualcast::{ConnectionKind, Hub, Message, Role, TrackLayer};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};

fn ws_headers(token: &str) -> Vec<(&'static str, String)> {
    vec![("sec-websocket-protocol", format!("bearer, {token}"))]
}

/// `GET path` with a bearer token: status, `Retry-After`, and the JSON body.
async fn get(server: &TestServer, path: &str, token: &str) -> (StatusCode, Option<String>, Value) {
    let request = Request::get(path)
        .header("host", server.addr.to_string())
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = server.send(request).await;
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    if status == StatusCode::OK {
        // An SSE stream never ends: its head is the answer.
        return (status, retry_after, Value::Null);
    }
    let body = within("the refusal body", response.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    (
        status,
        retry_after,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    )
}

fn keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

#[tokio::test]
async fn a_new_session_over_sse_ends_the_old_sessions_websockets_with_session_replaced() {
    let server = TestServer::start().await;
    let token = player_token("alice");
    let mut old_a = server.ws("/api/ws?session_id=s1", &token).await;
    let mut old_b = server.ws("/api/ws", &token).await; // joins s1
    let mut new = server.sse("/sse/alice?session_id=s2", &token).await;
    for old in [&mut old_a, &mut old_b] {
        assert_eq!(
            old.next_close().await,
            (4001, "session_replaced".to_owned())
        );
    }
    server
        .hub
        .send_to_player("alice", &Message::json("after", json!({})));
    assert_eq!(
        new.next_json().await["type"],
        "after",
        "the new session is untouched"
    );
}

#[tokio::test]
async fn a_new_session_over_websocket_ends_the_old_sessions_sse_streams_with_session_replaced() {
    let server = TestServer::start().await;
    let token = player_token("alice");
    let mut old = server.sse("/sse/alice?session_id=s1", &token).await;
    let mut new = server.ws("/api/ws?session_id=s2", &token).await;
    let disconnect = old.next_named("disconnect").await;
    assert_eq!(disconnect["reason"], "session_replaced");
    assert_eq!(disconnect["reconnect"], false);
    old.closed().await;
    server
        .hub
        .send_to_player("alice", &Message::json("after", json!({})));
    assert_eq!(new.next_json().await["type"], "after");
}

#[tokio::test]
async fn a_replaced_session_is_refused_with_409_on_both_transports_while_the_current_one_connects()
{
    let server = TestServer::start().await;
    let token = player_token("alice");
    drop(server.ws("/api/ws?session_id=s1", &token).await);
    let mut current = server.sse("/sse/alice?session_id=s2", &token).await;

    let (status, body) = server
        .try_ws("/api/ws?session_id=s1", &ws_headers(&token))
        .await
        .err()
        .expect("the handshake is refused before the 101");
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error_type"], "session_error");
    assert_eq!(body["details"]["error_code"], "STALE_SESSION");
    let (status, _, body) = get(&server, "/api/sse?session_id=s1", &token).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["details"]["error_code"], "STALE_SESSION");

    let mut joined = server.ws("/api/ws?session_id=s2", &token).await;
    server
        .hub
        .send_to_player("alice", &Message::json("still", json!({})));
    assert_eq!(current.next_json().await["type"], "still");
    assert_eq!(joined.next_json().await["type"], "still");
}

/// Found by schemathesis: the session layer ran before the handler's own checks, so a
/// request that could never become a connection (no WebSocket handshake, a wrong method)
/// took over the session it named and ended the player's live connections.
#[tokio::test]
async fn a_request_that_cannot_become_a_connection_takes_over_no_session() {
    let server = TestServer::start().await;
    let token = player_token("alice");
    let mut stream = server.sse("/api/sse?session_id=one", &token).await;
    for (method, path, expected) in [
        ("GET", "/api/ws?session_id=two", StatusCode::BAD_REQUEST),
        (
            "GET",
            "/api/ws/alice?session_id=two",
            StatusCode::BAD_REQUEST,
        ),
        (
            "TRACE",
            "/api/sse?session_id=three",
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            "DELETE",
            "/sse/alice?session_id=four",
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            "POST",
            "/api/ws?session_id=five",
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            "GET",
            "/api/sse?session_id=six&last_event_id=%zz",
            StatusCode::BAD_REQUEST,
        ),
        ("GET", "/sse/bob?session_id=seven", StatusCode::FORBIDDEN),
    ] {
        let (status, body) = server.request(method, path, Some(&token), None).await;
        assert_eq!(status, expected, "{method} {path}: {body}");
        assert_eq!(body["error"], true);
    }
    assert_eq!(
        server.hub.session_of("alice").session_id.as_deref(),
        Some("one")
    );
    server
        .hub
        .send_to_player("alice", &Message::json("still", json!({})));
    assert_eq!(stream.next_json().await["type"], "still");

    // Refused early on the deprecated path, the answer still says it is deprecated.
    let request = Request::get("/api/ws/alice")
        .header("host", server.addr.to_string())
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = server.send(request).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(response.headers()["deprecation"], "true");
    assert!(response.headers().contains_key("link"));
}

/// Found in review: the takeover used to happen before admission, so a connection the
/// track layer refused with 429 had already ended the old session's connections. It is now
/// decided before admission and carried out when the connection registers.
#[tokio::test]
async fn a_connection_refused_by_admission_takes_over_no_session() {
    let server = TestServer::start_with(Hub::new(), |builder| {
        builder.track(
            TrackLayer::pair()
                .0
                .connect_rate_per_address(0)
                .connect_rate_per_player(1),
        )
    })
    .await;
    let token = player_token("alice");
    // The burst (twice the rate) is two attempts: both join session one.
    let mut first = server.sse("/api/sse?session_id=one", &token).await;
    let _second = server.sse("/api/sse?session_id=one", &token).await;
    let (status, _, body) = get(&server, "/api/sse?session_id=two", &token).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["details"]["error_code"], "CONNECT_RATE_PLAYER");
    assert_eq!(
        server.hub.session_of("alice").session_id.as_deref(),
        Some("one")
    );
    assert_eq!(server.hub.connections_of("alice").len(), 2);
    server
        .hub
        .send_to_player("alice", &Message::json("still", json!({})));
    assert_eq!(first.next_json().await["type"], "still");
}

#[tokio::test]
async fn no_session_named_joins_the_current_one() {
    let server = TestServer::start().await;
    let token = player_token("alice");
    let _first = server.ws("/api/ws?session_id=s1", &token).await;
    let _second = server.sse("/api/sse", &token).await;
    let info = server.hub.session_of("alice");
    assert_eq!(info.session_id.as_deref(), Some("s1"));
    assert_eq!(info.active_connections, 2);
    assert!(server
        .hub
        .connections_of("alice")
        .iter()
        .all(|c| c.session_id.as_deref() == Some("s1")));
}

#[tokio::test]
async fn two_racing_takeovers_leave_exactly_one_current_session() {
    let server = TestServer::start().await;
    let token = player_token("alice");
    let attempts = (0..4).map(|i| {
        let path = format!("/api/ws?session_id=race-{i}");
        let headers = ws_headers(&token);
        let server = &server;
        async move { server.try_ws(&path, &headers).await }
    });
    let mut events = server.hub.subscribe();
    let outcomes = futures_util::future::join_all(attempts).await;
    let current = server
        .hub
        .session_of("alice")
        .session_id
        .expect("one current session");
    let mut clients = Vec::new();
    for outcome in outcomes {
        match outcome {
            Ok(client) => clients.push(client),
            Err((status, body)) => {
                assert_eq!(status, StatusCode::CONFLICT);
                assert_eq!(body["details"]["error_code"], "STALE_SESSION");
            }
        }
    }
    assert!(!clients.is_empty(), "the winner connected");
    // The others' connections end with session_replaced and leave; the current session's stay.
    loop {
        let live = server.hub.connections_of("alice");
        if live
            .iter()
            .all(|c| c.session_id.as_deref() == Some(&*current))
        {
            assert!(!live.is_empty(), "the current session keeps its connection");
            break;
        }
        let _ = within("a replaced connection leaving", events.recv()).await;
    }
    drop(clients);
}

#[tokio::test]
async fn the_fifth_connection_of_a_player_gets_429_while_another_player_connects_and_a_freed_slot_is_reused(
) {
    let server = TestServer::start().await;
    let token = player_token("alice");
    let first = server.ws("/api/ws", &token).await;
    let _second = server.ws("/api/ws", &token).await;
    let _third = server.sse("/api/sse", &token).await;
    let _fourth = server.sse("/sse/alice", &token).await;

    let (status, retry_after, body) = get(&server, "/api/sse", &token).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(retry_after.unwrap().parse::<u64>().unwrap() >= 1);
    assert_eq!(body["error_type"], "rate_limited");
    assert_eq!(body["details"]["error_code"], "TOO_MANY_CONNECTIONS");
    let (status, body) = server
        .try_ws("/api/ws", &ws_headers(&token))
        .await
        .err()
        .expect("refused before the 101");
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["details"]["error_code"], "TOO_MANY_CONNECTIONS");

    let _bob = server.ws("/api/ws", &player_token("bob")).await;

    let mut events = server.hub.subscribe();
    drop(first);
    wait_for_disconnect(&mut events).await;
    let _fifth = server.ws("/api/ws", &token).await;
    assert_eq!(server.hub.connections_of("alice").len(), 4);
}

#[tokio::test]
async fn the_address_rate_limit_refuses_a_burst_with_429_and_retry_after() {
    let server = TestServer::start_with(Hub::new(), |builder| {
        builder.track(
            TrackLayer::pair()
                .0
                .connect_rate_per_address(2)
                .connect_rate_per_player(0)
                .max_connections_per_player(0),
        )
    })
    .await;
    let mut open = Vec::new();
    for i in 0..20 {
        let (status, retry_after, body) =
            get(&server, "/api/sse", &player_token(&format!("p{i}"))).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            assert!(retry_after.unwrap().parse::<u64>().unwrap() >= 1);
            assert_eq!(body["details"]["error_code"], "CONNECT_RATE_ADDRESS");
            assert!(i >= 2, "the burst itself was let through");
            return;
        }
        assert_eq!(status, StatusCode::OK);
        open.push(i);
    }
    panic!("20 attempts in a burst and none refused");
}

#[tokio::test]
async fn the_session_api_answers_in_the_seed_shapes_and_ends_the_old_sessions_connections() {
    let server = TestServer::start().await;
    let token = player_token("alice");
    let mut ws = server.ws("/api/ws?session_id=session_123", &token).await;
    let mut sse = server.sse("/sse/alice", &token).await;

    let (status, state) = server
        .request("GET", "/api/connections/alice/session", Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        keys(&state),
        [
            "active_connections",
            "connection_types",
            "player_id",
            "session_created",
            "session_id"
        ]
    );
    assert_eq!(state["player_id"], "alice");
    assert_eq!(state["session_id"], "session_123");
    assert_eq!(state["active_connections"], 2);
    assert_eq!(state["connection_types"], json!(["websocket", "sse"]));
    assert!(state["session_created"].as_str().unwrap().ends_with('Z'));

    let (status, begun) = server
        .post(
            "/api/connections/alice/session",
            &token,
            json!({"session_id": "new_session_456"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        keys(&begun),
        [
            "message",
            "previous_connections_disconnected",
            "session_id",
            "success",
            "timestamp"
        ]
    );
    assert_eq!(begun["success"], true);
    assert_eq!(begun["message"], "New game session established");
    assert_eq!(begun["session_id"], "new_session_456");
    assert_eq!(begun["previous_connections_disconnected"], 2);
    assert_eq!(ws.next_close().await, (4001, "session_replaced".to_owned()));
    assert_eq!(
        sse.next_named("disconnect").await["reason"],
        "session_replaced"
    );

    // The replaced one, an empty one, another player's.
    let (status, body) = server
        .post(
            "/api/connections/alice/session",
            &token,
            json!({"session_id": "session_123"}),
        )
        .await;
    assert_eq!(
        (status, &body["details"]["error_code"]),
        (StatusCode::CONFLICT, &json!("STALE_SESSION"))
    );
    let (status, body) = server
        .post(
            "/api/connections/alice/session",
            &token,
            json!({"session_id": ""}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error_type"], "validation_error");
    let (status, body) = server
        .post("/api/connections/bob/session", &token, json!({}))
        .await;
    assert_eq!(
        (status, &body["details"]["error_code"]),
        (StatusCode::FORBIDDEN, &json!("PLAYER_MISMATCH"))
    );

    // Without a session id, a service mints one, which then connects as the current one.
    let (status, minted) = server
        .request(
            "POST",
            "/api/connections/alice/session",
            Some(&common::token("backend", Role::Service)),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let id = minted["session_id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 32);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    let _current = server.ws(&format!("/api/ws?session_id={id}"), &token).await;
    assert_eq!(
        server.hub.session_of("alice").session_id.as_deref(),
        Some(&*id)
    );
}

#[tokio::test]
async fn logout_ends_both_kinds_with_logout_and_no_other_players_connection() {
    let server = TestServer::start().await;
    let token = player_token("alice");
    let mut ws = server.ws("/api/ws", &token).await;
    let mut sse = server.sse("/api/sse", &token).await;
    let mut bob = server.ws("/api/ws", &player_token("bob")).await;

    let (status, _) = server
        .post("/api/connections/bob/logout", &token, json!({}))
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a player logs out only itself"
    );
    let (status, body) = server
        .post("/api/connections/alice/logout", &token, json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["connections_disconnected"], 2);
    assert_eq!(ws.next_close().await, (4000, "logout".to_owned()));
    let disconnect = sse.next_named("disconnect").await;
    assert_eq!(
        (
            disconnect["reason"].as_str(),
            disconnect["reconnect"].as_bool()
        ),
        (Some("logout"), Some(false))
    );
    server
        .hub
        .send_to_player("bob", &Message::json("still", json!({})));
    assert_eq!(bob.next_json().await["type"], "still");
}

async fn metrics_text(server: &TestServer, token: &str) -> String {
    let request = Request::get("/metrics")
        .header("host", server.addr.to_string())
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = server.send(request).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = within("the metrics", response.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

/// The sample value of the exposition line that starts with `series` (`name{labels}`).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn metrics_show_every_name_with_live_values_that_move() {
    let server = TestServer::start().await;
    let service = service_token();
    let (status, _, _) = get(&server, "/metrics", &player_token("alice")).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a player token may not read metrics"
    );
    let (status, _) = server.request("GET", "/metrics", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let token = player_token("alice");
    let ws = server.ws("/api/ws?session_id=s1", &token).await;
    let mut sse = server.sse("/sse/alice", &token).await;
    server
        .hub
        .send_to_player("alice", &Message::json("m", json!({})));
    sse.next_json().await;
    let (status, _, _) = get(&server, "/api/sse?session_id=s0", &token).await;
    assert_eq!(status, StatusCode::OK, "s0 takes over");
    let (status, _, _) = get(&server, "/api/sse?session_id=s1", &token).await;
    assert_eq!(status, StatusCode::CONFLICT, "s1 was replaced");

    let mut events = server.hub.subscribe();
    drop(ws);
    while server
        .hub
        .connections_of("alice")
        .iter()
        .any(|c| c.kind == ConnectionKind::WebSocket)
    {
        let _ = within("the WebSocket leaving", events.recv()).await;
    }
    let text = metrics_text(&server, &service).await;
    for name in [
        "connections",
        "connections_opened",
        "connections_closed",
        "connection_establishment_seconds",
        "messages_delivered",
        "delivery_failures",
        "outbox_overflows",
        "sessions_replaced",
        "admissions_refused",
        "pending_queue_depth",
        "pending_dropped",
        "http_requests",
        "http_request_duration_seconds",
    ] {
        assert!(
            text.contains(&format!("# TYPE dualcast_{name} ")),
            "no dualcast_{name} in:\n{text}"
        );
    }
    assert_eq!(
        sample(
            &text,
            "dualcast_connections_opened_total{kind=\"websocket\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(&text, "dualcast_connections{kind=\"websocket\"}"),
        0.0
    );
    assert_eq!(
        sample(
            &text,
            "dualcast_connections_closed_total{kind=\"websocket\",reason=\"session_replaced\"}"
        ),
        1.0
    );
    assert!(sample(&text, "dualcast_messages_delivered_total{kind=\"sse\"}") >= 1.0);
    assert_eq!(sample(&text, "dualcast_sessions_replaced_total"), 1.0);
    assert_eq!(
        sample(
            &text,
            "dualcast_admissions_refused_total{cause=\"stale_session\"}"
        ),
        1.0
    );
    assert!(
        text.contains("route=\"/sse/{player_id}\""),
        "the template, not the path"
    );
    assert!(!text.contains("/sse/alice"));

    let public = TestServer::start_with(Hub::new(), |b| b.metrics_public(true)).await;
    let (status, _) = public.request("GET", "/metrics", None, None).await;
    assert_eq!(status, StatusCode::OK, "public metrics need no token");
}
