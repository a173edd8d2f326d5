//! Messages, and the envelope every server-to-client message travels in (SPEC §4).
//!
//! A [`Message`] is what a host publishes: a `type`, a schema version `v` and JSON `data`.
//! The [`Hub`](crate::Hub) wraps it in an envelope once per publish,
//!
//! ```json
//! {"id":"5f3a9c1e-42","type":"chat","v":1,"ts":1767729300000,"room":"lobby","data":{…}}
//! ```
//!
//! and every recipient gets the same bytes: the `id` is unique in the hub and starts with
//! the hub's epoch, so a client can tell a restarted server apart; `room` is present when
//! the message came from a room broadcast.
//!
//! ```
//! use dualcast::Message;
//! use serde_json::json;
//!
//! let message = Message::json("chat", json!({ "text": "hello" })).with_version(2);
//! assert_eq!(message.message_type(), "chat");
//! assert_eq!(message.version(), 2);
//! assert_eq!(message.data().get(), r#"{"text":"hello"}"#);
//! ```

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// The longest message `type`, in bytes.
pub const MAX_TYPE_LEN: usize = 128;

/// A message to publish: type, schema version and JSON data.
#[derive(Debug, Clone)]
pub struct Message {
    message_type: Box<str>,
    version: u32,
    data: Box<RawValue>,
}

impl Message {
    /// A message of `message_type` carrying `data`, at schema version 1.
    #[must_use]
    pub fn json(message_type: impl Into<Box<str>>, data: serde_json::Value) -> Self {
        let data = serde_json::value::to_raw_value(&data)
            .expect("a serde_json::Value always serializes: its map keys are strings");
        Self::raw(message_type, data)
    }

    /// A message whose data is any serializable value; fails where `serde_json` does
    /// (e.g. a map with non-string keys).
    pub fn serialize<T: Serialize + ?Sized>(
        message_type: impl Into<Box<str>>,
        data: &T,
    ) -> Result<Self, serde_json::Error> {
        Ok(Self::raw(
            message_type,
            serde_json::value::to_raw_value(data)?,
        ))
    }

    /// A message whose data is already-validated JSON; it is embedded as it is.
    #[must_use]
    pub fn raw(message_type: impl Into<Box<str>>, data: Box<RawValue>) -> Self {
        Self {
            message_type: message_type.into(),
            version: 1,
            data,
        }
    }

    /// Sets the schema version `v`. Default: 1.
    #[must_use]
    pub fn with_version(mut self, version: u32) -> Self {
        self.version = version;
        self
    }

    /// The `type`.
    #[must_use]
    pub fn message_type(&self) -> &str {
        &self.message_type
    }

    /// The schema version `v`.
    #[must_use]
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The JSON data.
    #[must_use]
    pub fn data(&self) -> &RawValue {
        &self.data
    }
}

#[derive(Serialize)]
struct Envelope<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    message_type: &'a str,
    v: u32,
    ts: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    room: Option<&'a str>,
    data: &'a RawValue,
}

/// One published message, encoded once for every transport and shared by all recipients.
///
/// Cloning is a reference-count increment.
#[derive(Debug, Clone)]
pub struct Frame {
    inner: Arc<Encoded>,
}

#[derive(Debug)]
struct Encoded {
    id: Arc<str>,
    text: Utf8Bytes,
    sse: Bytes,
}

impl Frame {
    /// Encodes `message` with envelope `id`, the current time and an optional `room`.
    pub(crate) fn encode(id: Arc<str>, message: &Message, room: Option<&str>) -> Self {
        let envelope = Envelope {
            id: &id,
            message_type: &message.message_type,
            v: message.version,
            ts: unix_millis(SystemTime::now()),
            room,
            data: &message.data,
        };
        let json = serde_json::to_string(&envelope)
            .expect("the envelope has string keys and already-valid JSON data");
        // Compact JSON has no raw newline, so one `data:` line carries it.
        let mut sse = Vec::with_capacity(json.len() + id.len() + 12);
        sse.extend_from_slice(b"id: ");
        sse.extend_from_slice(id.as_bytes());
        sse.extend_from_slice(b"\ndata: ");
        sse.extend_from_slice(json.as_bytes());
        sse.extend_from_slice(b"\n\n");
        Self {
            inner: Arc::new(Encoded {
                id,
                text: Utf8Bytes::from(json),
                sse: Bytes::from(sse),
            }),
        }
    }

    /// The envelope `id`.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The envelope as JSON text: the payload of a WebSocket text frame.
    #[must_use]
    pub fn json(&self) -> &str {
        self.inner.text.as_str()
    }

    /// The whole Server-Sent-Events record: `id:` line, `data:` line, blank line.
    #[must_use]
    pub fn sse_event(&self) -> &Bytes {
        &self.inner.sse
    }

    pub(crate) fn shared_id(&self) -> Arc<str> {
        self.inner.id.clone()
    }

    pub(crate) fn websocket_text(&self) -> Utf8Bytes {
        self.inner.text.clone()
    }
}

/// Milliseconds since the Unix epoch (0 before it).
pub(crate) fn unix_millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_encoding_serves_both_transports() {
        let message = Message::json("chat", serde_json::json!({"text": "a\nb"}));
        let frame = Frame::encode("ep-7".into(), &message, Some("lobby"));
        let envelope: serde_json::Value = serde_json::from_str(frame.json()).unwrap();
        assert_eq!(envelope["id"], "ep-7");
        assert_eq!(envelope["type"], "chat");
        assert_eq!(envelope["v"], 1);
        assert_eq!(envelope["room"], "lobby");
        assert_eq!(envelope["data"]["text"], "a\nb");
        let sse = std::str::from_utf8(frame.sse_event()).unwrap();
        assert_eq!(sse, format!("id: ep-7\ndata: {}\n\n", frame.json()));
        assert_eq!(
            sse.matches('\n').count(),
            3,
            "the data line holds the whole envelope"
        );
    }
}
