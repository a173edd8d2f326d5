//! The session rules (SPEC §3), the hub's admission count and its forgetting of idle
//! players, at the hub's own API.

use std::time::Duration;

use dualcast_layers::session::{ResolveSession, SessionOutcome, SessionRefused};
use dualcast_layers::track::Admit;

use super::*;
use crate::connection::ConnectionKind;

fn open(hub: &Hub, player: &str, session: Option<&str>) -> ConnectionGuard {
    let mut registration = Registration::new(player, ConnectionKind::WebSocket);
    if let Some(session) = session {
        registration = registration.session(session);
    }
    hub.register(registration).expect("registered").0
}

#[test]
fn a_connection_naming_no_session_joins_the_current_one_or_creates_one() {
    let hub = Hub::new();
    let first = open(&hub, "alice", None);
    let created = first.info().session_id.expect("a session was created");
    assert_eq!(created.len(), 32, "a minted id: 128 random bits in hex");
    let second = open(&hub, "alice", None);
    assert_eq!(second.info().session_id, Some(created.clone()));
    let named = open(&hub, "alice", Some(&created));
    assert_eq!(named.info().session_id, Some(created));
    assert_eq!(first.end_reason(), None);
    assert_eq!(second.end_reason(), None);
}

#[test]
fn a_new_session_takes_over_and_ends_only_the_old_sessions_connections() {
    let hub = Hub::new();
    let old_ws = open(&hub, "alice", Some("s1"));
    let old_sse = hub
        .register(Registration::new("alice", ConnectionKind::Sse).session("s1"))
        .unwrap()
        .0;
    let bob = open(&hub, "bob", Some("s1"));
    let mut events = hub.subscribe();
    let new = open(&hub, "alice", Some("s2"));
    assert_eq!(old_ws.end_reason(), Some(DisconnectReason::SessionReplaced));
    assert_eq!(
        old_sse.end_reason(),
        Some(DisconnectReason::SessionReplaced)
    );
    assert_eq!(new.end_reason(), None);
    assert_eq!(
        bob.end_reason(),
        None,
        "another player's session is its own"
    );
    assert_eq!(hub.session_of("alice").session_id.as_deref(), Some("s2"));
    match events.try_recv() {
        Ok(HubEvent::SessionBegan {
            session_id,
            replaced,
            connections_ended,
            ..
        }) => {
            assert_eq!(&*session_id, "s2");
            assert_eq!(replaced.as_deref(), Some("s1"));
            assert_eq!(connections_ended, 2);
        }
        other => panic!("expected SessionBegan, got {other:?}"),
    }
}

#[test]
fn a_replaced_session_is_refused_and_cannot_push_the_new_one_out() {
    let hub = Hub::new();
    let _old = open(&hub, "alice", Some("s1"));
    let new = open(&hub, "alice", Some("s2"));
    let refused = hub
        .register(Registration::new("alice", ConnectionKind::Sse).session("s1"))
        .unwrap_err();
    assert_eq!(refused, RegisterError::Session(SessionRefused::Stale));
    assert_eq!(
        hub.resolve("alice", Some("s1")).unwrap_err(),
        SessionRefused::Stale
    );
    assert_eq!(new.end_reason(), None);
    assert_eq!(hub.session_of("alice").session_id.as_deref(), Some("s2"));
}

#[test]
fn replaced_sessions_are_remembered_up_to_the_bound() {
    let hub = Hub::builder().remembered_sessions(2).build();
    for session in ["s1", "s2", "s3", "s4"] {
        drop(open(&hub, "alice", Some(session)));
    }
    // s2 and s3 are remembered, s1 was forgotten: naming it again is a new takeover.
    assert_eq!(hub.resolve("alice", Some("s3")), Err(SessionRefused::Stale));
    assert_eq!(hub.resolve("alice", Some("s2")), Err(SessionRefused::Stale));
    let s1 = hub.resolve("alice", Some("s1")).unwrap();
    assert_eq!(s1.outcome(), SessionOutcome::TakesOver);
}

#[test]
fn two_racing_takeovers_leave_exactly_one_current_session() {
    let hub = Hub::new();
    let old = open(&hub, "alice", Some("s0"));
    // Both resolved before either registers, as two requests in flight are.
    let a = hub.resolve("alice", Some("a")).unwrap();
    let b = hub.resolve("alice", Some("b")).unwrap();
    assert_eq!(
        (a.outcome(), b.outcome()),
        (SessionOutcome::TakesOver, SessionOutcome::TakesOver)
    );
    // Deciding took nothing over: the old session's connection lives until one registers.
    assert_eq!(old.end_reason(), None);
    let (a, _a_outbox) = hub
        .register(Registration::new("alice", ConnectionKind::WebSocket).session("a"))
        .expect("`a` registers first and takes over");
    assert_eq!(old.end_reason(), Some(DisconnectReason::SessionReplaced));
    let (b, _outbox) = hub
        .register(Registration::new("alice", ConnectionKind::Sse).session("b"))
        .expect("`b` registers next and takes over from `a`");
    assert_eq!(a.end_reason(), Some(DisconnectReason::SessionReplaced));
    assert_eq!(b.end_reason(), None);
    assert_eq!(hub.session_of("alice").session_id.as_deref(), Some("b"));
    // `a` is a replaced session now: refused from here on.
    assert_eq!(
        hub.register(Registration::new("alice", ConnectionKind::Sse).session("a"))
            .unwrap_err(),
        RegisterError::Session(SessionRefused::Stale)
    );
}

#[test]
fn strict_sessions_refuse_unknown_sessions_unless_begun_through_the_api() {
    let hub = Hub::builder().strict_sessions(true).build();
    assert_eq!(
        hub.resolve("alice", Some("s1")).unwrap_err(),
        SessionRefused::Unknown
    );
    hub.begin_session("alice", "s1").unwrap();
    let joined = open(&hub, "alice", Some("s1"));
    assert_eq!(
        hub.resolve("alice", Some("s2")).unwrap_err(),
        SessionRefused::Unknown
    );
    let begun = hub.begin_session("alice", "s2").unwrap();
    assert_eq!(begun.connections_ended, 1);
    assert_eq!(joined.end_reason(), Some(DisconnectReason::SessionReplaced));
    assert_eq!(hub.resolve("alice", None).unwrap().id(), "s2");
}

#[test]
fn beginning_the_current_session_again_changes_nothing() {
    let hub = Hub::new();
    let live = open(&hub, "alice", Some("s1"));
    let begun = hub.begin_session("alice", "s1").unwrap();
    assert!(begun.already_current);
    assert_eq!(begun.connections_ended, 0);
    assert_eq!(live.end_reason(), None);
}

#[test]
fn logout_ends_every_connection_and_the_session_without_remembering_it() {
    let hub = Hub::new();
    let ws = open(&hub, "alice", Some("s1"));
    assert_eq!(hub.logout("alice"), 1);
    assert_eq!(ws.end_reason(), Some(DisconnectReason::Logout));
    drop(ws);
    let again = open(&hub, "alice", Some("s1"));
    assert_eq!(again.end_reason(), None, "s1 was logged out, not replaced");
}

#[test]
fn admission_counts_live_connections_and_those_in_flight_but_not_ending_ones() {
    let hub = Hub::new();
    let a = hub.admit("alice", 2).unwrap();
    let b = hub.admit("alice", 2).unwrap();
    let at_limit = hub.admit("alice", 2).unwrap_err();
    assert_eq!((at_limit.open, at_limit.limit), (2, 2));
    assert!(hub.admit("bob", 2).is_ok(), "another player is unaffected");
    drop(a); // admitted, never registered
    let mut leases = dualcast_layers::OwnedLeases::none();
    leases.push(hub.admit("alice", 2).unwrap());
    let (registered, _outbox) = hub
        .register(
            Registration::new("alice", ConnectionKind::WebSocket)
                .session("s1")
                .leases(leases),
        )
        .unwrap();
    assert!(
        hub.admit("alice", 2).is_err(),
        "one registered, one in flight"
    );
    drop(b);
    let c = hub.admit("alice", 2).unwrap();
    drop(c);
    // A takeover is decided, not carried out, before admission: the old session's
    // connection lives, and admission for the new session leaves it out of the count.
    let s2 = hub.resolve("alice", Some("s2")).unwrap();
    assert_eq!(s2.outcome(), SessionOutcome::TakesOver);
    assert_eq!(registered.end_reason(), None);
    assert!(
        hub.admit("alice", 1).is_err(),
        "counted for its own session"
    );
    let mut leases = dualcast_layers::OwnedLeases::none();
    leases.push(hub.admit_taking_over("alice", "s2", 1).unwrap());
    assert!(
        hub.admit_taking_over("alice", "s2", 1).is_err(),
        "one in flight"
    );
    // Registering carries the takeover out.
    let (_new, _outbox) = hub
        .register(
            Registration::new("alice", ConnectionKind::Sse)
                .session("s2")
                .leases(leases),
        )
        .unwrap();
    assert_eq!(
        registered.end_reason(),
        Some(DisconnectReason::SessionReplaced)
    );
    assert!(hub.admit("alice", 0).is_ok(), "0: no limit");
}

#[tokio::test(start_paused = true)]
async fn a_player_whose_state_ttl_ran_out_is_forgotten_with_its_session_and_rooms() {
    let hub = Hub::builder()
        .presence_grace(Duration::from_secs(10))
        .state_ttl(Duration::from_secs(50))
        .build();
    drop(open(&hub, "alice", Some("s1")));
    drop(open(&hub, "alice", Some("s2")));
    assert_eq!(hub.session_of("alice").session_id.as_deref(), Some("s2"));
    assert_eq!(hub.resolve("alice", Some("s1")), Err(SessionRefused::Stale));
    hub.join_room("carol", "lobby");
    drop(open(&hub, "carol", None));
    // An admission that never registered leaves nothing either.
    drop(hub.admit("dave", 4).unwrap());
    tokio::time::advance(Duration::from_secs(61)).await;
    drop(open(&hub, "bob", None)); // any write sweeps what is due
    assert_eq!(hub.session_of("alice").session_id, None);
    assert_eq!(hub.session_of("carol").session_id, None);
    assert!(
        hub.room_members("lobby").is_empty(),
        "carol's rooms are gone"
    );
    let registry = hub.read();
    assert!(
        !registry.players.contains_key("alice"),
        "alice is forgotten"
    );
    assert!(!registry.players.contains_key("dave"), "dave is forgotten");
    assert!(
        !registry.players.contains_key("carol"),
        "carol is forgotten"
    );
    assert!(
        registry.players.contains_key("bob"),
        "bob's TTL has just begun"
    );
}

/// Found by a probe: a request refused after the session layer (by admission, say) left
/// the session it named behind as the current one, so the next device's session counted
/// as replacing it, and the refused client's retry was told its session was stale.
#[test]
fn a_named_session_is_created_by_registering_not_by_resolving() {
    let hub = Hub::new();
    let mut events = hub.subscribe();
    let decided = hub.resolve("alice", Some("phantom")).unwrap();
    assert_eq!(decided.outcome(), SessionOutcome::Created);
    drop(decided); // refused by admission: never registered
    assert_eq!(hub.session_of("alice").session_id, None);
    let (_real, _outbox) = hub
        .register(Registration::new("alice", ConnectionKind::Sse).session("real"))
        .unwrap();
    while let Ok(event) = events.try_recv() {
        assert!(
            !matches!(
                event,
                HubEvent::SessionBegan {
                    replaced: Some(_),
                    ..
                }
            ),
            "no session was replaced: {event:?}"
        );
    }
    // The refused client's retry is a new session, not a stale one.
    let retry = hub.resolve("alice", Some("phantom")).unwrap();
    assert_eq!(retry.outcome(), SessionOutcome::TakesOver);
}
