//! dualcast: one user, many WebSocket and Server-Sent-Events connections at once, every
//! message delivered to all of them.
//!
//! - [`Hub`]: connections, rooms, presence, and delivery with reports; it owns every ending
//!   ([`Hub::disconnect_player`], credential expiry, [`Hub::shutdown`]).
//! - The handlers, path-independent tower services: [`WebSocketHandler`] (raw hyper
//!   upgrade), [`SseHandler`] (a streaming body), [`PublishApi`].
//! - [`Dualcast::builder`]: the default stack (router → auth → handlers) composed once, as a
//!   [`DualcastLayer`] around a host's service or alone.
//! - Several nodes as one (cargo feature `redis`): `RedisBackplane` behind
//!   [`HubSettings::backplane`], and [`Hub::publish`] to reach every node.
//! - [`serve`](serve()): an accept loop with graceful shutdown; [`Hub::shutdown_on`] for
//!   `axum::serve` and other servers.
//! - The layers of [`dualcast_layers`], re-exported: [`AuthLayer`], [`TrackLayer`],
//!   [`JwtAuthenticator`], …
//!
//! ```
//! use dualcast::{ConnectionKind, Hub, Message, Registration};
//! use serde_json::json;
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let hub = Hub::new();
//! // Two connections of one player, of both kinds (normally opened by the handlers).
//! let (_ws, mut ws_outbox) = hub.register(Registration::new("alice", ConnectionKind::WebSocket)).unwrap();
//! let (_sse, mut sse_outbox) = hub.register(Registration::new("alice", ConnectionKind::Sse)).unwrap();
//!
//! let report = hub.send_to_player("alice", &Message::json("greeting", json!({"text": "hi"})));
//! assert_eq!((report.websocket, report.sse, report.failed), (1, 1, 0));
//! let (a, b) = (ws_outbox.recv().await.unwrap(), sse_outbox.recv().await.unwrap());
//! assert_eq!(a.id(), b.id(), "one envelope, the same id on both");
//! # });
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

pub mod api;
pub mod body;
pub mod connection;
mod direct_sse;
pub mod error;
mod extract;
pub mod hub;
pub mod inbound;
mod limits;
pub mod message;
mod prefixed;
mod queue;
#[cfg(feature = "redis")]
mod redis_backplane;
pub mod routes;
mod serve;
pub mod service;
pub mod sse;
mod write_batch;
pub mod ws;

pub use api::PublishApi;
pub use body::{LayerBody, ResponseBody};
pub use connection::{
    ConnectionId, ConnectionInfo, ConnectionKind, DisconnectReason, Health, ReconnectHint,
};
pub use error::ApiError;
pub use extract::{ApiTarget, RequestedPlayer};
pub use hub::{
    AckOutcome, Audience, Backplane, BackplaneError, BackplaneState, BackplaneStatus, Census,
    ClusterFigures, ConnectionGuard, DeliveryReport, DeliverySettings, EstablishmentFigures,
    HealthCount, HealthTrends, HeartbeatSettings, Hub, HubAdmission, HubEvent, HubSettings,
    NodeDelivery, Outbox, Performance, Presence, RegisterError, Registration, SessionBegun,
    SessionInfo, SHUTDOWN_GRACE,
};
pub use inbound::{ClientMessage, InboundSettings, MessageHandler};
pub use limits::ServeSettings;
pub use message::{Frame, Message};
#[cfg(feature = "redis")]
pub use redis_backplane::{RedisBackplane, RedisSettings};
pub use serve::{serve, serve_with_settings};
pub use service::{
    Admitted, Dualcast, DualcastBuilder, DualcastLayer, Endpoints, Handlers, NotFound,
};
pub use sse::{SseHandler, SseSettings};
pub use ws::{WebSocketHandler, WebSocketSettings};

pub use dualcast_layers;
pub use dualcast_layers::jwt;
pub use dualcast_layers::metrics::{Metrics, MetricsLayer, Observer};
pub use dualcast_layers::session::{ResolveSession, Session, SessionLayer, SessionRefused};
pub use dualcast_layers::{
    Auth, AuthError, AuthErrorKind, AuthLayer, Authenticate, ConnectionTracker, CredentialSource,
    Identify, Identity, JwtAuthenticator, Leases, NoHook, NoTokens, OwnedLeases, Role, Track,
    TrackLayer,
};
/// The metrics library whose `Registry` `GET /metrics` serves.
pub use prometheus_client;

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
