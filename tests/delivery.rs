//! SPEC §4 delivery, over real sockets: every connection of a player gets each message,
//! rooms reach their members only, exclusions hold, broadcasts reach SSE-only players.

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn two_websockets_and_one_sse_stream_of_one_player_all_receive_a_personal_message_with_one_id(
) {
    let server = TestServer::start().await;
    let token = player_token("alice");
    let mut ws_a = server.ws("/api/ws", &token).await;
    let mut ws_b = server.ws("/api/ws", &token).await;
    let mut sse = server.sse("/sse/alice", &token).await;

    let (status, report) = server
        .post(
            "/api/players/alice/messages",
            &service_token(),
            json!({"type": "chat", "data": {"text": "hi"}}),
        )
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["delivered"], 3);
    assert_eq!(report["websocket"], 2);
    assert_eq!(report["sse"], 1);
    assert_eq!(report["failed"], 0);
    assert_eq!(report["queued"], false);

    let (a, b, c) = (
        ws_a.next_json().await,
        ws_b.next_json().await,
        sse.next_json().await,
    );
    for envelope in [&a, &b, &c] {
        assert_eq!(envelope["type"], "chat");
        assert_eq!(envelope["v"], 1);
        assert_eq!(envelope["data"]["text"], "hi");
        assert!(envelope["ts"].as_u64().unwrap() > 0);
        assert_eq!(envelope["id"], report["id"]);
    }
    assert_eq!(a["id"], b["id"]);
    assert_eq!(b["id"], c["id"]);
    assert!(a.get("room").is_none(), "no room on a personal message");

    // Each connection got the message once: the next thing on each is the sentinel.
    let sentinel = publish_sentinel(&server.hub);
    ws_a.expect_next_is_sentinel(&sentinel).await;
    ws_b.expect_next_is_sentinel(&sentinel).await;
    sse.expect_next_is_sentinel(&sentinel).await;
}

#[tokio::test]
async fn a_room_broadcast_reaches_every_connection_of_every_member_and_no_one_else() {
    let server = TestServer::start().await;
    let service = service_token();
    let mut alice_ws = server.ws("/api/ws", &player_token("alice")).await;
    let mut alice_sse = server.sse("/api/sse", &player_token("alice")).await;
    let mut bob_sse = server.sse("/sse/bob", &player_token("bob")).await;
    let mut carol_ws = server.ws("/api/ws", &player_token("carol")).await;
    for member in ["alice", "bob"] {
        let (status, body) = server
            .request(
                "PUT",
                &format!("/api/rooms/lobby/members/{member}"),
                Some(&service),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["member"], true);
        assert_eq!(body["changed"], true);
    }

    let (status, report) = server
        .post(
            "/api/rooms/lobby/messages",
            &service,
            json!({"type": "move", "data": [1, 2]}),
        )
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        (report["delivered"].as_u64(), report["players"].as_u64()),
        (Some(3), Some(2))
    );
    assert_eq!(
        (report["websocket"].as_u64(), report["sse"].as_u64()),
        (Some(1), Some(2))
    );
    for envelope in [
        alice_ws.next_json().await,
        alice_sse.next_json().await,
        bob_sse.next_json().await,
    ] {
        assert_eq!(envelope["room"], "lobby");
        assert_eq!(envelope["id"], report["id"]);
    }

    // Carol is not a member: the next thing she receives is a message for her alone.
    server
        .post(
            "/api/players/carol/messages",
            &service,
            json!({"type": "private"}),
        )
        .await;
    assert_eq!(carol_ws.next_json().await["type"], "private");
    let sentinel = publish_sentinel(&server.hub);
    carol_ws.expect_next_is_sentinel(&sentinel).await;
    alice_ws.expect_next_is_sentinel(&sentinel).await;
    alice_sse.expect_next_is_sentinel(&sentinel).await;
    bob_sse.expect_next_is_sentinel(&sentinel).await;

    // Leaving the room ends delivery to that member.
    let (status, body) = server
        .request(
            "DELETE",
            "/api/rooms/lobby/members/bob",
            Some(&service),
            None,
        )
        .await;
    assert_eq!(
        (status.as_u16(), body["member"].as_bool()),
        (200, Some(false))
    );
    let (_, report) = server
        .post(
            "/api/rooms/lobby/messages",
            &service,
            json!({"type": "move"}),
        )
        .await;
    assert_eq!(
        (report["delivered"].as_u64(), report["players"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(alice_ws.next_json().await["id"], report["id"]);
    assert_eq!(alice_sse.next_json().await["id"], report["id"]);
    let sentinel = publish_sentinel(&server.hub);
    alice_ws.expect_next_is_sentinel(&sentinel).await;
    alice_sse.expect_next_is_sentinel(&sentinel).await;
    bob_sse.expect_next_is_sentinel(&sentinel).await;
    carol_ws.expect_next_is_sentinel(&sentinel).await;
}

#[tokio::test]
async fn excluded_players_receive_nothing_from_a_room_or_a_global_broadcast() {
    let server = TestServer::start().await;
    let service = service_token();
    let mut alice = server.ws("/api/ws", &player_token("alice")).await;
    let mut bob = server.sse("/sse/bob", &player_token("bob")).await;
    for member in ["alice", "bob"] {
        server
            .request(
                "PUT",
                &format!("/api/rooms/r1/members/{member}"),
                Some(&service),
                None,
            )
            .await;
    }

    let (_, report) = server
        .post(
            "/api/rooms/r1/messages",
            &service,
            json!({"type": "room", "exclude": ["alice"]}),
        )
        .await;
    assert_eq!(
        (report["delivered"].as_u64(), report["players"].as_u64()),
        (Some(1), Some(1))
    );
    let (_, report) = server
        .post(
            "/api/broadcast",
            &service,
            json!({"type": "global", "exclude": ["bob"]}),
        )
        .await;
    assert_eq!(
        (report["delivered"].as_u64(), report["players"].as_u64()),
        (Some(1), Some(1))
    );
    let (_, report) = server
        .post("/api/broadcast", &service, json!({"type": "last"}))
        .await;
    assert_eq!(report["delivered"], 2);

    // Per connection, messages arrive in publish order: each sees exactly what it was sent.
    assert_eq!(alice.next_json().await["type"], "global");
    assert_eq!(alice.next_json().await["type"], "last");
    assert_eq!(bob.next_json().await["type"], "room");
    assert_eq!(bob.next_json().await["type"], "last");
    let sentinel = publish_sentinel(&server.hub);
    alice.expect_next_is_sentinel(&sentinel).await;
    bob.expect_next_is_sentinel(&sentinel).await;
}

#[tokio::test]
async fn a_global_broadcast_reaches_an_sse_only_player() {
    let server = TestServer::start().await;
    let mut sse = server.sse("/sse/dora", &player_token("dora")).await;
    let (status, report) = server
        .post(
            "/api/broadcast",
            &service_token(),
            json!({"type": "news", "v": 2, "data": "up"}),
        )
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        (
            report["sse"].as_u64(),
            report["websocket"].as_u64(),
            report["players"].as_u64()
        ),
        (Some(1), Some(0), Some(1))
    );
    let envelope = sse.next_json().await;
    assert_eq!(
        (
            envelope["type"].as_str(),
            envelope["v"].as_u64(),
            envelope["data"].as_str()
        ),
        (Some("news"), Some(2), Some("up"))
    );
    sse.expect_next_is_sentinel(&publish_sentinel(&server.hub))
        .await;
}

#[tokio::test]
async fn bad_publish_bodies_get_400_validation_errors_and_deliver_nothing() {
    let server = TestServer::start().await;
    let mut sse = server.sse("/sse/erin", &player_token("erin")).await;
    let service = service_token();
    for body in [
        json!({"data": 1}),
        json!({"type": 5}),
        json!({"type": "x", "unknown": true}),
        json!([1]),
    ] {
        let (status, error) = server
            .post("/api/players/erin/messages", &service, body.clone())
            .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(error["error"], true);
        assert_eq!(error["error_type"], "validation_error");
        assert!(error["timestamp"].as_str().unwrap().ends_with('Z'));
    }
    let oversized = json!({"type": "x", "data": "a".repeat(2 * 1024 * 1024)});
    let (status, error) = server
        .post("/api/players/erin/messages", &service, oversized)
        .await;
    assert_eq!(
        (status.as_u16(), error["details"]["error_code"].as_str()),
        (413, Some("PAYLOAD_TOO_LARGE"))
    );

    server
        .post(
            "/api/players/erin/messages",
            &service,
            json!({"type": "ok"}),
        )
        .await;
    assert_eq!(
        sse.next_json().await["type"],
        "ok",
        "nothing from the refused publishes arrived first"
    );
    sse.expect_next_is_sentinel(&publish_sentinel(&server.hub))
        .await;
}

#[tokio::test]
async fn a_plus_sign_in_a_path_names_the_player_with_a_plus_sign() {
    let server = TestServer::start().await;
    let mut plus = server.sse("/sse/a+b", &player_token("a+b")).await;
    let mut space = server.sse("/api/sse", &player_token("a b")).await;
    let (_, report) = server
        .post(
            "/api/players/a+b/messages",
            &service_token(),
            json!({"type": "for-plus"}),
        )
        .await;
    assert_eq!(
        (report["delivered"].as_u64(), report["sse"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(plus.next_json().await["type"], "for-plus");
    let (_, report) = server
        .post(
            "/api/players/a%20b/messages",
            &service_token(),
            json!({"type": "for-space"}),
        )
        .await;
    assert_eq!(report["delivered"], 1, "%20 is a space");
    assert_eq!(space.next_json().await["type"], "for-space");
    let sentinel = publish_sentinel(&server.hub);
    plus.expect_next_is_sentinel(&sentinel).await;
    space.expect_next_is_sentinel(&sentinel).await;
}

#[tokio::test]
async fn pretty_printed_data_arrives_whole_on_sse_and_websocket() {
    let server = TestServer::start().await;
    let token = player_token("hank");
    let mut sse = server.sse("/sse/hank", &token).await;
    let mut ws = server.ws("/api/ws", &token).await;
    let body =
        "{\"type\":\"pretty\",\"data\":{\r\n  \"a\": [1,\n\n 2],\n  \"text\": \"line\\nbreak\"\n}}";
    let request = http::Request::post("/api/players/hank/messages")
        .header("host", server.addr.to_string())
        .header("authorization", format!("Bearer {}", service_token()))
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap();
    assert_eq!(server.send(request).await.status(), 200);
    for envelope in [sse.next_json().await, ws.next_json().await] {
        assert_eq!(
            envelope["data"],
            json!({"a": [1, 2], "text": "line\nbreak"})
        );
    }
    let sentinel = publish_sentinel(&server.hub);
    sse.expect_next_is_sentinel(&sentinel).await;
    ws.expect_next_is_sentinel(&sentinel).await;
}
