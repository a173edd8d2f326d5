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
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;

/// The longest message `type`, in characters (Unicode scalar values).
pub const MAX_TYPE_LEN: usize = 128;

/// A message to publish: type, schema version and JSON data.
#[derive(Debug, Clone)]
pub struct Message {
    message_type: Box<str>,
    version: u32,
    data: Box<RawValue>,
    priority: i32,
    ttl: Option<Duration>,
    ack: bool,
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

    /// A message whose data is already-validated JSON. It is embedded as it is, except that
    /// line breaks between tokens are removed: an SSE `data:` line cannot hold them, and
    /// every recipient gets the same bytes.
    #[must_use]
    pub fn raw(message_type: impl Into<Box<str>>, data: Box<RawValue>) -> Self {
        Self {
            message_type: message_type.into(),
            version: 1,
            data: without_line_breaks(data),
            priority: 0,
            ttl: None,
            ack: false,
        }
    }

    /// Sets the schema version `v`. Default: 1.
    #[must_use]
    pub fn with_version(mut self, version: u32) -> Self {
        self.version = version;
        self
    }

    /// Sets the priority in a player's pending queue (SPEC §4): while a player has no live
    /// connection, higher priorities are delivered first on its next connect, and in
    /// publish order within one priority; a full queue drops its lowest priority first.
    /// Default: 0.
    #[must_use]
    pub fn with_priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Sets how long the message may wait to be delivered: in a player's pending queue,
    /// in its replay buffer, and while it is resent for an acknowledgement. Default: the
    /// hub's [`DeliverySettings::message_ttl`](crate::hub::DeliverySettings::message_ttl).
    #[must_use]
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Asks for an acknowledgement (SPEC §4): the message is resent to every live
    /// connection of each recipient, with backoff, until a client acks its envelope id
    /// (`{"type":"ack","data":{"id":…}}`) or its TTL ends. Default: off.
    #[must_use]
    pub fn with_ack(mut self, ack: bool) -> Self {
        self.ack = ack;
        self
    }

    /// The priority in a pending queue.
    #[must_use]
    pub fn priority(&self) -> i32 {
        self.priority
    }

    /// The TTL set with [`with_ttl`](Self::with_ttl), if any.
    #[must_use]
    pub fn ttl(&self) -> Option<Duration> {
        self.ttl
    }

    /// Whether an acknowledgement is asked for.
    #[must_use]
    pub fn wants_ack(&self) -> bool {
        self.ack
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

/// `data` with every `\n` and `\r` outside strings removed. Inside a JSON string they are
/// always escaped, so what remains is the same JSON value.
fn without_line_breaks(data: Box<RawValue>) -> Box<RawValue> {
    let text = data.get();
    if !text.bytes().any(|b| b == b'\n' || b == b'\r') {
        return data;
    }
    let mut compact = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in text.chars() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        } else if c == '\n' || c == '\r' {
            continue;
        }
        compact.push(c);
    }
    // Removing whitespace between tokens keeps the text valid JSON.
    RawValue::from_string(compact).unwrap_or(data)
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
    /// Present (`true`) when the client should ack the message.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    ack: bool,
    /// Present (`true`) on a reply to what one connection sent: not in the player's
    /// message stream, so not an id to resume from.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    reply: bool,
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
    /// A complete WebSocket text frame: header, then the envelope.
    websocket: Bytes,
    header_len: usize,
    sse: Bytes,
}

impl Frame {
    /// Encodes `message` with envelope `id`, the current time and an optional `room`.
    pub(crate) fn encode(id: Arc<str>, message: &Message, room: Option<&str>) -> Self {
        Self::encode_at(id, message, room, unix_millis(SystemTime::now()))
    }

    /// Encodes `message` as [`encode`](Self::encode) does, with the envelope's `ts` given:
    /// every node of a cluster makes the same bytes of one publish.
    pub(crate) fn encode_at(id: Arc<str>, message: &Message, room: Option<&str>, ts: u64) -> Self {
        Self::encode_as(id, message, room, None, false, ts)
    }

    /// Encodes `message` as a reply to one connection: the envelope says `"reply": true`,
    /// so a client does not take its id for a place to resume from.
    pub(crate) fn encode_reply(id: Arc<str>, message: &Message) -> Self {
        Self::encode_as(
            id,
            message,
            None,
            None,
            true,
            unix_millis(SystemTime::now()),
        )
    }

    /// Encodes `message` for the SSE event `name` (an `event:` line and no `id:` line, so
    /// a browser's `Last-Event-ID` stays that of the last message): what the hub says
    /// about the stream itself, such as `recovery`.
    pub(crate) fn encode_event(id: Arc<str>, message: &Message, name: &str) -> Self {
        Self::encode_as(
            id,
            message,
            None,
            Some(name),
            false,
            unix_millis(SystemTime::now()),
        )
    }

    fn encode_as(
        id: Arc<str>,
        message: &Message,
        room: Option<&str>,
        event: Option<&str>,
        reply: bool,
        ts: u64,
    ) -> Self {
        let envelope = Envelope {
            id: &id,
            message_type: &message.message_type,
            v: message.version,
            ts,
            room,
            data: &message.data,
            ack: message.ack,
            reply,
        };
        let json = serde_json::to_vec(&envelope)
            .expect("the envelope has string keys and already-valid JSON data");
        // The envelope has no raw line break (`Message::raw` removes them from the data),
        // so one `data:` line carries it.
        let mut sse = Vec::with_capacity(json.len() + id.len() + 12);
        match event {
            None => {
                sse.extend_from_slice(b"id: ");
                sse.extend_from_slice(id.as_bytes());
            }
            Some(name) => {
                sse.extend_from_slice(b"event: ");
                sse.extend_from_slice(name.as_bytes());
            }
        }
        sse.extend_from_slice(b"\ndata: ");
        sse.extend_from_slice(&json);
        sse.extend_from_slice(b"\n\n");
        // A server's frames are not masked, so one frame serves every WebSocket.
        let mut websocket = Vec::with_capacity(json.len() + 10);
        websocket.push(0x81); // FIN, text
        match json.len() {
            len @ 0..=125 => websocket.push(len as u8),
            len @ 126..=0xFFFF => {
                websocket.push(126);
                websocket.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                websocket.push(127);
                websocket.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        let header_len = websocket.len();
        websocket.extend_from_slice(&json);
        Self {
            inner: Arc::new(Encoded {
                id,
                websocket: Bytes::from(websocket),
                header_len,
                sse: Bytes::from(sse),
            }),
        }
    }

    /// The envelope `id`.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The envelope as JSON text: the payload of the WebSocket text frame.
    #[must_use]
    pub fn json(&self) -> &str {
        std::str::from_utf8(&self.inner.websocket[self.inner.header_len..])
            .expect("the payload was written by serde_json, which writes UTF-8")
    }

    /// The whole WebSocket text frame (header and payload) carrying the envelope.
    #[must_use]
    pub fn websocket_frame(&self) -> &Bytes {
        &self.inner.websocket
    }

    /// The whole Server-Sent-Events record: `id:` line, `data:` line, blank line.
    #[must_use]
    pub fn sse_event(&self) -> &Bytes {
        &self.inner.sse
    }

    pub(crate) fn shared_id(&self) -> Arc<str> {
        self.inner.id.clone()
    }

    /// Whether both are the same publish (not a copy of it).
    pub(crate) fn same(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
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
    fn line_breaks_between_tokens_cannot_split_an_sse_record() {
        let data =
            RawValue::from_string("{\"a\":\n\n[1,\r\n2],\"s\":\"x\\ny\\\"\\\\\"}".to_owned())
                .unwrap();
        let message = Message::raw("t", data);
        assert_eq!(message.data().get(), r#"{"a":[1,2],"s":"x\ny\"\\"}"#);
        let frame = Frame::encode("e-1".into(), &message, None);
        let sse = std::str::from_utf8(frame.sse_event()).unwrap();
        assert_eq!(sse.matches('\n').count(), 3, "{sse}");
        assert!(!sse.contains('\r'));
    }

    /// A client can tell from the envelope alone what to ack and what not to resume from.
    #[test]
    fn the_envelope_says_when_to_ack_and_when_it_is_a_reply() {
        let flags = |frame: &Frame| {
            let envelope: serde_json::Value = serde_json::from_str(frame.json()).unwrap();
            (envelope.get("ack").cloned(), envelope.get("reply").cloned())
        };
        let plain = Message::json("chat", serde_json::json!({}));
        assert_eq!(
            flags(&Frame::encode("e-1".into(), &plain, None)),
            (None, None)
        );
        let acked = plain.clone().with_ack(true);
        assert_eq!(
            flags(&Frame::encode("e-2".into(), &acked, Some("lobby"))),
            (Some(true.into()), None)
        );
        assert_eq!(
            flags(&Frame::encode_reply("e-3".into(), &plain)),
            (None, Some(true.into()))
        );
    }

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
