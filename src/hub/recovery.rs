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

impl Hub {
    /// What a connection registering now for `player` is sent before anything live: the
    /// replay after `resume`, the pending queue (what the replay did not hold), what awaits
    /// an acknowledgement, and last, for a resume, the `recovery` event: once it comes, the
    /// connection has everything the hub kept for it. Called under the registry's write
    /// lock, so no delivery runs between the catch-up and the connection's first live
    /// message.
    pub(super) fn catch_up(
        &self,
        player: &mut Player,
        resume: Option<&str>,
        now: Instant,
    ) -> VecDeque<Frame> {
        let mailbox = player
            .mailbox
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        // On a clustered hub the ids are the log's: no epoch, every node's the same.
        let epoch = self.backplane().is_none().then_some(&*self.inner.epoch);
        let resume = resume.map(|id| Resume::parse(id, epoch));
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
        if let Some((complete, replayed)) = catch_up.recovery {
            if let Some(observer) = self.observer() {
                observer.recovered(complete, replayed as u64);
            }
            let message = Message::json(
                "recovery",
                json!({ "complete": complete, "replayed": replayed }),
            );
            catch_up
                .frames
                .push_back(Frame::encode_event(self.next_id(), &message, "recovery"));
        }
        catch_up.frames
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
