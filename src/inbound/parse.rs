//! Parsing and validating one client message.

use serde_json::value::RawValue;

use crate::error::ErrorType;
use crate::message::Message;

/// A client message that passed validation.
#[derive(Debug)]
pub enum Parsed {
    /// The reserved `ping`: answered with a `pong` envelope whose data is `{"id": <the
    /// client's id or null>}`.
    Ping {
        /// The client's `id`, if it sent one.
        id: Option<Box<str>>,
    },
    /// The reserved `ack` with `data.id` (handled by the delivery-guarantees work).
    Ack {
        /// The envelope id acknowledged.
        id: Box<str>,
    },
    /// Anything else: for the host's handler.
    Message {
        /// `type`.
        message_type: Box<str>,
        /// `v` (1 when absent).
        version: u32,
        /// The client's `id`, if it sent one.
        id: Option<Box<str>>,
        /// `data` (`null` when absent).
        data: Box<RawValue>,
    },
}

/// Why a client message was refused; told to the client as an `error` envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundError {
    error_type: ErrorType,
    code: &'static str,
    message: String,
    id: Option<Box<str>>,
}

impl InboundError {
    /// A refusal of `error_type` with the stable `code` and a human `message`.
    pub fn new(error_type: ErrorType, code: &'static str, message: impl Into<String>) -> Self {
        Self { error_type, code, message: message.into(), id: None }
    }

    /// The id of the client message it answers, when known.
    #[must_use]
    pub fn with_id(mut self, id: Option<Box<str>>) -> Self {
        self.id = id;
        self
    }

    /// The SPEC `error_type`.
    #[must_use]
    pub fn error_type(&self) -> ErrorType {
        self.error_type
    }

    /// The stable `error_code`, e.g. `INVALID_JSON`.
    #[must_use]
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The `error` envelope's message:
    /// `{"type":"error","data":{"error_type","error_code","message","id"?}}`.
    #[must_use]
    pub fn to_message(&self) -> Message {
        todo!()
    }
}

/// Parses and validates `text` (at most `max_len` bytes, else `MESSAGE_TOO_LARGE`).
pub fn parse(text: &str, max_len: usize) -> Result<Parsed, InboundError> {
    let _ = (text, max_len);
    todo!()
}
