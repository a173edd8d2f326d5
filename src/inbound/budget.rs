//! The per-connection inbound rate limit.

use std::time::Duration;

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
#[derive(Debug)]
pub struct InboundBudget {
    _private: (),
}

impl InboundBudget {
    /// A full bucket.
    pub fn new(settings: &InboundSettings) -> Self {
        let _ = settings;
        todo!()
    }

    /// Takes one message at `elapsed` (since the connection opened).
    pub fn take(&mut self, settings: &InboundSettings, elapsed: Duration) -> Verdict {
        let _ = (settings, elapsed);
        todo!()
    }
}
