//! `POST /api/messages`: a client message for clients that hold only an SSE stream
//! (SPEC §6), handled exactly as a WebSocket text frame would be, with the reply in the
//! HTTP answer.
//!
//! The message counts against the rate limit of one of the sender's live connections: the
//! one named by the `connection_id` query parameter (`c12` or `12`), else its newest SSE
//! stream, else its newest connection. A player with no live connection gets
//! `409 NOT_CONNECTED`. The answer is `200 {"reply": <envelope or null>}`; a refused message
//! is the SPEC error body with the same `error_code` a WebSocket client would get
//! (`400 validation_error`, `429 rate_limited` with `Retry-After`), except that a body over
//! the message size limit is `413 PAYLOAD_TOO_LARGE` as on every other route (it is not
//! read, nor counted against the rate limit).

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Request, StatusCode};
use serde::Serialize;
use serde_json::value::RawValue;

use super::json_response;
use crate::body::ResponseBody;
use crate::connection::ConnectionId;
use crate::error::{ApiError, ErrorType};
use crate::hub::{Content, Hub, Received};
use crate::inbound::{InboundError, Transport};
use crate::message::Message;
use dualcast_layers::query::{has_query_param, query_param};
use dualcast_layers::Identity;

#[derive(Serialize)]
struct Answer<'a> {
    reply: Option<&'a RawValue>,
}

/// The connection `request` names, or the sender's newest SSE stream, or its newest
/// connection.
pub(crate) fn sender_connection<B>(
    hub: &Hub,
    identity: &Identity,
    request: &Request<B>,
) -> Result<Arc<crate::connection::Connection>, ApiError> {
    let invalid = || {
        ApiError::bad_request(
            "INVALID_CONNECTION_ID",
            "connection_id is a connection id such as c12",
        )
    };
    let named = match query_param(request.uri(), "connection_id") {
        // Present but not decodable (a bad escape, not UTF-8): invalid, not absent.
        None if has_query_param(request.uri(), "connection_id") => return Err(invalid()),
        None => None,
        Some(raw) => Some(parse_connection_id(&raw).ok_or_else(invalid)?),
    };
    let player = identity.player_id();
    hub.sender_connection(player, named)
        .ok_or_else(|| match named {
            Some(id) => ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorType::ConnectionError,
                "CONNECTION_NOT_FOUND",
                "the player has no live connection of this id",
            )
            .detail("connection_id", id.to_string()),
            None => ApiError::new(
                StatusCode::CONFLICT,
                ErrorType::ConnectionError,
                "NOT_CONNECTED",
                "client messages need a live connection of the player (open the SSE stream first)",
            )
            .detail("player_id", player),
        })
}

/// `c12` or `12`: digits only (no sign), as the document's pattern says.
fn parse_connection_id(raw: &str) -> Option<ConnectionId> {
    let digits = raw.strip_prefix('c').unwrap_or(raw);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(ConnectionId)
}

/// Handles the body as a client message of `connection`.
pub(crate) async fn post_message(
    hub: &Hub,
    connection: &Arc<crate::connection::Connection>,
    body: &Bytes,
) -> Result<http::Response<ResponseBody>, ApiError> {
    let content = match std::str::from_utf8(body) {
        Ok(text) => Content::Text(text),
        Err(_) => Content::Binary,
    };
    let reply = match hub.receive(connection, content, Transport::Http) {
        Received::Reply(message) => Some(message),
        Received::Refused(error) => return Err(refusal(&error)),
        Received::Handling(reply) => reply.await,
        Received::Taken => None,
        Received::Ended => {
            return Err(refusal(&InboundError::rate_limited())
                .detail("connection_ended", connection.id.to_string()))
        }
    };
    answer(hub, reply.as_ref())
}

fn answer(hub: &Hub, reply: Option<&Message>) -> Result<http::Response<ResponseBody>, ApiError> {
    let Some(message) = reply else {
        return json_response(StatusCode::OK, &Answer { reply: None });
    };
    let frame = hub.reply_envelope(message);
    let envelope: &RawValue = serde_json::from_str(frame.json())
        .map_err(|_| ApiError::system("could not encode the reply"))?;
    json_response(
        StatusCode::OK,
        &Answer {
            reply: Some(envelope),
        },
    )
}

/// The HTTP answer of a refused client message: the same `error_code` a WebSocket client
/// gets in its `error` envelope.
fn refusal(error: &InboundError) -> ApiError {
    let status = match error.error_type() {
        ErrorType::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorType::SystemError => StatusCode::INTERNAL_SERVER_ERROR,
        _ if error.code() == "MESSAGE_TOO_LARGE" => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::BAD_REQUEST,
    };
    let api = ApiError::new(status, error.error_type(), error.code(), error.message());
    if status == StatusCode::TOO_MANY_REQUESTS {
        api.header(header::RETRY_AFTER, HeaderValue::from_static("1"))
    } else {
        api
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_id_is_digits_with_an_optional_c() {
        assert_eq!(parse_connection_id("c12"), Some(ConnectionId(12)));
        assert_eq!(parse_connection_id("12"), Some(ConnectionId(12)));
        for bad in [
            "",
            "c",
            "+5",
            "c+5",
            "-1",
            "1.0",
            "c 1",
            "99999999999999999999",
        ] {
            assert_eq!(parse_connection_id(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn an_undecodable_connection_id_is_invalid_not_absent() {
        let hub = Hub::new();
        let identity = Identity::new("alice", dualcast_layers::Role::Player);
        let request = Request::post("/api/messages?connection_id=%zz")
            .body(())
            .unwrap();
        let error = sender_connection(&hub, &identity, &request).unwrap_err();
        assert_eq!(error.code(), "INVALID_CONNECTION_ID");
    }
}
