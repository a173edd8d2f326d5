//! Client messages arriving at the hub (SPEC §6): one path for WebSocket frames and
//! `POST /api/messages` bodies.
//!
//! Each message first takes a token from its connection's [`InboundBudget`] (a flood is
//! refused with `rate_limited`, and sustained abuse ends the connection with
//! `protocol_error`), then is [parsed](crate::inbound::parse). The reserved `ping` is
//! answered with `pong` here; `ack` settles a message awaiting acknowledgement (and, if it
//! did, gives its rate token back); every other type goes to the host's
//! [`MessageHandler`](crate::inbound::MessageHandler), at most
//! [`InboundSettings::max_in_flight`](crate::inbound::InboundSettings) at once per
//! connection.

use crate::queue::SendError;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use serde_json::json;

use super::Hub;
use crate::connection::{Connection, ConnectionId, ConnectionKind, DisconnectReason};
use crate::inbound::{
    parse, ClientMessage, InboundError, MessageOrigin, Parsed, Transport, Verdict,
};
use crate::message::{Frame, Message};

/// What a client sent, as the transport read it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Content<'a> {
    /// A text frame or a request body.
    Text(&'a str),
    /// A binary frame.
    Binary,
    /// A frame over the transport's size limit, discarded unread.
    Oversized {
        /// Its size in bytes.
        size: u64,
        /// The limit it broke.
        limit: usize,
    },
}

/// The reply the host's handler is working on.
pub(crate) type Handling = Pin<Box<dyn Future<Output = Option<Message>> + Send>>;

/// What the hub made of one client message.
pub(crate) enum Received {
    /// Answer at once (a `pong`).
    Reply(Message),
    /// Refused: answer with the error.
    Refused(InboundError),
    /// The host's handler is working on it: its reply, if any, comes later.
    Handling(Handling),
    /// Taken, and nothing to answer.
    Taken,
    /// Abuse past the rate limit: the connection ended with `protocol_error`.
    Ended,
}

impl Hub {
    /// Takes one client message of `connection`.
    pub(crate) fn receive(
        &self,
        connection: &Arc<Connection>,
        content: Content<'_>,
        transport: Transport,
    ) -> Received {
        let settings = &self.inner.settings.inbound;
        let verdict = connection
            .inbound
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take(settings, connection.elapsed());
        match verdict {
            Verdict::Accept => {}
            Verdict::Refuse => return Received::Refused(InboundError::rate_limited()),
            Verdict::End => {
                if self.end_connection(connection, DisconnectReason::ProtocolError) {
                    tracing::info!(
                        connection_id = %connection.id,
                        player_id = &*connection.player_id,
                        "client kept sending past its rate limit: connection ended"
                    );
                }
                return Received::Ended;
            }
        }
        let text = match content {
            Content::Text(text) => text,
            Content::Binary => return Received::Refused(InboundError::binary_frame()),
            Content::Oversized { size, limit } => {
                let size = usize::try_from(size).unwrap_or(usize::MAX);
                return Received::Refused(InboundError::too_large(size, limit));
            }
        };
        let (message_type, version, id, data) = match parse(text, settings.max_message_size) {
            Err(error) => return Received::Refused(error),
            Ok(Parsed::Ping { id }) => {
                return Received::Reply(Message::json("pong", json!({ "id": id })));
            }
            Ok(Parsed::Ack { id }) => {
                if self.acknowledge(connection, &id) {
                    // Acks of what the server asked for do not count against the rate: a
                    // client receiving many such messages must be able to ack them all.
                    connection
                        .inbound
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .refund(settings);
                }
                return Received::Taken;
            }
            Ok(Parsed::Message {
                message_type,
                version,
                id,
                data,
            }) => (message_type, version, id, data),
        };
        let Some(handler) = self.message_handler().cloned() else {
            return Received::Refused(InboundError::unknown_type(&message_type).with_id(id));
        };
        let max = settings.max_in_flight;
        let limit = u16::try_from(max).unwrap_or(u16::MAX);
        if connection.in_flight.fetch_add(1, Ordering::AcqRel) >= limit {
            connection.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Received::Refused(InboundError::busy(max).with_id(id));
        }
        let in_flight = InFlight(connection.clone());
        let origin = MessageOrigin {
            player_id: connection.player_id.clone(),
            role: connection.role,
            connection_id: Some(connection.id),
            session_id: connection.session_id.clone(),
            transport,
        };
        let message = ClientMessage::new(self.clone(), origin, message_type, version, id, data);
        Received::Handling(Box::pin(async move {
            let reply = handler.call(message).await;
            drop(in_flight);
            reply
        }))
    }

    /// The limits on client messages.
    pub(crate) fn inbound_limits(&self) -> &crate::inbound::InboundSettings {
        &self.inner.settings.inbound
    }

    /// The live connection of `player_id` a client message over HTTP is attributed to:
    /// `named` if given (and the player's), else its newest SSE stream, else its newest
    /// connection.
    pub(crate) fn sender_connection(
        &self,
        player_id: &str,
        named: Option<ConnectionId>,
    ) -> Option<Arc<Connection>> {
        let registry = self.read();
        let connections = &registry.players.get(player_id)?.connections;
        let live = || {
            connections
                .iter()
                .rev()
                .filter(|c| c.end_reason().is_none())
        };
        let found = match named {
            Some(id) => live().find(|c| c.id == id),
            None => live()
                .find(|c| c.kind == ConnectionKind::Sse)
                .or_else(|| live().next()),
        };
        found.cloned()
    }

    /// `message` in a fresh reply envelope of this hub (`"reply": true`).
    pub(crate) fn reply_envelope(&self, message: &Message) -> Frame {
        Frame::encode_reply(self.next_id(), message)
    }

    /// Sends `message` to `connection` alone, in a fresh envelope (a reply to what it
    /// sent). A full outbox ends it as a slow consumer, as a publish would.
    pub(crate) fn reply(&self, connection: &Connection, message: &Message) {
        if connection.end_reason().is_some() {
            return;
        }
        let frame = self.reply_envelope(message);
        match connection.outbox.try_send(frame) {
            Ok(_) => {}
            Err(SendError::Full) => {
                if let Some(observer) = self.observer() {
                    observer.outbox_overflow();
                }
                if self.end_connection(connection, DisconnectReason::SlowConsumer) {
                    tracing::info!(
                        connection_id = %connection.id,
                        player_id = &*connection.player_id,
                        "outbox full as a reply was queued: connection ended"
                    );
                }
            }
            Err(SendError::Closed) => {}
        }
    }
}

/// One message in the host's handler; counted out when dropped (also if the reply's future
/// is dropped unfinished).
struct InFlight(Arc<Connection>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}
