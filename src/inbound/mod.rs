//! Client-to-server messages (SPEC §6): what a client may send, how it is checked, and the
//! host's handler.
//!
//! A client sends text frames (WebSocket) or `POST /api/messages` bodies (SSE-only clients)
//! carrying `{ "type", "v"?, "id"?, "data"? }`. [`parse`] checks one; [`InboundBudget`] is the
//! per-connection rate limit; [`ClientMessage`] is what the host's [`MessageHandler`] sees.
//! What goes wrong is an [`InboundError`], told to the client as an `error` envelope.
//!
//! ```
//! use dualcast::inbound::{parse, InboundError, MessageHandler, Parsed};
//! use dualcast::Message;
//!
//! // A valid message, for the host's handler; `data` is kept as it was sent.
//! let parsed = parse(r#"{"type":"chat","id":"m-1","data":{"text":"hi"}}"#, 64 * 1024);
//! let Ok(Parsed::Message { message_type, id, data, .. }) = parsed else {
//!     panic!("a valid message");
//! };
//! assert_eq!(&*message_type, "chat");
//! assert_eq!(id.as_deref(), Some("m-1"));
//! assert_eq!(data.get(), r#"{"text":"hi"}"#);
//!
//! // A refused one: the client gets an `error` envelope carrying its id.
//! let error = parse(r#"{"type":"chat","id":"m-2","v":9}"#, 64 * 1024).unwrap_err();
//! assert_eq!(error.code(), "UNSUPPORTED_VERSION");
//! let envelope: Message = error.to_message();
//! assert_eq!(envelope.message_type(), "error");
//! let data: serde_json::Value = serde_json::from_str(envelope.data().get()).unwrap();
//! assert_eq!(data["error_type"], "validation_error");
//! assert_eq!(data["id"], "m-2");
//!
//! // The host's handler: an echo of every message back to its sender.
//! let handler = MessageHandler::from_fn(|message| async move {
//!     Some(Message::raw(message.message_type(), message.data().to_owned()))
//! });
//! # let _ = handler;
//! # let _: InboundError = InboundError::rate_limited();
//! ```

mod budget;
mod handler;
mod parse;

pub use budget::{InboundBudget, InboundSettings, Verdict};
pub(crate) use handler::MessageOrigin;
pub use handler::{ClientMessage, MessageHandler, Transport};
pub use parse::{parse, InboundError, Parsed};
