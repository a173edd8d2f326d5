//! dualcast: one user, many WebSocket and Server-Sent-Events connections at once, every
//! message delivered to all of them.
//!
//! - [`Hub`]: connections, rooms, presence, and delivery with reports.
//! - [`Dualcast`]: the assembled tower service (WebSocket over raw hyper upgrades, SSE as a
//!   streaming body, the publishing API) behind [`AuthLayer`].
//! - [`serve`](serve()): an accept loop with graceful shutdown.
//! - The layers of [`dualcast_layers`], re-exported: [`AuthLayer`], [`JwtAuthenticator`], …
//!
//! ```
//! use dualcast::{ConnectionKind, Hub, Message};
//! use serde_json::json;
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let hub = Hub::new();
//! // Two connections of one player, of both kinds (normally opened by the handlers).
//! let (_ws, mut ws_outbox) = hub.register("alice", ConnectionKind::WebSocket, None).unwrap();
//! let (_sse, mut sse_outbox) = hub.register("alice", ConnectionKind::Sse, None).unwrap();
//!
//! let report = hub.send_to_player("alice", &Message::json("greeting", json!({"text": "hi"})));
//! assert_eq!((report.websocket, report.sse, report.failed), (1, 1, 0));
//! let (a, b) = (ws_outbox.recv().await.unwrap(), sse_outbox.recv().await.unwrap());
//! assert_eq!(a.id(), b.id(), "one envelope, the same id on both");
//! # });
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod body;
pub mod connection;
mod direct_sse;
pub mod error;
pub mod hub;
mod limits;
pub mod message;
mod prefixed;
mod serve;
pub mod service;
pub mod sse;
mod write_batch;
pub mod ws;

pub use body::ResponseBody;
pub use connection::{
    ConnectionId, ConnectionInfo, ConnectionKind, DisconnectReason, Health, ReconnectHint,
};
pub use error::ApiError;
pub use hub::{
    ConnectionGuard, DeliveryReport, Hub, HubConfig, HubEvent, Outbox, Presence, RegisterError,
};
pub use limits::ServeSettings;
pub use message::{Frame, Message};
pub use serve::{serve, serve_with_hub, serve_with_settings, SHUTDOWN_GRACE};
pub use service::Dualcast;
pub use sse::SseSettings;
pub use ws::WebSocketSettings;

pub use dualcast_layers;
pub use dualcast_layers::{Auth, AuthLayer, Authenticate, Identity, JwtAuthenticator, Role};

/// The property tests' settings: `cases` cases, and no regression files written into the
/// source tree.
#[cfg(test)]
fn proptest_config(cases: u32) -> proptest::prelude::ProptestConfig {
    proptest::prelude::ProptestConfig {
        cases,
        failure_persistence: None,
        ..proptest::prelude::ProptestConfig::default()
    }
}

/// The README's Rust examples, compiled as doctests so they stay true.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
