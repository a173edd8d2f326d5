//! The host's handler of client messages.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use serde_json::value::RawValue;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceExt};

use super::parse::InboundError;
use crate::connection::ConnectionId;
use crate::error::ErrorType;
use crate::hub::Hub;
use crate::message::Message;
use dualcast_layers::Role;

/// The error of a host's handler: any error, logged and never told to the client.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How a client message arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A WebSocket text frame.
    WebSocket,
    /// `POST /api/messages`.
    Http,
}

/// Who sent a client message, and how: the same for every message of one connection.
#[derive(Debug, Clone)]
pub(crate) struct MessageOrigin {
    pub(crate) player_id: Arc<str>,
    pub(crate) role: Role,
    pub(crate) connection_id: Option<ConnectionId>,
    pub(crate) session_id: Option<Arc<str>>,
    pub(crate) transport: Transport,
}

/// A client message for the host's handler.
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

impl ClientMessage {
    /// A message from `origin`, with the parts [`parse`](super::parse) checked.
    pub(crate) fn new(
        hub: Hub,
        origin: MessageOrigin,
        message_type: Box<str>,
        version: u32,
        id: Option<Box<str>>,
        data: Box<RawValue>,
    ) -> Self {
        let MessageOrigin {
            player_id,
            role,
            connection_id,
            session_id,
            transport,
        } = origin;
        Self {
            hub,
            player_id,
            role,
            connection_id,
            session_id,
            transport,
            message_type,
            version,
            id,
            data,
        }
    }

    /// The hub the message arrived through, to publish with. Take it from here rather than
    /// capturing a [`Hub`] in the handler: the handler is stored in the hub, so a captured
    /// hub would be a reference cycle that keeps both alive forever.
    #[must_use]
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// The sender's player id.
    #[must_use]
    pub fn player_id(&self) -> &str {
        &self.player_id
    }

    /// The sender's role.
    #[must_use]
    pub fn role(&self) -> Role {
        self.role
    }

    /// The sender's connection; for `POST /api/messages`, the connection the message is
    /// attributed to, if any.
    #[must_use]
    pub fn connection_id(&self) -> Option<ConnectionId> {
        self.connection_id
    }

    /// The sender's session, if it named one.
    #[must_use]
    pub fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }

    /// How the message arrived.
    #[must_use]
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// The message's `type`.
    #[must_use]
    pub fn message_type(&self) -> &str {
        &self.message_type
    }

    /// The message's schema version `v`.
    #[must_use]
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The client's `id`, if it sent one; replies should carry it.
    #[must_use]
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// The `data`, as the client sent it (`null` when absent).
    #[must_use]
    pub fn data(&self) -> &RawValue {
        &self.data
    }

    /// The `data` deserialized as `T`.
    pub fn data_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.data.get())
    }

    /// An `error` envelope's message answering this message (carrying its id), for a handler
    /// that refuses it.
    #[must_use]
    pub fn error_reply(
        &self,
        error_type: ErrorType,
        code: &'static str,
        message: impl Into<String>,
    ) -> Message {
        InboundError::new(error_type, code, message)
            .with_id(self.id.clone())
            .to_message()
    }
}

impl fmt::Debug for ClientMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientMessage")
            .field("player_id", &self.player_id)
            .field("role", &self.role)
            .field("connection_id", &self.connection_id)
            .field("session_id", &self.session_id)
            .field("transport", &self.transport)
            .field("message_type", &self.message_type)
            .field("version", &self.version)
            .field("id", &self.id)
            .field("data_len", &self.data.get().len())
            .finish_non_exhaustive()
    }
}

/// The host's handler, type-erased: any `tower::Service<ClientMessage, Response =
/// Option<Message>>`.
///
/// Its reply, if any, goes back to the sender. When it fails, its error is logged and the
/// sender gets a `system_error` / `HANDLER_FAILED` envelope carrying the message's id.
#[derive(Clone)]
pub struct MessageHandler {
    service: BoxCloneSyncService<ClientMessage, Option<Message>, BoxError>,
}

impl fmt::Debug for MessageHandler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MessageHandler")
    }
}

impl MessageHandler {
    /// A handler over any cloneable `tower::Service`; each message is handled by a clone.
    pub fn new<S>(service: S) -> Self
    where
        S: Service<ClientMessage, Response = Option<Message>> + Clone + Send + Sync + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
    {
        Self {
            service: BoxCloneSyncService::new(service.map_err(Into::into)),
        }
    }

    /// A handler over an async function that cannot fail.
    pub fn from_fn<F, Fut>(handler: F) -> Self
    where
        F: Fn(ClientMessage) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Option<Message>> + Send + 'static,
    {
        Self::new(tower::service_fn(move |message: ClientMessage| {
            let reply = handler(message);
            async move { Ok::<_, Infallible>(reply.await) }
        }))
    }

    /// Calls the handler: its reply, or the error envelope to send.
    pub async fn call(&self, message: ClientMessage) -> Option<Message> {
        let player_id = Arc::clone(&message.player_id);
        let message_type = message.message_type.clone();
        let id = message.id.clone();
        match self.service.clone().oneshot(message).await {
            Ok(reply) => reply,
            Err(error) => {
                tracing::warn!(
                    player_id = &*player_id,
                    message_type = &*message_type,
                    "message handler failed: {error}"
                );
                Some(InboundError::handler_failed().with_id(id).to_message())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::task::{Context, Poll};

    use super::*;

    fn message(id: Option<&str>, data: &str) -> ClientMessage {
        ClientMessage::new(
            Hub::new(),
            MessageOrigin {
                player_id: Arc::from("alice"),
                role: Role::Player,
                connection_id: Some(ConnectionId(7)),
                session_id: Some(Arc::from("s-1")),
                transport: Transport::WebSocket,
            },
            "chat".into(),
            1,
            id.map(Into::into),
            RawValue::from_string(data.to_owned()).unwrap(),
        )
    }

    fn assert_send<T: Send>(_: &T) {}

    fn error_data(reply: Option<Message>) -> serde_json::Value {
        let reply = reply.expect("an error envelope");
        assert_eq!(reply.message_type(), "error");
        serde_json::from_str(reply.data().get()).unwrap()
    }

    #[tokio::test]
    async fn handler_reply_comes_back() {
        let handler = MessageHandler::from_fn(|message: ClientMessage| async move {
            Some(Message::raw("echo", message.data().to_owned()))
        });
        let call = handler.call(message(Some("m-1"), r#"{"text":"hi"}"#));
        assert_send(&call);
        let reply = call.await.expect("a reply");
        assert_eq!(reply.message_type(), "echo");
        assert_eq!(reply.data().get(), r#"{"text":"hi"}"#);
    }

    #[tokio::test]
    async fn handler_without_reply_gives_none() {
        let handler = MessageHandler::from_fn(|_: ClientMessage| async { None });
        assert!(handler.call(message(None, "null")).await.is_none());
    }

    #[tokio::test]
    async fn failing_service_gives_handler_failed_with_the_id() {
        let handler = MessageHandler::new(tower::service_fn(|_: ClientMessage| async {
            Err::<Option<Message>, _>("database is down")
        }));
        let data = error_data(handler.call(message(Some("m-2"), "{}")).await);
        assert_eq!(data["error_type"], "system_error");
        assert_eq!(data["error_code"], "HANDLER_FAILED");
        assert_eq!(data["id"], "m-2");
        assert!(!data["message"].as_str().unwrap().contains("database"));
    }

    #[derive(Clone)]
    struct NeverReady;

    impl Service<ClientMessage> for NeverReady {
        type Response = Option<Message>;
        type Error = std::io::Error;
        type Future = std::future::Ready<Result<Option<Message>, std::io::Error>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Err(std::io::Error::other("overloaded")))
        }

        fn call(&mut self, _: ClientMessage) -> Self::Future {
            std::future::ready(Ok(None))
        }
    }

    #[tokio::test]
    async fn failing_readiness_gives_handler_failed() {
        let handler = MessageHandler::new(NeverReady);
        let data = error_data(handler.call(message(None, "{}")).await);
        assert_eq!(data["error_code"], "HANDLER_FAILED");
        assert!(data.get("id").is_none());
    }

    #[test]
    fn accessors_and_data_as() {
        #[derive(serde::Deserialize)]
        struct Chat {
            text: String,
        }
        let message = message(Some("m-3"), r#"{"text":"hello"}"#);
        assert_eq!(message.player_id(), "alice");
        assert_eq!(message.role(), Role::Player);
        assert_eq!(message.connection_id(), Some(ConnectionId(7)));
        assert_eq!(message.session_id(), Some("s-1"));
        assert_eq!(message.transport(), Transport::WebSocket);
        assert_eq!(message.message_type(), "chat");
        assert_eq!(message.version(), 1);
        assert_eq!(message.id(), Some("m-3"));
        assert_eq!(message.data_as::<Chat>().unwrap().text, "hello");
        assert!(message.data_as::<Vec<u8>>().is_err());
        assert_eq!(message.hub().connection_count(), 0);
    }

    #[test]
    fn error_reply_carries_the_id() {
        let message = message(Some("m-4"), "{}");
        let data = error_data(Some(message.error_reply(
            ErrorType::AuthorizationError,
            "NOT_YOUR_TURN",
            "wait for your turn",
        )));
        assert_eq!(data["error_type"], "authorization_error");
        assert_eq!(data["error_code"], "NOT_YOUR_TURN");
        assert_eq!(data["message"], "wait for your turn");
        assert_eq!(data["id"], "m-4");
    }

    #[test]
    fn debug_does_not_print_the_data() {
        let debug = format!("{:?}", message(None, r#"{"secret":"hunter2"}"#));
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("data_len: 20"), "{debug}");
        assert!(debug.contains("alice"));
    }
}
