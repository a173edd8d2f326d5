//! A model check of the session rules under random interleavings of what requests and the
//! API do to one player: resolve (the session layer), admit (the track layer, as `Track`
//! asks), register, abandon, drop a guard, close ended connections, logout, begin a session
//! through the API, and (in one variant) let time pass through the presence grace and the
//! state TTL. After every step: every live connection is of the current session, at most
//! `limit` are live, the current session is not among the replaced ones, and the hub's
//! count of admissions in flight is the model's. At the end: every takeover was counted
//! once by the metric and once by a `SessionBegan` event. (Written by a probe of the
//! deferred takeover; made a test.)

use std::sync::atomic::{AtomicUsize, Ordering as AO};
use std::sync::Arc;

use dualcast_layers::metrics::Observer;
use dualcast_layers::session::{ResolveSession, Session, SessionOutcome};
use dualcast_layers::track::Admit;
use dualcast_layers::OwnedLeases;

use super::*;
use crate::connection::ConnectionKind;

#[derive(Default, Clone)]
struct Count(Arc<AtomicUsize>);
impl Observer for Count {
    fn session_replaced(&self) {
        self.0.fetch_add(1, AO::SeqCst);
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

enum Req {
    Resolved(Session),
    Admitted(Session, OwnedLeases),
}

fn live(hub: &Hub) -> Vec<Option<Arc<str>>> {
    let r = hub.read();
    r.players
        .get("alice")
        .map(|p| {
            p.connections
                .iter()
                .filter(|c| c.end_reason().is_none())
                .map(|c| c.session_id.clone())
                .collect()
        })
        .unwrap_or_default()
}

async fn run(seed: u64, strict: bool, limit: usize) -> Result<(), String> {
    run_timed(seed, strict, limit, false).await
}

async fn run_timed(seed: u64, strict: bool, limit: usize, timed: bool) -> Result<(), String> {
    let count = Count::default();
    let mut builder = Hub::builder();
    if timed {
        builder = builder
            .presence_grace(std::time::Duration::from_secs(1))
            .state_ttl(std::time::Duration::from_secs(2));
    }
    let hub = builder
        .strict_sessions(strict)
        .remembered_sessions(3)
        .observer(count.clone())
        .build();
    let mut events = hub.subscribe();
    let mut rng = Rng(seed | 1);
    let mut reqs: Vec<Req> = Vec::new();
    let mut guards: Vec<ConnectionGuard> = Vec::new();
    let mut outboxes = Vec::new();
    let sessions = ["s0", "s1", "s2", "s3", "s4", "s5", "s6"];
    let mut takeovers_seen = 0usize; // current changed from Some(a) to Some(b)
    let mut log = Vec::new();
    for step in 0..400 {
        {
            let mut w = hub.write();
            hub.expire_players(&mut w, tokio::time::Instant::now());
        }
        let before = hub.session_of("alice").session_id;
        match rng.below(if timed { 11 } else { 10 }) {
            0 | 1 => {
                let named = match rng.below(3) {
                    0 => None,
                    _ => Some(sessions[rng.below(sessions.len())]),
                };
                log.push(format!("resolve {named:?}"));
                if let Ok(s) = hub.resolve("alice", named) {
                    reqs.push(Req::Resolved(s));
                }
            }
            2..=4 if !reqs.is_empty() => {
                let i = rng.below(reqs.len());
                match reqs.swap_remove(i) {
                    Req::Resolved(s) => {
                        let lease = if s.outcome() == SessionOutcome::TakesOver {
                            hub.admit_taking_over("alice", s.id(), limit)
                        } else {
                            hub.admit("alice", limit)
                        };
                        log.push(format!(
                            "admit {:?} {:?} -> {}",
                            s.id(),
                            s.outcome(),
                            lease.is_ok()
                        ));
                        if let Ok(lease) = lease {
                            let mut leases = OwnedLeases::none();
                            leases.push(lease);
                            reqs.push(Req::Admitted(s, leases));
                        }
                    }
                    Req::Admitted(s, leases) => {
                        let mut reg =
                            Registration::new("alice", ConnectionKind::Sse).leases(leases);
                        if s.named() {
                            reg = reg.session(s.id_arc().clone());
                        }
                        let r = hub.register(reg);
                        log.push(format!(
                            "register {:?} named={} -> {:?}",
                            s.id(),
                            s.named(),
                            r.as_ref().err()
                        ));
                        if let Ok((g, o)) = r {
                            guards.push(g);
                            outboxes.push(o);
                        }
                    }
                }
            }
            5 if !guards.is_empty() => {
                // The transport closes ended connections, or a client leaves.
                let i = rng.below(guards.len());
                log.push(format!("drop guard {:?}", guards[i].info().session_id));
                drop(guards.swap_remove(i));
            }
            6 => {
                guards.retain(|g| g.end_reason().is_none());
                log.push("close ended".into());
            }
            7 if rng.below(4) == 0 => {
                log.push("logout".into());
                hub.logout("alice");
            }
            8 if rng.below(2) == 0 => {
                let s = sessions[rng.below(sessions.len())];
                log.push(format!("begin {s}"));
                let _ = hub.begin_session("alice", s);
            }
            9 if !reqs.is_empty() && rng.below(3) == 0 => {
                let i = rng.below(reqs.len());
                log.push("abandon".into());
                drop(reqs.swap_remove(i));
            }
            10 => {
                let ms = rng.below(3000) as u64;
                log.push(format!("advance {ms}ms"));
                tokio::time::advance(std::time::Duration::from_millis(ms)).await;
            }
            _ => {}
        }
        let after = hub.session_of("alice").session_id;
        if before.is_some() && after.is_some() && before != after {
            takeovers_seen += 1;
        }
        // I1: every live connection is of the current session.
        let l = live(&hub);
        if l.iter().any(|s| *s != after) {
            return Err(format!(
                "step {step}: live of non-current session: {l:?} current {after:?}\n{}",
                log.join("\n")
            ));
        }
        // I2: no more than `limit` live (not ending) connections.
        if l.len() > limit {
            return Err(format!(
                "step {step}: {} live > {limit}\n{}",
                l.len(),
                log.join("\n")
            ));
        }
        {
            let r = hub.read();
            if let Some(p) = r.players.get("alice") {
                if let Some(cur) = &p.session {
                    if p.replaced.iter().any(|o| *o == cur.id) {
                        return Err(format!("step {step}: current {:?} is in replaced", cur.id));
                    }
                }
            }
        }
        // admitting never negative / consistent
        let admitted_in_flight = reqs
            .iter()
            .filter(|r| matches!(r, Req::Admitted(..)))
            .count();
        let admitting = hub.read().players.get("alice").map_or(0, |p| p.admitting);
        if admitting != admitted_in_flight {
            return Err(format!(
                "step {step}: admitting {admitting} vs {admitted_in_flight}"
            ));
        }
    }
    // Everything settles.
    drop(reqs);
    guards.retain(|g| g.end_reason().is_none());
    if guards.len() > limit {
        return Err(format!("settled: {} > {limit}", guards.len()));
    }
    let mut began_with_replaced = 0;
    while let Ok(e) = events.try_recv() {
        if let HubEvent::SessionBegan {
            replaced: Some(_), ..
        } = e
        {
            began_with_replaced += 1;
        }
    }
    let metric = count.0.load(AO::SeqCst);
    if metric != began_with_replaced || metric != takeovers_seen {
        return Err(format!(
            "metric {metric}, SessionBegan(replaced) {began_with_replaced}, takeovers seen {takeovers_seen}"
        ));
    }
    Ok(())
}

#[tokio::test]
async fn random_interleavings_keep_the_session_rules() {
    let mut failures = Vec::new();
    for seed in 1..SEEDS {
        for (strict, limit) in [(false, 4), (false, 2), (true, 4), (false, 1)] {
            if let Err(e) = run(seed * 7919, strict, limit).await {
                failures.push(format!("seed {seed} strict {strict} limit {limit}: {e}"));
            }
        }
    }
    report(failures);
}

#[tokio::test(start_paused = true)]
async fn random_interleavings_through_the_grace_and_the_state_ttl_keep_the_session_rules() {
    let mut failures = Vec::new();
    for seed in 1..SEEDS / 2 {
        for (strict, limit) in [(false, 4), (false, 2), (true, 4)] {
            if let Err(e) = run_timed(seed * 104729, strict, limit, true).await {
                failures.push(format!("seed {seed} strict {strict} limit {limit}: {e}"));
            }
        }
    }
    report(failures);
}

/// Seeds per configuration: enough to have found every bug planted while the model was
/// written (admission not counting the requests in flight fails within a dozen steps).
const SEEDS: u64 = 600;

fn report(mut failures: Vec<String>) {
    if !failures.is_empty() {
        let n = failures.len();
        failures.sort_by_key(String::len);
        panic!("{n} failures; shortest:\n{}", failures[0]);
    }
}
