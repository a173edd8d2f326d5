//! The host's handler of client messages.

use std::sync::Arc;

use serde_json::value::RawValue;

use crate::connection::ConnectionId;
use crate::hub::Hub;
use crate::message::Message;
use dualcast_layers::Role;

/// How a client message arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A WebSocket text frame.
    WebSocket,
    /// `POST /api/messages`.
    Http,
}

/// A client message for the host's handler.
#[derive(Debug)]
pub struct ClientMessage {
    pub(crate) hub: Hub,
    pub(crate) player_id: Arc<str>,
    pub(crate) role: Role,
    pub(crate) connection_id: Option<ConnectionId>,
    pub(crate) session_id: Option<Arc<str>>,
    pub(crate) transport: Transport,
    pub(crate) message_type: Box<str>,
    pub(crate) version: u32,
    pub(crate) id: Option<Box<str>>,
    pub(crate) data: Box<RawValue>,
}

/// The host's handler, type-erased: any `tower::Service<ClientMessage, Response =
/// Option<Message>>`.
#[derive(Clone)]
pub struct MessageHandler {
    _private: (),
}

impl std::fmt::Debug for MessageHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MessageHandler")
    }
}

impl MessageHandler {
    /// Calls the handler: its reply, or the error envelope to send.
    pub async fn call(&self, message: ClientMessage) -> Option<Message> {
        let _ = message;
        todo!()
    }
}
