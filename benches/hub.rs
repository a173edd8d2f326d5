//! In-process fan-out of the Hub: `send_to_player` to a player with a WebSocket and an SSE
//! connection, and `broadcast_to_room` to rooms of 100, 1,000 and 10,000 members (every
//! member a WebSocket, every other member an SSE stream too), with every outbox drained by
//! a consumer task per connection, as the transports do.
//!
//! `cargo bench --bench hub`

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dualcast::{ConnectionGuard, ConnectionKind, Hub, Message, Registration};
use tokio::runtime::Runtime;

/// A hub whose room `room` has `members` players, every outbox drained by its own task.
/// Returns the guards (dropping them would end the connections) and the delivery counter.
fn room(runtime: &Runtime, members: usize) -> (Hub, Vec<ConnectionGuard>, Arc<AtomicU64>) {
    // Large outboxes: the consumers run on the other core and may lag a burst behind;
    // the benchmark measures fan-out, not slow-consumer handling.
    let hub = Hub::builder().outbox_capacity(4096).build();
    let received = Arc::new(AtomicU64::new(0));
    let mut guards = Vec::new();
    for i in 0..members {
        let player = format!("player-{i}");
        hub.join_room(&player, "room");
        let kinds: &[ConnectionKind] = if i % 2 == 0 {
            &[ConnectionKind::WebSocket, ConnectionKind::Sse]
        } else {
            &[ConnectionKind::WebSocket]
        };
        for &kind in kinds {
            let (guard, mut outbox) = hub
                .register(Registration::new(player.as_str(), kind))
                .expect("hub is open");
            let received = received.clone();
            runtime.spawn(async move {
                while let Some(frame) = outbox.recv().await {
                    black_box(frame.sse_event().len());
                    received.fetch_add(1, Ordering::Relaxed);
                }
            });
            guards.push(guard);
        }
    }
    (hub, guards, received)
}

/// Publishes `iters` times, letting the consumers catch up every `BATCH` publishes, and
/// returns the time until every frame was received: the throughput of the whole fan-out,
/// publisher and consumers together.
fn publish_and_drain(
    iters: u64,
    per_publish: u64,
    received: &AtomicU64,
    mut publish: impl FnMut() -> dualcast::DeliveryReport,
) -> Duration {
    const BATCH: u64 = 256;
    let wait_for = |target: u64| {
        while received.load(Ordering::Acquire) < target {
            std::thread::yield_now();
        }
    };
    let base = received.load(Ordering::Acquire);
    let start = Instant::now();
    for i in 1..=iters {
        let report = publish();
        assert_eq!(
            report.failed, 0,
            "a consumer fell more than 4096 messages behind"
        );
        if i % BATCH == 0 {
            wait_for(base + i * per_publish);
        }
    }
    wait_for(base + iters * per_publish);
    start.elapsed()
}

fn fan_out(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .expect("runtime");
    let message = Message::json(
        "tick",
        serde_json::json!({"x": 12, "y": 7, "text": "a short game update"}),
    );

    let mut group = c.benchmark_group("send_to_player");
    group.throughput(Throughput::Elements(2));
    let (hub, _guards, received) = room(&runtime, 1);
    group.bench_function("websocket+sse", |b| {
        b.iter_custom(|iters| {
            publish_and_drain(iters, 2, &received, || {
                hub.send_to_player("player-0", &message)
            })
        })
    });
    group.finish();

    let mut group = c.benchmark_group("broadcast_to_room");
    for members in [100, 1_000, 10_000] {
        let (hub, guards, received) = room(&runtime, members);
        let connections = guards.len() as u64;
        group.throughput(Throughput::Elements(connections));
        group.bench_with_input(BenchmarkId::from_parameter(members), &members, |b, _| {
            b.iter_custom(|iters| {
                publish_and_drain(iters, connections, &received, || {
                    hub.broadcast_to_room("room", &message, &[])
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, fan_out);
criterion_main!(benches);
