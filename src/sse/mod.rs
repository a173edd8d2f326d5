//! Server-Sent Events: [`SseHandler`] answers with a streaming body that drains the
//! connection's outbox (SPEC §4, §5).
//!
//! The response carries `Content-Type: text/event-stream`, `Cache-Control: no-cache` and
//! `X-Accel-Buffering: no` (so nginx-style proxies do not buffer the stream). Each message
//! is one record whose `id:` is the envelope id, so a browser's `EventSource` sends
//! `Last-Event-ID` when it reconnects. A comment line goes out every
//! [keep-alive interval](SseSettings::keep_alive) so proxies keep the stream open. When the
//! connection ends for a reason the client should know, a final `disconnect` event says
//! why before the stream closes:
//!
//! ```text
//! event: disconnect
//! data: {"reason":"server_shutdown","code":1001,"reconnect":true,"recover":true}
//! ```
//!
//! The stream opens with a comment, and a quiet stream gets a comment line every
//! keep-alive interval (default 15 s):
//!
//! ```text
//! : connected
//!
//! :
//!
//! ```
//!
//! A message is one record:
//!
//! ```text
//! id: 3f2a91c0-1
//! data: {"id":"3f2a91c0-1","type":"chat","v":1,"ts":1767729300000,"data":{"text":"hi"}}
//!
//! ```

mod handler;
pub(crate) mod stream;

use std::time::Duration;

#[cfg(test)]
pub(crate) use handler::stream_response;
pub use handler::SseHandler;
pub(crate) use stream::{SseControl, SseStream};

/// Settings of SSE streams.
#[derive(Debug, Clone)]
#[must_use]
pub struct SseSettings {
    keep_alive: Duration,
}

impl Default for SseSettings {
    fn default() -> Self {
        Self {
            keep_alive: Duration::from_secs(15),
        }
    }
}

impl SseSettings {
    /// Default settings.
    pub fn new() -> Self {
        Self::default()
    }

    /// How often a comment line is sent on an otherwise quiet stream. Default: 15 s.
    /// Minimum: 1 s.
    pub fn keep_alive(mut self, interval: Duration) -> Self {
        self.keep_alive = interval.max(Duration::from_secs(1));
        self
    }
}
