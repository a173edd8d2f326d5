//! Sessions: [`SessionLayer`] resolves the game session a connection request names, and
//! puts the resolved [`Session`] in the request extensions.
//!
//! A player has at most one *current* session (SPEC §3). Every connection request of an
//! identified player asks a [`ResolveSession`] (dualcast's `Hub`) which session it joins:
//! the layer only asks; the resolver owns the rules and the state. The layer sits behind
//! [`AuthLayer`](crate::AuthLayer), which put the [`Identity`] it reads there, and in front
//! of admission ([`TrackLayer`](crate::TrackLayer)), so that a refused request is never
//! counted as a connection.
//!
//! # The named session
//!
//! A request names a session by the `session_id` query parameter (percent-decoded), else
//! by its credential's `sid` claim ([`Identity::session_id`]); the query wins when both are
//! present. A request with no [`Identity`] passes through untouched and the resolver is
//! not asked: the handler behind answers it (`401`).
//!
//! # The rules, as a resolver implements them
//!
//! 1. **No session named**: the connection joins the player's current session; one is
//!    created (and its id minted) if the player has none ([`SessionOutcome::Joined`],
//!    [`SessionOutcome::Created`]).
//! 2. **The current session named**: it joins ([`SessionOutcome::Joined`]).
//! 3. **A replaced session named**: refused with [`SessionRefused::Stale`]. An old browser
//!    tab must not push the new client out.
//! 4. **A new session named**: by default it takes over ([`SessionOutcome::TakesOver`]):
//!    it becomes current and every connection of the old one ends with
//!    `session_replaced`. In strict mode the resolver instead refuses a session that was
//!    not begun through the session API ([`SessionRefused::Unknown`]).
//!
//! The resolver runs when the service is called, once per request; the layer holds nothing
//! per connection (it pushes no lease into [`Leases`](crate::Leases)). It decides; what
//! the decision changes (a session created, an old one's connections ended) is best carried
//! out when the connection registers, as dualcast's `Hub` does, so that a request refused
//! further on (by admission, say) changes nothing.
//!
//! # Refusals
//!
//! A refused request never reaches the inner service. It is answered with the SPEC's JSON
//! error body ([`ErrorResponse`]), the [`ErrorType`] in the response extensions:
//!
//! | Why | Status | `error_type` | `details.error_code` |
//! |---|---|---|---|
//! | the named id is not 1 to [`MAX_SESSION_ID_LEN`] bytes of printable ASCII | `400` | `validation_error` | `INVALID_SESSION_ID` |
//! | [`SessionRefused::Stale`] (rule 3) | `409` | `session_error` | `STALE_SESSION` |
//! | [`SessionRefused::Unknown`] (rule 4, strict) | `409` | `session_error` | `UNKNOWN_SESSION` |
//!
//! A `409` also carries `details.session_id` (the named id) and, in the response
//! extensions, an [`AdmissionRefused`] whose cause is [`SessionRefused::cause`], for an
//! outer metrics layer. A `400` carries `details.session_id` only when the value is at most
//! [`MAX_SESSION_ID_LEN`] bytes long (and valid UTF-8): a longer one is never echoed.
//! Refusals are logged at `debug` with the fields `player_id`, `session_id` and `reason`.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use std::sync::{Arc, Mutex};
//!
//! use bytes::Bytes;
//! use dualcast_layers::error::AdmissionRefused;
//! use dualcast_layers::session::{
//!     ResolveSession, Session, SessionLayer, SessionOutcome, SessionRefused,
//! };
//! use dualcast_layers::{Identity, Role};
//! use http::{Request, Response, StatusCode};
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! /// One player's sessions: the current one and the ones it replaced.
//! #[derive(Default)]
//! struct Sessions(Mutex<State>);
//!
//! #[derive(Default)]
//! struct State {
//!     current: Option<String>,
//!     replaced: Vec<String>,
//! }
//!
//! impl ResolveSession for Sessions {
//!     fn resolve(&self, _player_id: &str, named: Option<&str>) -> Result<Session, SessionRefused> {
//!         let mut state = self.0.lock().unwrap();
//!         match (named, state.current.clone()) {
//!             // Rule 1: join the current session, or create one.
//!             (None, Some(current)) => Ok(Session::new(current, false, SessionOutcome::Joined)),
//!             (None, None) => {
//!                 state.current = Some("s-1".to_owned()); // a real resolver mints a random id
//!                 Ok(Session::new("s-1", false, SessionOutcome::Created))
//!             }
//!             // Rule 2: the current session.
//!             (Some(named), Some(current)) if named == current => {
//!                 Ok(Session::new(current, true, SessionOutcome::Joined))
//!             }
//!             // Rule 3: a replaced session.
//!             (Some(named), _) if state.replaced.iter().any(|old| old == named) => {
//!                 Err(SessionRefused::Stale)
//!             }
//!             // Rule 4: a new session takes over (the old session's connections end
//!             // when this one registers).
//!             (Some(named), current) => {
//!                 let outcome = match current {
//!                     Some(_) => SessionOutcome::TakesOver,
//!                     None => SessionOutcome::Created,
//!                 };
//!                 state.replaced.extend(current);
//!                 state.current = Some(named.to_owned());
//!                 Ok(Session::new(named, true, outcome))
//!             }
//!         }
//!     }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! // `Arc<R>` resolves as `R` does: the service's clones share one resolver.
//! let layer = SessionLayer::new(Arc::new(Sessions::default()));
//! let service = layer.layer(service_fn(|request: Request<()>| async move {
//!     let session = request.extensions().get::<Session>().expect("set by SessionLayer");
//!     let body = format!("{}:{:?}", session.id(), session.outcome());
//!     Ok::<_, Infallible>(Response::new(Bytes::from(body)))
//! }));
//! // What AuthLayer does in front: put the request's Identity in its extensions.
//! let connect = |uri: &str, identity: Identity| {
//!     let mut request = Request::get(uri).body(()).unwrap();
//!     request.extensions_mut().insert(identity);
//!     service.clone().oneshot(request)
//! };
//! let alice = || Identity::new("alice", Role::Player);
//!
//! let response = connect("/sse/alice", alice()).await.unwrap();
//! assert_eq!(response.into_body(), "s-1:Created");
//! let response = connect("/sse/alice?session_id=s-1", alice()).await.unwrap();
//! assert_eq!(response.into_body(), "s-1:Joined");
//! // The token's `sid` claim names a session too; here a new one, which takes over.
//! let response = connect("/sse/alice", alice().with_session_id("s-2")).await.unwrap();
//! assert_eq!(response.into_body(), "s-2:TakesOver");
//!
//! // The old tab comes back with the replaced session: refused.
//! let response = connect("/sse/alice?session_id=s-1", alice()).await.unwrap();
//! assert_eq!(response.status(), StatusCode::CONFLICT);
//! let cause = response.extensions().get::<AdmissionRefused>().map(|refused| refused.cause);
//! assert_eq!(cause, Some("stale_session"));
//! let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
//! assert_eq!(body["error_type"], "session_error");
//! assert_eq!(body["details"]["error_code"], "STALE_SESSION");
//! assert_eq!(body["details"]["session_id"], "s-1");
//!
//! // Not printable ASCII: refused before the resolver is asked.
//! let response = connect("/sse/alice?session_id=a%20b", alice()).await.unwrap();
//! assert_eq!(response.status(), StatusCode::BAD_REQUEST);
//! let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
//! assert_eq!(body["details"]["error_code"], "INVALID_SESSION_ID");
//! # });
//! ```

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri};
use tower::{Layer, Service};

use crate::error::{AdmissionRefused, ErrorResponse, ErrorType};
use crate::query::{has_query_param, query_param};
use crate::Identity;

pub mod future;

#[cfg(test)]
mod tests;

pub use self::future::ResponseFuture;

/// Longest session id, in bytes (SPEC §3).
pub const MAX_SESSION_ID_LEN: usize = 128;

/// The query parameter that names a session.
const SESSION_ID_PARAM: &str = "session_id";

/// The message of a `400 INVALID_SESSION_ID`.
const INVALID_SESSION_ID: &str = "session_id must be 1 to 128 bytes of printable ASCII";

/// Whether `id` is a valid session id: 1 to [`MAX_SESSION_ID_LEN`] bytes of printable
/// ASCII (`!` to `~`).
#[must_use]
pub fn is_valid_session_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_SESSION_ID_LEN && id.bytes().all(|b| b.is_ascii_graphic())
}

/// Decides which session a connection of a player joins (SPEC §3); dualcast's `Hub`
/// implements it.
///
/// Implemented for `Arc<R>` and `&R` of every resolver `R`.
pub trait ResolveSession {
    /// The session a new connection of `player_id` joins, given the session it names
    /// (`named`: the `session_id` query parameter, else the credential's `sid`), or why it
    /// is refused. `named` has been validated ([`is_valid_session_id`]).
    fn resolve(&self, player_id: &str, named: Option<&str>) -> Result<Session, SessionRefused>;
}

impl<R: ResolveSession + ?Sized> ResolveSession for Arc<R> {
    fn resolve(&self, player_id: &str, named: Option<&str>) -> Result<Session, SessionRefused> {
        (**self).resolve(player_id, named)
    }
}

impl<R: ResolveSession + ?Sized> ResolveSession for &R {
    fn resolve(&self, player_id: &str, named: Option<&str>) -> Result<Session, SessionRefused> {
        (**self).resolve(player_id, named)
    }
}

/// The resolved session of a connection request, put in the request extensions by
/// [`SessionLayer`] for the handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    id: Arc<str>,
    named: bool,
    outcome: SessionOutcome,
}

impl Session {
    /// A resolved session: its id, whether the request named it, and what joining it does.
    pub fn new(id: impl Into<Arc<str>>, named: bool, outcome: SessionOutcome) -> Self {
        Self {
            id: id.into(),
            named,
            outcome,
        }
    }

    /// The session id.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The session id, shared.
    #[must_use]
    pub fn id_arc(&self) -> &Arc<str> {
        &self.id
    }

    /// Whether the request named this session (else it was given the current one, or a new
    /// one was minted).
    #[must_use]
    pub fn named(&self) -> bool {
        self.named
    }

    /// What joining it does.
    #[must_use]
    pub fn outcome(&self) -> SessionOutcome {
        self.outcome
    }
}

/// What a connection joining a [`Session`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SessionOutcome {
    /// It joins the player's current session.
    Joined,
    /// The player had no session: this one is created.
    Created,
    /// A new session: it becomes current and the old one's connections end.
    TakesOver,
}

/// Why a connection request's session is refused (`409 session_error`).
///
/// Its `Display` is the message of the refusal's error body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SessionRefused {
    /// The session was replaced earlier (`STALE_SESSION`).
    Stale,
    /// Strict mode: the session was not begun through the session API (`UNKNOWN_SESSION`).
    Unknown,
}

impl SessionRefused {
    /// The `details.error_code`: `STALE_SESSION` or `UNKNOWN_SESSION`.
    #[must_use]
    pub const fn code(self) -> &'static str {
        match self {
            Self::Stale => "STALE_SESSION",
            Self::Unknown => "UNKNOWN_SESSION",
        }
    }

    /// The cause counted by metrics ([`AdmissionRefused`]):
    /// `stale_session` or `unknown_session`.
    #[must_use]
    pub const fn cause(self) -> &'static str {
        match self {
            Self::Stale => "stale_session",
            Self::Unknown => "unknown_session",
        }
    }

    /// The `409` answering a request that named `session_id`: the SPEC error body with
    /// `details.error_code` ([`code`](Self::code)) and `details.session_id`, and an
    /// [`AdmissionRefused`] ([`cause`](Self::cause)) in the response extensions.
    pub fn into_response<B: From<Bytes>>(self, session_id: &str) -> Response<B> {
        let mut response = ErrorResponse::new(
            StatusCode::CONFLICT,
            ErrorType::SessionError,
            self.to_string(),
        )
        .detail("error_code", self.code())
        .detail("session_id", session_id)
        .into_response();
        response.extensions_mut().insert(AdmissionRefused {
            cause: self.cause(),
        });
        response
    }
}

impl fmt::Display for SessionRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Stale => {
                "this session was replaced by a newer one; connect with the current session or none"
            }
            Self::Unknown => "strict sessions: begin this session through the session API first",
        })
    }
}

impl std::error::Error for SessionRefused {}

/// Layer that applies [`ResolveSessions`]: resolves the session of every identified
/// request with a [`ResolveSession`]; see the [module docs](self).
#[derive(Debug, Clone)]
#[must_use]
pub struct SessionLayer<R> {
    resolver: R,
}

impl<R> SessionLayer<R> {
    /// A layer asking `resolver` (dualcast's `Hub`) which session each connection joins.
    /// To share one resolver that is not `Clone`, give an `Arc` of it.
    pub fn new(resolver: R) -> Self {
        Self { resolver }
    }

    /// The resolver.
    pub fn resolver(&self) -> &R {
        &self.resolver
    }
}

impl<S, R: Clone> Layer<S> for SessionLayer<R> {
    type Service = ResolveSessions<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        ResolveSessions::new(inner, self.resolver.clone())
    }
}

/// Middleware that resolves the session each identified request names and puts the
/// [`Session`] in its extensions, or answers the refusal; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct ResolveSessions<S, R> {
    inner: S,
    resolver: R,
}

impl<S, R> ResolveSessions<S, R> {
    /// Wraps `inner`, asking `resolver`: the same as
    /// `SessionLayer::new(resolver).layer(inner)`.
    pub fn new(inner: S, resolver: R) -> Self {
        Self { inner, resolver }
    }

    /// The same as [`SessionLayer::new`].
    pub fn layer(resolver: R) -> SessionLayer<R> {
        SessionLayer::new(resolver)
    }

    /// The resolver.
    pub fn resolver(&self) -> &R {
        &self.resolver
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, R, ReqBody, ResBody> Service<Request<ReqBody>> for ResolveSessions<S, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    R: ResolveSession,
    ResBody: From<Bytes>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        match resolve(&self.resolver, &request) {
            // No identity: the handler answers.
            None => {}
            Some(Ok(session)) => {
                request.extensions_mut().insert(session);
            }
            Some(Err(refusal)) => return ResponseFuture::refused(refusal),
        }
        ResponseFuture::inner(self.inner.call(request))
    }
}

/// Resolves the session of `request`: `None` when it carries no [`Identity`], else the
/// session or the refusal to answer with.
fn resolve<R, ReqBody, ResBody>(
    resolver: &R,
    request: &Request<ReqBody>,
) -> Option<Result<Session, Response<ResBody>>>
where
    R: ResolveSession,
    ResBody: From<Bytes>,
{
    let identity = request.extensions().get::<Identity>()?;
    let player_id = identity.player_id();
    let named = match named_session(request.uri(), identity) {
        Ok(named) => named,
        Err(InvalidSessionId { shown }) => {
            let shown = shown.as_deref();
            tracing::debug!(
                player_id,
                session_id = ?shown,
                reason = "invalid_session_id",
                "connection request refused: {INVALID_SESSION_ID}"
            );
            let mut error = ErrorResponse::new(
                StatusCode::BAD_REQUEST,
                ErrorType::ValidationError,
                INVALID_SESSION_ID,
            )
            .detail("error_code", "INVALID_SESSION_ID");
            if let Some(shown) = shown {
                error = error.detail("session_id", shown);
            }
            return Some(Err(error.into_response()));
        }
    };
    let named = named.as_deref();
    Some(resolver.resolve(player_id, named).map_err(|refused| {
        // A refusal names a session: with none named, rules 1 and 2 always join.
        let session_id = named.unwrap_or_default();
        tracing::debug!(
            player_id,
            session_id,
            reason = refused.cause(),
            "connection request refused: {refused}"
        );
        refused.into_response(session_id)
    }))
}

/// A named session id that [`is_valid_session_id`] refuses.
struct InvalidSessionId<'a> {
    /// The value, when it may be echoed back: at most [`MAX_SESSION_ID_LEN`] bytes of
    /// UTF-8 (JSON escapes any control character in it).
    shown: Option<Cow<'a, str>>,
}

/// The session the request names: the `session_id` query parameter, else the identity's
/// `sid` claim, else none.
fn named_session<'a>(
    uri: &'a Uri,
    identity: &'a Identity,
) -> Result<Option<Cow<'a, str>>, InvalidSessionId<'a>> {
    let named = match query_param(uri, SESSION_ID_PARAM) {
        Some(named) => Some(named),
        // Present but not decodable (a bad escape, not UTF-8): invalid, not absent.
        None if has_query_param(uri, SESSION_ID_PARAM) => {
            return Err(InvalidSessionId { shown: None });
        }
        None => identity.session_id().map(Cow::Borrowed),
    };
    match named {
        Some(id) if !is_valid_session_id(&id) => Err(InvalidSessionId {
            shown: (id.len() <= MAX_SESSION_ID_LEN).then_some(id),
        }),
        named => Ok(named),
    }
}
