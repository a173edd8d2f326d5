//! A room broadcast allocates nothing per recipient: counted with a counting global
//! allocator, in a test binary of its own so no other test's allocations mix in.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use dualcast::{ConnectionKind, Hub, Message, Outbox, Registration};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the counter is a
// side effect that touches no memory handed out.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by one broadcast to a room of `members` players, each with a WebSocket
/// and (every other player) an SSE connection, after the outboxes have been through
/// `warm_up` messages so their queues are in steady state.
fn allocations_of_one_broadcast(members: usize) -> usize {
    let hub = Hub::builder().outbox_capacity(64).build();
    let mut connections: Vec<(dualcast::ConnectionGuard, Outbox)> = Vec::new();
    for i in 0..members {
        let player = format!("player-{i}");
        hub.join_room(&player, "room");
        connections.push(
            hub.register(Registration::new(
                player.as_str(),
                ConnectionKind::WebSocket,
            ))
            .unwrap(),
        );
        if i % 2 == 0 {
            connections.push(
                hub.register(Registration::new(player.as_str(), ConnectionKind::Sse))
                    .unwrap(),
            );
        }
    }
    let message = Message::json("tick", serde_json::json!({"n": 1}));
    let drain = |connections: &mut Vec<(dualcast::ConnectionGuard, Outbox)>| {
        for (_, outbox) in connections.iter_mut() {
            while outbox.try_recv().is_some() {}
        }
    };
    // Warm-up: let every outbox queue allocate and recycle its blocks.
    for _ in 0..100 {
        let report = hub.broadcast_to_room("room", &message, &[]);
        assert_eq!(report.failed, 0);
        drain(&mut connections);
    }

    ALLOCATIONS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    let report = hub.broadcast_to_room("room", &message, &[]);
    COUNTING.store(false, Ordering::SeqCst);
    let counted = ALLOCATIONS.load(Ordering::SeqCst);

    assert_eq!(report.delivered, connections.len());
    assert_eq!(report.players, Some(members));
    drain(&mut connections);
    counted
}

#[test]
fn a_room_broadcast_allocates_nothing_per_recipient() {
    let small = allocations_of_one_broadcast(10);
    let large = allocations_of_one_broadcast(10_000);
    assert!(
        small > 0,
        "the counter counts (a publish encodes its envelope)"
    );
    assert_eq!(
        small, large,
        "10 members: {small} allocations; 10,000 members: {large}"
    );
    println!("allocations per room broadcast, any room size: {small}");
}
