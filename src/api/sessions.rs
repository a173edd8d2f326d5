//! The session and logout endpoints of seed `004_…`:
//!
//! - `POST /api/connections/{player_id}/session` `{ "session_id"? }` begins a new game
//!   session (a body without `session_id`, or no body, mints a random one) and answers
//!   `{ "success", "message", "session_id", "previous_connections_disconnected",
//!   "timestamp" }`;
//! - `GET /api/connections/{player_id}/session` answers `{ "player_id", "session_id",
//!   "session_created", "active_connections", "connection_types" }`;
//! - `POST /api/connections/{player_id}/logout` ends every connection of the player with
//!   `logout` and answers `{ "success", "message", "player_id", "connections_disconnected",
//!   "timestamp" }`.
//!
//! A player may act only on itself (`403 PLAYER_MISMATCH`); `service` and `admin` on any.

use std::time::SystemTime;

use bytes::Bytes;
use dualcast_layers::error::rfc3339;
use dualcast_layers::session::is_valid_session_id;
use dualcast_layers::Identity;
use http::{Response, StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{json_response, validate_session_id};
use crate::body::ResponseBody;
use crate::connection::ConnectionKind;
use crate::error::ApiError;
use crate::extract::session_refused;
use crate::hub::{mint_session_id, Hub};

/// Largest body `POST …/session` reads, in bytes.
pub(crate) const MAX_SESSION_BODY: usize = 4096;

/// `Ok` when `identity` may act on `player_id`: itself, or any player for `service`/`admin`.
pub(crate) fn require_self_or_privileged(
    identity: &Identity,
    player_id: &str,
) -> Result<(), ApiError> {
    if identity.role().is_privileged() || identity.player_id() == player_id {
        return Ok(());
    }
    Err(ApiError::forbidden(
        "PLAYER_MISMATCH",
        "a player may act only on its own connections and session",
    )
    .detail("player_id", player_id))
}

/// The session to begin.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BeginRequest {
    /// 1 to 128 bytes of printable ASCII; without it a random one is minted.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 128, pattern = "^[!-~]+$")]
    session_id: Option<String>,
}

/// A session began.
#[derive(Serialize, ToSchema)]
pub(crate) struct Begun<'a> {
    /// Always `true`.
    success: bool,
    /// What happened, for a person.
    message: &'static str,
    /// The player's current session now.
    session_id: &'a str,
    /// Connections of the old session that were ended with `session_replaced`.
    previous_connections_disconnected: usize,
    /// When it happened.
    #[schema(format = DateTime)]
    timestamp: String,
}

/// `POST /api/connections/{player_id}/session`.
pub(crate) fn begin_session(
    hub: &Hub,
    player_id: &str,
    body: &Bytes,
) -> Result<Response<ResponseBody>, ApiError> {
    super::require_backplane_up(hub)?;
    let named = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        // `null` is the same as no body.
        let request: Option<BeginRequest> = serde_json::from_slice(body).map_err(|error| {
            ApiError::bad_request(
                "INVALID_JSON",
                format!("the body must be {{\"session_id\": \"…\"}} or empty: {error}"),
            )
        })?;
        request.and_then(|request| request.session_id)
    };
    let session_id = match named {
        Some(named) => {
            validate_session_id(&named)?;
            named
        }
        None => mint_session_id(),
    };
    debug_assert!(is_valid_session_id(&session_id));
    let begun = hub
        .begin_session(player_id, &session_id)
        .map_err(|refused| session_refused(refused).detail("session_id", session_id.as_str()))?;
    json_response(
        StatusCode::OK,
        &Begun {
            success: true,
            message: if begun.already_current {
                "This game session is already the current one"
            } else {
                "New game session established"
            },
            session_id: &session_id,
            previous_connections_disconnected: begun.connections_ended,
            timestamp: rfc3339(SystemTime::now()),
        },
    )
}

/// A player's current session.
#[derive(Serialize, ToSchema)]
pub(crate) struct SessionState<'a> {
    /// The player.
    player_id: &'a str,
    /// Its current session; `null` when it has none.
    #[schema(required = true)]
    session_id: Option<&'a str>,
    /// When that session began; `null` when it has none.
    #[schema(format = DateTime, required = true)]
    session_created: Option<String>,
    /// Live connections of the player.
    active_connections: usize,
    /// Their transports, each once, WebSocket first.
    connection_types: Vec<ConnectionKind>,
}

/// `GET /api/connections/{player_id}/session`.
pub(crate) fn session_state(
    hub: &Hub,
    player_id: &str,
) -> Result<Response<ResponseBody>, ApiError> {
    let info = hub.session_of(player_id);
    json_response(
        StatusCode::OK,
        &SessionState {
            player_id,
            session_id: info.session_id.as_deref(),
            session_created: info.created.map(rfc3339),
            active_connections: info.active_connections,
            connection_types: info.connection_kinds,
        },
    )
}

/// A player was logged out.
#[derive(Serialize, ToSchema)]
pub(crate) struct LoggedOut<'a> {
    /// Always `true`.
    success: bool,
    /// What happened, for a person.
    message: &'static str,
    /// The player.
    player_id: &'a str,
    /// Connections that were ended with `logout`.
    connections_disconnected: usize,
    /// When it happened.
    #[schema(format = DateTime)]
    timestamp: String,
}

/// `POST /api/connections/{player_id}/logout`.
pub(crate) fn logout(hub: &Hub, player_id: &str) -> Result<Response<ResponseBody>, ApiError> {
    super::require_backplane_up(hub)?;
    let ended = hub.logout(player_id);
    json_response(
        StatusCode::OK,
        &LoggedOut {
            success: true,
            message: "Player logged out",
            player_id,
            connections_disconnected: ended,
            timestamp: rfc3339(SystemTime::now()),
        },
    )
}
