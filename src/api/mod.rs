//! The publishing and room-membership endpoints (SPEC §4, §8), for `service` and `admin`
//! tokens: [`PublishApi`].
//!
//! - `POST /api/players/{player_id}/messages`
//! - `POST /api/rooms/{room}/messages`
//! - `POST /api/broadcast`
//!
//! take `{ "type", "data"?, "v"?, "priority"?, "ttl_ms"?, "ack"?, "exclude"? }` and answer
//! `200` with the [`DeliveryReport`](crate::DeliveryReport):
//! `{ "id", "delivered", "websocket", "sse", "failed", "queued" }` (`"players"` too for rooms
//! and broadcast, `"awaiting_ack"` for `ack: true`). `exclude` lists player ids and applies
//! to rooms and broadcast.
//!
//! - `priority` (integer, default 0): a player's pending queue delivers higher first.
//! - `ttl_ms` (at least 1, at most 100 years; default
//!   [`DeliverySettings::message_ttl`](crate::hub::DeliverySettings::message_ttl)): how long
//!   the message may wait in a pending queue, be replayed or be resent.
//! - `ack` (default false): resent to the player with backoff until a client acks its id
//!   (`{"type":"ack","data":{"id":…}}`, or `POST /api/messages`) or its TTL ends.
//!
//! - `PUT` / `DELETE /api/rooms/{room}/members/{player_id}` add or remove a member and
//!   answer `{ "room", "player_id", "member", "changed" }`.
//!
//! A publish body larger than [`PublishApi::max_body`] is answered `413`; one that does
//! not arrive whole within [`PublishApi::body_timeout`] is answered `408` with
//! `Connection: close`.

mod handler;
mod messages;
mod monitoring;
pub(crate) mod openapi;
mod sessions;

pub use handler::{PublishApi, PublishFuture};
pub use monitoring::MonitoringView;

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::ToSchema;

use crate::body::ResponseBody;
use crate::error::{ApiError, ErrorType};
use crate::hub::{Audience, Hub};
use crate::message::{Message, MAX_TYPE_LEN};

/// Longest player id, room name or message type, in characters (Unicode scalar values, as
/// JSON Schema's `maxLength` counts); and longest session id, in bytes (printable ASCII).
pub const MAX_NAME_LEN: usize = 128;

/// Longest `ttl_ms` a publish may ask for: 100 years, the longest period the hub keeps.
// Whole milliseconds of 100 years fit in u64 many times over.
#[allow(clippy::cast_possible_truncation)]
pub const MAX_TTL_MS: u64 = crate::hub::LONGEST_PERIOD.as_millis() as u64;

/// Most player ids an `exclude` list may hold.
pub const MAX_EXCLUDE: usize = 10_000;

/// Where a publish goes.
pub(crate) enum Target<'a> {
    Player(&'a str),
    Room(&'a str),
    Everyone,
}

/// A message to publish.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PublishRequest {
    /// The message type: 1 to 128 characters, no control characters.
    #[serde(rename = "type")]
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"
    )]
    message_type: String,
    /// The payload, any JSON value (default `null`).
    #[serde(default)]
    #[schema(value_type = Value)]
    data: Option<Box<RawValue>>,
    /// The schema version of `data`. Default: 1.
    #[serde(default, deserialize_with = "integer")]
    #[schema(value_type = Option<u64>, maximum = 4_294_967_295_u64)]
    v: Option<u32>,
    /// Higher is delivered first from a pending queue. Default: 0.
    #[serde(default, deserialize_with = "integer")]
    priority: Option<i32>,
    /// How long the message may wait in a pending queue, be replayed or be resent, in ms,
    /// at most 100 years. Default: the server's message TTL (5 minutes unless configured).
    #[serde(default, deserialize_with = "integer")]
    #[schema(minimum = 1, maximum = 3_153_600_000_000_u64)]
    ttl_ms: Option<u64>,
    /// Resend until a client acknowledges the envelope id, or the TTL ends. Default: false.
    #[serde(default)]
    ack: Option<bool>,
    /// Player ids the room or global broadcast skips (not for one player's publish).
    #[serde(default)]
    #[schema(max_items = 10000)]
    exclude: Option<Vec<String>>,
}

/// An optional integer field that also takes an integral number written with a fraction
/// or exponent (`3.0`, `1e3`), as JSON Schema's `integer` does; out of range is an error.
fn integer<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<i64> + TryFrom<u64>,
{
    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else {
        return Ok(None);
    };
    let out_of_range = || serde::de::Error::custom(format!("{number} is out of range"));
    if let Some(unsigned) = number.as_u64() {
        return T::try_from(unsigned).map(Some).map_err(|_| out_of_range());
    }
    if let Some(signed) = number.as_i64() {
        return T::try_from(signed).map(Some).map_err(|_| out_of_range());
    }
    match number.as_f64() {
        // Below 2^63 in size, an integral f64 converts to i64 exactly; larger ones fit no
        // field here.
        Some(float) if float.fract() == 0.0 && float.abs() < 9.2e18 => T::try_from(float as i64)
            .map(Some)
            .map_err(|_| out_of_range()),
        Some(float) if float.fract() == 0.0 => Err(out_of_range()),
        _ => Err(serde::de::Error::custom(format!(
            "{number} is not an integer"
        ))),
    }
}

/// Reads a body of at most `limit` bytes that arrives whole within `timeout`.
pub(crate) async fn read_body<B>(
    body: B,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, ApiError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let Ok(collected) = tokio::time::timeout(timeout, Limited::new(body, limit).collect()).await
    else {
        return Err(body_timeout(timeout));
    };
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorType::ValidationError,
            "PAYLOAD_TOO_LARGE",
            format!("the request body is larger than {limit} bytes"),
        )
        .detail("limit_bytes", limit)),
        Err(_) => Err(ApiError::bad_request(
            "BODY_READ_FAILED",
            "the request body could not be read",
        )),
    }
}

/// `408 connection_error`: the body came too slowly. The error is in the transfer, not in
/// the body's content (which was never judged), and the same request over a faster
/// connection would succeed. The rest of the body is not waited for, so the connection is
/// not reused: `Connection: close`.
fn body_timeout(timeout: Duration) -> ApiError {
    let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        ErrorType::ConnectionError,
        "BODY_TIMEOUT",
        format!("the request body did not arrive within {timeout_ms} ms"),
    )
    .detail("timeout_ms", timeout_ms)
    .header(header::CONNECTION, HeaderValue::from_static("close"))
}

/// `503 system_error` when the hub is a node of a cluster whose backplane is not up now: a
/// session change or logout made now would not reach the other nodes.
pub(crate) fn require_backplane_up(hub: &Hub) -> Result<(), ApiError> {
    match hub.backplane_status() {
        Some(status) if status.state != crate::hub::BackplaneState::Up => {
            Err(backplane_unavailable(&crate::hub::BackplaneError::new(
                "the cluster's Redis is unreachable: nothing was changed; retry later",
            )))
        }
        _ => Ok(()),
    }
}

/// `503 system_error`: the cluster's log did not take the change, so no node made it.
fn backplane_unavailable(error: &crate::hub::BackplaneError) -> ApiError {
    tracing::warn!(%error, "refused: the cluster's backplane did not take it");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorType::SystemError,
        "BACKPLANE_UNAVAILABLE",
        error.to_string(),
    )
    .header(header::RETRY_AFTER, HeaderValue::from_static("1"))
}

/// Publishes the JSON `body` to `target`.
pub(crate) async fn publish(
    hub: &Hub,
    target: Target<'_>,
    body: &[u8],
) -> Result<Response<ResponseBody>, ApiError> {
    let request: PublishRequest = serde_json::from_slice(body).map_err(|error| {
        ApiError::bad_request(
            "INVALID_JSON",
            format!("the body is not a valid publish request: {error}"),
        )
    })?;
    validate_name("type", &request.message_type).map_err(|e| e.detail("max_len", MAX_TYPE_LEN))?;
    if request
        .ttl_ms
        .is_some_and(|ttl| ttl == 0 || ttl > MAX_TTL_MS)
    {
        return Err(ApiError::bad_request(
            "INVALID_TTL",
            format!("ttl_ms must be 1 to {MAX_TTL_MS} (100 years); omit it for the default TTL"),
        )
        .detail("max", MAX_TTL_MS));
    }
    let exclude: Vec<&str> = request
        .exclude
        .iter()
        .flatten()
        .map(String::as_str)
        .collect();
    if exclude.len() > MAX_EXCLUDE {
        return Err(ApiError::bad_request(
            "TOO_MANY_EXCLUSIONS",
            format!("exclude holds at most {MAX_EXCLUDE} player ids"),
        ));
    }
    let data = match request.data {
        Some(data) => data,
        None => serde_json::value::to_raw_value(&serde_json::Value::Null)
            .map_err(|_| ApiError::system("could not encode null"))?,
    };
    let mut message = Message::raw(request.message_type, data)
        .with_version(request.v.unwrap_or(1))
        .with_priority(request.priority.unwrap_or(0))
        .with_ack(request.ack.unwrap_or(false));
    if let Some(ttl_ms) = request.ttl_ms {
        message = message.with_ttl(Duration::from_millis(ttl_ms));
    }
    let (audience, target_name) = match target {
        Target::Player(player_id) => {
            if !exclude.is_empty() {
                return Err(ApiError::bad_request(
                    "EXCLUDE_NOT_APPLICABLE",
                    "exclude applies to room and broadcast publishes, not to one player",
                ));
            }
            (Audience::Player(player_id), player_id)
        }
        Target::Room(room) => (
            Audience::Room {
                room,
                exclude: &exclude,
            },
            room,
        ),
        Target::Everyone => (Audience::Everyone { exclude: &exclude }, "*"),
    };
    let report = hub
        .publish(audience, &message)
        .await
        .map_err(|error| backplane_unavailable(&error))?;
    tracing::debug!(
        target = target_name,
        message_id = &*report.id,
        message_type = message.message_type(),
        delivered = report.delivered,
        failed = report.failed,
        "published"
    );
    json_response(StatusCode::OK, &report)
}

/// A room membership after a change.
#[derive(Serialize, ToSchema)]
pub(crate) struct Membership<'a> {
    /// The room.
    room: &'a str,
    /// The player.
    player_id: &'a str,
    /// Whether the player is a member now.
    member: bool,
    /// Whether the request changed it.
    changed: bool,
}

/// Adds (`join`) or removes a member of `room`.
pub(crate) async fn set_membership(
    hub: &Hub,
    room: &str,
    player_id: &str,
    join: bool,
) -> Result<Response<ResponseBody>, ApiError> {
    let changed = hub
        .set_room_member(player_id, room, join)
        .await
        .map_err(|error| backplane_unavailable(&error))?;
    tracing::debug!(room, player_id, member = join, changed, "room membership");
    json_response(
        StatusCode::OK,
        &Membership {
            room,
            player_id,
            member: join,
            changed,
        },
    )
}

/// Checks a player id, room name or message type: 1 to 128 characters, no control
/// characters.
pub(crate) fn validate_name(what: &'static str, value: &str) -> Result<(), ApiError> {
    if value.is_empty()
        || value.chars().count() > MAX_NAME_LEN
        || value.chars().any(char::is_control)
    {
        return Err(ApiError::bad_request(
            "INVALID_NAME",
            format!("{what} must be 1 to {MAX_NAME_LEN} characters without control characters"),
        )
        .detail("field", what));
    }
    Ok(())
}

/// Checks a session id: 1 to 128 bytes of printable ASCII (SPEC §3).
pub(crate) fn validate_session_id(value: &str) -> Result<(), ApiError> {
    if !dualcast_layers::session::is_valid_session_id(value) {
        return Err(invalid_session_id());
    }
    Ok(())
}

/// `400 INVALID_SESSION_ID`.
pub(crate) fn invalid_session_id() -> ApiError {
    ApiError::bad_request(
        "INVALID_SESSION_ID",
        format!("session_id must be 1 to {MAX_NAME_LEN} bytes of printable ASCII"),
    )
}

/// A JSON response of `value`.
pub(crate) fn json_response<T: Serialize>(
    status: StatusCode,
    value: &T,
) -> Result<Response<ResponseBody>, ApiError> {
    let body =
        serde_json::to_vec(value).map_err(|_| ApiError::system("could not encode the response"))?;
    let mut response = Response::new(ResponseBody::from(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::ConnectionKind;

    #[tokio::test]
    async fn bad_publish_bodies_are_validation_errors() {
        let hub = Hub::new();
        for (body, code) in [
            (&b"not json"[..], "INVALID_JSON"),
            (br#"{"data":1}"#, "INVALID_JSON"),
            (br#"{"type":"x","surprise":1}"#, "INVALID_JSON"),
            (br#"{"type":""}"#, "INVALID_NAME"),
            (br#"{"type":"x","ttl_ms":0}"#, "INVALID_TTL"),
            (br#"{"type":"x","ttl_ms":-1}"#, "INVALID_JSON"),
            (br#"{"type":"x","priority":"high"}"#, "INVALID_JSON"),
            (br#"{"type":"x","ack":"yes"}"#, "INVALID_JSON"),
            (br#"{"type":"x","ttl_ms":3153600000001}"#, "INVALID_TTL"),
            (br#"{"type":"x","v":4294967296}"#, "INVALID_JSON"),
            (br#"{"type":"x","v":-1}"#, "INVALID_JSON"),
            (br#"{"type":"x","v":1.5}"#, "INVALID_JSON"),
            (br#"{"type":"x","priority":2147483648}"#, "INVALID_JSON"),
            (br#"{"type":"\u0085"}"#, "INVALID_NAME"),
        ] {
            let error = publish(&hub, Target::Everyone, body).await.unwrap_err();
            assert_eq!(
                (error.status(), error.code()),
                (StatusCode::BAD_REQUEST, code),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let error = publish(
            &hub,
            Target::Player("a"),
            br#"{"type":"x","exclude":["b"]}"#,
        )
        .await
        .unwrap_err();
        assert_eq!(error.code(), "EXCLUDE_NOT_APPLICABLE");
    }

    #[tokio::test]
    async fn integral_numbers_and_long_names_in_characters_are_accepted() {
        let hub = Hub::new();
        let long_type = "é".repeat(MAX_NAME_LEN);
        for body in [
            r#"{"type":"x","v":3.0,"priority":-2e1,"ttl_ms":1e3}"#.to_owned(),
            format!(r#"{{"type":"x","ttl_ms":{MAX_TTL_MS},"v":4294967295}}"#),
            // 256 bytes, 128 characters.
            format!(r#"{{"type":"{long_type}"}}"#),
        ] {
            let answer = publish(&hub, Target::Everyone, body.as_bytes()).await;
            assert!(answer.is_ok(), "{body}: {:?}", answer.err());
        }
        let too_long = format!(r#"{{"type":"{long_type}é"}}"#);
        let error = publish(&hub, Target::Everyone, too_long.as_bytes())
            .await
            .unwrap_err();
        assert_eq!(error.code(), "INVALID_NAME");
    }

    #[tokio::test]
    async fn a_publish_without_data_sends_null() {
        let hub = Hub::new();
        let (_guard, mut outbox) = hub
            .register(crate::Registration::new("a", ConnectionKind::Sse))
            .unwrap();
        publish(&hub, Target::Player("a"), br#"{"type":"x","v":3}"#)
            .await
            .unwrap();
        let frame = tokio::time::timeout(Duration::from_secs(5), outbox.recv())
            .await
            .expect("the published frame in time")
            .expect("the connection is open");
        let envelope: serde_json::Value = serde_json::from_str(frame.json()).unwrap();
        assert_eq!(envelope["data"], serde_json::Value::Null);
        assert_eq!(envelope["v"], 3);
    }
}
