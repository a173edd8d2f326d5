//! Parsing and validating one client message.
//!
//! One `serde_json` pass over a borrowed envelope: `type`, `v` and `id` are taken as raw JSON
//! and checked one by one, so a wrong JSON type there is told as that field's error rather
//! than as bad JSON; `data` is kept as the client sent it, never re-serialized.

use std::fmt;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::ErrorType;
use crate::message::{Message, MAX_TYPE_LEN};

/// The longest client `id` (and acknowledged envelope id), in bytes.
const MAX_ID_LEN: usize = 128;

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
        Self {
            error_type,
            code,
            message: message.into(),
            id: None,
        }
    }

    /// `validation_error` / `BINARY_NOT_SUPPORTED`: a WebSocket binary frame.
    pub fn binary_frame() -> Self {
        Self::validation(
            "BINARY_NOT_SUPPORTED",
            "binary frames are not accepted; send JSON text frames",
        )
    }

    /// `validation_error` / `MESSAGE_TOO_LARGE`: a message of `size` bytes, past `max`.
    pub fn too_large(size: usize, max: usize) -> Self {
        Self::validation(
            "MESSAGE_TOO_LARGE",
            format!("the message is {size} bytes; the limit is {max} bytes"),
        )
    }

    /// `rate_limited` / `RATE_LIMITED`: the connection sends faster than its inbound rate.
    pub fn rate_limited() -> Self {
        Self::new(
            ErrorType::RateLimited,
            "RATE_LIMITED",
            "too many messages; slow down",
        )
    }

    /// `rate_limited` / `HANDLER_BUSY`: `max_in_flight` messages of this connection are
    /// already with the host's handler.
    pub fn busy(max_in_flight: u32) -> Self {
        Self::new(
            ErrorType::RateLimited,
            "HANDLER_BUSY",
            format!("{max_in_flight} messages are already being handled for this connection"),
        )
    }

    /// `system_error` / `HANDLER_FAILED`: the host's handler failed (its error is logged,
    /// never told to the client).
    pub fn handler_failed() -> Self {
        Self::new(
            ErrorType::SystemError,
            "HANDLER_FAILED",
            "the server failed to handle the message",
        )
    }

    /// `validation_error` / `UNKNOWN_TYPE`: no handler takes messages of `message_type`.
    pub fn unknown_type(message_type: &str) -> Self {
        Self::validation(
            "UNKNOWN_TYPE",
            format!(
                "no handler for messages of type `{}`",
                truncate_to_char_boundary(message_type, MAX_TYPE_LEN)
            ),
        )
    }

    fn validation(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorType::ValidationError, code, message)
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

    /// The human message.
    #[must_use]
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The id of the client message it answers, when known.
    #[must_use]
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// The `error` envelope's message:
    /// `{"type":"error","data":{"error_type","error_code","message","id"?}}`.
    #[must_use]
    pub fn to_message(&self) -> Message {
        let mut data = serde_json::Map::with_capacity(4);
        data.insert("error_type".into(), self.error_type.as_str().into());
        data.insert("error_code".into(), self.code.into());
        data.insert("message".into(), self.message.as_str().into());
        if let Some(id) = &self.id {
            data.insert("id".into(), (**id).into());
        }
        Message::json("error", serde_json::Value::Object(data))
    }
}

impl fmt::Display for InboundError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for InboundError {}

/// The client envelope as sent; every field is checked by [`parse`].
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow, default)]
    message_type: Option<&'a RawValue>,
    #[serde(borrow, default)]
    v: Option<&'a RawValue>,
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(default)]
    data: Option<Box<RawValue>>,
}

/// The `data` of an `ack`.
#[derive(Deserialize)]
struct AckData {
    id: Box<str>,
}

/// Parses and validates `text` (at most `max_len` bytes, else `MESSAGE_TOO_LARGE`).
///
/// The client's `id` is checked right after the JSON itself, so every later refusal
/// carries it for the client to correlate.
pub fn parse(text: &str, max_len: usize) -> Result<Parsed, InboundError> {
    if text.len() > max_len {
        return Err(InboundError::too_large(text.len(), max_len));
    }
    // A struct also deserializes from a JSON array; only an object is an envelope.
    if !text
        .trim_start_matches([' ', '\t', '\n', '\r'])
        .starts_with('{')
    {
        return Err(InboundError::validation(
            "INVALID_JSON",
            "the message must be a JSON object",
        ));
    }
    let envelope: Envelope<'_> = serde_json::from_str(text).map_err(|error| {
        InboundError::validation(
            "INVALID_JSON",
            format!(
                "the message is not a valid JSON object (line {}, column {})",
                error.line(),
                error.column()
            ),
        )
    })?;

    let id = envelope.id.map(parse_id).transpose()?;
    let with_id = |error: InboundError| error.with_id(id.clone());

    let message_type = parse_type(envelope.message_type).map_err(with_id)?;
    let version = parse_version(envelope.v).map_err(with_id)?;

    match &*message_type {
        "ping" => Ok(Parsed::Ping { id }),
        "ack" => {
            let acknowledged = parse_ack(envelope.data.as_deref()).map_err(with_id)?;
            Ok(Parsed::Ack { id: acknowledged })
        }
        _ => Ok(Parsed::Message {
            message_type,
            version,
            id,
            data: envelope.data.unwrap_or_else(|| RawValue::NULL.to_owned()),
        }),
    }
}

fn parse_id(raw: &RawValue) -> Result<Box<str>, InboundError> {
    let invalid = || {
        InboundError::validation(
            "INVALID_ID",
            format!("`id` must be a string of 1 to {MAX_ID_LEN} printable ASCII characters"),
        )
    };
    let id: Box<str> = serde_json::from_str(raw.get()).map_err(|_| invalid())?;
    let printable = id.bytes().all(|byte| (b' '..=b'~').contains(&byte));
    if id.is_empty() || id.len() > MAX_ID_LEN || !printable {
        return Err(invalid());
    }
    Ok(id)
}

fn parse_type(raw: Option<&RawValue>) -> Result<Box<str>, InboundError> {
    let missing = || InboundError::validation("MISSING_TYPE", "`type` must be a non-empty string");
    let message_type: Box<str> = raw
        .and_then(|raw| serde_json::from_str(raw.get()).ok())
        .ok_or_else(missing)?;
    if message_type.is_empty() {
        return Err(missing());
    }
    let length = message_type.chars().count();
    if length > MAX_TYPE_LEN {
        return Err(InboundError::validation(
            "INVALID_TYPE",
            format!("`type` is {length} characters; the limit is {MAX_TYPE_LEN}"),
        ));
    }
    if message_type.chars().any(char::is_control) {
        return Err(InboundError::validation(
            "INVALID_TYPE",
            "`type` must not contain control characters",
        ));
    }
    Ok(message_type)
}

fn parse_version(raw: Option<&RawValue>) -> Result<u32, InboundError> {
    match raw {
        None => Ok(1),
        // 1, also written `1.0` or `1e0`, as JSON Schema's integers are.
        Some(raw)
            if serde_json::from_str::<serde_json::Number>(raw.get())
                .is_ok_and(|v| v.as_f64() == Some(1.0)) =>
        {
            Ok(1)
        }
        Some(_) => Err(InboundError::validation(
            "UNSUPPORTED_VERSION",
            "unsupported `v`; supported versions: 1",
        )),
    }
}

fn parse_ack(data: Option<&RawValue>) -> Result<Box<str>, InboundError> {
    let invalid = || {
        InboundError::validation(
            "INVALID_ACK",
            format!("an `ack` needs `data.id`, a string of 1 to {MAX_ID_LEN} bytes"),
        )
    };
    let data = data
        .filter(|data| data.get().starts_with('{'))
        .ok_or_else(invalid)?;
    let AckData { id } = serde_json::from_str(data.get()).map_err(|_| invalid())?;
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(invalid());
    }
    Ok(id)
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
fn truncate_to_char_boundary(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 64 * 1024;

    fn error_of(text: &str) -> InboundError {
        match parse(text, MAX) {
            Err(error) => error,
            Ok(parsed) => panic!("{text:?} parsed: {parsed:?}"),
        }
    }

    fn assert_code(text: &str, code: &str) {
        let error = error_of(text);
        assert_eq!(error.code(), code, "{text:?}: {error:?}");
    }

    #[test]
    fn text_over_the_limit_is_too_large_without_parsing() {
        let text = format!(r#"{{"type":"a","data":"{}"}}"#, "x".repeat(200 * 1024));
        let error = error_of(&text);
        assert_eq!(error.code(), "MESSAGE_TOO_LARGE");
        assert_eq!(error.error_type(), ErrorType::ValidationError);
        assert!(error.message().contains(&text.len().to_string()));
        assert!(error.message().contains(&MAX.to_string()));
        // Even when it is not JSON at all: the size is checked first.
        assert_code(&"[".repeat(MAX + 1), "MESSAGE_TOO_LARGE");
    }

    #[test]
    fn not_json_or_not_an_object_is_invalid_json() {
        for text in [
            "",
            "   ",
            "x",
            "[]",
            r#""x""#,
            "5",
            "null",
            "{",
            r#"{"type":"a""#,
        ] {
            let error = error_of(text);
            assert_eq!(error.code(), "INVALID_JSON", "{text:?}");
            assert_eq!(error.id(), None);
        }
        assert_code(r#"["a", 1, "x", null]"#, "INVALID_JSON");
        assert_code(r#"{"type":"a"} trailing"#, "INVALID_JSON");
    }

    #[test]
    fn invalid_json_does_not_echo_the_text() {
        let secret = "SECRET-PAYLOAD-THAT-MUST-NOT-BE-ECHOED";
        let error = error_of(&format!(r#"{{"type":"a","data":{secret}}}"#));
        assert_eq!(error.code(), "INVALID_JSON");
        assert!(!error.message().contains("SECRET"), "{}", error.message());
    }

    #[test]
    fn missing_non_string_or_empty_type_is_missing_type() {
        for text in [
            "{}",
            r#"{"type":5}"#,
            r#"{"type":""}"#,
            r#"{"type":null}"#,
            r#"{"type":{"a":1}}"#,
        ] {
            assert_code(text, "MISSING_TYPE");
        }
    }

    #[test]
    fn long_type_or_control_characters_are_invalid_type() {
        assert_code(
            &format!(r#"{{"type":"{}"}}"#, "a".repeat(MAX_TYPE_LEN + 1)),
            "INVALID_TYPE",
        );
        assert_code(r#"{"type":"a\u0007b"}"#, "INVALID_TYPE");
        assert_code(r#"{"type":"a\nb"}"#, "INVALID_TYPE");
        let longest = format!(r#"{{"type":"{}"}}"#, "a".repeat(MAX_TYPE_LEN));
        assert!(matches!(parse(&longest, MAX), Ok(Parsed::Message { .. })));
    }

    #[test]
    fn version_other_than_one_is_unsupported() {
        for text in [
            r#"{"type":"a","v":2}"#,
            r#"{"type":"a","v":"1"}"#,
            r#"{"type":"a","v":1.5}"#,
            r#"{"type":"a","v":0}"#,
        ] {
            let error = error_of(text);
            assert_eq!(error.code(), "UNSUPPORTED_VERSION", "{text:?}");
            assert!(error.message().contains('1'));
        }
        for text in [
            r#"{"type":"a","v":1}"#,
            r#"{"type":"a"}"#,
            r#"{"type":"a","v":1.0}"#,
            r#"{"type":"a","v":1e0}"#,
        ] {
            match parse(text, MAX) {
                Ok(Parsed::Message { version, .. }) => assert_eq!(version, 1),
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn bad_id_is_invalid_id_without_an_id() {
        for text in [
            r#"{"type":"a","id":7}"#,
            r#"{"type":"a","id":""}"#,
            r#"{"type":"a","id":"tab\there"}"#,
            r#"{"type":"a","id":"é"}"#,
            &format!(r#"{{"type":"a","id":"{}"}}"#, "i".repeat(MAX_ID_LEN + 1)),
        ] {
            let error = error_of(text);
            assert_eq!(error.code(), "INVALID_ID", "{text:?}");
            assert_eq!(error.id(), None);
        }
        let longest = format!(r#"{{"type":"a","id":"{}"}}"#, "i".repeat(MAX_ID_LEN));
        assert!(matches!(parse(&longest, MAX), Ok(Parsed::Message { .. })));
    }

    #[test]
    fn errors_after_a_valid_id_carry_it() {
        for (text, code) in [
            (r#"{"id":"m-1"}"#, "MISSING_TYPE"),
            (r#"{"id":"m-1","type":"a\u0001"}"#, "INVALID_TYPE"),
            (r#"{"id":"m-1","type":"a","v":3}"#, "UNSUPPORTED_VERSION"),
            (r#"{"id":"m-1","type":"ack"}"#, "INVALID_ACK"),
        ] {
            let error = error_of(text);
            assert_eq!(error.code(), code);
            assert_eq!(error.id(), Some("m-1"), "{text:?}");
        }
    }

    #[test]
    fn ping_with_and_without_id() {
        assert!(matches!(
            parse(r#"{"type":"ping"}"#, MAX),
            Ok(Parsed::Ping { id: None })
        ));
        match parse(r#"{"type":"ping","id":"p-1","data":{"x":1}}"#, MAX) {
            Ok(Parsed::Ping { id }) => assert_eq!(id.as_deref(), Some("p-1")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ack_needs_data_with_a_string_id() {
        match parse(
            r#"{"type":"ack","data":{"id":"5f3a-42","extra":true}}"#,
            MAX,
        ) {
            Ok(Parsed::Ack { id }) => assert_eq!(&*id, "5f3a-42"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse("{\"type\":\"ack\",\"data\":\n {\"id\":\"x\"}}", MAX),
            Ok(Parsed::Ack { .. })
        ));
        for text in [
            r#"{"type":"ack"}"#,
            r#"{"type":"ack","data":null}"#,
            r#"{"type":"ack","data":"5f3a-42"}"#,
            r#"{"type":"ack","data":["5f3a-42"]}"#,
            r#"{"type":"ack","data":{}}"#,
            r#"{"type":"ack","data":{"id":42}}"#,
            r#"{"type":"ack","data":{"id":""}}"#,
            &format!(
                r#"{{"type":"ack","data":{{"id":"{}"}}}}"#,
                "i".repeat(MAX_ID_LEN + 1)
            ),
        ] {
            assert_code(text, "INVALID_ACK");
        }
    }

    #[test]
    fn message_keeps_data_byte_for_byte_and_ignores_unknown_fields() {
        let data = "{ \"b\" : [1, 2.50, \"\\u00e9\"],\n  \"a\": {} }";
        let text = format!(r#"{{"type":"chat","future":{{"x":1}},"id":"c-1","data":{data}}}"#);
        match parse(&text, MAX) {
            Ok(Parsed::Message {
                message_type,
                version,
                id,
                data: parsed,
            }) => {
                assert_eq!(&*message_type, "chat");
                assert_eq!(version, 1);
                assert_eq!(id.as_deref(), Some("c-1"));
                assert_eq!(parsed.get(), data);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn absent_data_is_null() {
        match parse(r#"{"type":"chat"}"#, MAX) {
            Ok(Parsed::Message { data, id, .. }) => {
                assert_eq!(data.get(), "null");
                assert_eq!(id, None);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn escaped_type_is_decoded() {
        match parse(r#"{"type":"ch\u0061t"}"#, MAX) {
            Ok(Parsed::Message { message_type, .. }) => assert_eq!(&*message_type, "chat"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn error_envelope_shape() {
        let message = error_of(r#"{"type":"a","id":"m-7","v":9}"#).to_message();
        assert_eq!(message.message_type(), "error");
        let data: serde_json::Value = serde_json::from_str(message.data().get()).unwrap();
        assert_eq!(data["error_type"], "validation_error");
        assert_eq!(data["error_code"], "UNSUPPORTED_VERSION");
        assert!(data["message"]
            .as_str()
            .unwrap()
            .contains("supported versions: 1"));
        assert_eq!(data["id"], "m-7");

        let message = error_of("[]").to_message();
        let data: serde_json::Value = serde_json::from_str(message.data().get()).unwrap();
        assert_eq!(data["error_code"], "INVALID_JSON");
        assert!(data.get("id").is_none());
        assert_eq!(data.as_object().unwrap().len(), 3);
    }

    #[test]
    fn transport_constructors() {
        let cases = [
            (
                InboundError::binary_frame(),
                ErrorType::ValidationError,
                "BINARY_NOT_SUPPORTED",
            ),
            (
                InboundError::too_large(70_000, MAX),
                ErrorType::ValidationError,
                "MESSAGE_TOO_LARGE",
            ),
            (
                InboundError::rate_limited(),
                ErrorType::RateLimited,
                "RATE_LIMITED",
            ),
            (
                InboundError::busy(8),
                ErrorType::RateLimited,
                "HANDLER_BUSY",
            ),
            (
                InboundError::handler_failed(),
                ErrorType::SystemError,
                "HANDLER_FAILED",
            ),
            (
                InboundError::unknown_type("chat"),
                ErrorType::ValidationError,
                "UNKNOWN_TYPE",
            ),
        ];
        for (error, error_type, code) in cases {
            assert_eq!(error.error_type(), error_type);
            assert_eq!(error.code(), code);
            assert_eq!(error.to_string(), error.message());
            let data: serde_json::Value =
                serde_json::from_str(error.to_message().data().get()).unwrap();
            assert_eq!(data["error_type"], error_type.as_str());
            assert_eq!(data["error_code"], code);
        }
        assert!(InboundError::busy(8).message().starts_with("8 messages"));
        assert!(InboundError::too_large(70_000, MAX)
            .message()
            .contains("70000"));
        assert!(InboundError::unknown_type("chat")
            .message()
            .contains("`chat`"));
    }

    #[test]
    fn unknown_type_caps_the_echoed_type() {
        let long = "é".repeat(MAX_TYPE_LEN);
        let error = InboundError::unknown_type(&long);
        let echoed = error.message().matches('é').count();
        assert_eq!(echoed, MAX_TYPE_LEN / 2);
    }
}
