//! SPEC §4 "per connection, messages arrive in the order they were published", under a
//! burst: messages published at once queue up in the outbox and leave in batches (many
//! WebSocket frames per `writev`, many SSE events per chunk, chunks over 64 KiB, many
//! chunks per `writev`). On every transport each message arrives once, whole, in order,
//! and nothing else after it.

mod common;

use common::*;
use dualcast::{Hub, Message};
use serde_json::json;

/// Small messages in the first burst: several WebSocket batches (64 frames at most each),
/// and more than one 64 KiB SSE chunk.
const SMALL: usize = 500;
const SMALL_PADDING: usize = 100;
/// Large messages in the second burst: every SSE chunk holds more than 64 KiB.
const LARGE: usize = 40;
const LARGE_PADDING: usize = 40 * 1024;

/// A hub whose outboxes hold both bursts: nothing is published while the test's one
/// thread runs a publishing loop, so a whole burst waits in the outbox.
fn hub() -> Hub {
    Hub::builder().outbox_capacity(1024).build()
}

/// Publishes `count` messages of `kind`, numbered from 0 in `data.n`, in a tight loop.
fn publish_burst(hub: &Hub, player: &str, kind: &str, count: usize, padding: usize) {
    let padding = "p".repeat(padding);
    for n in 0..count {
        let message = Message::json(kind, json!({"n": n, "padding": padding}));
        let report = hub.send_to_player(player, &message);
        assert_eq!((report.delivered, report.failed), (1, 0), "{kind} {n}");
    }
}

/// Reads the burst back: messages 0 to `count - 1`, each whole, no gap, no duplicate.
async fn expect_burst(client: &mut impl Envelopes, kind: &str, count: usize, padding: usize) {
    for expected in 0..count as u64 {
        let envelope = client.next_envelope().await;
        assert_eq!(
            (envelope["type"].as_str(), envelope["data"]["n"].as_u64()),
            (Some(kind), Some(expected)),
            "message {expected} of the {kind} burst is next: {}",
            abbreviated(&envelope)
        );
        assert_eq!(
            envelope["data"]["padding"].as_str().map(str::len),
            Some(padding),
            "{kind} message {expected} arrived whole"
        );
    }
}

/// Both bursts to `player`'s one connection, read back by `client`; then the sentinel is
/// the very next message.
async fn every_message_of_a_burst_arrives_once_and_in_order(
    hub: &Hub,
    player: &str,
    client: &mut impl Envelopes,
) {
    publish_burst(hub, player, "small", SMALL, SMALL_PADDING);
    expect_burst(client, "small", SMALL, SMALL_PADDING).await;
    publish_burst(hub, player, "large", LARGE, LARGE_PADDING);
    expect_burst(client, "large", LARGE, LARGE_PADDING).await;
    client.expect_next_is_sentinel(&publish_sentinel(hub)).await;
}

#[tokio::test]
async fn a_burst_arrives_whole_and_in_order_on_a_websocket() {
    let server = TestServer::start_with(hub(), |app| app).await;
    let mut ws = server.ws("/api/ws", &player_token("ana")).await;
    every_message_of_a_burst_arrives_once_and_in_order(&server.hub, "ana", &mut ws).await;
}

#[tokio::test]
async fn a_burst_arrives_whole_and_in_order_on_an_sse_stream_that_serve_writes_itself() {
    let server = TestServer::start_with(hub(), |app| app).await;
    let mut sse = server.sse("/sse/ben", &player_token("ben")).await;
    assert!(
        sse.headers.get("transfer-encoding").is_none(),
        "close-delimited: written by `serve` itself, not by hyper"
    );
    every_message_of_a_burst_arrives_once_and_in_order(&server.hub, "ben", &mut sse).await;
}

#[tokio::test]
async fn a_burst_arrives_whole_and_in_order_on_an_sse_stream_served_through_hyper() {
    let server = TestServer::start_hosted(hub()).await;
    let mut sse = server.sse("/sse/cleo", &player_token("cleo")).await;
    assert_eq!(
        sse.headers["transfer-encoding"], "chunked",
        "served by the host's hyper loop"
    );
    every_message_of_a_burst_arrives_once_and_in_order(&server.hub, "cleo", &mut sse).await;
}
