//! The per-connection inbound rate limit.

use std::time::Duration;

/// Thousandths of a token: a token bucket refilled at `rate` tokens a second gains exactly
/// `rate` of them a millisecond.
const MILLI_TOKENS_PER_TOKEN: u32 = 1000;

/// Limits on what one client may send (SPEC §6).
#[derive(Debug, Clone)]
#[must_use]
pub struct InboundSettings {
    pub(crate) max_message_size: usize,
    pub(crate) rate_per_second: u32,
    pub(crate) burst: u32,
    pub(crate) max_strikes: u32,
    pub(crate) max_in_flight: u32,
}

impl Default for InboundSettings {
    fn default() -> Self {
        Self {
            max_message_size: 64 * 1024,
            rate_per_second: 20,
            burst: 40,
            max_strikes: 40,
            max_in_flight: 8,
        }
    }
}

impl InboundSettings {
    /// Default settings.
    pub fn new() -> Self {
        Self::default()
    }

    /// The largest client message, in bytes: a WebSocket text frame or a
    /// `POST /api/messages` body. A larger one is refused with `MESSAGE_TOO_LARGE`.
    /// Default: 64 KiB (SPEC §6).
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Messages a second one connection may send on average (the token bucket's refill).
    /// 0 turns the limit off. Default: 20 (SPEC §6).
    pub fn rate_per_second(mut self, per_second: u32) -> Self {
        self.rate_per_second = per_second;
        self
    }

    /// Messages one connection may send at once after being quiet (the token bucket's
    /// size). Default: 40 (SPEC §6). Minimum: 1.
    pub fn burst(mut self, burst: u32) -> Self {
        self.burst = burst.max(1);
        self
    }

    /// Sets [`rate_per_second`](Self::rate_per_second) and [`burst`](Self::burst) together.
    /// Default: 20 a second, burst 40. A rate of 0 turns the limit off; otherwise the burst
    /// is at least 1.
    pub fn rate(self, per_second: u32, burst: u32) -> Self {
        self.rate_per_second(per_second).burst(burst)
    }

    /// How far refused messages may outnumber accepted ones before the connection is ended
    /// with `protocol_error` (see [`InboundBudget`]). Default: 40. Minimum: 1.
    pub fn max_strikes(mut self, strikes: u32) -> Self {
        self.max_strikes = strikes.max(1);
        self
    }

    /// Client messages of one connection the host's handler may be working on at once;
    /// past it a message is refused with `HANDLER_BUSY`. Default: 8. Minimum: 1; maximum:
    /// 65,534.
    pub fn max_in_flight(mut self, messages: u32) -> Self {
        self.max_in_flight = messages.clamp(1, u32::from(u16::MAX - 1));
        self
    }

    /// The largest client message, in bytes.
    #[must_use]
    pub fn get_max_message_size(&self) -> usize {
        self.max_message_size
    }

    /// Messages a second on average; 0 when the limit is off.
    #[must_use]
    pub fn get_rate_per_second(&self) -> u32 {
        self.rate_per_second
    }

    /// Messages at once after being quiet.
    #[must_use]
    pub fn get_burst(&self) -> u32 {
        self.burst
    }

    /// How far refused messages may outnumber accepted ones.
    #[must_use]
    pub fn get_max_strikes(&self) -> u32 {
        self.max_strikes
    }

    /// Client messages of one connection with the handler at once.
    #[must_use]
    pub fn get_max_in_flight(&self) -> u32 {
        self.max_in_flight
    }

    /// The bucket's size in thousandths of a token, capped to fit the budget's counter.
    fn capacity_milli_tokens(&self) -> u32 {
        let capacity = u64::from(self.burst.max(1)) * u64::from(MILLI_TOKENS_PER_TOKEN);
        u32::try_from(capacity).unwrap_or(u32::MAX)
    }
}

/// What the budget says of one more message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the rate.
    Accept,
    /// Past the rate: refuse it with `rate_limited`.
    Refuse,
    /// Sustained abuse: end the connection with `protocol_error`.
    End,
}

/// One connection's token bucket, with the strikes of refused messages.
///
/// The bucket holds up to `burst` tokens and gains `rate_per_second` a second. A message
/// that finds a whole token takes it and is accepted, and forgives one strike; one that
/// does not is refused and adds a strike. When the strikes exceed `max_strikes` the
/// connection is to be ended. So a client a little above the rate has some messages
/// refused but is never ended (its accepted messages forgive its strikes), while a flood,
/// whose refused messages outnumber its accepted ones by more than `max_strikes`, is ended.
/// A rate of 0 accepts everything.
///
/// 16 bytes: the tokens in thousandths, the strikes, and the time of the last refill in
/// milliseconds since the connection opened.
#[derive(Debug, Clone)]
pub struct InboundBudget {
    last_refill_millis: u64,
    milli_tokens: u32,
    strikes: u32,
}

impl InboundBudget {
    /// A full bucket.
    pub fn new(settings: &InboundSettings) -> Self {
        Self {
            last_refill_millis: 0,
            milli_tokens: settings.capacity_milli_tokens(),
            strikes: 0,
        }
    }

    /// Takes one message at `elapsed` (since the connection opened, from a monotonic
    /// clock; a time earlier than the last one refills nothing).
    pub fn take(&mut self, settings: &InboundSettings, elapsed: Duration) -> Verdict {
        if settings.rate_per_second == 0 {
            return Verdict::Accept;
        }
        self.refill(settings, elapsed);
        if let Some(left) = self.milli_tokens.checked_sub(MILLI_TOKENS_PER_TOKEN) {
            self.milli_tokens = left;
            self.strikes = self.strikes.saturating_sub(1);
            return Verdict::Accept;
        }
        self.strikes = self.strikes.saturating_add(1);
        if self.strikes > settings.max_strikes {
            Verdict::End
        } else {
            Verdict::Refuse
        }
    }

    /// Gives back the token of a message that turned out to cost nothing to abuse: an
    /// acknowledgement that settled a message the server itself asked to have acked (each
    /// can be settled once, so a client gains at most one token per such message).
    pub fn refund(&mut self, settings: &InboundSettings) {
        let capacity = settings.capacity_milli_tokens();
        self.milli_tokens = self
            .milli_tokens
            .saturating_add(MILLI_TOKENS_PER_TOKEN)
            .min(capacity);
    }

    fn refill(&mut self, settings: &InboundSettings, elapsed: Duration) {
        let now_millis = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        let Some(since_millis) = now_millis.checked_sub(self.last_refill_millis) else {
            return;
        };
        // A token a second is a thousandth of a token a millisecond.
        let gained = since_millis.saturating_mul(u64::from(settings.rate_per_second));
        let capacity = settings.capacity_milli_tokens();
        let tokens = u64::from(self.milli_tokens).saturating_add(gained);
        self.milli_tokens = u32::try_from(tokens.min(u64::from(capacity))).unwrap_or(capacity);
        self.last_refill_millis = now_millis;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn millis(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    #[test]
    fn budget_fits_in_sixteen_bytes() {
        assert!(std::mem::size_of::<InboundBudget>() <= 16);
    }

    #[test]
    fn defaults_follow_the_spec() {
        let settings = InboundSettings::new();
        assert_eq!(settings.get_max_message_size(), 64 * 1024);
        assert_eq!(settings.get_rate_per_second(), 20);
        assert_eq!(settings.get_burst(), 40);
        assert_eq!(settings.get_max_strikes(), 40);
        assert_eq!(settings.get_max_in_flight(), 8);
    }

    #[test]
    fn setters_keep_their_minimums() {
        let settings = InboundSettings::new()
            .rate(5, 0)
            .max_strikes(0)
            .max_in_flight(0)
            .max_message_size(1024);
        assert_eq!(settings.get_rate_per_second(), 5);
        assert_eq!(settings.get_burst(), 1);
        assert_eq!(settings.get_max_strikes(), 1);
        assert_eq!(settings.get_max_in_flight(), 1);
        assert_eq!(settings.get_max_message_size(), 1024);
    }

    #[test]
    fn burst_is_accepted_then_refused() {
        let settings = InboundSettings::new();
        let mut budget = InboundBudget::new(&settings);
        for _ in 0..40 {
            assert_eq!(budget.take(&settings, Duration::ZERO), Verdict::Accept);
        }
        assert_eq!(budget.take(&settings, Duration::ZERO), Verdict::Refuse);
    }

    #[test]
    fn one_second_refills_the_rate() {
        let settings = InboundSettings::new();
        let mut budget = InboundBudget::new(&settings);
        for _ in 0..40 {
            assert_eq!(budget.take(&settings, Duration::ZERO), Verdict::Accept);
        }
        let one_second = Duration::from_secs(1);
        for _ in 0..20 {
            assert_eq!(budget.take(&settings, one_second), Verdict::Accept);
        }
        assert_eq!(budget.take(&settings, one_second), Verdict::Refuse);
    }

    #[test]
    fn refill_is_capped_at_the_burst() {
        let settings = InboundSettings::new();
        let mut budget = InboundBudget::new(&settings);
        let an_hour_later = Duration::from_secs(3600);
        for _ in 0..40 {
            assert_eq!(budget.take(&settings, an_hour_later), Verdict::Accept);
        }
        assert_eq!(budget.take(&settings, an_hour_later), Verdict::Refuse);
    }

    #[test]
    fn client_a_little_above_the_rate_is_never_ended() {
        let settings = InboundSettings::new();
        let mut budget = InboundBudget::new(&settings);
        let (mut accepted, mut refused) = (0, 0);
        // 25 a second for a minute: one every 40 ms.
        for message in 0..25 * 60 {
            match budget.take(&settings, millis(message * 40)) {
                Verdict::Accept => accepted += 1,
                Verdict::Refuse => refused += 1,
                Verdict::End => panic!("ended at message {message}"),
            }
        }
        assert!(refused > 0);
        assert!(accepted >= 20 * 60);
    }

    #[test]
    fn flood_is_ended_within_about_a_second() {
        let settings = InboundSettings::new();
        let mut budget = InboundBudget::new(&settings);
        // 1000 a second: one every millisecond.
        let ended_at = (0..1000u64)
            .find(|&message| budget.take(&settings, millis(message)) == Verdict::End)
            .expect("a flood is ended within a second");
        assert!(ended_at >= u64::from(settings.burst + settings.max_strikes));
    }

    #[test]
    fn rate_zero_is_unlimited() {
        let settings = InboundSettings::new().rate(0, 0);
        let mut budget = InboundBudget::new(&settings);
        for _ in 0..100_000 {
            assert_eq!(budget.take(&settings, Duration::ZERO), Verdict::Accept);
        }
    }

    #[test]
    fn elapsed_going_backwards_refills_nothing() {
        let settings = InboundSettings::new();
        let mut budget = InboundBudget::new(&settings);
        for _ in 0..40 {
            assert_eq!(
                budget.take(&settings, Duration::from_secs(10)),
                Verdict::Accept
            );
        }
        assert_eq!(budget.take(&settings, Duration::ZERO), Verdict::Refuse);
        assert_eq!(budget.take(&settings, Duration::MAX), Verdict::Accept);
    }

    #[test]
    fn huge_burst_does_not_overflow() {
        let settings = InboundSettings::new().rate(u32::MAX, u32::MAX);
        let mut budget = InboundBudget::new(&settings);
        for step in 0..1000 {
            assert_eq!(
                budget.take(&settings, Duration::from_secs(step)),
                Verdict::Accept
            );
        }
    }
}
