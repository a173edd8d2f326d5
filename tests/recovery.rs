//! SPEC §4 delivery guarantees over real sockets: resuming a stream after the last id it
//! got (SSE `Last-Event-ID`, the `last_event_id` query), the `recovery` event, the pending
//! queue of a player with no live connection (priority, TTL), and acknowledgements with
//! their resends.
//!
//! Nothing here sleeps to let time pass. Where a test needs the hub's clock to have moved
//! (a TTL to run out, a resend that should *not* come), it awaits a resend of a message
//! that asks for an ack: the keeper sends it no earlier than `ack_retry` after the publish,
//! so its arrival proves that much time went by on the hub's own clock.
//!
//! The shutdown hint itself (a WebSocket's `1001 server_shutdown`, the SSE `disconnect`
//! event with `recover: true`) is covered by
//! `tests/connections.rs::shutdown_tells_every_client_why_before_closing`; here a client
//! that follows the hint resumes against the restarted server.

mod common;

use std::time::Duration;

use common::*;
use dualcast::hub::{AckOutcome, DeliverySettings};
use dualcast::{ConnectionKind, DisconnectReason, Hub, HubEvent, Message};
use http::{HeaderValue, Request, StatusCode};
use http_body_util::Full;
use serde_json::{json, Value};
use tokio::sync::broadcast;

/// The first resend of an unacknowledged message, in the tests that wait for resends.
const ACK_RETRY: Duration = Duration::from_millis(50);
/// The longest wait between two resends there: the backoff stays short.
const ACK_RETRY_MAX: Duration = Duration::from_millis(100);

/// A hub that resends unacknowledged messages after [`ACK_RETRY`], then every
/// [`ACK_RETRY_MAX`] at most.
fn fast_resends(delivery: DeliverySettings) -> Hub {
    Hub::builder()
        .delivery(delivery.ack_retry(ACK_RETRY).ack_retry_max(ACK_RETRY_MAX))
        .build()
}

async fn start_fast() -> TestServer {
    TestServer::start_with(fast_resends(DeliverySettings::new()), |app| app).await
}

/// Publishes `body` to `player` over the HTTP API; the delivery report.
async fn publish(server: &TestServer, player: &str, body: Value) -> Value {
    let (status, report) = server
        .post(
            &format!("/api/players/{player}/messages"),
            &service_token(),
            body,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    report
}

fn id_of(value: &Value) -> String {
    value["id"]
        .as_str()
        .unwrap_or_else(|| panic!("an id in {value}"))
        .to_owned()
}

/// Publishes while `player` has no live connection: reached no one, and was queued.
async fn publish_while_away(server: &TestServer, player: &str, body: Value) -> String {
    let report = publish(server, player, body).await;
    assert_eq!(
        (report["delivered"].as_u64(), report["queued"].as_bool()),
        (Some(0), Some(true)),
        "no live connection: queued; {report}"
    );
    id_of(&report)
}

/// The next SSE record that is not a comment.
async fn next_sse_event(sse: &mut SseClient) -> SseRecord {
    loop {
        let record = sse.next_record().await;
        if !record.is_comment {
            return record;
        }
    }
}

/// Asserts that the next SSE event is the message `id` (its `id:` field and envelope);
/// its envelope.
async fn expect_sse_message(sse: &mut SseClient, id: &str) -> Value {
    let record = next_sse_event(sse).await;
    assert_eq!(
        (record.event.as_deref(), record.id.as_deref()),
        (None, Some(id)),
        "the message {id} was next; instead: {record:?}"
    );
    let envelope: Value = serde_json::from_str(&record.data).unwrap();
    assert_eq!(envelope["id"], id);
    envelope
}

/// Asserts that the next SSE event is `recovery`: an `event:` line and no `id:` line (a
/// browser's `Last-Event-ID` stays the last message's), an envelope of type `recovery`;
/// its data.
async fn expect_sse_recovery(sse: &mut SseClient) -> Value {
    let record = next_sse_event(sse).await;
    assert_eq!(
        (record.event.as_deref(), record.id.as_deref()),
        (Some("recovery"), None),
        "the recovery event was next; instead: {record:?}"
    );
    let envelope: Value = serde_json::from_str(&record.data).unwrap();
    assert_eq!(envelope["type"], "recovery", "{envelope}");
    envelope["data"].clone()
}

/// Asserts that the next WebSocket message is the `recovery` envelope; its data.
async fn expect_ws_recovery(ws: &mut WsClient, epoch: &str) -> Value {
    let envelope = ws.next_json().await;
    assert_eq!(
        envelope["type"], "recovery",
        "the recovery envelope was next; instead: {envelope}"
    );
    assert!(
        id_of(&envelope).starts_with(&format!("{epoch}-")),
        "an envelope id of this hub: {envelope}"
    );
    envelope["data"].clone()
}

/// An SSE stream of `player` at `path`, resuming with `Last-Event-ID: last_event_id`.
async fn sse_resuming(
    server: &TestServer,
    path: &str,
    player: &str,
    last_event_id: Option<&str>,
) -> SseClient {
    let mut headers = vec![("authorization", format!("Bearer {}", player_token(player)))];
    if let Some(id) = last_event_id {
        headers.push(("last-event-id", id.to_owned()));
    }
    match sse_at(server.addr, path, &headers).await {
        Ok(client) => client,
        Err((status, body)) => panic!("the SSE stream {path} was refused: {status} {body}"),
    }
}

/// Waits until a connection of `player` left the hub; asserts it was of `kind` and closed
/// by its client.
async fn gone(events: &mut broadcast::Receiver<HubEvent>, player: &str, kind: ConnectionKind) {
    let left = wait_for(
        events,
        |e| matches!(e, HubEvent::Disconnected { player_id, .. } if &**player_id == player),
    )
    .await;
    let HubEvent::Disconnected {
        kind: left_kind,
        reason,
        ..
    } = left
    else {
        unreachable!("wait_for returned {left:?}")
    };
    assert_eq!((left_kind, reason), (kind, DisconnectReason::ClientClosed));
}

/// Hangs up `sse` of `player` and waits until the hub removed it.
async fn hang_up_sse(sse: SseClient, events: &mut broadcast::Receiver<HubEvent>, player: &str) {
    drop(sse);
    gone(events, player, ConnectionKind::Sse).await;
}

/// Closes `ws` of `player` and waits until the hub removed it.
async fn hang_up_ws(mut ws: WsClient, events: &mut broadcast::Receiver<HubEvent>, player: &str) {
    within("the close frame sent", ws.socket.close(None))
        .await
        .unwrap();
    gone(events, player, ConnectionKind::WebSocket).await;
}

/// A sentinel to `player` alone: the next message of a connection that was sent nothing
/// more than the test read.
fn sentinel_to(server: &TestServer, player: &str) -> String {
    let report = server
        .hub
        .send_to_player(player, &Message::json(SENTINEL, Value::Null));
    report.id.to_string()
}

/// Asserts the refusal of a resume id: `400 INVALID_LAST_EVENT_ID` with the SPEC body.
fn assert_invalid_last_event_id(status: StatusCode, body: &Value, case: &str) {
    assert_eq!(status, StatusCode::BAD_REQUEST, "{case}: {body}");
    assert_eq!(body["error"], true, "{case}: {body}");
    assert_eq!(body["error_type"], "validation_error", "{case}: {body}");
    assert_eq!(
        body["details"]["error_code"], "INVALID_LAST_EVENT_ID",
        "{case}: {body}"
    );
    assert!(body["message"].is_string(), "{case}: {body}");
    assert!(!body["timestamp"].is_null(), "{case}: {body}");
}

/// Waits for the acknowledgement wait of `id` to end; how it ended and how often it was
/// resent.
async fn ack_settled(events: &mut broadcast::Receiver<HubEvent>, id: &str) -> (AckOutcome, u32) {
    match wait_for(
        events,
        |e| matches!(e, HubEvent::AckSettled { message_id, .. } if &**message_id == id),
    )
    .await
    {
        HubEvent::AckSettled {
            outcome, resent, ..
        } => (outcome, resent),
        other => unreachable!("wait_for returned {other:?}"),
    }
}

/// Reads `copies` more copies of the message `id` off `client`: it is being resent.
async fn expect_resent<C: Envelopes>(client: &mut C, first: &Value, copies: usize) {
    for copy in 1..=copies {
        let next = client.next_envelope().await;
        assert_eq!(
            next, *first,
            "resend {copy} of {} is the same envelope",
            first["id"]
        );
    }
}

/// After the ack of `acked` settled, proves that no copy of it comes any more: publishes a
/// `tick` that asks for an ack to `player` and reads its first copy and three resends
/// (at least 250 ms on the hub's clock, in which an unacknowledged message would have been
/// resent at least twice). Copies of `acked` sent before its ack was taken may still be on
/// the way; they arrive before the tick. The tick's id.
async fn no_more_copies<C: Envelopes>(
    server: &TestServer,
    client: &mut C,
    player: &str,
    acked: &str,
) -> String {
    let report = publish(server, player, json!({"type": "tick", "ack": true})).await;
    let tick = id_of(&report);
    loop {
        let next = client.next_envelope().await;
        if next["id"] == tick.as_str() {
            break;
        }
        assert_eq!(
            next["id"], acked,
            "only copies of {acked} sent before its ack come before the tick; got {next}"
        );
    }
    for resend in 1..=3 {
        let next = client.next_envelope().await;
        assert_eq!(
            next["id"], tick,
            "resend {resend} of the tick was next; {acked} came again after its ack: {next}"
        );
    }
    tick
}

/// Waits, by an event rather than a sleep, until the hub's clock moved at least its first
/// ack retry past the moment this is called: publishes a message asking for an ack to a
/// player of its own and awaits its first resend, which the keeper sends no earlier than
/// `ack_retry` after the publish.
async fn hub_clock_moves_one_retry(server: &TestServer) {
    let mut ws = server.ws("/api/ws", &player_token("metronome")).await;
    let report = publish(server, "metronome", json!({"type": "tick", "ack": true})).await;
    let first = ws.next_json().await;
    assert_eq!(first["id"], report["id"]);
    expect_resent(&mut ws, &first, 1).await;
    ws.send_json(&json!({"type": "ack", "data": {"id": first["id"]}}))
        .await;
    drop(ws);
}

// 1. SSE `Last-Event-ID`.

#[tokio::test]
async fn an_sse_stream_resuming_with_last_event_id_gets_what_it_missed_once_then_recovery_then_live(
) {
    let server = TestServer::start().await;
    let mut events = server.hub.subscribe();
    let mut sse = server.sse("/sse/rita", &player_token("rita")).await;

    let mut seen = Vec::new();
    for n in 1..=2 {
        let report = publish(&server, "rita", json!({"type": "m", "data": {"n": n}})).await;
        assert_eq!(
            (report["delivered"].as_u64(), report["queued"].as_bool()),
            (Some(1), Some(false)),
            "{report}"
        );
        let record = next_sse_event(&mut sse).await;
        assert_eq!(record.id.as_deref(), report["id"].as_str(), "{record:?}");
        seen.push(record.id.unwrap());
    }
    hang_up_sse(sse, &mut events, "rita").await;

    let mut missed = Vec::new();
    for n in 3..=5 {
        missed.push(
            publish_while_away(&server, "rita", json!({"type": "m", "data": {"n": n}})).await,
        );
    }

    let mut sse = sse_resuming(&server, "/sse/rita", "rita", Some(&seen[1])).await;
    for (id, n) in missed.iter().zip(3..) {
        let envelope = expect_sse_message(&mut sse, id).await;
        assert_eq!(envelope["data"]["n"], n);
    }
    // Also pending, yet each came once: the recovery is next.
    assert_eq!(
        expect_sse_recovery(&mut sse).await,
        json!({"complete": true, "replayed": 3})
    );

    let live = publish(&server, "rita", json!({"type": "m", "data": {"n": 6}})).await;
    assert_eq!(live["delivered"], 1, "{live}");
    expect_sse_message(&mut sse, &id_of(&live)).await;
    sse.expect_next_is_sentinel(&sentinel_to(&server, "rita"))
        .await;

    drop(sse);
    server.shutdown().await;
}

// 2. The `last_event_id` query on SSE; the header wins over it; empty means none.

#[tokio::test]
async fn an_sse_stream_resumes_from_the_last_event_id_query_and_the_header_wins_over_it() {
    let server = TestServer::start().await;
    let mut events = server.hub.subscribe();
    let mut sse = server.sse("/sse/sam", &player_token("sam")).await;
    let m1 = id_of(&publish(&server, "sam", json!({"type": "m", "data": 1})).await);
    expect_sse_message(&mut sse, &m1).await;
    hang_up_sse(sse, &mut events, "sam").await;

    // The query alone.
    let m2 = publish_while_away(&server, "sam", json!({"type": "m", "data": 2})).await;
    let mut sse = sse_resuming(
        &server,
        &format!("/sse/sam?last_event_id={m1}"),
        "sam",
        None,
    )
    .await;
    expect_sse_message(&mut sse, &m2).await;
    assert_eq!(
        expect_sse_recovery(&mut sse).await,
        json!({"complete": true, "replayed": 1})
    );
    let last = sentinel_to(&server, "sam");
    sse.expect_next_is_sentinel(&last).await;
    hang_up_sse(sse, &mut events, "sam").await;

    // Both: the header names the last message the stream got, the query the older m1.
    // After the header's id only m3 is missing; after m1 it would be m2, the sentinel
    // and m3.
    let m3 = publish_while_away(&server, "sam", json!({"type": "m", "data": 3})).await;
    let mut sse = sse_resuming(
        &server,
        &format!("/sse/sam?last_event_id={m1}"),
        "sam",
        Some(&last),
    )
    .await;
    expect_sse_message(&mut sse, &m3).await;
    assert_eq!(
        expect_sse_recovery(&mut sse).await,
        json!({"complete": true, "replayed": 1}),
        "resumed after the header's id"
    );
    sse.expect_next_is_sentinel(&sentinel_to(&server, "sam"))
        .await;
    hang_up_sse(sse, &mut events, "sam").await;

    // An empty id is no resume: no replay and no recovery event.
    let mut sse = sse_resuming(&server, "/sse/sam?last_event_id=", "sam", None).await;
    sse.expect_next_is_sentinel(&sentinel_to(&server, "sam"))
        .await;
    hang_up_sse(sse, &mut events, "sam").await;
    let mut sse = sse_resuming(&server, "/sse/sam", "sam", Some("")).await;
    sse.expect_next_is_sentinel(&sentinel_to(&server, "sam"))
        .await;

    drop(sse);
    server.shutdown().await;
}

// 3. WebSocket `?last_event_id=`.

#[tokio::test]
async fn a_websocket_resuming_with_last_event_id_gets_what_it_missed_then_the_recovery_envelope_then_live(
) {
    let server = TestServer::start().await;
    let epoch = server.hub.epoch().to_owned();
    let mut events = server.hub.subscribe();
    let token = player_token("walt");
    let mut ws = server.ws("/api/ws", &token).await;

    let mut seen = Vec::new();
    for n in 1..=2 {
        let report = publish(&server, "walt", json!({"type": "m", "data": {"n": n}})).await;
        let envelope = ws.next_json().await;
        assert_eq!(envelope["id"], report["id"]);
        seen.push(id_of(&envelope));
    }
    hang_up_ws(ws, &mut events, "walt").await;

    let mut missed = Vec::new();
    for n in 3..=5 {
        missed.push(
            publish_while_away(&server, "walt", json!({"type": "m", "data": {"n": n}})).await,
        );
    }

    let mut ws = server
        .ws(&format!("/api/ws?last_event_id={}", seen[1]), &token)
        .await;
    for (id, n) in missed.iter().zip(3..) {
        let envelope = ws.next_json().await;
        assert_eq!(
            (envelope["id"].as_str(), envelope["data"]["n"].as_i64()),
            (Some(id.as_str()), Some(n)),
            "{envelope}"
        );
    }
    assert_eq!(
        expect_ws_recovery(&mut ws, &epoch).await,
        json!({"complete": true, "replayed": 3})
    );

    let live = publish(&server, "walt", json!({"type": "m", "data": {"n": 6}})).await;
    assert_eq!(ws.next_json().await["id"], live["id"]);
    ws.expect_next_is_sentinel(&sentinel_to(&server, "walt"))
        .await;

    drop(ws);
    server.shutdown().await;
}

// 4. What cannot be replayed, and what is not an id.

#[tokio::test]
async fn an_id_of_another_epoch_or_unknown_to_this_hub_gets_complete_false() {
    let server = TestServer::start().await;
    let epoch = server.hub.epoch().to_owned();
    // `zzzzzzzz` is no epoch (they are hex); `{epoch}-999999` was never issued.
    let other_epoch = if epoch == "00000000" {
        "11111111-1"
    } else {
        "00000000-1"
    };
    let ids = [
        other_epoch.to_owned(),
        "zzzzzzzz-1".to_owned(),
        "not-an-id".to_owned(),
        format!("{epoch}-999999"),
        format!("{epoch}-x"),
    ];
    for (n, id) in ids.iter().enumerate() {
        let player = format!("p{n}");
        let mut sse = sse_resuming(&server, &format!("/sse/{player}"), &player, Some(id)).await;
        assert_eq!(
            expect_sse_recovery(&mut sse).await,
            json!({"complete": false, "replayed": 0}),
            "SSE resuming from {id}"
        );
        sse.expect_next_is_sentinel(&sentinel_to(&server, &player))
            .await;

        let mut ws = server
            .ws(
                &format!("/api/ws?last_event_id={id}"),
                &player_token(&player),
            )
            .await;
        assert_eq!(
            expect_ws_recovery(&mut ws, &epoch).await,
            json!({"complete": false, "replayed": 0}),
            "WebSocket resuming from {id}"
        );
        let sentinel = sentinel_to(&server, &player);
        ws.expect_next_is_sentinel(&sentinel).await;
        sse.expect_next_is_sentinel(&sentinel).await;
    }
    server.shutdown().await;
}

#[tokio::test]
async fn an_id_the_bounded_replay_buffer_no_longer_holds_gets_complete_false() {
    let hub = Hub::builder()
        .delivery(DeliverySettings::new().replay_count(3))
        .build();
    let server = TestServer::start_with(hub, |app| app).await;
    let mut events = server.hub.subscribe();
    let mut sse = server.sse("/sse/hal", &player_token("hal")).await;
    let mut ids = Vec::new();
    for n in 1..=3 {
        let id = id_of(&publish(&server, "hal", json!({"type": "m", "data": n})).await);
        expect_sse_message(&mut sse, &id).await;
        ids.push(id);
    }
    hang_up_sse(sse, &mut events, "hal").await;
    // Two more while away: the buffer holds m3, m4, m5.
    for n in 4..=5 {
        ids.push(publish_while_away(&server, "hal", json!({"type": "m", "data": n})).await);
    }

    // From its oldest entry: everything after it is there.
    let mut sse = sse_resuming(&server, "/sse/hal", "hal", Some(&ids[2])).await;
    expect_sse_message(&mut sse, &ids[3]).await;
    expect_sse_message(&mut sse, &ids[4]).await;
    assert_eq!(
        expect_sse_recovery(&mut sse).await,
        json!({"complete": true, "replayed": 2})
    );
    sse.expect_next_is_sentinel(&sentinel_to(&server, "hal"))
        .await;
    hang_up_sse(sse, &mut events, "hal").await;

    // From m1 and m2, which were dropped to make room: the client must reload.
    for evicted in &ids[..2] {
        let mut sse = sse_resuming(&server, "/sse/hal", "hal", Some(evicted)).await;
        assert_eq!(
            expect_sse_recovery(&mut sse).await,
            json!({"complete": false, "replayed": 0}),
            "resuming from {evicted}"
        );
        sse.expect_next_is_sentinel(&sentinel_to(&server, "hal"))
            .await;
        hang_up_sse(sse, &mut events, "hal").await;
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_malformed_or_too_long_last_event_id_is_refused_with_400_and_registers_nothing() {
    let server = TestServer::start().await;
    let token = player_token("mal");
    let too_long = "a".repeat(129);
    let longest = "a".repeat(128);

    // In the query, on both transports.
    for query in [
        too_long.clone(),
        "a%01b".to_owned(),
        "a%20b".to_owned(),
        "a+b".to_owned(),
        "%C3%A9".to_owned(),
    ] {
        let path = format!("/api/ws?last_event_id={query}");
        let headers = [("sec-websocket-protocol", format!("bearer, {token}"))];
        let Err((status, body)) = server.try_ws(&path, &headers).await else {
            panic!("{path} was upgraded")
        };
        assert_invalid_last_event_id(status, &body, &path);

        let path = format!("/sse/mal?last_event_id={query}");
        let (status, body) = server.request("GET", &path, Some(&token), None).await;
        assert_invalid_last_event_id(status, &body, &path);
    }

    // In the header: too long, a tab, a byte that is not ASCII.
    for value in [
        HeaderValue::from_str(&too_long).unwrap(),
        HeaderValue::from_static("a\tb"),
        HeaderValue::from_bytes(b"a\xffb").unwrap(),
    ] {
        let request = Request::get("/sse/mal")
            .header("host", server.addr.to_string())
            .header("authorization", format!("Bearer {token}"))
            .header("last-event-id", value.clone())
            .body(Full::default())
            .unwrap();
        let response = server.send(request).await;
        let status = response.status();
        let bytes = within(
            "the refusal's body",
            http_body_util::BodyExt::collect(response.into_body()),
        )
        .await
        .unwrap()
        .to_bytes();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        assert_invalid_last_event_id(status, &body, &format!("Last-Event-ID: {value:?}"));
    }
    assert_eq!(server.hub.connection_count(), 0, "nothing registered");

    // 128 bytes is still an id (one this hub does not know).
    let mut sse = sse_resuming(&server, "/sse/mal", "mal", Some(&longest)).await;
    assert_eq!(
        expect_sse_recovery(&mut sse).await,
        json!({"complete": false, "replayed": 0})
    );
    drop(sse);
    server.shutdown().await;
}

/// A `last_event_id` query that does not decode (a malformed escape, or bytes that are not
/// UTF-8) is refused, not taken as no id at all (which opened the connection with no replay
/// and no `recovery` event).
#[tokio::test]
async fn an_undecodable_last_event_id_query_is_refused_with_400() {
    let server = TestServer::start().await;
    let token = player_token("und");
    for query in ["%FF", "a%zz", "%"] {
        let path = format!("/api/ws?last_event_id={query}");
        let headers = [("sec-websocket-protocol", format!("bearer, {token}"))];
        match server.try_ws(&path, &headers).await {
            Err((status, body)) => assert_invalid_last_event_id(status, &body, &path),
            Ok(_) => panic!("{path} was upgraded, as if no id had been given"),
        }
        let path = format!("/sse/und?last_event_id={query}");
        let (status, _) = server.try_sse(&path, Some(&token)).await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "{path} opened, as if no id had been given"
        );
    }
    server.shutdown().await;
}

// 5. The pending queue.

/// Queues for `player` (with no live connection): priorities 0, 5, 1 and a message whose
/// 1 ms TTL has run out by the time this returns. The ids of the live ones, in the order
/// they are due: 5, 1, 0.
async fn queue_by_priority_and_one_that_expires(server: &TestServer, player: &str) -> Vec<String> {
    let zero = publish_while_away(server, player, json!({"type": "p0", "priority": 0})).await;
    let five = publish_while_away(server, player, json!({"type": "p5", "priority": 5})).await;
    let one = publish_while_away(server, player, json!({"type": "p1", "priority": 1})).await;
    publish_while_away(server, player, json!({"type": "stale", "ttl_ms": 1})).await;
    // The stale one expired 1 ms after its publish; this waits longer on the hub's clock.
    hub_clock_moves_one_retry(server).await;
    vec![five, one, zero]
}

#[tokio::test]
async fn a_player_that_never_connected_gets_its_pending_messages_on_connect_by_priority_without_the_expired(
) {
    let server = start_fast().await;
    let due = queue_by_priority_and_one_that_expires(&server, "nora").await;

    let mut ws = server.ws("/api/ws", &player_token("nora")).await;
    for id in &due {
        let envelope = ws.next_json().await;
        assert_eq!(envelope["id"], id.as_str(), "in priority order: {envelope}");
    }
    // Not the stale one, and nothing twice.
    ws.expect_next_is_sentinel(&sentinel_to(&server, "nora"))
        .await;
    drop(ws);
    server.shutdown().await;
}

#[tokio::test]
async fn a_player_whose_last_connection_closed_gets_its_pending_messages_on_its_next_connect() {
    let server = start_fast().await;
    let mut events = server.hub.subscribe();
    let ws = server.ws("/api/ws", &player_token("pia")).await;
    hang_up_ws(ws, &mut events, "pia").await;

    let due = queue_by_priority_and_one_that_expires(&server, "pia").await;

    // The next connect, of the other kind.
    let mut sse = server.sse("/sse/pia", &player_token("pia")).await;
    for id in &due {
        expect_sse_message(&mut sse, id).await;
    }
    sse.expect_next_is_sentinel(&sentinel_to(&server, "pia"))
        .await;
    // Delivered once: the pending queue is empty now.
    hang_up_sse(sse, &mut events, "pia").await;
    let mut sse = server.sse("/sse/pia", &player_token("pia")).await;
    sse.expect_next_is_sentinel(&sentinel_to(&server, "pia"))
        .await;
    drop(sse);
    server.shutdown().await;
}

#[tokio::test]
async fn a_publish_with_ttl_ms_zero_is_refused() {
    let server = TestServer::start().await;
    let (status, body) = server
        .post(
            "/api/players/zed/messages",
            &service_token(),
            json!({"type": "m", "ttl_ms": 0}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error_type"], "validation_error");
    assert_eq!(body["details"]["error_code"], "INVALID_TTL");
    server.shutdown().await;
}

// 6. Acknowledgements.

#[tokio::test]
async fn a_message_asking_for_an_ack_is_resent_to_a_websocket_until_acked_and_then_no_more() {
    let server = start_fast().await;
    let mut events = server.hub.subscribe();
    let mut ws = server.ws("/api/ws", &player_token("ana")).await;

    let report = publish(
        &server,
        "ana",
        json!({"type": "important", "data": {"x": 1}, "ack": true}),
    )
    .await;
    assert_eq!(
        (
            report["delivered"].as_u64(),
            report["awaiting_ack"].as_u64(),
            report["queued"].as_bool()
        ),
        (Some(1), Some(1), Some(false)),
        "{report}"
    );
    let id = id_of(&report);
    let first = ws.next_json().await;
    assert_eq!(first["id"], id.as_str());
    expect_resent(&mut ws, &first, 2).await;

    ws.send_json(&json!({"type": "ack", "data": {"id": id}}))
        .await;
    let (outcome, resent) = ack_settled(&mut events, &id).await;
    assert_eq!(outcome, AckOutcome::Acked);
    assert!(resent >= 2, "resent {resent} times");

    let tick = no_more_copies(&server, &mut ws, "ana", &id).await;
    ws.send_json(&json!({"type": "ack", "data": {"id": tick}}))
        .await;
    drop(ws);
    server.shutdown().await;
}

#[tokio::test]
async fn an_sse_only_client_acks_through_post_api_messages_and_the_resends_stop() {
    let server = start_fast().await;
    let mut events = server.hub.subscribe();
    let token = player_token("ben");
    let mut sse = server.sse("/sse/ben", &token).await;

    let report = publish(&server, "ben", json!({"type": "important", "ack": true})).await;
    assert_eq!(report["awaiting_ack"], 1, "{report}");
    let id = id_of(&report);
    let first = expect_sse_message(&mut sse, &id).await;
    expect_resent(&mut sse, &first, 2).await;

    let (status, answer) = server
        .post(
            "/api/messages",
            &token,
            json!({"type": "ack", "data": {"id": id}}),
        )
        .await;
    assert_eq!(
        (status, answer),
        (StatusCode::OK, json!({"reply": null})),
        "an ack has no reply"
    );
    assert_eq!(ack_settled(&mut events, &id).await.0, AckOutcome::Acked);

    let tick = no_more_copies(&server, &mut sse, "ben", &id).await;
    let (status, _) = server
        .post(
            "/api/messages",
            &token,
            json!({"type": "ack", "data": {"id": tick}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    drop(sse);
    server.shutdown().await;
}

// 8. A player acks only its own messages.

#[tokio::test]
async fn an_ack_from_another_player_does_not_stop_the_resends() {
    let server = start_fast().await;
    let mut events = server.hub.subscribe();
    let mut amy = server.ws("/api/ws", &player_token("amy")).await;
    let bob_token = player_token("bob");
    let mut bob = server.ws("/api/ws", &bob_token).await;

    let report = publish(&server, "amy", json!({"type": "important", "ack": true})).await;
    let id = id_of(&report);
    let first = amy.next_json().await;
    assert_eq!(first["id"], id.as_str());

    // Bob acks Amy's message id, over his WebSocket and over HTTP. A ping after the frame:
    // its pong says the ack before it was taken.
    bob.send_json(&json!({"type": "ack", "data": {"id": id}}))
        .await;
    bob.send_json(&json!({"type": "ping", "id": "after-ack"}))
        .await;
    let pong = bob.next_json().await;
    assert_eq!(
        (pong["type"].as_str(), pong["data"]["id"].as_str()),
        (Some("pong"), Some("after-ack")),
        "{pong}"
    );
    let (status, _) = server
        .post(
            "/api/messages",
            &bob_token,
            json!({"type": "ack", "data": {"id": id}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    while let Ok(event) = events.try_recv() {
        assert!(
            !matches!(event, HubEvent::AckSettled { .. }),
            "Bob's ack settled something: {event:?}"
        );
    }

    // Whatever Amy was sent before that, then a resend after it.
    let sentinel = sentinel_to(&server, "amy");
    loop {
        let next = amy.next_json().await;
        if next["id"] == sentinel.as_str() {
            break;
        }
        assert_eq!(next, first, "copies of the message before the sentinel");
    }
    expect_resent(&mut amy, &first, 1).await;

    amy.send_json(&json!({"type": "ack", "data": {"id": id}}))
        .await;
    match wait_for(&mut events, |e| matches!(e, HubEvent::AckSettled { .. })).await {
        HubEvent::AckSettled {
            message_id,
            player_id,
            outcome,
            ..
        } => assert_eq!(
            (&*message_id, &*player_id, outcome),
            (id.as_str(), "amy", AckOutcome::Acked)
        ),
        other => unreachable!("wait_for returned {other:?}"),
    }
    drop((amy, bob));
    server.shutdown().await;
}

// 7. Following the shutdown's `recover: true` to a restarted server.

#[tokio::test]
async fn after_a_shutdown_that_says_recover_a_resume_against_the_new_server_gets_complete_false() {
    let old = TestServer::start().await;
    let old_epoch = old.hub.epoch().to_owned();
    let token = player_token("vic");
    let mut ws = old.ws("/api/ws", &token).await;
    let mut sse = old.sse("/sse/vic", &token).await;
    let last = id_of(&publish(&old, "vic", json!({"type": "m"})).await);
    assert!(last.starts_with(&format!("{old_epoch}-")), "{last}");
    assert_eq!(ws.next_json().await["id"], last.as_str());
    expect_sse_message(&mut sse, &last).await;

    let shutdown = tokio::spawn(old.shutdown());
    assert_eq!(ws.next_close().await, (1001, "server_shutdown".to_owned()));
    let disconnect = sse.next_named("disconnect").await;
    assert_eq!(
        (&disconnect["recover"], &disconnect["reconnect"]),
        (&json!(true), &json!(true)),
        "{disconnect}"
    );
    sse.closed().await;
    drop(ws);
    within_for(WAIT * 3, "the old server's shutdown", shutdown)
        .await
        .unwrap();

    // The client comes back to a new server (a new epoch) with the id it got last.
    let new = TestServer::start().await;
    let new_epoch = new.hub.epoch().to_owned();
    assert_ne!(new_epoch, old_epoch, "a restart begins a new epoch");
    let mut sse = sse_resuming(&new, "/sse/vic", "vic", Some(&last)).await;
    assert_eq!(
        expect_sse_recovery(&mut sse).await,
        json!({"complete": false, "replayed": 0})
    );
    let mut ws = new
        .ws(&format!("/api/ws?last_event_id={last}"), &token)
        .await;
    assert_eq!(
        expect_ws_recovery(&mut ws, &new_epoch).await,
        json!({"complete": false, "replayed": 0})
    );
    let sentinel = sentinel_to(&new, "vic");
    ws.expect_next_is_sentinel(&sentinel).await;
    sse.expect_next_is_sentinel(&sentinel).await;
    drop((ws, sse));
    new.shutdown().await;
}
