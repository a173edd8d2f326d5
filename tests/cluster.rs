//! Several nodes behind one real Redis (SPEC §10): each test starts its own `redis-server`
//! on a free loopback port (with `appendonly yes`, so a restart keeps the log) and three
//! nodes, real servers on `127.0.0.1:0`, each with its own hub and `RedisBackplane`.
#![cfg(feature = "redis")]

mod common;

use std::time::Duration;

use common::redis_server::{RedisServer, REDIS_WAIT};
use common::*;
use dualcast::{BackplaneState, Hub, RedisBackplane, RedisSettings};
use http::StatusCode;
use serde_json::{json, Value};

/// A node of the cluster behind `redis`.
async fn node(redis: &RedisServer, id: &str) -> TestServer {
    let backplane = RedisBackplane::connect(
        RedisSettings::new(redis.url())
            .node_id(id)
            .heartbeat(Duration::from_millis(100))
            .node_timeout(Duration::from_millis(1000))
            .command_timeout(Duration::from_millis(500)),
    )
    .await
    .unwrap();
    let hub = Hub::builder()
        .backplane(backplane)
        .report_wait(Duration::from_secs(2))
        .build();
    TestServer::start_with(hub, |app| app).await
}

/// Three nodes, each seeing the other two.
async fn cluster(redis: &RedisServer) -> [TestServer; 3] {
    let nodes = [
        node(redis, "a").await,
        node(redis, "b").await,
        node(redis, "c").await,
    ];
    for node in &nodes {
        poll_until("every node sees the other two", || {
            let status = node.hub.backplane_status()?;
            (status.state == BackplaneState::Up && status.peers == 2).then_some(())
        })
        .await;
    }
    nodes
}

async fn publish(node: &TestServer, path: &str, body: Value) -> (StatusCode, Value) {
    node.post(path, &service_token(), body).await
}

fn node_names(report: &Value) -> Vec<String> {
    let mut names: Vec<String> = report["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_publish_on_one_node_reaches_the_players_connections_on_the_others_once_with_one_id() {
    let redis = RedisServer::start().await;
    let [a, b, c] = cluster(&redis).await;
    let token = player_token("alice");
    let mut ws = b.ws("/api/ws/alice", &token).await;
    let mut sse = c.sse("/sse/alice", &token).await;

    let (status, report) = publish(
        &a,
        "/api/players/alice/messages",
        json!({"type": "chat", "data": {"n": 1}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(
        (&report["delivered"], &report["websocket"], &report["sse"]),
        (&json!(2), &json!(1), &json!(1)),
        "{report}"
    );
    assert_eq!(node_names(&report), ["a", "b", "c"], "{report}");
    assert_eq!(report["unanswered"], json!([]), "{report}");
    let id = report["id"].as_str().unwrap();

    let on_ws = ws.next_json().await;
    let on_sse = sse.next_json().await;
    assert_eq!(
        (on_ws["id"].as_str(), on_sse["id"].as_str()),
        (Some(id), Some(id))
    );
    assert_eq!(
        on_ws, on_sse,
        "the same envelope, byte for byte the same fields"
    );
    assert_eq!(on_ws["data"], json!({"n": 1}));

    // Once each: the next thing either gets is the next publish.
    let (_, second) = publish(
        &c,
        "/api/players/alice/messages",
        json!({"type": "chat", "data": {"n": 2}}),
    )
    .await;
    assert_eq!(ws.next_json().await["id"], second["id"]);
    assert_eq!(sse.next_json().await["id"], second["id"]);
    assert_ne!(second["id"], report["id"]);
}

#[tokio::test]
async fn room_membership_and_room_and_global_broadcasts_are_cluster_wide() {
    let redis = RedisServer::start().await;
    let [a, b, c] = cluster(&redis).await;
    let mut bob = b.ws("/api/ws/bob", &player_token("bob")).await;
    let mut carol = c.sse("/sse/carol", &player_token("carol")).await;
    let mut dave = a.ws("/api/ws/dave", &player_token("dave")).await;
    let mut eve = b.ws("/api/ws/eve", &player_token("eve")).await;
    for player in ["bob", "carol", "dave"] {
        // Every membership is made on node A, whatever node holds the player.
        let path = format!("/api/rooms/lobby/members/{player}");
        let response = a.request("PUT", &path, Some(&service_token()), None).await;
        assert_eq!(response.0, StatusCode::OK, "{:?}", response.1);
        assert_eq!(response.1["changed"], true);
    }
    for node in [&a, &b, &c] {
        assert!(node.hub.is_member("lobby", "carol"), "every node knows");
    }

    let (status, report) = publish(
        &c,
        "/api/rooms/lobby/messages",
        json!({"type": "news", "data": "room", "exclude": ["dave"]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(
        (&report["delivered"], &report["players"]),
        (&json!(2), &json!(2)),
        "{report}"
    );
    let id = report["id"].clone();
    let on_bob = bob.next_json().await;
    assert_eq!((&on_bob["id"], &on_bob["room"]), (&id, &json!("lobby")));
    assert_eq!(carol.next_json().await["id"], id);

    let (_, everyone) = publish(&b, "/api/broadcast", json!({"type": "all", "data": 1})).await;
    assert_eq!(everyone["delivered"], 4, "{everyone}");
    for next in [
        bob.next_json().await,
        carol.next_json().await,
        dave.next_json().await,
        eve.next_json().await,
    ] {
        assert_eq!(
            next["id"], everyone["id"],
            "dave skipped the room message, eve was no member"
        );
    }
}

/// Publishes `n` to alice through `node`: the envelope id if the cluster took it.
async fn try_publish(node: &TestServer, n: usize) -> Result<String, Value> {
    let (status, body) = publish(
        node,
        "/api/players/alice/messages",
        json!({"type": "n", "data": n}),
    )
    .await;
    match status {
        StatusCode::OK => Ok(body["id"].as_str().unwrap().to_owned()),
        StatusCode::SERVICE_UNAVAILABLE => Err(body),
        other => panic!("a publish is taken or refused with 503, not {other}: {body}"),
    }
}

#[tokio::test]
async fn with_redis_gone_publishes_get_503_nothing_accepted_is_lost_and_delivery_resumes() {
    let mut redis = RedisServer::start().await;
    let [a, b, _c] = cluster(&redis).await;
    let mut ws = b.ws("/api/ws/alice", &player_token("alice")).await;

    // Publishes race with the kill: each is either taken (and must arrive) or refused.
    let (twenty_taken, then_kill) = tokio::sync::oneshot::channel();
    let publishing = async {
        let mut twenty_taken = Some(twenty_taken);
        let mut taken = Vec::new();
        let mut refused = 0;
        for n in 0..10_000 {
            match try_publish(&a, n).await {
                Ok(id) => taken.push(id),
                Err(_) => refused += 1,
            }
            if taken.len() == 20 {
                if let Some(signal) = twenty_taken.take() {
                    let _ = signal.send(());
                }
            }
            if refused >= 3 {
                break;
            }
        }
        (taken, refused)
    };
    let (taken, refused) = tokio::join!(publishing, async {
        let _ = then_kill.await;
        redis.kill().await;
    })
    .0;
    assert!(taken.len() >= 20, "publishes were taken before the kill");
    assert!(refused >= 1, "the outage was seen");

    // Down: refused at once, with the SPEC's body; local connections go on.
    poll_until_within(REDIS_WAIT, "node A sees Redis down", || {
        (a.hub.backplane_status()?.state == BackplaneState::Down).then_some(())
    })
    .await;
    let refusal = try_publish(&a, 1000).await.unwrap_err();
    assert_eq!(refusal["error_type"], "system_error", "{refusal}");
    assert_eq!(
        refusal["details"]["error_code"], "BACKPLANE_UNAVAILABLE",
        "{refusal}"
    );
    let (status, health) = a.request("GET", "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["backplane"]["state"], "down", "{health}");
    ws.send_text(r#"{"type":"ping"}"#).await;

    redis.run().await;
    for node in [&a, &b] {
        poll_until_within(REDIS_WAIT, "the node reconnects by itself", || {
            (node.hub.backplane_status()?.state == BackplaneState::Up).then_some(())
        })
        .await;
    }
    let after = loop {
        // The first publish may come before B's reader is back: it is taken either way.
        if let Ok(id) = try_publish(&a, 2000).await {
            break id;
        }
    };

    // Everything taken arrives, in order, then the publish after the outage; the ping
    // sent during the outage was answered by node B alone.
    let mut expected: Vec<String> = taken.clone();
    expected.push(after.clone());
    let mut got = Vec::new();
    let mut pong = false;
    while got.len() < expected.len() {
        let next = within_for(REDIS_WAIT, "the taken publishes", ws.next_json()).await;
        match next["type"].as_str() {
            Some("pong") => pong = true,
            _ => got.push(next["id"].as_str().unwrap().to_owned()),
        }
    }
    assert!(pong || ws.next_json().await["type"] == "pong");
    assert_eq!(got, expected, "every publish that was taken, none refused");
}

#[tokio::test]
async fn healthz_shows_the_node_and_its_peers() {
    let redis = RedisServer::start().await;
    let [a, _b, _c] = cluster(&redis).await;
    let (status, health) = a.request("GET", "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        health,
        json!({"status": "ok", "backplane": {"node": "a", "state": "up", "peers": 2}})
    );
}

/// `player`'s SSE stream on `node`, resuming after `last_id`.
async fn resume_sse(node: &TestServer, player: &str, last_id: &str) -> SseClient {
    sse_at(
        node.addr,
        &format!("/sse/{player}"),
        &[
            ("authorization", format!("Bearer {}", player_token(player))),
            ("last-event-id", last_id.to_owned()),
        ],
    )
    .await
    .expect("the stream opens")
}

/// Waits until every node in `nodes` sees `count` live connections of `player`.
async fn seen_everywhere(nodes: &[&TestServer], player: &str, count: usize) {
    for node in nodes {
        poll_until("every node sees the player's connections", || {
            (node.hub.session_of(player).active_connections == count).then_some(())
        })
        .await;
    }
}

#[tokio::test]
async fn a_new_session_on_one_node_ends_the_old_one_on_every_node_and_it_is_refused_everywhere() {
    let redis = RedisServer::start().await;
    let [a, b, c] = cluster(&redis).await;
    let token = player_token("alice");
    let mut on_a = a.ws("/api/ws/alice?session_id=s1", &token).await;
    let mut on_b = b.sse("/sse/alice?session_id=s1", &token).await;
    seen_everywhere(&[&a, &b, &c], "alice", 2).await;

    let mut on_c = c.ws("/api/ws/alice?session_id=s2", &token).await;
    assert_eq!(
        on_a.next_close().await,
        (4001, "session_replaced".to_owned())
    );
    assert_eq!(
        on_b.next_named("disconnect").await["reason"],
        "session_replaced"
    );
    seen_everywhere(&[&a, &b, &c], "alice", 1).await;
    for node in [&a, &b, &c] {
        assert_eq!(
            node.hub.session_of("alice").session_id.as_deref(),
            Some("s2")
        );
        let refused = node
            .try_ws(
                "/api/ws/alice?session_id=s1",
                &[("authorization", format!("Bearer {token}"))],
            )
            .await
            .err()
            .expect("the replaced session is refused");
        assert_eq!(refused.0, StatusCode::CONFLICT, "{:?}", refused.1);
    }
    // The new session's connection lives on.
    on_c.send_text(r#"{"type":"ping"}"#).await;
    assert_eq!(on_c.next_json().await["type"], "pong");
}

#[tokio::test]
async fn the_per_player_limit_counts_every_node() {
    let redis = RedisServer::start().await;
    let [a, b, c] = cluster(&redis).await;
    let token = player_token("alice");
    let _first = a.ws("/api/ws/alice", &token).await;
    seen_everywhere(&[&a, &b, &c], "alice", 1).await;
    let _second = b.sse("/sse/alice", &token).await;
    seen_everywhere(&[&a, &b, &c], "alice", 2).await;
    let _third = c.ws("/api/ws/alice", &token).await;
    seen_everywhere(&[&a, &b, &c], "alice", 3).await;
    let _fourth = a.sse("/sse/alice", &token).await;
    seen_everywhere(&[&a, &b, &c], "alice", 4).await;

    let (status, body) = b.request("GET", "/sse/alice", Some(&token), None).await;
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "the fifth, on a node holding one: {body}"
    );
    assert_eq!(body["error_type"], "rate_limited", "{body}");
}

#[tokio::test]
async fn presence_and_the_connection_list_are_the_union_of_the_nodes() {
    let redis = RedisServer::start().await;
    let [a, b, c] = cluster(&redis).await;
    let token = player_token("alice");
    let on_b = b.ws("/api/ws/alice", &token).await;
    seen_everywhere(&[&a, &b, &c], "alice", 1).await;
    assert_eq!(a.hub.presence("alice"), dualcast::Presence::Online);

    let (status, answer) = a
        .request(
            "GET",
            "/api/connections/alice",
            Some(&service_token()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["presence"]["status"], "online", "{answer}");
    assert_eq!(answer["presence"]["total_connections"], 1, "{answer}");
    assert_eq!(answer["connections"]["websocket"]["count"], 1, "{answer}");
    let listed = &answer["cluster"][0];
    assert_eq!(
        (&listed["node"], &listed["kind"]),
        (&json!("b"), &json!("websocket")),
        "{answer}"
    );
    assert!(
        listed["connection_id"].as_str().unwrap().ends_with("@b"),
        "{answer}"
    );

    drop(on_b);
    seen_everywhere(&[&a, &b, &c], "alice", 0).await;
    assert_ne!(a.hub.presence("alice"), dualcast::Presence::Online);
}

#[tokio::test]
async fn an_sse_client_that_moves_to_another_node_with_last_event_id_gets_exactly_what_it_missed() {
    let redis = RedisServer::start().await;
    let [a, b, c] = cluster(&redis).await;
    let token = player_token("alice");
    let mut on_a = a.sse("/sse/alice", &token).await;
    seen_everywhere(&[&a, &b, &c], "alice", 1).await;
    let mut ids = Vec::new();
    for n in 0..5 {
        let (status, report) = publish(
            &c,
            "/api/players/alice/messages",
            json!({"type": "n", "data": n}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{report}");
        ids.push(report["id"].as_str().unwrap().to_owned());
    }
    for id in &ids[..3] {
        assert_eq!(on_a.next_json().await["id"], id.as_str());
    }
    // The client went away after the third, as far as it knows.
    drop(on_a);
    seen_everywhere(&[&a, &b, &c], "alice", 0).await;

    let mut on_b = resume_sse(&b, "alice", &ids[2]).await;
    for id in &ids[3..] {
        assert_eq!(on_b.next_json().await["id"], id.as_str());
    }
    let recovery = on_b.next_named("recovery").await;
    assert_eq!(
        recovery["data"],
        json!({"complete": true, "replayed": 2}),
        "{recovery}"
    );
}

#[tokio::test]
async fn unnamed_connections_opened_at_once_on_two_nodes_join_one_session_and_end_nothing() {
    let redis = RedisServer::start().await;
    let [a, b, c] = cluster(&redis).await;
    let token = player_token("alice");
    let (mut on_b, mut on_c) =
        tokio::join!(b.ws("/api/ws/alice", &token), c.sse("/sse/alice", &token));
    seen_everywhere(&[&a, &b, &c], "alice", 2).await;
    let (_, report) = publish(&a, "/api/players/alice/messages", json!({"type": "x"})).await;
    assert_eq!(
        report["delivered"], 2,
        "neither took the other over: {report}"
    );
    assert_eq!(on_b.next_json().await["id"], report["id"]);
    assert_eq!(on_c.next_json().await["id"], report["id"]);
    // Every node has one current session, the same, and a named takeover ends both.
    let current = a.hub.session_of("alice").session_id;
    assert!(current.is_some());
    for node in [&b, &c] {
        assert_eq!(node.hub.session_of("alice").session_id, current);
    }
    let _new = a.ws("/api/ws/alice?session_id=fresh", &token).await;
    assert_eq!(on_b.next_close().await.1, "session_replaced");
    assert_eq!(
        on_c.next_named("disconnect").await["reason"],
        "session_replaced"
    );
}

#[tokio::test]
async fn a_pending_message_is_delivered_once_by_whichever_node_the_player_comes_back_to() {
    let redis = RedisServer::start().await;
    let [a, b, c] = cluster(&redis).await;
    let token = player_token("alice");
    let first = a.ws("/api/ws/alice", &token).await;
    seen_everywhere(&[&a, &b, &c], "alice", 1).await;
    drop(first);
    seen_everywhere(&[&a, &b, &c], "alice", 0).await;

    let (_, report) = publish(&b, "/api/players/alice/messages", json!({"type": "later"})).await;
    assert_eq!(report["queued"], true, "{report}");
    let mut on_c = c.sse("/sse/alice", &token).await;
    assert_eq!(on_c.next_json().await["id"], report["id"]);
    seen_everywhere(&[&a, &b, &c], "alice", 1).await;
    // Back on A too: the queue was C's to deliver, A's copy is gone.
    let mut on_a = a.ws("/api/ws/alice", &token).await;
    let (_, next) = publish(&b, "/api/players/alice/messages", json!({"type": "now"})).await;
    assert_eq!(
        on_a.next_json().await["id"],
        next["id"],
        "not the pending one again"
    );
    assert_eq!(on_c.next_json().await["id"], next["id"]);
}

#[tokio::test]
async fn an_acknowledgement_on_one_node_settles_the_wait_on_every_node() {
    let redis = RedisServer::start().await;
    let [a, b, c] = cluster(&redis).await;
    let mut on_b = b.ws("/api/ws/alice", &player_token("alice")).await;
    seen_everywhere(&[&a, &b, &c], "alice", 1).await;
    let mut events_on_a = a.hub.subscribe();
    let (_, report) = publish(
        &c,
        "/api/players/alice/messages",
        json!({"type": "important", "ack": true}),
    )
    .await;
    let id = report["id"].clone();
    assert_eq!(on_b.next_json().await["id"], id);
    on_b.send_text(&json!({"type": "ack", "data": {"id": id}}).to_string())
        .await;
    loop {
        if let dualcast::HubEvent::AckSettled {
            message_id,
            outcome,
            ..
        } = next_event(&mut events_on_a).await
        {
            assert_eq!(*message_id, *id.as_str().unwrap());
            assert_eq!(
                outcome,
                dualcast::AckOutcome::Acked,
                "node A stops waiting: acked on B"
            );
            break;
        }
    }
}

#[tokio::test]
async fn a_node_started_later_serves_a_resume_from_the_log_a_restart_is_no_new_epoch() {
    let redis = RedisServer::start().await;
    let [a, b, c] = cluster(&redis).await;
    let token = player_token("alice");
    let mut on_a = a.sse("/sse/alice", &token).await;
    seen_everywhere(&[&a, &b, &c], "alice", 1).await;
    let mut ids = Vec::new();
    for n in 0..4 {
        let (_, report) = publish(
            &b,
            "/api/players/alice/messages",
            json!({"type": "n", "data": n}),
        )
        .await;
        ids.push(report["id"].as_str().unwrap().to_owned());
        // Others' traffic in between, which the resume must leave out.
        publish(&b, "/api/players/bob/messages", json!({"type": "other"})).await;
    }
    for id in &ids[..2] {
        assert_eq!(on_a.next_json().await["id"], id.as_str());
    }
    drop(on_a);
    // Node C restarts: the new process has seen none of it.
    c.shutdown().await;
    let c = node(&redis, "c").await;
    poll_until("the restarted node is up", || {
        (c.hub.backplane_status()?.state == BackplaneState::Up).then_some(())
    })
    .await;

    let mut on_c = resume_sse(&c, "alice", &ids[1]).await;
    for id in &ids[2..] {
        assert_eq!(on_c.next_json().await["id"], id.as_str());
    }
    let recovery = on_c.next_named("recovery").await;
    assert_eq!(
        recovery["data"],
        json!({"complete": true, "replayed": 2}),
        "{recovery}"
    );
    // Live from then on, once.
    let (_, next) = publish(&a, "/api/players/alice/messages", json!({"type": "live"})).await;
    assert_eq!(on_c.next_json().await["id"], next["id"]);

    // An id the log never held is answered honestly.
    let mut lost = resume_sse(&c, "alice", "1-0").await;
    let recovery = lost.next_named("recovery").await;
    assert_eq!(recovery["data"]["complete"], false, "{recovery}");
}

#[tokio::test]
async fn a_rolling_restart_of_every_node_lets_clients_resume_with_nothing_lost() {
    let redis = RedisServer::start().await;
    let [a, b, c] = cluster(&redis).await;
    let mut nodes = vec![a, b, c];
    let names = ["a", "b", "c"];
    let players = ["ann", "ben", "cat"];
    // One player on each node, all in one room.
    let mut clients = Vec::new();
    for (i, player) in players.iter().enumerate() {
        let path = format!("/api/rooms/lobby/members/{player}");
        let (status, _) = nodes[0]
            .request("PUT", &path, Some(&service_token()), None)
            .await;
        assert_eq!(status, StatusCode::OK);
        clients.push(
            nodes[i]
                .sse(&format!("/sse/{player}"), &player_token(player))
                .await,
        );
    }
    let everyone: Vec<&TestServer> = nodes.iter().collect();
    for player in players {
        seen_everywhere(&everyone, player, 1).await;
    }
    let mut last = vec![String::new(); 3];
    for i in 0..3 {
        // A room message before node i goes: everyone gets it.
        let other = (i + 1) % 3;
        let (_, report) = publish(
            &nodes[other],
            "/api/rooms/lobby/messages",
            json!({"type": "before", "data": i}),
        )
        .await;
        assert_eq!(report["delivered"], 3, "round {i}: {report}");
        for (client, last) in clients.iter_mut().zip(last.iter_mut()) {
            let got = client.next_json().await;
            assert_eq!(got["id"], report["id"]);
            *last = report["id"].as_str().unwrap().to_owned();
        }
        // Node i restarts; its player misses a message meanwhile.
        let old = nodes.remove(i);
        old.shutdown().await;
        for node in &nodes {
            poll_until("the others see it leave", || {
                (node.hub.backplane_status()?.peers == 1).then_some(())
            })
            .await;
        }
        let (_, missed) = publish(
            &nodes[(i + 1) % 2],
            "/api/rooms/lobby/messages",
            json!({"type": "missed", "data": i}),
        )
        .await;
        let restarted = node(&redis, names[i]).await;
        nodes.insert(i, restarted);
        for node in &nodes {
            poll_until("the cluster is whole again", || {
                let status = node.hub.backplane_status()?;
                (status.state == BackplaneState::Up && status.peers == 2).then_some(())
            })
            .await;
        }
        // Its player comes back to the restarted node, resuming: nothing lost.
        let player = players[i];
        let mut back = resume_sse(&nodes[i], player, &last[i]).await;
        assert_eq!(back.next_json().await["id"], missed["id"], "round {i}");
        let recovery = back.next_named("recovery").await;
        assert_eq!(
            recovery["data"],
            json!({"complete": true, "replayed": 1}),
            "round {i}"
        );
        clients[i] = back;
        for (j, client) in clients.iter_mut().enumerate() {
            if j != i {
                assert_eq!(client.next_json().await["id"], missed["id"], "round {i}");
            }
        }
        let everyone: Vec<&TestServer> = nodes.iter().collect();
        for player in players {
            seen_everywhere(&everyone, player, 1).await;
        }
        // The restarted node knows the room's members from the others' lists.
        assert!(
            nodes[i].hub.is_member("lobby", players[(i + 1) % 3]),
            "round {i}"
        );
    }
}

#[tokio::test]
async fn stats_and_monitoring_answer_for_the_cluster_from_any_node() {
    let redis = RedisServer::start().await;
    let [a, b, c] = cluster(&redis).await;
    let _ws = b.ws("/api/ws/alice", &player_token("alice")).await;
    let _sse = c.sse("/sse/alice", &player_token("alice")).await;
    let _bob = c.sse("/sse/bob", &player_token("bob")).await;
    seen_everywhere(&[&a, &b, &c], "alice", 2).await;
    seen_everywhere(&[&a, &b, &c], "bob", 1).await;
    publish(&a, "/api/players/alice/messages", json!({"type": "x"})).await;

    let (status, stats) = a
        .request(
            "GET",
            "/api/connections/stats",
            Some(&service_token()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    assert_eq!(stats["total_players"], 2, "{stats}");
    assert_eq!(stats["total_connections"], 3, "{stats}");
    assert_eq!(
        stats["connection_distribution"]["dual_connections"], 1,
        "{stats}"
    );
    assert_eq!(stats["connection_distribution"]["sse_only"], 1, "{stats}");
    assert_eq!(
        stats["cluster"]["nodes"].as_array().unwrap().len(),
        3,
        "{stats}"
    );
    assert_eq!(stats["cluster"]["nodes"][0], "a", "{stats}");
    assert_eq!(stats["cluster"]["unanswered"], json!([]), "{stats}");

    let (_, performance) = a
        .request(
            "GET",
            "/monitoring/performance",
            Some(&service_token()),
            None,
        )
        .await;
    let delivery = &performance["message_delivery"];
    assert_eq!(
        delivery["total_messages_sent"], 1,
        "one publish, counted once: {performance}"
    );
    assert_eq!(
        delivery["successful_deliveries"], 2,
        "B's and C's: {performance}"
    );
    assert_eq!(
        performance["connection_establishment"]["total_connections"],
        3
    );
}
