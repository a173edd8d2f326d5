//! The OpenAPI 3.1 document of dualcast's routes, served at `GET {prefix}/api/openapi.json`.
//!
//! The request and response bodies are the API's own types (their `ToSchema` derives), so
//! a field added to an answer is in the document with it. The operations are declared here,
//! one per route and method; a test walks the router and fails when a route is missing
//! from the document or the document names a route the router does not have.
//! [`document`] fits the document to a [route table](crate::routes): the prefix is put in
//! front of every path, and switched-off routes are left out.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::SchemaType;
use utoipa::openapi::security::SecurityRequirement;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ArrayBuilder, ObjectBuilder, Type};
use utoipa::openapi::{OpenApi as Document, Paths, Ref, RefOr, Required, Schema};
use utoipa::{IntoParams, Modify, OpenApi, PartialSchema, ToResponse, ToSchema};

use super::monitoring::{
    ConnectionHealthView, ConnectionStats, DualConnections, PerformanceView, PlayerConnections,
};
use super::sessions::{BeginRequest, Begun, LoggedOut, SessionState};
use super::{Membership, PublishRequest};
use crate::error::ErrorType;
use crate::hub::DeliveryReport;
use crate::routes::RouteTable;

/// The error body every error answer carries.
#[derive(ToSchema)]
#[allow(dead_code)] // Described, never built: `ErrorResponse` writes the body.
pub(crate) struct ErrorBody {
    /// Always `true`.
    error: bool,
    error_type: ErrorTypeName,
    /// What went wrong, for a person. Never holds a token.
    message: String,
    details: ErrorDetails,
    /// When the error was answered.
    #[schema(format = DateTime)]
    timestamp: String,
}

/// The family of an error, stable for clients to match on: the names of
/// [`ErrorType::ALL`].
pub(crate) struct ErrorTypeName;

impl PartialSchema for ErrorTypeName {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "The family of an error, stable for clients to match on.",
            ))
            .enum_values(Some(ErrorType::ALL.map(ErrorType::as_str)))
            .into()
    }
}

impl ToSchema for ErrorTypeName {}

/// The stable `error_code`, and what else the error names (a limit, a field, …).
#[derive(Serialize, ToSchema)]
#[allow(dead_code)] // Described, never built.
pub(crate) struct ErrorDetails {
    /// A stable code, e.g. `TOKEN_EXPIRED`, `PLAYER_MISMATCH`, `INVALID_NAME`.
    error_code: String,
    #[serde(flatten)]
    #[schema(value_type = Object)]
    more: BTreeMap<String, serde_json::Value>,
}

/// An envelope, as every transport carries it (SPEC §4).
#[derive(Serialize, ToSchema)]
#[allow(dead_code)] // Described, never built: `Message` encodes envelopes itself.
pub(crate) struct Envelope {
    /// The envelope id: the same on every connection it reached, and the SSE `id:`.
    id: String,
    /// The message type.
    #[serde(rename = "type")]
    message_type: String,
    /// The schema version of `data`.
    v: u32,
    /// When it was published, in milliseconds since the Unix epoch.
    ts: u64,
    /// The payload, as published.
    #[schema(value_type = Value)]
    data: serde_json::Value,
    /// The room it was published to, when it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    room: Option<String>,
    /// Present and `true` when the client should acknowledge it.
    #[serde(skip_serializing_if = "Option::is_none")]
    ack: Option<bool>,
    /// Present and `true` on a reply to what this connection sent (`pong`, `error`, the
    /// handler's answer): not in the player's message stream, so not an id to resume
    /// from.
    #[serde(skip_serializing_if = "Option::is_none")]
    reply: Option<bool>,
}

/// One event of an SSE stream, as an SSE parser hands it over.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)] // Described, never built: the SSE writer frames events itself.
pub(crate) struct SseEvent {
    /// `message` (the default, unnamed) for an envelope; `recovery` after a resume,
    /// `disconnect` before the stream ends, `ping` (empty data) as the keep-alive of a
    /// stream opened with `keepalive=event`.
    #[schema(pattern = "^(message|recovery|disconnect|ping)$")]
    event: Option<String>,
    /// The envelope id (`Last-Event-ID` to resume from); absent on `recovery` and
    /// `disconnect`.
    id: Option<String>,
    /// A JSON object: the envelope, `{"complete", "replayed", …}` for `recovery`,
    /// `{"reason", "reconnect", …}` for `disconnect`.
    #[schema(content_media_type = "application/json")]
    data: String,
}

/// A client message (SPEC §6), as a WebSocket text frame or a `POST /api/messages` body.
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)] // Described, never built: `inbound::parse` reads client messages.
pub(crate) struct ClientMessageBody {
    /// `ack` (with `data.id`), `ping`, or a type the host's message handler knows: 1 to
    /// 128 characters, no control characters.
    #[serde(rename = "type")]
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"
    )]
    message_type: String,
    /// The schema version of `data` (only 1 is understood).
    #[schema(minimum = 1, maximum = 1)]
    v: Option<u32>,
    /// The client's id of the message, echoed in the reply or error: 1 to 128 printable
    /// ASCII characters.
    #[schema(min_length = 1, max_length = 128, pattern = "^[!-~]+$")]
    id: Option<String>,
    /// The payload, any JSON value.
    #[serde(default)]
    #[schema(value_type = Value, required = false)]
    data: Option<serde_json::Value>,
}

/// The answer to a client message.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)] // Described, never built: `messages::post_message` writes it.
pub(crate) struct ClientMessageAnswer {
    /// The handler's reply envelope, or `null` when it had none.
    #[schema(required = true)]
    reply: Option<Envelope>,
}

/// `GET /healthz`.
#[derive(Serialize, ToSchema)]
pub(crate) struct HealthAnswer {
    /// `ok` while the server answers; `degraded` while its cluster backplane is down (local
    /// connections go on, publishes are refused with `503`).
    #[schema(pattern = "^(ok|degraded)$")]
    pub(crate) status: &'static str,
    /// On a node of a cluster: its id, whether its backplane is up, and how many other
    /// nodes it sees.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) backplane: Option<crate::hub::BackplaneStatus>,
}

impl HealthAnswer {
    /// The answer for `hub` now.
    pub(crate) fn of(hub: &crate::Hub) -> Self {
        let backplane = hub.backplane_status();
        let degraded = backplane
            .as_ref()
            .is_some_and(|status| status.state != crate::hub::BackplaneState::Up);
        Self {
            status: if degraded { "degraded" } else { "ok" },
            backplane,
        }
    }
}

/// A player id in the path.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Described, never built: the router reads the path.
struct PlayerPath {
    /// The player: 1 to 128 characters, no control characters, percent-encoded.
    #[param(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"
    )]
    player_id: String,
}

/// A room in the path.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Described, never built.
struct RoomPath {
    /// The room: 1 to 128 characters, no control characters, percent-encoded.
    #[param(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"
    )]
    room: String,
}

/// A room and a player in the path.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Described, never built.
struct MemberPath {
    /// The room: 1 to 128 characters, no control characters, percent-encoded.
    #[param(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"
    )]
    room: String,
    /// The player: 1 to 128 characters, no control characters, percent-encoded.
    #[param(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"
    )]
    player_id: String,
}

/// How a connection joins its session and resumes (SPEC §3, §7).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Described, never built: the handlers read the query.
struct TransportQuery {
    /// The game session to join: 1 to 128 bytes of printable ASCII. Without it, the
    /// connection joins the player's current session (or begins one).
    #[param(min_length = 1, max_length = 128, pattern = "^[!-~]+$")]
    session_id: Option<String>,
    /// Resume after this envelope id: what was missed is replayed first, then a
    /// `recovery` event says whether it was complete. For SSE the `Last-Event-ID` header
    /// wins over it. Empty means none.
    #[param(max_length = 128, pattern = "^[!-~]*$")]
    last_event_id: Option<String>,
}

/// How an SSE stream keeps itself alive.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Described, never built: the handler reads the query.
struct SseQuery {
    /// `comment` (the default): a comment line every keep-alive interval, which an
    /// `EventSource` does not surface. `event`: an `event: ping` with empty data instead,
    /// so a browser client can tell a live stream from a dead one.
    #[param(pattern = "^(comment|event)$")]
    keepalive: Option<String>,
}

/// The opening handshake of a WebSocket (RFC 6455 §4.1); a browser's `new WebSocket`
/// sends these itself.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // Described, never built: the handler checks the handshake.
struct Handshake {
    /// A list of tokens with `Upgrade` among them (any case).
    #[serde(rename = "Connection")]
    #[param(pattern = "(^|,)[ \t]*[Uu][Pp][Gg][Rr][Aa][Dd][Ee][ \t]*(,|$)")]
    connection: String,
    /// A list of tokens with `websocket` among them (any case).
    #[serde(rename = "Upgrade")]
    #[param(pattern = "(^|,)[ \t]*[Ww][Ee][Bb][Ss][Oo][Cc][Kk][Ee][Tt][ \t]*(,|$)")]
    upgrade: String,
    /// `13`, the only version understood (any other is answered `426`; none, `400`).
    #[serde(rename = "Sec-WebSocket-Version")]
    #[param(pattern = "^13$")]
    sec_websocket_version: String,
    /// 16 random bytes in base64.
    #[serde(rename = "Sec-WebSocket-Key")]
    #[param(pattern = "^[A-Za-z0-9+/]{22}==$")]
    sec_websocket_key: String,
}

/// Which connection a client message counts against.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Described, never built.
struct MessageQuery {
    /// A live connection of the sender, as `c12` or `12`; default: its newest SSE stream,
    /// else its newest connection.
    #[param(pattern = "^c?[0-9]{1,19}$")]
    connection_id: Option<String>,
}

macro_rules! error_responses {
    ($($name:ident => $description:literal),* $(,)?) => {$(
        #[doc = $description]
        #[derive(ToResponse)]
        #[response(description = $description)]
        #[allow(dead_code)] // Described, never built.
        struct $name(ErrorBody);
    )*};
}

error_responses! {
    BadRequest => "`validation_error`: a malformed path, query or body; `details.error_code` says which (`INVALID_NAME`, `INVALID_JSON`, …).",
    Unauthorized => "`authentication_error`: no token, or one that does not verify or has expired.",
    Forbidden => "`authorization_error`: a valid token that may not do this (a player acting on another, a player on a `service` route, a refused `Origin`).",
    NotFound => "`connection_error`: the named connection is not one of the sender's live connections.",
    RequestTimeout => "`connection_error`: the body did not arrive in time; the connection is closed.",
    Conflict => "`session_error` or `connection_error`: a session rule refused the request (a replaced session), or the sender has no live connection.",
    PayloadTooLarge => "`validation_error`: the body is larger than the limit in `details.limit_bytes`.",
    UpgradeRequired => "`validation_error`: a WebSocket version other than 13.",
    TooManyRequests => "`rate_limited`: a connection or rate limit; `Retry-After` says when to try again.",
    InternalError => "`system_error`: the server failed (the host's message handler failed, or the metrics could not be encoded); the request may be retried.",
    ServiceUnavailable => "`connection_error`: the server is at its connection limit (`SERVER_AT_CAPACITY`, with `Retry-After`) or shutting down (`SHUTTING_DOWN`); or `system_error`: the cluster's backplane did not take a publish or membership change (`BACKPLANE_UNAVAILABLE`, with `Retry-After`, nothing was changed). Try again later.",
}

/// The publish body of one player's route: the shared one without `exclude`, which
/// applies to rooms and broadcasts only.
struct PlayerPublish;

impl Modify for PlayerPublish {
    fn modify(&self, openapi: &mut Document) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let Some(RefOr::T(Schema::Object(shared))) = components.schemas.get("PublishRequest")
        else {
            return;
        };
        let mut object = shared.clone();
        object.properties.insert(
            "exclude".to_owned(),
            ArrayBuilder::new()
                .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
                .items(ObjectBuilder::new().schema_type(Type::String))
                .max_items(Some(0))
                .description(Some(
                    "Applies to rooms and broadcasts only: empty or absent here.",
                ))
                .into(),
        );
        object.description = Some("A message to publish to one player.".to_owned());
        components.schemas.insert(
            "PlayerPublishRequest".to_owned(),
            RefOr::T(Schema::Object(object)),
        );
        let operation = openapi
            .paths
            .paths
            .get_mut("/api/players/{player_id}/messages")
            .and_then(|item| item.post.as_mut());
        if let Some(operation) = operation {
            operation.request_body = Some(
                RequestBodyBuilder::new()
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("PlayerPublishRequest")))
                            .build(),
                    )
                    .required(Some(Required::True))
                    .build(),
            );
        }
    }
}

/// `503` on every route but `/healthz`: past the connection cap, the server answers any
/// new connection with it before reading a request.
struct AtCapacity;

impl Modify for AtCapacity {
    fn modify(&self, openapi: &mut Document) {
        for (path, item) in &mut openapi.paths.paths {
            if path == "/healthz" {
                continue;
            }
            let operations = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
            ];
            for operation in operations.into_iter().flatten() {
                operation.responses.responses.insert(
                    "503".to_owned(),
                    RefOr::Ref(Ref::from_response_name("ServiceUnavailable")),
                );
            }
        }
    }
}

/// The bearer-token schemes, which every route but `/healthz` and `/api/openapi.json`
/// takes (one of them).
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut Document) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A JWT (HS256, RS256 or EdDSA, as the server is configured): `sub` is \
                         the player id, `role` is `player` (default), `service` or `admin`, \
                         `exp` is required. Sent as `Authorization: Bearer <jwt>`; a browser \
                         WebSocket, which cannot set headers, sends it as the subprotocol \
                         pair `Sec-WebSocket-Protocol: bearer, <jwt>`; an EventSource as the \
                         `access_token` query parameter.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "access_token",
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                "access_token",
                "The same JWT as a query parameter, for clients that cannot set headers \
                 (EventSource). The header wins when both are present.",
            ))),
        );
    }
}

/// The operations, the schemas and the error answers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "dualcast",
        description = "WebSocket and Server-Sent-Events fan-out for many connections per user: \
                       the transports, the publishing API, sessions, and the management and \
                       monitoring routes. Every error answers with the body `ErrorBody`.",
        license(name = "MIT OR Apache-2.0", identifier = "MIT OR Apache-2.0"),
    ),
    paths(
        operations::websocket,
        operations::websocket_of,
        operations::sse,
        operations::sse_of,
        operations::publish_to_player,
        operations::publish_to_room,
        operations::broadcast,
        operations::join_room,
        operations::leave_room,
        operations::begin_session,
        operations::read_session,
        operations::logout,
        operations::client_message,
        operations::player_connections,
        operations::connection_stats,
        operations::dual_connections,
        operations::performance,
        operations::connection_health,
        operations::metrics,
        operations::healthz,
        operations::openapi_json,
    ),
    components(
        schemas(ErrorBody, Envelope),
        responses(
            BadRequest, Unauthorized, Forbidden, NotFound, RequestTimeout, Conflict,
            PayloadTooLarge, UpgradeRequired, TooManyRequests, InternalError, ServiceUnavailable,
        ),
    ),
    modifiers(&Security, &PlayerPublish, &AtCapacity),
    tags(
        (name = "transports", description = "The WebSocket and the SSE stream of a player."),
        (name = "publishing", description = "Messages to a player, a room or everyone, and room membership (`service`, `admin`)."),
        (name = "sessions", description = "Game sessions and logout (the player itself, `service`, `admin`)."),
        (name = "messages", description = "Client messages over HTTP, for SSE-only clients."),
        (name = "monitoring", description = "The management and monitoring views: connections, presence, health, performance."),
        (name = "operations", description = "Health, metrics and this document."),
    ),
)]
struct ApiDoc;

/// The document for `table`: its prefix on every path, its switched-off routes left out,
/// `/metrics` without security when it is public.
pub(crate) fn document(table: &RouteTable) -> Document {
    let mut document = ApiDoc::openapi();
    let mut paths = Paths::new();
    for (path, mut item) in std::mem::take(&mut document.paths.paths) {
        if !table.serves(&path) {
            continue;
        }
        if path == "/metrics" && table.metrics_public {
            if let Some(operation) = item.get.as_mut() {
                operation.security = Some(vec![SecurityRequirement::default()]);
                operation
                    .responses
                    .responses
                    .retain(|status, _| status != "401" && status != "403");
            }
        }
        paths.paths.insert(table.prefixed(&path), item);
    }
    document.paths = paths;
    document
}

/// The document for `table` as JSON bytes, its descriptions without rustdoc's links, its
/// top-level fields in the usual order (`openapi`, `info`, `paths`, `components`, …).
pub(crate) fn document_json(table: &RouteTable) -> bytes::Bytes {
    // A tree of strings, maps and numbers: serializing it cannot fail.
    let mut value = serde_json::to_value(document(table)).unwrap_or_default();
    unlink(&mut value);
    let serde_json::Value::Object(mut fields) = value else {
        return bytes::Bytes::new();
    };
    let mut ordered: Vec<(String, serde_json::Value)> = Vec::with_capacity(fields.len());
    for key in ["openapi", "info", "paths", "components", "tags"] {
        if let Some(field) = fields.remove(key) {
            ordered.push((key.to_owned(), field));
        }
    }
    ordered.extend(fields);
    let mut out = b"{".to_vec();
    for (index, (key, field)) in ordered.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        out.extend(serde_json::to_vec(key).unwrap_or_default());
        out.push(b':');
        out.extend(serde_json::to_vec(field).unwrap_or_default());
    }
    out.push(b'}');
    bytes::Bytes::from(out)
}

/// Turns the rustdoc links of every `description` (`[`Hub`](crate::Hub)`) into their text.
fn unlink(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                match value {
                    serde_json::Value::String(text) if key == "description" => {
                        *text = without_rust_links(text);
                    }
                    value => unlink(value),
                }
            }
        }
        serde_json::Value::Array(values) => values.iter_mut().for_each(unlink),
        _ => {}
    }
}

/// `text` with each `[label](target)` whose target is not a URL replaced by `label`.
fn without_rust_links(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(middle) = rest.find("](") {
        let (before, after) = rest.split_at(middle);
        let target_end = after.find(')');
        let open = before.rfind('[');
        match (open, target_end) {
            (Some(open), Some(end)) if !after[2..end].contains("://") => {
                out.push_str(&before[..open]);
                out.push_str(&before[open + 1..]);
                rest = &after[end + 1..];
            }
            _ => {
                out.push_str(before);
                out.push_str("](");
                rest = &after[2..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The operations, one function each: a function only declares its operation (the
/// router and the handlers serve it).
#[allow(dead_code)]
mod operations {
    use super::*;

    /// The WebSocket of the token's player.
    #[utoipa::path(
        get,
        path = "/api/ws",
        tag = "transports",
        params(Handshake, TransportQuery),
        responses(
            (status = 101, description = "The WebSocket: envelopes as text frames; closes with a code and a reason (`session_replaced`, `auth_expired`, `server_shutdown`, …)."),
            (status = 400, response = BadRequest),
            (status = 401, response = Unauthorized),
            (status = 403, response = Forbidden),
            (status = 409, response = Conflict),
            (status = 426, response = UpgradeRequired),
            (status = 429, response = TooManyRequests),
        ),
        security(("bearer" = []), ("access_token" = [])),
    )]
    fn websocket() {}

    /// The WebSocket by its older, deprecated path.
    ///
    /// As `/api/ws`; the answer carries `Deprecation` and a `Link` to `/api/ws`. The token's
    /// player must be the path's.
    #[utoipa::path(
        get,
        path = "/api/ws/{player_id}",
        tag = "transports",
        params(PlayerPath, Handshake, TransportQuery),
        responses(
            (status = 101, description = "The WebSocket, as on `/api/ws`."),
            (status = 400, response = BadRequest),
            (status = 401, response = Unauthorized),
            (status = 403, response = Forbidden),
            (status = 409, response = Conflict),
            (status = 426, response = UpgradeRequired),
            (status = 429, response = TooManyRequests),
        ),
        security(("bearer" = []), ("access_token" = [])),
    )]
    #[deprecated = "use /api/ws"]
    fn websocket_of() {}

    /// The SSE stream of the token's player.
    #[utoipa::path(
        get,
        path = "/api/sse",
        tag = "transports",
        params(TransportQuery, SseQuery),
        responses(
            (status = 200, description = "The stream: each envelope as `id:` and `data:` lines, comments (or `event: ping`) as heartbeats, `event: recovery` after a resume, `event: disconnect` with the reason before it ends.", content_type = "text/event-stream", body = SseEvent),
            (status = 400, response = BadRequest),
            (status = 401, response = Unauthorized),
            (status = 403, response = Forbidden),
            (status = 409, response = Conflict),
            (status = 429, response = TooManyRequests),
        ),
        security(("bearer" = []), ("access_token" = [])),
    )]
    fn sse() {}

    /// The SSE stream of a named player.
    ///
    /// As `/api/sse`; the token's player must be the path's.
    #[utoipa::path(
        get,
        path = "/sse/{player_id}",
        tag = "transports",
        params(PlayerPath, TransportQuery, SseQuery),
        responses(
            (status = 200, description = "The stream, as on `/api/sse`.", content_type = "text/event-stream", body = SseEvent),
            (status = 400, response = BadRequest),
            (status = 401, response = Unauthorized),
            (status = 403, response = Forbidden),
            (status = 409, response = Conflict),
            (status = 429, response = TooManyRequests),
        ),
        security(("bearer" = []), ("access_token" = [])),
    )]
    fn sse_of() {}

    /// A message to every connection of a player.
    ///
    /// Queued (and replayed on its next connect) when it has none.
    #[utoipa::path(
        post,
        path = "/api/players/{player_id}/messages",
        tag = "publishing",
        params(PlayerPath),
        request_body = PublishRequest,
        responses(
            (status = 200, description = "What the message reached.", body = DeliveryReport),
            (status = 400, response = BadRequest),
            (status = 401, response = Unauthorized),
            (status = 403, response = Forbidden),
            (status = 408, response = RequestTimeout),
            (status = 413, response = PayloadTooLarge),
        ),
        security(("bearer" = []), ("access_token" = [])),
    )]
    fn publish_to_player() {}

    /// A message to every member of a room.
    #[utoipa::path(
        post,
        path = "/api/rooms/{room}/messages",
        tag = "publishing",
        params(RoomPath),
        request_body = PublishRequest,
        responses(
            (status = 200, description = "What the message reached, with `players`.", body = DeliveryReport),
            (status = 400, response = BadRequest),
            (status = 401, response = Unauthorized),
            (status = 403, response = Forbidden),
            (status = 408, response = RequestTimeout),
            (status = 413, response = PayloadTooLarge),
        ),
        security(("bearer" = []), ("access_token" = [])),
    )]
    fn publish_to_room() {}

    /// A message to every connected player.
    #[utoipa::path(
        post,
        path = "/api/broadcast",
        tag = "publishing",
        request_body = PublishRequest,
        responses(
            (status = 200, description = "What the message reached, with `players`.", body = DeliveryReport),
            (status = 400, response = BadRequest),
            (status = 401, response = Unauthorized),
            (status = 403, response = Forbidden),
            (status = 408, response = RequestTimeout),
            (status = 413, response = PayloadTooLarge),
        ),
        security(("bearer" = []), ("access_token" = [])),
    )]
    fn broadcast() {}

    /// Adds a member.
    #[utoipa::path(
        put,
        path = "/api/rooms/{room}/members/{player_id}",
        tag = "publishing",
        params(MemberPath),
        responses(
            (status = 200, description = "The membership now; `changed` is false when it was a member already.", body = Membership),
            (status = 400, response = BadRequest),
            (status = 401, response = Unauthorized),
            (status = 403, response = Forbidden),
        ),
        security(("bearer" = []), ("access_token" = [])),
    )]
    fn join_room() {}

    /// Removes a member.
    #[utoipa::path(
        delete,
        path = "/api/rooms/{room}/members/{player_id}",
        tag = "publishing",
        params(MemberPath),
        responses(
            (status = 200, description = "The membership now; `changed` is false when it was not a member.", body = Membership),
            (status = 400, response = BadRequest),
            (status = 401, response = Unauthorized),
            (status = 403, response = Forbidden),
        ),
        security(("bearer" = []), ("access_token" = [])),
    )]
    fn leave_room() {}

    /// Begins a new game session.
    ///
    /// The old session's connections end with `session_replaced`, and the old session is
    /// refused from then on.
    #[utoipa::path(
        post,
        path = "/api/connections/{player_id}/session",
        tag = "sessions",
        params(PlayerPath),
        request_body(content = Option<BeginRequest>, description = "The session to begin; an empty body mints a random one."),
        responses(
            (status = 200, description = "The session began (or was the current one already).", body = Begun),
            (status = 400, response = BadRequest),
            (status = 401, response = Unauthorized),
            (status = 403, response = Forbidden),
            (status = 408, response = RequestTimeout),
            (status = 409, response = Conflict),
            (status = 413, response = PayloadTooLarge),
        ),
        security(("bearer" = []), ("access_token" = [])),
    )]
    fn begin_session() {}

    /// The player's current session.
    #[utoipa::path(
        get,
        path = "/api/connections/{player_id}/session",
        tag = "sessions",
        params(PlayerPath),
        responses(
            (status = 200, description = "The current session and its live connections.", body = SessionState),
            (status = 400, response = BadRequest),
            (status = 401, response = Unauthorized),
            (status = 403, response = Forbidden),
        ),
        security(("bearer" = []), ("access_token" = [])),
    )]
    fn read_session() {}

    /// Ends every connection of the player with `logout`.
    #[utoipa::path(
        post,
        path = "/api/connections/{player_id}/logout",
        tag = "sessions",
        params(PlayerPath),
        responses(
            (status = 200, description = "The player's connections were ended.", body = LoggedOut),
            (status = 400, response = BadRequest),
            (status = 401, response = Unauthorized),
            (status = 403, response = Forbidden),
        ),
        security(("bearer" = []), ("access_token" = [])),
    )]
    fn logout() {}

    /// A client message, for clients that hold only an SSE stream.
    ///
    /// Handled as a WebSocket text frame of the token's player would be, with the reply in the
    /// answer.
    #[utoipa::path(
        post,
        path = "/api/messages",
        tag = "messages",
        params(MessageQuery),
        request_body = ClientMessageBody,
        responses(
            (status = 200, description = "The message was handled.", body = ClientMessageAnswer),
            (status = 400, response = BadRequest),
            (status = 401, response = Unauthorized),
            (status = 403, response = Forbidden),
            (status = 404, response = NotFound),
            (status = 408, response = RequestTimeout),
            (status = 409, response = Conflict),
            (status = 413, response = PayloadTooLarge),
            (status = 429, response = TooManyRequests),
            (status = 500, response = InternalError),
        ),
        security(("bearer" = []), ("access_token" = [])),
    )]
    fn client_message() {}

    /// A player's connections by kind, presence and health.
    ///
    /// For the player itself, `service` and `admin`. A player named `stats` is read as
    /// `/api/connections/%73tats`.
    #[utoipa::path(
        get,
        path = "/api/connections/{player_id}",
        tag = "monitoring",
        params(PlayerPath),
        responses(
            (status = 200, description = "The player's connections.", body = PlayerConnections),
            (status = 400, response = BadRequest),
            (status = 401, response = Unauthorized),
            (status = 403, response = Forbidden),
        ),
        security(("bearer" = []), ("access_token" = [])),
    )]
    fn player_connections() {}

    /// Connection statistics (`service`, `admin`).
    #[utoipa::path(
        get,
        path = "/api/connections/stats",
        tag = "monitoring",
        responses(
            (status = 200, description = "Statistics of the live connections.", body = ConnectionStats),
            (status = 401, response = Unauthorized),
            (status = 403, response = Forbidden),
        ),
        security(("bearer" = []), ("access_token" = [])),
    )]
    fn connection_stats() {}

    /// Players by the kinds of connection they hold (`service`, `admin`).
    #[utoipa::path(
        get,
        path = "/monitoring/dual-connections",
        tag = "monitoring",
        responses(
            (status = 200, description = "Players by the kinds of connection they hold.", body = DualConnections),
            (status = 401, response = Unauthorized),
            (status = 403, response = Forbidden),
        ),
        security(("bearer" = []), ("access_token" = [])),
    )]
    fn dual_connections() {}

    /// Establishment times and deliveries since start (`service`, `admin`).
    #[utoipa::path(
        get,
        path = "/monitoring/performance",
        tag = "monitoring",
        responses(
            (status = 200, description = "Establishment times and deliveries since the server started.", body = PerformanceView),
            (status = 401, response = Unauthorized),
            (status = 403, response = Forbidden),
        ),
        security(("bearer" = []), ("access_token" = [])),
    )]
    fn performance() {}

    /// Connection health and its trends (`service`, `admin`).
    #[utoipa::path(
        get,
        path = "/monitoring/connection-health",
        tag = "monitoring",
        responses(
            (status = 200, description = "Health now, by kind, and its trends over the last hour and day.", body = ConnectionHealthView),
            (status = 401, response = Unauthorized),
            (status = 403, response = Forbidden),
        ),
        security(("bearer" = []), ("access_token" = [])),
    )]
    fn connection_health() {}

    /// Prometheus text (`service`, `admin`, unless the server made it public).
    #[utoipa::path(
        get,
        path = "/metrics",
        tag = "operations",
        responses(
            (status = 200, description = "The metrics in the OpenMetrics text format.", content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String),
            (status = 401, response = Unauthorized),
            (status = 403, response = Forbidden),
            (status = 500, response = InternalError),
        ),
        security(("bearer" = []), ("access_token" = [])),
    )]
    fn metrics() {}

    /// Liveness, without a token.
    #[utoipa::path(
        get,
        path = "/healthz",
        tag = "operations",
        responses(
            (status = 200, description = "The server answers.", body = HealthAnswer),
        ),
        security(()),
    )]
    fn healthz() {}

    /// This document, without a token.
    #[utoipa::path(
        get,
        path = "/api/openapi.json",
        tag = "operations",
        responses(
            (status = 200, description = "The OpenAPI 3.1 document of this server's routes.", body = Object),
        ),
        security(()),
    )]
    fn openapi_json() {}
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// `(template, method)` of every operation in `document`.
    fn operations(document: &Document) -> BTreeSet<(String, String)> {
        let json = serde_json::to_value(document).unwrap();
        let mut operations = BTreeSet::new();
        for (path, item) in json["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                operations.insert((path.clone(), method.to_uppercase()));
            }
        }
        operations
    }

    /// The literal segments of the router's patterns, read from its source (the route
    /// table's match and the monitoring views' names): a route added with a new word is
    /// found by the walk below without anyone listing it.
    fn router_words() -> BTreeSet<&'static str> {
        let quoted = |source: &'static str, from: &str, to: &str| {
            let start = source.find(from).unwrap();
            let end = start + source[start..].find(to).unwrap();
            source[start..end]
                .split('"')
                .skip(1)
                .step_by(2)
                .filter(|word| !word.contains(' '))
                .collect::<Vec<_>>()
        };
        let mut words = quoted(
            include_str!("../routes.rs"),
            "let route = match",
            "_ => return None",
        );
        words.extend(quoted(
            include_str!("monitoring.rs"),
            "fn from_segment",
            "_ => None",
        ));
        words.into_iter().collect()
    }

    /// Every route the router has, found by routing every path of up to five segments
    /// made of its words and a parameter, with the methods its handler allows.
    fn router_templates(table: &RouteTable) -> BTreeSet<String> {
        let mut words: Vec<&str> = router_words().into_iter().collect();
        words.push("p");
        let mut found = BTreeSet::new();
        let mut paths: Vec<String> = vec![table.prefixed("")];
        for _ in 0..5 {
            let mut longer = Vec::with_capacity(paths.len() * words.len());
            for path in &paths {
                for word in &words {
                    let candidate = format!("{path}/{word}");
                    if let Some(Ok(route)) = table.route(&candidate) {
                        found.insert(route.template().to_owned());
                    }
                    longer.push(candidate);
                }
            }
            paths = longer;
        }
        found
    }

    #[test]
    fn the_document_and_the_router_name_the_same_routes() {
        let table = RouteTable::default();
        let words = router_words();
        for word in ["healthz", "monitoring", "connection-health", "openapi.json"] {
            assert!(words.contains(word), "{word} in {words:?}");
        }
        let documented: BTreeSet<String> = operations(&document(&table))
            .into_iter()
            .map(|(path, _)| path)
            .collect();
        let routed = router_templates(&table);
        assert_eq!(
            routed.difference(&documented).collect::<Vec<_>>(),
            Vec::<&String>::new(),
            "routes the document lacks"
        );
        assert_eq!(
            documented.difference(&routed).collect::<Vec<_>>(),
            Vec::<&String>::new(),
            "documented paths the router does not have"
        );
        assert!(routed.len() >= 19, "the walk found too few: {routed:?}");
        // Every template is one the router gives back for it.
        for template in &documented {
            assert!(table.serves(template), "{template}");
        }
    }

    #[test]
    fn the_document_follows_the_prefix_and_the_switches() {
        let mut table = RouteTable::new("/rt", false, true, true);
        table.monitoring = false;
        let paths: BTreeSet<String> = operations(&document(&table))
            .into_iter()
            .map(|(path, _)| path)
            .collect();
        assert!(paths.contains("/rt/api/ws"), "{paths:?}");
        assert!(paths.contains("/rt/api/rooms/{room}/members/{player_id}"));
        assert!(!paths.iter().any(|p| !p.starts_with("/rt/")), "{paths:?}");
        for off in [
            "/rt/api/broadcast",
            "/rt/api/players/{player_id}/messages",
            "/rt/monitoring/performance",
            "/rt/api/connections/{player_id}",
            "/rt/api/connections/stats",
        ] {
            assert!(!paths.contains(off), "{off}");
        }
        assert_eq!(
            paths,
            router_templates(&table)
                .iter()
                .map(|t| table.prefixed(t))
                .collect()
        );
    }

    /// The limits the attributes spell out are the constants the server checks.
    #[test]
    fn the_documents_limits_are_the_servers() {
        use crate::api::{MAX_EXCLUDE, MAX_NAME_LEN, MAX_TTL_MS};

        let json: serde_json::Value =
            serde_json::from_slice(&document_json(&RouteTable::default())).unwrap();
        let schemas = &json["components"]["schemas"];
        let publish = &schemas["PublishRequest"]["properties"];
        assert_eq!(publish["ttl_ms"]["maximum"], MAX_TTL_MS);
        assert_eq!(publish["type"]["maxLength"], MAX_NAME_LEN);
        assert_eq!(publish["exclude"]["maxItems"], MAX_EXCLUDE);
        assert_eq!(publish["v"]["maximum"], u32::MAX);
        assert_eq!(
            schemas["ClientMessageBody"]["properties"]["type"]["maxLength"],
            crate::message::MAX_TYPE_LEN
        );
        let parameters = &json["paths"]["/api/connections/{player_id}"]["get"]["parameters"];
        assert_eq!(parameters[0]["schema"]["maxLength"], MAX_NAME_LEN);
        assert_eq!(
            schemas["BeginRequest"]["properties"]["session_id"]["maxLength"],
            dualcast_layers::session::MAX_SESSION_ID_LEN
        );
    }

    #[test]
    fn a_prefix_with_braces_names_no_parameter() {
        let table = RouteTable::new("{tenant}", true, true, true);
        let json: serde_json::Value = serde_json::from_slice(&document_json(&table)).unwrap();
        let paths: Vec<&String> = json["paths"].as_object().unwrap().keys().collect();
        assert!(
            paths.iter().all(|p| p.starts_with("/%7Btenant%7D/")),
            "{paths:?}"
        );
    }

    #[test]
    fn rustdoc_links_become_their_text() {
        assert_eq!(
            without_rust_links("see [`Hub`](crate::Hub) and [the spec](https://x.org/a)."),
            "see `Hub` and [the spec](https://x.org/a)."
        );
        assert_eq!(without_rust_links("a ](b"), "a ](b");
        assert_eq!(without_rust_links("[a](b"), "[a](b");
        let json = String::from_utf8(document_json(&RouteTable::default()).to_vec()).unwrap();
        assert!(!json.contains("](crate::"), "a rustdoc link is left");
        assert!(!json.contains("](super::"), "a rustdoc link is left");
    }

    #[test]
    fn the_document_is_openapi_3_1_with_the_error_body() {
        let bytes = document_json(&RouteTable::default());
        assert!(bytes.starts_with(br#"{"openapi":"3.1.0","info":{"#));
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["openapi"], "3.1.0");
        let error = &json["components"]["schemas"]["ErrorBody"];
        let required: BTreeSet<&str> = error["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(
            required,
            BTreeSet::from(["error", "error_type", "message", "details", "timestamp"])
        );
        // The body the server writes has exactly these fields.
        let written: serde_json::Value = serde_json::from_slice(
            &crate::error::ErrorResponse::new(
                http::StatusCode::BAD_REQUEST,
                crate::error::ErrorType::ValidationError,
                "y",
            )
            .to_json(),
        )
        .unwrap();
        let fields: BTreeSet<&str> = written.as_object().unwrap().keys().map(|k| &**k).collect();
        assert_eq!(fields, required);
        assert!(json["components"]["securitySchemes"]["bearer"].is_object());
    }
}
