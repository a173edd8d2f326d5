//! SPEC §7 over real sockets: tokens, their three sources, and who may do what.

mod common;

use common::*;
use dualcast::dualcast_layers::jwt::{issue_hs256, Claims};
use dualcast::Role;
use http::StatusCode;
use serde_json::json;

fn expired_token(player: &str) -> String {
    let claims = Claims::new(player, Role::Player, 0).with_expiry(1_000_000_000);
    issue_hs256(SECRET, &claims).unwrap()
}

fn assert_authentication_error(
    status: StatusCode,
    body: &serde_json::Value,
    code: &str,
    token: Option<&str>,
) {
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], true);
    assert_eq!(body["error_type"], "authentication_error");
    assert_eq!(body["details"]["error_code"], code);
    if let Some(token) = token {
        assert!(
            !body.to_string().contains(token),
            "the token never reaches an error body"
        );
    }
}

#[tokio::test]
async fn a_missing_malformed_or_expired_token_gets_401_with_the_json_body_and_registers_nothing() {
    let server = TestServer::start().await;
    let mut events = server.hub.subscribe();
    let expired = expired_token("alice");
    let forged = issue_hs256(
        b"some-other-secret-of-32-bytes-long!!",
        &Claims::new("alice", Role::Player, 60),
    )
    .unwrap();
    let cases: [(Option<&str>, &str); 4] = [
        (None, "MISSING_TOKEN"),
        (Some("not.a.jwt"), "MALFORMED_TOKEN"),
        (Some(&expired), "TOKEN_EXPIRED"),
        (Some(&forged), "INVALID_TOKEN"),
    ];
    for (token, code) in cases {
        // WebSocket, token as the bearer subprotocol.
        let headers: Vec<(&str, String)> = token
            .map(|t| vec![("sec-websocket-protocol", format!("bearer, {t}"))])
            .unwrap_or_default();
        let Err((status, body)) = server.try_ws("/api/ws", &headers).await else {
            panic!("upgraded without a valid token")
        };
        assert_authentication_error(status, &body, code, token);

        // SSE, token in the query string as EventSource sends it.
        let path = token.map_or("/sse/alice".to_owned(), |t| {
            format!("/sse/alice?access_token={t}")
        });
        let (status, body) = server.request("GET", &path, None, None).await;
        assert_authentication_error(status, &body, code, token);

        // SSE, token as a bearer header.
        let (status, _) = server.try_sse("/api/sse", token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(server.hub.connection_count(), 0);
    assert_no_connection_was_registered(&mut events);
}

/// Not even for a moment: no `Connected` event was ever sent.
fn assert_no_connection_was_registered(
    events: &mut tokio::sync::broadcast::Receiver<dualcast::HubEvent>,
) {
    assert!(
        matches!(
            events.try_recv(),
            Err(tokio::sync::broadcast::error::TryRecvError::Empty)
        ),
        "a refused request registered a connection"
    );
}

#[tokio::test]
async fn the_bearer_subprotocol_is_selected() {
    let server = TestServer::start().await;
    let client = server
        .ws("/api/ws?session_id=s-1", &player_token("alice"))
        .await;
    assert_eq!(
        client.response.headers()["sec-websocket-protocol"],
        "bearer"
    );
    let connections = server.hub.connections_of("alice");
    assert_eq!(connections[0].session_id.as_deref(), Some("s-1"));

    // The legacy path works for the token's own player, and says it is deprecated.
    let legacy = server.ws("/api/ws/alice", &player_token("alice")).await;
    assert_eq!(legacy.response.headers()["deprecation"], "true");
}

#[tokio::test]
async fn a_token_for_one_player_cannot_open_another_players_connection() {
    let server = TestServer::start().await;
    let mut events = server.hub.subscribe();
    let alice = player_token("alice");
    let (status, body) = server.request("GET", "/sse/bob", Some(&alice), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error_type"], "authorization_error");
    let headers = [("sec-websocket-protocol", format!("bearer, {alice}"))];
    let Err((status, body)) = server.try_ws("/api/ws/bob", &headers).await else {
        panic!("opened bob's socket")
    };
    assert_eq!(
        (status, body["error_type"].as_str()),
        (StatusCode::FORBIDDEN, Some("authorization_error"))
    );
    assert_no_connection_was_registered(&mut events);
}

#[tokio::test]
async fn publish_endpoints_refuse_player_tokens_with_403() {
    let server = TestServer::start().await;
    let alice = player_token("alice");
    let mut sse = server.sse("/sse/alice", &alice).await;
    for (method, path) in [
        ("POST", "/api/players/alice/messages"),
        ("POST", "/api/rooms/lobby/messages"),
        ("POST", "/api/broadcast"),
        ("PUT", "/api/rooms/lobby/members/alice"),
        ("DELETE", "/api/rooms/lobby/members/alice"),
    ] {
        let (status, body) = server
            .request(method, path, Some(&alice), Some(json!({"type": "spoof"})))
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}");
        assert_eq!(body["error_type"], "authorization_error");
    }
    // An admin token may publish.
    let admin = token("ops", Role::Admin);
    let (status, _) = server
        .post(
            "/api/players/alice/messages",
            &admin,
            json!({"type": "real"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        sse.next_json().await["type"],
        "real",
        "no spoofed message arrived before"
    );
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_with_the_json_error_body() {
    let server = TestServer::start().await;
    let mut events = server.hub.subscribe();
    let service = service_token();
    let (status, body) = server
        .request("GET", "/api/nothing-here", Some(&service), None)
        .await;
    assert_eq!(
        (status, body["error_type"].as_str()),
        (StatusCode::NOT_FOUND, Some("validation_error"))
    );
    let (status, body) = server
        .request("GET", "/api/broadcast", Some(&service), None)
        .await;
    assert_eq!(
        (status, body["details"]["allow"].as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, Some("POST"))
    );
    let (status, body) = server
        .request("GET", "/api/ws", Some(&player_token("a")), None)
        .await;
    assert_eq!(
        (status, body["details"]["error_code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("BAD_WEBSOCKET_UPGRADE"))
    );
    assert_no_connection_was_registered(&mut events);
    let request = http::Request::get("/api/broadcast")
        .header("host", server.addr.to_string())
        .header("authorization", format!("Bearer {service}"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    assert_eq!(server.send(request).await.headers()["allow"], "POST");
    let (status, body) = server.request("GET", "/healthz", None, None).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );
}

#[tokio::test]
async fn a_token_that_expires_while_the_connection_is_open_ends_it_with_auth_expired() {
    let server = TestServer::start().await;
    let token = expiring_token("erin");
    let mut ws = server.ws("/api/ws", &token).await;
    let mut sse = server.sse("/sse/erin", &token).await;

    let (code, reason) = ws.next_close().await;
    assert_eq!((code, reason.as_str()), (4002, "auth_expired"));
    let disconnect = sse.next_named("disconnect").await;
    assert_eq!(disconnect["reason"], "auth_expired");
    assert_eq!(disconnect["reconnect"], true);
    assert_eq!(disconnect["recover"], false);
}
