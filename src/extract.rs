//! What the handlers read from a request's extensions, and what they share in opening a
//! connection.
//!
//! The handlers are path-independent: the player comes from the [`Identity`] the auth
//! layer (or the host) put in the extensions; where a route names a player
//! (`/sse/{player_id}`) the router puts a [`RequestedPlayer`] beside it, and the publishing
//! API reads its [`ApiTarget`]. A host mounting a handler at its own path sets these itself
//! when it needs them.

use std::sync::Arc;
use std::time::SystemTime;

use dualcast_layers::{AuthError, AuthErrorKind, Identity, OwnedLeases};
use http::{Method, Request, Response, StatusCode};

use crate::api::{invalid_session_id, validate_session_id};
use crate::body::ResponseBody;
use crate::connection::ConnectionKind;
use crate::error::{ApiError, ErrorType};
use crate::hub::{ConnectionGuard, Hub, Outbox, RegisterError, Registration};
use dualcast_layers::metrics::RequestStart;
use dualcast_layers::query::{has_query_param, query_param};
use dualcast_layers::session::{Session, SessionRefused};

/// The player a route names, e.g. `alice` in `/sse/alice`: a connection request carrying it
/// must be authenticated as that player (`403 PLAYER_MISMATCH` otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestedPlayer(pub Arc<str>);

/// What a [`PublishApi`](crate::api::PublishApi) request acts on; the router sets it from
/// the path.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ApiTarget {
    /// `POST`: publish to one player's connections.
    Player(Arc<str>),
    /// `POST`: publish to the members of a room.
    Room(Arc<str>),
    /// `POST`: publish to every player.
    Everyone,
    /// `POST` begins a new session of the player, `GET` reads its session.
    Session(Arc<str>),
    /// `POST`: logs the player out.
    Logout(Arc<str>),
    /// `POST`: a client message from the identity's own player, for clients that hold only
    /// an SSE stream (SPEC §6).
    ClientMessage,
    /// `GET`: the player's connections by kind, presence and health.
    Connections(Arc<str>),
    /// `GET`: connection statistics over the hub.
    ConnectionStats,
    /// `GET`: a monitoring view.
    Monitoring(crate::api::MonitoringView),
    /// `PUT` adds `player` to `room`, `DELETE` removes it.
    Membership {
        /// The room.
        room: Arc<str>,
        /// The player.
        player: Arc<str>,
    },
}

/// The request's identity, or the `401` a request without one gets.
pub(crate) fn require_identity<B>(request: &Request<B>) -> Result<&Identity, ApiError> {
    request.extensions().get::<Identity>().ok_or_else(|| {
        let error = AuthError::new(AuthErrorKind::Missing, "this endpoint needs a token");
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorType::AuthenticationError,
            error.kind().code(),
            error.to_string(),
        )
    })
}

/// The request's identity if it is `service` or `admin`; `401`/`403` otherwise.
pub(crate) fn require_privileged<B>(request: &Request<B>) -> Result<&Identity, ApiError> {
    let identity = require_identity(request)?;
    if !identity.role().is_privileged() {
        return Err(ApiError::forbidden(
            "ROLE_REQUIRED",
            "this endpoint needs a service or admin token",
        )
        .detail("role", identity.role().as_str()));
    }
    Ok(identity)
}

/// `Ok` for a method in `allowed`; `405` with `Allow` otherwise.
pub(crate) fn allow(method: &Method, allowed: &[Method]) -> Result<(), ApiError> {
    if allowed.contains(method) {
        return Ok(());
    }
    let allowed = allowed
        .iter()
        .map(Method::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    let error = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorType::ValidationError,
        "METHOD_NOT_ALLOWED",
        format!("use {allowed}"),
    )
    .detail("allow", allowed.as_str());
    Err(match http::HeaderValue::from_str(&allowed) {
        Ok(value) => error.header(http::header::ALLOW, value),
        Err(_) => error,
    })
}

/// The answer for `result`, with a refusal logged: server errors at `error`, the client's
/// at `debug`.
pub(crate) fn answer(
    method: &Method,
    path: &str,
    result: Result<Response<ResponseBody>, ApiError>,
) -> Response<ResponseBody> {
    result.unwrap_or_else(|error| {
        if error.status().is_server_error() {
            tracing::error!(%method, path, "request failed: {error}");
        } else {
            tracing::debug!(%method, path, "request refused: {error}");
        }
        error.into_response()
    })
}

/// The refusals of a connection request that need nothing from the hub: a path's player
/// that is not the token's (`403 PLAYER_MISMATCH`), a resume id that is not one
/// (`400 INVALID_LAST_EVENT_ID`). Part of the handlers' `check_request`, which runs
/// before the session layer (so a request refused for them takes over no session) and
/// again at the start of the handler (so a handler used alone checks them too).
pub(crate) fn check_connection<B>(request: &Request<B>) -> Result<(), ApiError> {
    let identity = request.extensions().get::<Identity>();
    let requested = request.extensions().get::<RequestedPlayer>();
    if let (Some(identity), Some(RequestedPlayer(requested))) = (identity, requested) {
        if **requested != *identity.player_id() {
            return Err(ApiError::forbidden(
                "PLAYER_MISMATCH",
                "the token does not belong to this player",
            )
            .detail("player_id", &**requested));
        }
    }
    resume_id(request).map(drop)
}

/// Registers the connection a request opens: the identity's player, its session
/// (`session_id` query, else the token's `sid`), its credential's deadline, where it
/// resumes ([`resume_id`]), and the leases the layers in front put in the request. The
/// handler has run its `check_request` (with [`check_connection`]) first.
pub(crate) fn register<B>(
    hub: &Hub,
    request: &Request<B>,
    kind: ConnectionKind,
) -> Result<(ConnectionGuard, Outbox), ApiError> {
    let identity = require_identity(request)?;
    let mut registration = Registration::new(identity.player_id_arc().clone(), kind)
        .role(identity.role())
        .heartbeats(kind == ConnectionKind::WebSocket);
    match request.extensions().get::<Session>() {
        // Resolved by the session layer: the hub re-checks it under its lock.
        Some(session) => {
            if session.named() {
                registration = registration.session(session.id_arc().clone());
            }
        }
        None => {
            let query = query_param(request.uri(), "session_id");
            if query.is_none() && has_query_param(request.uri(), "session_id") {
                // Present but not decodable: invalid, not absent.
                return Err(invalid_session_id());
            }
            if let Some(session_id) = query.as_deref().or(identity.session_id()) {
                validate_session_id(session_id)?;
                registration = registration.session(session_id);
            }
        }
    }
    if let Some(RequestStart(at)) = request.extensions().get::<RequestStart>() {
        registration = registration.requested_at(*at);
    }
    if let Some(deadline) = identity.expires_at().and_then(instant_of) {
        registration = registration.credential_deadline(deadline);
    }
    if let Some(id) = resume_id(request)? {
        registration = registration.last_event_id(id);
    }
    registration = registration.leases(OwnedLeases::from_request(request));
    hub.register(registration).map_err(|error| match error {
        RegisterError::ShuttingDown => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorType::ConnectionError,
            "SHUTTING_DOWN",
            error.to_string(),
        ),
        RegisterError::Session(refused) => session_refused(refused),
        _ => ApiError::system(error.to_string()),
    })
}

/// Where a resuming client left off: the `Last-Event-ID` header (an `EventSource`
/// reconnecting), else the `last_event_id` query (a WebSocket, or an `EventSource` whose
/// URL changed). Empty means none; anything but 1 to 128 bytes of printable ASCII is
/// `400 INVALID_LAST_EVENT_ID`.
fn resume_id<B>(request: &Request<B>) -> Result<Option<String>, ApiError> {
    let id = match request.headers().get("last-event-id") {
        Some(header) => Some(
            header
                .to_str()
                .map(str::to_owned)
                .map_err(|_| bad_resume_id())?,
        ),
        None => match query_param(request.uri(), "last_event_id") {
            Some(id) => Some(id.into_owned()),
            // Present but not decodable (a bad escape, not UTF-8): invalid, not absent.
            None if has_query_param(request.uri(), "last_event_id") => {
                return Err(bad_resume_id());
            }
            None => None,
        },
    };
    match id {
        Some(id) if id.is_empty() => Ok(None),
        Some(id) if dualcast_layers::session::is_valid_session_id(&id) => Ok(Some(id)),
        Some(_) => Err(bad_resume_id()),
        None => Ok(None),
    }
}

fn bad_resume_id() -> ApiError {
    ApiError::bad_request(
        "INVALID_LAST_EVENT_ID",
        format!(
            "Last-Event-ID (or last_event_id) must be 1 to {} bytes of printable ASCII",
            crate::api::MAX_NAME_LEN
        ),
    )
}

/// `409 session_error` for a session the rules refuse.
pub(crate) fn session_refused(refused: SessionRefused) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        ErrorType::SessionError,
        refused.code(),
        RegisterError::Session(refused).to_string(),
    )
}

/// The tokio instant of a wall-clock time (now, if it has passed; `None` if it is too far
/// ahead to represent, which is as good as never).
fn instant_of(time: SystemTime) -> Option<tokio::time::Instant> {
    let left = time.duration_since(SystemTime::now()).unwrap_or_default();
    tokio::time::Instant::now().checked_add(left)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dualcast_layers::Role;

    fn request(uri: &str) -> Request<()> {
        let mut request = Request::get(uri).body(()).unwrap();
        request
            .extensions_mut()
            .insert(Identity::new("alice", Role::Player).with_session_id("from-token"));
        request
    }

    /// Without a session layer in front, a `session_id` or `last_event_id` that does not
    /// decode is refused, not read as absent (which joined the token's session, or opened
    /// the connection without the resume it asked for).
    #[test]
    fn undecodable_query_values_are_refused_not_ignored() {
        let hub = Hub::new();
        for (uri, code) in [
            ("/sse/alice?session_id=%FF", "INVALID_SESSION_ID"),
            ("/sse/alice?session_id=a%zz", "INVALID_SESSION_ID"),
            ("/sse/alice?last_event_id=%", "INVALID_LAST_EVENT_ID"),
        ] {
            let error = register(&hub, &request(uri), ConnectionKind::Sse).unwrap_err();
            assert_eq!(
                (error.status(), error.code()),
                (StatusCode::BAD_REQUEST, code),
                "{uri}"
            );
        }
        let (_guard, _outbox) = register(
            &hub,
            &request("/sse/alice?session_id=s%2D1"),
            ConnectionKind::Sse,
        )
        .expect("a decodable id is taken");
        assert_eq!(hub.connections_of("alice").len(), 1);
    }
}
