//! The hub's side of the delivery guarantees (SPEC §4): a new connection's catch-up
//! (replay, pending queue, the `recovery` event), acknowledgements, and the keeper's
//! resends. The state itself lives in each player's [`Mailbox`](super::mailbox::Mailbox).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::{Arc, PoisonError};

use serde_json::json;
use tokio::time::Instant;

use super::events::HubEvent;
use super::mailbox::{Resume, Settled};
use super::registry::Player;
use super::{DeliveryReport, Hub};
use crate::connection::Connection;
use crate::message::{Frame, Message};

/// Players with a message awaiting acknowledgement, by when the next resend is due. Each
/// player's mailbox knows its one live entry (`Mailbox::schedule`), so the queue grows with
/// the players awaiting acks, not with publishes; an entry replaced by an earlier one is
/// dropped when it comes up.
pub(super) type ResendQueue = BinaryHeap<Reverse<(Instant, Arc<str>)>>;

/// The most log entries a resume reads from the cluster's log (all players' entries).
const RESUME_READ: usize = 10_000;

impl Hub {
    /// What a connection registering now for `player` is sent before anything live: the
    /// replay after `resume`, the pending queue (what the replay did not hold), what awaits
    /// an acknowledgement, and last, for a resume, the `recovery` event: once it comes, the
    /// connection has everything the hub kept for it. Called under the registry's write
    /// lock, so no delivery runs between the catch-up and the connection's first live
    /// message.
    ///
    /// On a clustered hub, a resume from an id of the log that this node's buffer does not
    /// hold (the node started after it, say) is not answered `complete: false` at once:
    /// the frames are returned without the `recovery` event, and the caller reads the
    /// rest from the log ([`resume_from_log`](Self::resume_from_log)).
    pub(super) fn catch_up(
        &self,
        player: &mut Player,
        resume: Option<&str>,
        now: Instant,
    ) -> (VecDeque<Frame>, bool) {
        let mailbox = player
            .mailbox
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        // On a clustered hub the ids are the log's: no epoch, every node's the same.
        let epoch = self.backplane().is_none().then_some(&*self.inner.epoch);
        let resume = resume.map(|id| Resume::parse(id, epoch));
        let from_log = epoch.is_none() && matches!(resume, Some(Resume::Here(_)));
        let mut catch_up = mailbox.catch_up(
            resume,
            now,
            &self.inner.settings.delivery,
            &self.inner.totals,
        );
        // Reports the queues' new depth when some expired; delivered ones change it too.
        self.count_dropped(catch_up.pending_expired, 0);
        if let Some(observer) = self.observer() {
            if catch_up.pending_delivered > 0 {
                observer.queued(0, self.inner.totals.pending() as u64);
            }
        }
        match catch_up.recovery {
            Some((false, _)) if from_log => return (catch_up.frames, true),
            Some((complete, replayed)) => {
                let recovery = self.recovery_frame(complete, replayed);
                catch_up.frames.push_back(recovery);
            }
            None => {}
        }
        (catch_up.frames, false)
    }

    /// The `recovery` event, counted.
    fn recovery_frame(&self, complete: bool, replayed: usize) -> Frame {
        if let Some(observer) = self.observer() {
            observer.recovered(complete, replayed as u64);
        }
        let message = Message::json(
            "recovery",
            json!({ "complete": complete, "replayed": replayed }),
        );
        Frame::encode_event(self.next_id(), &message, "recovery")
    }

    /// The catch-up of a connection of `player_id` resuming after log entry `resume`,
    /// read from the cluster's log: the player's messages after it, up to the last entry
    /// this node had applied when the connection registered (`up_to`; later ones come
    /// live), then `local` (the pending queue and what awaits an ack, each once), then the
    /// `recovery` event. `complete: false` when the log no longer holds the id, holds
    /// more of the player's messages after it than a replay buffer keeps, or cannot be
    /// read within a few seconds.
    pub(super) async fn resume_from_log(
        &self,
        player_id: &str,
        resume: &str,
        up_to: Option<(u64, u64)>,
        mut local: VecDeque<Frame>,
    ) -> VecDeque<Frame> {
        let settings = self.inner.settings.delivery;
        // A node just started learns the players' rooms from the others' lists: the
        // player's room messages are found once they came.
        self.peers_listed(std::time::Duration::from_secs(2)).await;
        let replayed = match self.backplane() {
            Some(backplane) => tokio::time::timeout(
                std::time::Duration::from_secs(3),
                backplane.read_from(resume, RESUME_READ),
            )
            .await
            .ok()
            .and_then(Result::ok),
            None => None,
        }
        .and_then(|entries| {
            let mut entries = entries.into_iter();
            // The id itself must still be in the log, and nothing after it cut off.
            if entries.next().is_none_or(|(first, _)| *first != *resume) {
                return None;
            }
            let oldest = crate::message::unix_millis(std::time::SystemTime::now())
                .saturating_sub(u64::try_from(settings.replay_age.as_millis()).unwrap_or(u64::MAX));
            let mut frames = VecDeque::new();
            let mut reached = false;
            let mut read = 1;
            for (id, entry) in entries {
                read += 1;
                let order = super::backplane::log_order(&id);
                if up_to.is_some_and(|up_to| order > Some(up_to)) {
                    reached = true;
                    break;
                }
                if let Some(frame) = self.entry_for(player_id, &id, &entry, oldest) {
                    frames.push_back(frame);
                }
            }
            // Up to where this node was, or to the log's end: nothing cut off.
            let whole = reached || read < RESUME_READ;
            (whole && frames.len() <= settings.replay_count).then_some(frames)
        });
        let (complete, mut frames) = match replayed {
            Some(frames) => (true, frames),
            None => (false, VecDeque::new()),
        };
        let count = frames.len();
        local.retain(|frame| !frames.iter().any(|f| f.id() == frame.id()));
        frames.append(&mut local);
        frames.push_back(self.recovery_frame(complete, count));
        frames
    }

    /// Takes a client's acknowledgement of envelope `id` for `connection`'s player: the
    /// message stops being resent. An id the player is not waiting on is ignored (a
    /// duplicate ack, or one for a message that expired): false.
    pub(crate) fn acknowledge(&self, connection: &Connection, id: &str) -> bool {
        let acknowledged = self.acknowledge_here(&connection.player_id, id);
        if acknowledged {
            // The other nodes of a cluster wait for it too.
            self.announce_ack(&connection.player_id, id);
        }
        acknowledged
    }

    /// Takes the acknowledgement of `player_id`'s message `id` on this node.
    pub(super) fn acknowledge_here(&self, player_id: &str, id: &str) -> bool {
        let registry = self.read();
        let Some((key, player)) = registry.players.get_key_value(player_id) else {
            return false;
        };
        let settled = player
            .mailbox
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .acknowledge(id, &self.inner.totals);
        let Some(settled) = settled else {
            return false;
        };
        self.settle(key, vec![settled]);
        true
    }

    /// Reports messages that stopped awaiting acknowledgement: an event and a count each.
    pub(super) fn settle(&self, player_id: &Arc<str>, settled: Vec<Settled>) {
        for settled in settled {
            if let Some(observer) = self.observer() {
                observer.ack_settled(settled.outcome.as_str());
            }
            tracing::debug!(
                player_id = &**player_id,
                message_id = settled.frame.id(),
                outcome = settled.outcome.as_str(),
                resent = settled.resent,
                "acknowledgement wait over"
            );
            self.emit(HubEvent::AckSettled {
                message_id: settled.frame.shared_id(),
                player_id: player_id.clone(),
                outcome: settled.outcome,
                resent: settled.resent,
            });
        }
    }

    /// Counts pending messages dropped: `expired` past their TTL (or their player's state),
    /// `overflow` by a bound; and the queues' new depth.
    pub(super) fn count_dropped(&self, expired: usize, overflow: usize) {
        if expired + overflow == 0 {
            return;
        }
        if let Some(observer) = self.observer() {
            if expired > 0 {
                observer.pending_dropped("expired", expired as u64);
            }
            if overflow > 0 {
                observer.pending_dropped("overflow", overflow as u64);
            }
            observer.queued(0, self.inner.totals.pending() as u64);
        }
        tracing::debug!(expired, overflow, "pending messages dropped");
    }

    /// Asks the keeper to look at `player_id`'s acknowledgements at `at`.
    pub(super) fn schedule_resend(&self, at: Instant, player_id: &Arc<str>) {
        let earliest = {
            let mut resends = self
                .inner
                .resends
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let earlier = resends.peek().is_none_or(|Reverse((next, _))| at < *next);
            resends.push(Reverse((at, player_id.clone())));
            earlier
        };
        if earliest {
            self.wake_keeper();
        }
    }

    /// When the keeper should next resend.
    pub(super) fn next_resend(&self) -> Option<Instant> {
        self.inner
            .resends
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .peek()
            .map(|Reverse((at, _))| *at)
    }

    /// Resends what is due at `now` to every live connection of its player, and settles
    /// what expired.
    pub(super) fn resend_due(&self, now: Instant) {
        loop {
            let (at, player_id) = {
                let mut resends = self
                    .inner
                    .resends
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                match resends.peek() {
                    Some(Reverse((at, _))) if *at <= now => {}
                    _ => return,
                }
                match resends.pop() {
                    Some(Reverse(entry)) => entry,
                    None => return,
                }
            };
            self.resend_to(&player_id, at, now);
        }
    }

    /// Resends to `player_id` what is due at `now`, for its resend queue entry of `at`.
    fn resend_to(&self, player_id: &str, at: Instant, now: Instant) {
        let mut report = DeliveryReport::new_resend();
        let mut failed = Vec::new();
        let settings = &self.inner.settings.delivery;
        {
            let registry = self.read();
            let Some((key, player)) = registry.players.get_key_value(player_id) else {
                return;
            };
            let mut mailbox = player
                .mailbox
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if !mailbox.take_scheduled(at) {
                return;
            }
            let (due, expired) = mailbox.due_resends(now, settings, &self.inner.totals);
            for frame in &due {
                for connection in &player.connections {
                    self.send_frame(connection, frame, &mut report, &mut failed);
                }
            }
            let next = mailbox.schedule();
            drop(mailbox);
            if !due.is_empty() {
                if let Some(observer) = self.observer() {
                    observer.resent(due.len() as u64);
                }
            }
            self.settle(key, expired);
            if let Some(next) = next {
                self.schedule_resend(next, key);
            }
        }
        self.finish(&report, failed);
    }
}
