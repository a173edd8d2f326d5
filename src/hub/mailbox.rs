//! What the hub keeps of a player's messages so that none is silently lost (SPEC §4): the
//! replay buffer, the pending queue and the messages awaiting an acknowledgement.
//!
//! Each player has one [`Mailbox`] behind its own lock, taken by every delivery to the
//! player while it writes to the player's outboxes, so the replay buffer holds messages in
//! exactly the order every connection of the player got them (a pending queue, sent in
//! priority order, is moved to the back in that order when it is sent). It is the seam a backplane
//! will share across nodes: the hub only records into it, asks it what a new connection
//! must be sent, and hands it acks and resend ticks; nothing else touches this state.
//!
//! - **Replay buffer**: the player's last messages (count and age bounded, plus a total over
//!   the hub), the very [`Frame`]s the outboxes hold. A connection that names the last id
//!   it got is sent what came after it, in order, then a `recovery` event; an id the buffer
//!   no longer holds (too old, or another epoch) gets `complete: false`.
//! - **Pending queue**: messages published while the player had no live connection
//!   (bounded per player and in total; each with a TTL), higher priority first and in
//!   publish order within one; delivered on the next connect of either kind.
//! - **Awaiting acknowledgement**: messages published with `ack`, resent to every live
//!   connection with backoff until a client acks the id or the TTL ends.
//!
//! Totals over the hub are counted in [`Totals`]; an entry is counted from when it is kept
//! until it leaves (delivered, evicted, expired and noticed, or its player forgotten).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::LONGEST_PERIOD;
use crate::message::Frame;

/// How much of each player's traffic the hub keeps for recovery, queueing and
/// acknowledgements (SPEC §4).
///
/// ```
/// use dualcast::hub::DeliverySettings;
/// use std::time::Duration;
///
/// let delivery = DeliverySettings::new()
///     .replay_count(500)
///     .replay_age(Duration::from_secs(60))
///     .pending_count(50);
/// assert_eq!(delivery.get_replay_count(), 500);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct DeliverySettings {
    pub(super) replay_count: usize,
    pub(super) replay_age: Duration,
    pub(super) replay_total: usize,
    pub(super) pending_count: usize,
    pub(super) pending_total: usize,
    pub(super) message_ttl: Duration,
    pub(super) awaiting_count: usize,
    pub(super) awaiting_total: usize,
    pub(super) ack_retry: Duration,
    pub(super) ack_retry_max: Duration,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            replay_count: 100,
            replay_age: Duration::from_secs(300),
            replay_total: 500_000,
            pending_count: 100,
            pending_total: 100_000,
            message_ttl: Duration::from_secs(300),
            awaiting_count: 100,
            awaiting_total: 100_000,
            ack_retry: Duration::from_secs(2),
            ack_retry_max: Duration::from_secs(30),
        }
    }
}

impl DeliverySettings {
    /// Default settings.
    pub fn new() -> Self {
        Self::default()
    }

    /// Messages kept per player for a reconnect to replay (the newest; older ones are
    /// dropped first). Zero turns replay off: every resume is answered `complete: false`.
    /// Default: 100.
    pub fn replay_count(mut self, count: usize) -> Self {
        self.replay_count = count;
        self
    }

    /// The oldest message a replay buffer keeps. Default: 5 minutes. Maximum: 100 years.
    pub fn replay_age(mut self, age: Duration) -> Self {
        self.replay_age = age.min(LONGEST_PERIOD);
        self
    }

    /// Replay entries kept over the whole hub. Once reached, a player's new message
    /// replaces its own oldest one, or is not kept if it has none (a resume from before
    /// it then gets `complete: false`). An entry is a reference to the message's shared
    /// bytes, its times and its priority (48 bytes); a room broadcast's bytes are shared
    /// by every member's entry. Default: 500,000.
    pub fn replay_total(mut self, total: usize) -> Self {
        self.replay_total = total;
        self
    }

    /// Messages kept per player while it has no live connection, for its next connect.
    /// When full, the lowest priority goes first, the oldest of it; a new message below
    /// every queued one is not queued. Zero turns the pending queue off. Default: 100.
    pub fn pending_count(mut self, count: usize) -> Self {
        self.pending_count = count;
        self
    }

    /// Pending messages kept over the whole hub; past it, messages for players with no
    /// live connection are dropped (and counted). Default: 100,000.
    pub fn pending_total(mut self, total: usize) -> Self {
        self.pending_total = total;
        self
    }

    /// How long a message without its own [`ttl`](crate::Message::with_ttl) may wait in a
    /// pending queue, be replayed, or be resent for an acknowledgement. A message never
    /// outlives its player's [state TTL](super::HubSettings::state_ttl) either. Default:
    /// 5 minutes. Maximum: 100 years.
    pub fn message_ttl(mut self, ttl: Duration) -> Self {
        self.message_ttl = ttl.min(LONGEST_PERIOD);
        self
    }

    /// Messages per player awaiting an acknowledgement; past it the oldest stops being
    /// resent (reported as `dropped`). Default: 100.
    pub fn awaiting_count(mut self, count: usize) -> Self {
        self.awaiting_count = count;
        self
    }

    /// Messages awaiting an acknowledgement over the whole hub; past it a new one is
    /// delivered once and not resent (reported as `dropped`). Default: 100,000.
    pub fn awaiting_total(mut self, total: usize) -> Self {
        self.awaiting_total = total;
        self
    }

    /// The first resend of an unacknowledged message comes this long after it was sent;
    /// each later one twice as long after the one before, up to
    /// [`ack_retry_max`](Self::ack_retry_max). Default: 2 s. Minimum: 10 ms.
    pub fn ack_retry(mut self, first: Duration) -> Self {
        self.ack_retry = first.clamp(Duration::from_millis(10), LONGEST_PERIOD);
        self
    }

    /// The longest wait between two resends. Default: 30 s. Minimum: the first wait.
    pub fn ack_retry_max(mut self, longest: Duration) -> Self {
        self.ack_retry_max = longest.min(LONGEST_PERIOD);
        self
    }

    /// Messages kept per player for replay.
    #[must_use]
    pub fn get_replay_count(&self) -> usize {
        self.replay_count
    }

    /// The default TTL of a message.
    #[must_use]
    pub fn get_message_ttl(&self) -> Duration {
        self.message_ttl
    }

    fn retry_after(&self, resent: u32) -> Duration {
        let longest = self.ack_retry_max.max(self.ack_retry);
        self.ack_retry
            .checked_mul(1u32.checked_shl(resent.min(20)).unwrap_or(u32::MAX))
            .map_or(longest, |wait| wait.min(longest))
    }
}

/// What every mailbox of a hub holds together, against the totals of [`DeliverySettings`].
#[derive(Debug, Default)]
pub(super) struct Totals {
    replay: AtomicUsize,
    pending: AtomicUsize,
    awaiting: AtomicUsize,
}

impl Totals {
    /// Takes one unit of `counter` if it is below `limit`.
    fn take(counter: &AtomicUsize, limit: usize) -> bool {
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok()
    }

    fn give(counter: &AtomicUsize, count: usize) {
        if count > 0 {
            counter.fetch_sub(count, Ordering::AcqRel);
        }
    }

    /// Messages in pending queues over the hub.
    pub(super) fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    /// Entries counted now: (replay, pending, awaiting).
    #[cfg(test)]
    pub(super) fn counts(&self) -> (usize, usize, usize) {
        (
            self.replay.load(Ordering::Acquire),
            self.pending.load(Ordering::Acquire),
            self.awaiting.load(Ordering::Acquire),
        )
    }
}

/// One publish as the mailboxes see it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Meta {
    /// When it was published.
    pub(super) at: Instant,
    /// When it may no longer be delivered (from its TTL).
    pub(super) expires: Instant,
    pub(super) priority: i32,
    pub(super) ack: bool,
}

impl Meta {
    /// The meta of a publish at `now` with `ttl` (else the default one).
    pub(super) fn new(
        settings: &DeliverySettings,
        now: Instant,
        ttl: Option<Duration>,
        priority: i32,
        ack: bool,
    ) -> Self {
        let ttl = ttl.unwrap_or(settings.message_ttl).min(LONGEST_PERIOD);
        Self {
            at: now,
            expires: now + ttl,
            priority,
            ack,
        }
    }
}

struct Recorded {
    frame: Frame,
    at: Instant,
    expires: Instant,
    priority: i32,
}

struct Pending {
    frame: Frame,
    priority: i32,
    expires: Instant,
}

struct Awaiting {
    frame: Frame,
    expires: Instant,
    next: Instant,
    resent: u32,
}

/// How a message awaiting acknowledgement ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AckOutcome {
    /// A client acknowledged it.
    Acked,
    /// Its TTL ended (or its player was forgotten) first.
    Expired,
    /// A bound ([`DeliverySettings::awaiting_count`], `awaiting_total`) made room for a
    /// newer one: it is no longer resent.
    Dropped,
}

impl AckOutcome {
    /// The stable label: `acked`, `expired` or `dropped`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Acked => "acked",
            Self::Expired => "expired",
            Self::Dropped => "dropped",
        }
    }
}

/// A message that stopped awaiting its acknowledgement.
#[derive(Debug, Clone)]
pub(super) struct Settled {
    pub(super) frame: Frame,
    pub(super) outcome: AckOutcome,
    pub(super) resent: u32,
}

/// What recording one delivery did to a mailbox.
#[derive(Debug, Default)]
pub(super) struct RecordOutcome {
    /// Kept in the pending queue.
    pub(super) queued: bool,
    /// Pending messages dropped: (expired, overflowed).
    pub(super) dropped_expired: usize,
    pub(super) dropped_overflow: usize,
    /// Now awaiting an acknowledgement.
    pub(super) awaiting: bool,
    /// Messages that stopped awaiting to make room.
    pub(super) settled: Vec<Settled>,
}

/// Where a resuming connection says it left off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Resume<'a> {
    /// An id of this hub's epoch.
    Here(&'a str),
    /// An id of another epoch (a restarted server) or not an id of this hub at all.
    Elsewhere,
}

impl<'a> Resume<'a> {
    /// The resume point `id`, of this hub if it has the form of its ids: the hub's `epoch`
    /// and a sequence number, or with no epoch (a clustered hub, whose ids are the log's)
    /// two numbers.
    pub(super) fn parse(id: &'a str, epoch: Option<&str>) -> Self {
        let ours = |prefix: &str| match epoch {
            Some(epoch) => prefix == epoch,
            None => !prefix.is_empty() && prefix.bytes().all(|b| b.is_ascii_digit()),
        };
        match id.split_once('-') {
            Some((prefix, sequence))
                if ours(prefix)
                    && !sequence.is_empty()
                    && sequence.bytes().all(|b| b.is_ascii_digit()) =>
            {
                Self::Here(id)
            }
            _ => Self::Elsewhere,
        }
    }
}

/// What a new connection is sent before any live message.
#[derive(Debug, Default)]
pub(super) struct CatchUp {
    pub(super) frames: VecDeque<Frame>,
    /// For a resume: whether everything after the id was there, and how many messages
    /// after it were replayed.
    pub(super) recovery: Option<(bool, usize)>,
    /// Pending messages delivered.
    pub(super) pending_delivered: usize,
    /// Pending messages found expired.
    pub(super) pending_expired: usize,
}

/// A player's replay buffer, pending queue and messages awaiting acknowledgement.
#[derive(Default)]
pub(super) struct Mailbox {
    replay: VecDeque<Recorded>,
    /// Sorted: higher priority first, then publish order.
    pending: Vec<Pending>,
    awaiting: Vec<Awaiting>,
    /// When the hub's resend queue holds this player's one live entry: at most one at a
    /// time, so the queue grows with players awaiting acks, not with publishes.
    resend_at: Option<Instant>,
}

impl Mailbox {
    /// Entries held: (replay, pending, awaiting).
    #[cfg(test)]
    pub(super) fn counts(&self) -> (usize, usize, usize) {
        (self.replay.len(), self.pending.len(), self.awaiting.len())
    }

    /// Whether it holds nothing (its player may be forgotten without loss).
    pub(super) fn is_empty(&self) -> bool {
        self.replay.is_empty() && self.pending.is_empty() && self.awaiting.is_empty()
    }

    /// Records one delivery of `frame` to the player: into the replay buffer; into the
    /// pending queue if no connection took it (`reached == 0`); awaiting an
    /// acknowledgement if it asks for one.
    pub(super) fn record(
        &mut self,
        frame: &Frame,
        meta: &Meta,
        reached: usize,
        settings: &DeliverySettings,
        totals: &Totals,
    ) -> RecordOutcome {
        let mut outcome = RecordOutcome::default();
        let recorded = Recorded {
            frame: frame.clone(),
            at: meta.at,
            expires: meta.expires,
            priority: meta.priority,
        };
        self.keep_for_replay(recorded, settings, totals);
        if reached == 0 && settings.pending_count > 0 {
            self.queue(frame, meta, settings, totals, &mut outcome);
        }
        if meta.ack {
            self.await_ack(frame, meta, settings, totals, &mut outcome);
        }
        outcome
    }

    /// Keeps `recorded` (sent to the player's connections, or to none, at its `at`) as the
    /// newest entry of the replay buffer.
    fn keep_for_replay(
        &mut self,
        recorded: Recorded,
        settings: &DeliverySettings,
        totals: &Totals,
    ) {
        if settings.replay_count == 0 {
            return;
        }
        let before = self.replay.len();
        self.forget_older_than(recorded.at, settings);
        while self.replay.len() >= settings.replay_count {
            self.replay.pop_front();
        }
        let evicted = before - self.replay.len();
        if evicted > 0 {
            // The new entry takes the place of one evicted: the total is unchanged by it
            // (the common case once a buffer is full: no atomic operation at all).
            Totals::give(&totals.replay, evicted - 1);
        } else if !Totals::take(&totals.replay, settings.replay_total) {
            // The hub is full: this player's oldest makes room, if it has one.
            if self.replay.pop_front().is_none() {
                return;
            }
        }
        if self.replay.len() == self.replay.capacity() {
            // Grown as a `VecDeque` grows (doubling), except that the last step stops at
            // the replay count: a full buffer then writes each new entry in the very slot
            // its oldest was just read and dropped from, one cache line for both instead of
            // two far apart (and no capacity past the count is held).
            let len = self.replay.len();
            let grown = (len * 2).max(4).min(settings.replay_count).max(len + 1);
            self.replay.reserve_exact(grown - len);
        }
        self.replay.push_back(recorded);
    }

    /// Drops the replay entries older than the replay age at `now`, without giving their
    /// count back (the caller does).
    fn forget_older_than(&mut self, now: Instant, settings: &DeliverySettings) {
        while self
            .replay
            .front()
            .is_some_and(|oldest| now.saturating_duration_since(oldest.at) > settings.replay_age)
        {
            self.replay.pop_front();
        }
    }

    fn queue(
        &mut self,
        frame: &Frame,
        meta: &Meta,
        settings: &DeliverySettings,
        totals: &Totals,
        outcome: &mut RecordOutcome,
    ) {
        let before = self.pending.len();
        self.pending.retain(|p| p.expires > meta.at);
        outcome.dropped_expired = before - self.pending.len();
        Totals::give(&totals.pending, outcome.dropped_expired);
        if self.pending.len() >= settings.pending_count {
            // The lowest priority, the oldest of it, goes; unless the new one is lower.
            let lowest = self.pending.iter().map(|p| p.priority).min();
            if lowest.is_some_and(|lowest| meta.priority < lowest) {
                outcome.dropped_overflow = 1;
                return;
            }
            if let Some(at) = self.pending.iter().position(|p| Some(p.priority) == lowest) {
                self.pending.remove(at);
                Totals::give(&totals.pending, 1);
                outcome.dropped_overflow = 1;
            }
        }
        if !Totals::take(&totals.pending, settings.pending_total) {
            outcome.dropped_overflow += 1;
            return;
        }
        // After every entry of a higher or equal priority: publish order within one.
        let at = self
            .pending
            .iter()
            .position(|p| p.priority < meta.priority)
            .unwrap_or(self.pending.len());
        self.pending.insert(
            at,
            Pending {
                frame: frame.clone(),
                priority: meta.priority,
                expires: meta.expires,
            },
        );
        outcome.queued = true;
    }

    fn await_ack(
        &mut self,
        frame: &Frame,
        meta: &Meta,
        settings: &DeliverySettings,
        totals: &Totals,
        outcome: &mut RecordOutcome,
    ) {
        if settings.awaiting_count == 0 {
            return;
        }
        if self.awaiting.len() >= settings.awaiting_count {
            let oldest = self.awaiting.remove(0);
            Totals::give(&totals.awaiting, 1);
            outcome.settled.push(Settled {
                frame: oldest.frame,
                outcome: AckOutcome::Dropped,
                resent: oldest.resent,
            });
        }
        if !Totals::take(&totals.awaiting, settings.awaiting_total) {
            outcome.settled.push(Settled {
                frame: frame.clone(),
                outcome: AckOutcome::Dropped,
                resent: 0,
            });
            return;
        }
        self.awaiting.push(Awaiting {
            frame: frame.clone(),
            expires: meta.expires,
            next: meta.at + settings.retry_after(0),
            resent: 0,
        });
        outcome.awaiting = true;
    }

    /// What a new connection is sent first: for a resume, the messages after `resume` in
    /// the order the player's connections got them (then the recovery); the pending
    /// queue, in priority order, which it empties; and what awaits an acknowledgement.
    /// Each message once.
    pub(super) fn catch_up(
        &mut self,
        resume: Option<Resume<'_>>,
        now: Instant,
        settings: &DeliverySettings,
        totals: &Totals,
    ) -> CatchUp {
        let mut catch_up = CatchUp::default();
        let before = self.replay.len();
        // An id older than the replay age is as good as gone, even if nothing newer came.
        self.forget_older_than(now, settings);
        Totals::give(&totals.replay, before - self.replay.len());
        self.replay_in_queue_order(now, settings, totals);
        if let Some(resume) = resume {
            let position = match resume {
                Resume::Here(id) => self.replay.iter().rposition(|r| r.frame.id() == id),
                Resume::Elsewhere => None,
            };
            match position {
                Some(at) => {
                    let replayed = self
                        .replay
                        .iter()
                        .skip(at + 1)
                        .filter(|r| r.expires > now)
                        .map(|r| r.frame.clone());
                    catch_up.frames.extend(replayed);
                    catch_up.recovery = Some((true, catch_up.frames.len()));
                }
                None => catch_up.recovery = Some((false, 0)),
            }
        }
        let pending = std::mem::take(&mut self.pending);
        Totals::give(&totals.pending, pending.len());
        for entry in pending {
            if entry.expires <= now {
                catch_up.pending_expired += 1;
            } else if !catch_up.frames.iter().any(|f| f.same(&entry.frame)) {
                catch_up.pending_delivered += 1;
                catch_up.frames.push_back(entry.frame);
            } else {
                catch_up.pending_delivered += 1;
            }
        }
        for entry in &self.awaiting {
            if entry.expires > now && !catch_up.frames.iter().any(|f| f.same(&entry.frame)) {
                catch_up.frames.push_back(entry.frame.clone());
            }
        }
        catch_up
    }

    /// Puts the replay buffer in the order the connection about to be sent the pending
    /// queue gets it: the entries from the first queued message on (every one of them
    /// published while no connection took anything, so none was sent to a connection) are
    /// ordered as the queue is, higher priority first and in publish order within one, and
    /// queued messages the buffer lost while they waited come back. The buffer then keeps
    /// holding what the player's connections got, in the order they got it, so a resume
    /// from a message of the queue replays the rest of it (in publish order, a
    /// lower-priority message sent after it lay before it, and was lost under a
    /// `complete: true`). The entries count as kept at `now`.
    fn replay_in_queue_order(
        &mut self,
        now: Instant,
        settings: &DeliverySettings,
        totals: &Totals,
    ) {
        if self.pending.is_empty() || settings.replay_count == 0 {
            return;
        }
        let queued =
            |recorded: &Recorded| self.pending.iter().any(|p| p.frame.same(&recorded.frame));
        let start = self
            .replay
            .iter()
            .position(queued)
            .unwrap_or(self.replay.len());
        let tail: Vec<Recorded> = self.replay.drain(start..).collect();
        Totals::give(&totals.replay, tail.len());
        // Oldest first within a priority: the ones the buffer lost, then the rest.
        let mut ordered: Vec<Recorded> = self
            .pending
            .iter()
            .filter(|p| p.expires > now && !tail.iter().any(|r| r.frame.same(&p.frame)))
            .map(|p| Recorded {
                frame: p.frame.clone(),
                at: now,
                expires: p.expires,
                priority: p.priority,
            })
            .collect();
        ordered.extend(tail);
        ordered.sort_by_key(|r| std::cmp::Reverse(r.priority));
        for recorded in ordered {
            self.keep_for_replay(
                Recorded {
                    at: now,
                    ..recorded
                },
                settings,
                totals,
            );
        }
    }

    /// In a cluster, when the player's last connection left as the log has it: queues what
    /// the replay buffer holds that its connections may not have got (published after the
    /// connection left its node: after log position `after`; or, for a node found gone,
    /// recorded since `since`), as it would have been queued then. How many it queued.
    pub(super) fn queue_missed(
        &mut self,
        after: Option<(u64, u64)>,
        since: Option<Instant>,
        now: Instant,
        settings: &DeliverySettings,
        totals: &Totals,
    ) -> RecordOutcome {
        let mut outcome = RecordOutcome::default();
        if settings.pending_count == 0 {
            return outcome;
        }
        let missed: Vec<(Frame, Meta)> = self
            .replay
            .iter()
            .filter(|r| r.expires > now)
            .filter(|r| {
                let order = super::backplane::log_order(r.frame.id());
                after.is_some_and(|after| order > Some(after))
                    || since.is_some_and(|since| r.at >= since)
            })
            .filter(|r| !self.pending.iter().any(|p| p.frame.same(&r.frame)))
            .map(|r| {
                let meta = Meta {
                    at: r.at,
                    expires: r.expires,
                    priority: r.priority,
                    ack: false,
                };
                (r.frame.clone(), meta)
            })
            .collect();
        for (frame, meta) in missed {
            let mut queued = RecordOutcome::default();
            self.queue(&frame, &meta, settings, totals, &mut queued);
            outcome.queued |= queued.queued;
            outcome.dropped_expired += queued.dropped_expired;
            outcome.dropped_overflow += queued.dropped_overflow;
        }
        outcome
    }

    /// Empties the pending queue without delivering it (another node of the cluster did):
    /// how many it held.
    pub(super) fn drop_pending(&mut self, totals: &Totals) -> usize {
        let pending = std::mem::take(&mut self.pending).len();
        Totals::give(&totals.pending, pending);
        pending
    }

    /// Takes the acknowledgement of envelope `id`: the message stops being resent.
    pub(super) fn acknowledge(&mut self, id: &str, totals: &Totals) -> Option<Settled> {
        let at = self.awaiting.iter().position(|a| a.frame.id() == id)?;
        let entry = self.awaiting.remove(at);
        Totals::give(&totals.awaiting, 1);
        Some(Settled {
            frame: entry.frame,
            outcome: AckOutcome::Acked,
            resent: entry.resent,
        })
    }

    /// When the next resend (or expiry) of a message awaiting acknowledgement is due.
    fn next_resend(&self) -> Option<Instant> {
        self.awaiting.iter().map(|a| a.next.min(a.expires)).min()
    }

    /// When the resend queue should next look at this player, if that is earlier than the
    /// entry it holds (or it holds none): the caller pushes an entry for that time.
    pub(super) fn schedule(&mut self) -> Option<Instant> {
        let next = self.next_resend()?;
        if self.resend_at.is_some_and(|at| at <= next) {
            return None;
        }
        self.resend_at = Some(next);
        Some(next)
    }

    /// Takes the resend queue's entry for `at`: false for an entry that a newer, earlier
    /// one replaced (nothing to do for it).
    pub(super) fn take_scheduled(&mut self, at: Instant) -> bool {
        if self.resend_at != Some(at) {
            return false;
        }
        self.resend_at = None;
        true
    }

    /// The messages due a resend at `now` (each rescheduled with backoff), and those whose
    /// TTL ended (settled as expired).
    pub(super) fn due_resends(
        &mut self,
        now: Instant,
        settings: &DeliverySettings,
        totals: &Totals,
    ) -> (Vec<Frame>, Vec<Settled>) {
        let mut expired = Vec::new();
        let before = self.awaiting.len();
        self.awaiting.retain(|a| {
            if a.expires <= now {
                expired.push(Settled {
                    frame: a.frame.clone(),
                    outcome: AckOutcome::Expired,
                    resent: a.resent,
                });
                false
            } else {
                true
            }
        });
        Totals::give(&totals.awaiting, before - self.awaiting.len());
        let mut due = Vec::new();
        for entry in &mut self.awaiting {
            if entry.next <= now {
                entry.resent = entry.resent.saturating_add(1);
                entry.next = now + settings.retry_after(entry.resent);
                due.push(entry.frame.clone());
            }
        }
        (due, expired)
    }

    /// Empties the mailbox of a player being forgotten: how many pending messages were
    /// dropped, and the messages that stop awaiting acknowledgement (expired).
    pub(super) fn release(&mut self, totals: &Totals) -> (usize, Vec<Settled>) {
        Totals::give(&totals.replay, self.replay.len());
        self.replay.clear();
        let pending = std::mem::take(&mut self.pending).len();
        Totals::give(&totals.pending, pending);
        let awaiting = std::mem::take(&mut self.awaiting);
        Totals::give(&totals.awaiting, awaiting.len());
        let settled = awaiting
            .into_iter()
            .map(|a| Settled {
                frame: a.frame,
                outcome: AckOutcome::Expired,
                resent: a.resent,
            })
            .collect();
        (pending, settled)
    }
}
