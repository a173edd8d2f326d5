//! Client-to-server messages (SPEC §6): what a client may send, how it is checked, and the
//! host's handler.
//!
//! A client sends text frames (WebSocket) or `POST /api/messages` bodies (SSE-only clients)
//! carrying `{ "type", "v"?, "id"?, "data"? }`. [`parse`] checks one; [`InboundBudget`] is the
//! per-connection rate limit; [`ClientMessage`] is what the host's [`MessageHandler`] sees.
//! What goes wrong is an [`InboundError`], told to the client as an `error` envelope.
//!
//! (Interfaces agreed here; filled in by the inbound work.)

mod budget;
mod handler;
mod parse;

pub use budget::{InboundBudget, InboundSettings, Verdict};
pub use handler::{ClientMessage, MessageHandler, Transport};
pub use parse::{parse, InboundError, Parsed};
