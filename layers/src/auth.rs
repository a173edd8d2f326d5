//! Authentication: [`AuthLayer`] puts a verified [`Identity`] in the request extensions.
//!
//! Tokens are looked for in this order (SPEC §7):
//! 1. `Authorization: Bearer <jwt>`;
//! 2. `Sec-WebSocket-Protocol: bearer, <jwt>`: browsers cannot set headers on a WebSocket,
//!    so the token travels as a second "subprotocol". When the client offered `bearer` and
//!    the inner service answers `101 Switching Protocols` without choosing a subprotocol,
//!    the layer selects `bearer`, as browsers require;
//! 3. the `access_token` query parameter (EventSource cannot set headers).
//!
//! A request without a token, or with one that does not verify, is answered `401` with the
//! SPEC's JSON error body and never reaches the inner service. The token itself never
//! appears in a log line, an error body or the [`Identity`].
//!
//! ```
//! use dualcast_layers::{AuthLayer, Identity, Role, TokenSource};
//! use dualcast_layers::jwt::{issue_hs256, Claims, JwtAuthenticator};
//! use http::{Request, Response, StatusCode};
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let secret = b"an example secret of enough length";
//! let layer = AuthLayer::new(JwtAuthenticator::hs256(secret));
//! let upgrade = layer.layer(service_fn(|request: Request<()>| async move {
//!     let identity = request.extensions().get::<Identity>().expect("set by AuthLayer");
//!     assert_eq!(identity.token_source(), TokenSource::Subprotocol);
//!     let mut response = Response::new(bytes::Bytes::new());
//!     *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
//!     Ok::<_, std::convert::Infallible>(response)
//! }));
//!
//! let token = issue_hs256(secret, &Claims::new("alice", Role::Player, 60)).unwrap();
//! let request = Request::get("/ws")
//!     .header("sec-websocket-protocol", format!("bearer, {token}"))
//!     .body(())
//!     .unwrap();
//! let response = upgrade.oneshot(request).await.unwrap();
//! assert_eq!(response.headers()["sec-websocket-protocol"], "bearer");
//! # });
//! ```

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use pin_project::pin_project;
use tower::{Layer, Service};

use crate::error::{ErrorResponse, ErrorType};
use crate::query::query_param;

/// The longest token accepted, in bytes; longer input is refused before any parsing.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Verifies a token. Implemented by [`JwtAuthenticator`](crate::JwtAuthenticator); a host
/// may implement it for its own scheme.
pub trait Authenticate {
    /// Verifies `token` and returns who it speaks for.
    ///
    /// The returned identity's [`TokenSource`] is set by the layer afterwards.
    fn authenticate(&self, token: &str) -> Result<Identity, AuthError>;
}

impl<A: Authenticate + ?Sized> Authenticate for Arc<A> {
    fn authenticate(&self, token: &str) -> Result<Identity, AuthError> {
        (**self).authenticate(token)
    }
}

/// What a principal may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Role {
    /// An end user: sees and touches only its own connections and session.
    #[default]
    Player,
    /// A backend: may publish to and manage any player.
    Service,
    /// An operator: like `Service`.
    Admin,
}

impl Role {
    /// The claim value: `"player"`, `"service"` or `"admin"`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Player => "player",
            Self::Service => "service",
            Self::Admin => "admin",
        }
    }

    /// Parses a claim value; `None` for anything else.
    #[must_use]
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "player" => Some(Self::Player),
            "service" => Some(Self::Service),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }

    /// `true` for `Service` and `Admin`: roles that may act for any player.
    #[must_use]
    pub const fn is_privileged(self) -> bool {
        matches!(self, Self::Service | Self::Admin)
    }
}

/// Where the token of a request was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TokenSource {
    /// `Authorization: Bearer`.
    #[default]
    AuthorizationHeader,
    /// `Sec-WebSocket-Protocol: bearer, <jwt>`.
    Subprotocol,
    /// The `access_token` query parameter.
    QueryParameter,
}

/// A verified principal, placed in the request extensions by [`Auth`].
///
/// It holds no token, so it may be logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    player_id: Arc<str>,
    role: Role,
    session_id: Option<Arc<str>>,
    expires_at: Option<SystemTime>,
    token_source: TokenSource,
}

impl Identity {
    /// An identity for `player_id` with `role`, no session claim and no expiry.
    #[must_use]
    pub fn new(player_id: impl Into<Arc<str>>, role: Role) -> Self {
        Self {
            player_id: player_id.into(),
            role,
            session_id: None,
            expires_at: None,
            token_source: TokenSource::default(),
        }
    }

    /// Sets the session the token names (the `sid` claim).
    #[must_use]
    pub fn with_session_id(mut self, session_id: impl Into<Arc<str>>) -> Self {
        self.session_id = Some(session_id.into());
        self
    }

    /// Sets when the credential stops being valid (the `exp` claim).
    #[must_use]
    pub fn with_expiry(mut self, expires_at: SystemTime) -> Self {
        self.expires_at = Some(expires_at);
        self
    }

    /// Sets where the token was found.
    #[must_use]
    pub fn with_token_source(mut self, token_source: TokenSource) -> Self {
        self.token_source = token_source;
        self
    }

    /// The player this identity speaks for (the `sub` claim).
    #[must_use]
    pub fn player_id(&self) -> &str {
        &self.player_id
    }

    /// The player id as a shared string, cheap to clone.
    #[must_use]
    pub fn player_id_arc(&self) -> &Arc<str> {
        &self.player_id
    }

    /// The role claim.
    #[must_use]
    pub fn role(&self) -> Role {
        self.role
    }

    /// The session the token names, if any.
    #[must_use]
    pub fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }

    /// When the credential stops being accepted, if ever: for a JWT, `exp` plus the
    /// verifier's leeway. A connection opened with it ends then with `auth_expired`.
    #[must_use]
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.expires_at
    }

    /// Where the token was found.
    #[must_use]
    pub fn token_source(&self) -> TokenSource {
        self.token_source
    }

    /// May this identity act for `player_id`? Its own id always; any id when privileged.
    #[must_use]
    pub fn may_act_for(&self, player_id: &str) -> bool {
        self.role.is_privileged() || &*self.player_id == player_id
    }
}

/// Why a request did not authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthErrorKind {
    /// No token in any of the three places.
    Missing,
    /// A token that is not a well-formed credential (wrong scheme, too long, not a JWT).
    Malformed,
    /// A well-formed token whose `exp` has passed.
    Expired,
    /// A token that is not yet valid (`nbf` in the future).
    NotYetValid,
    /// A token that does not verify: bad signature, wrong issuer or audience, bad claims.
    Invalid,
}

impl AuthErrorKind {
    /// The stable `details.error_code` of the 401 body.
    #[must_use]
    pub const fn code(self) -> &'static str {
        match self {
            Self::Missing => "MISSING_TOKEN",
            Self::Malformed => "MALFORMED_TOKEN",
            Self::Expired => "TOKEN_EXPIRED",
            Self::NotYetValid => "TOKEN_NOT_YET_VALID",
            Self::Invalid => "INVALID_TOKEN",
        }
    }
}

/// An authentication failure: a kind and a message that never contains the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthError {
    kind: AuthErrorKind,
    message: &'static str,
}

impl AuthError {
    /// A failure of `kind` explained by `message`.
    #[must_use]
    pub const fn new(kind: AuthErrorKind, message: &'static str) -> Self {
        Self { kind, message }
    }

    /// The kind of failure.
    #[must_use]
    pub const fn kind(&self) -> AuthErrorKind {
        self.kind
    }

    /// The 401 answer: `authentication_error` with `details.error_code` and
    /// `WWW-Authenticate: Bearer`.
    pub fn into_response<B: From<Bytes>>(self) -> Response<B> {
        let mut response: Response<B> = ErrorResponse::new(
            StatusCode::UNAUTHORIZED,
            ErrorType::AuthenticationError,
            self.message,
        )
        .detail("error_code", self.kind.code())
        .into_response();
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        response.extensions_mut().insert(self.kind);
        response
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.kind.code())
    }
}

impl std::error::Error for AuthError {}

/// Finds the request's token in the three places, in order.
///
/// A present but unusable `Authorization` header is an error rather than a reason to look
/// further, so a client never has its header silently ignored.
pub fn find_token<'a>(
    headers: &'a HeaderMap,
    uri: &'a http::Uri,
) -> Result<(std::borrow::Cow<'a, str>, TokenSource), AuthError> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value
            .to_str()
            .map_err(|_| malformed("the Authorization header is not ASCII"))?;
        let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(malformed(
                "the Authorization header must use the Bearer scheme",
            ));
        }
        return Ok((token.trim().into(), TokenSource::AuthorizationHeader));
    }
    for value in headers.get_all(header::SEC_WEBSOCKET_PROTOCOL) {
        let Ok(value) = value.to_str() else { continue };
        let mut protocols = value.split(',').map(str::trim);
        while let Some(protocol) = protocols.next() {
            if protocol == "bearer" {
                return match protocols.next() {
                    Some(token) if !token.is_empty() => {
                        Ok((token.into(), TokenSource::Subprotocol))
                    }
                    _ => Err(malformed(
                        "the bearer subprotocol must be followed by a token",
                    )),
                };
            }
        }
    }
    match query_param(uri, "access_token") {
        Some(token) => Ok((token, TokenSource::QueryParameter)),
        None => Err(AuthError::new(
            AuthErrorKind::Missing,
            "no token: send Authorization: Bearer, the bearer subprotocol, or access_token",
        )),
    }
}

/// Did the client offer the `bearer` WebSocket subprotocol?
#[must_use]
pub fn offers_bearer(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| value.split(',').any(|p| p.trim() == "bearer"))
}

fn malformed(message: &'static str) -> AuthError {
    AuthError::new(AuthErrorKind::Malformed, message)
}

/// Finds and verifies the request's token.
pub fn authenticate_request<A: Authenticate + ?Sized>(
    authenticator: &A,
    headers: &HeaderMap,
    uri: &http::Uri,
) -> Result<Identity, AuthError> {
    let (token, source) = find_token(headers, uri)?;
    if token.is_empty() || token.len() > MAX_TOKEN_LEN {
        return Err(malformed("the token is empty or longer than 8 KiB"));
    }
    Ok(authenticator
        .authenticate(&token)?
        .with_token_source(source))
}

/// Layer that applies [`Auth`]: verifies every request's token with an [`Authenticate`].
#[derive(Debug, Clone)]
#[must_use]
pub struct AuthLayer<A> {
    authenticator: A,
}

impl<A> AuthLayer<A> {
    /// A layer verifying with `authenticator` (e.g. [`JwtAuthenticator`](crate::JwtAuthenticator)).
    pub fn new(authenticator: A) -> Self {
        Self { authenticator }
    }
}

impl<S, A: Clone> Layer<S> for AuthLayer<A> {
    type Service = Auth<S, A>;

    fn layer(&self, inner: S) -> Self::Service {
        Auth {
            inner,
            authenticator: self.authenticator.clone(),
        }
    }
}

/// Middleware that authenticates each request; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct Auth<S, A> {
    inner: S,
    authenticator: A,
}

impl<S, A> Auth<S, A> {
    /// Wraps `inner`, verifying with `authenticator`.
    pub fn new(inner: S, authenticator: A) -> Self {
        Self {
            inner,
            authenticator,
        }
    }

    /// The same as [`AuthLayer::new`].
    pub fn layer(authenticator: A) -> AuthLayer<A> {
        AuthLayer::new(authenticator)
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, A, ReqBody, ResBody> Service<Request<ReqBody>> for Auth<S, A>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    A: Authenticate,
    ResBody: From<Bytes>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        match authenticate_request(&self.authenticator, request.headers(), request.uri()) {
            Ok(identity) => {
                let select_bearer = offers_bearer(request.headers());
                tracing::trace!(
                    player_id = identity.player_id(),
                    role = identity.role().as_str(),
                    "authenticated"
                );
                request.extensions_mut().insert(identity);
                ResponseFuture {
                    state: State::Inner {
                        future: self.inner.call(request),
                        select_bearer,
                    },
                    _body: PhantomData,
                }
            }
            Err(error) => {
                tracing::debug!(
                    path = request.uri().path(),
                    error_code = error.kind().code(),
                    "request refused: {error}"
                );
                ResponseFuture {
                    state: State::Refused {
                        response: Some(error.into_response()),
                    },
                    _body: PhantomData,
                }
            }
        }
    }
}

/// Response future of [`Auth`].
#[pin_project]
pub struct ResponseFuture<F, B> {
    #[pin]
    state: State<F, B>,
    _body: PhantomData<fn() -> B>,
}

#[pin_project(project = StateProj)]
enum State<F, B> {
    Inner {
        #[pin]
        future: F,
        select_bearer: bool,
    },
    Refused {
        response: Option<Response<B>>,
    },
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Inner {
                future,
                select_bearer,
            } => {
                let mut response = ready!(future.poll(cx))?;
                if *select_bearer
                    && response.status() == StatusCode::SWITCHING_PROTOCOLS
                    && !response
                        .headers()
                        .contains_key(header::SEC_WEBSOCKET_PROTOCOL)
                {
                    response.headers_mut().insert(
                        header::SEC_WEBSOCKET_PROTOCOL,
                        HeaderValue::from_static("bearer"),
                    );
                }
                Poll::Ready(Ok(response))
            }
            StateProj::Refused { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                None => panic!("ResponseFuture polled after completion"),
            },
        }
    }
}

impl<F, B> fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tower::{service_fn, ServiceExt};

    #[derive(Clone)]
    struct Fixed;
    impl Authenticate for Fixed {
        fn authenticate(&self, token: &str) -> Result<Identity, AuthError> {
            match token {
                "good" => Ok(Identity::new("alice", Role::Player)),
                _ => Err(AuthError::new(AuthErrorKind::Invalid, "bad token")),
            }
        }
    }

    fn echo(
    ) -> impl Service<Request<()>, Response = Response<Bytes>, Error = Infallible, Future = impl Send>
           + Clone {
        service_fn(|request: Request<()>| async move {
            let identity = request.extensions().get::<Identity>().cloned();
            let body = identity
                .map(|i| format!("{}:{:?}", i.player_id(), i.token_source()))
                .unwrap_or_default();
            Ok::<_, Infallible>(Response::new(Bytes::from(body)))
        })
    }

    async fn call(request: Request<()>) -> Response<Bytes> {
        AuthLayer::new(Fixed)
            .layer(echo())
            .oneshot(request)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn sources_are_tried_in_order() {
        let response = call(
            Request::get("/?access_token=bad")
                .header("authorization", "Bearer good")
                .header("sec-websocket-protocol", "bearer, bad")
                .body(())
                .unwrap(),
        )
        .await;
        assert_eq!(response.body(), "alice:AuthorizationHeader");

        let response = call(
            Request::get("/?access_token=bad")
                .header("sec-websocket-protocol", "chat, bearer, good")
                .body(())
                .unwrap(),
        )
        .await;
        assert_eq!(response.body(), "alice:Subprotocol");

        let response = call(Request::get("/?x=1&access_token=good").body(()).unwrap()).await;
        assert_eq!(response.body(), "alice:QueryParameter");
    }

    #[tokio::test]
    async fn failures_answer_401_without_the_token() {
        for (request, code) in [
            (Request::get("/").body(()).unwrap(), "MISSING_TOKEN"),
            (
                Request::get("/")
                    .header("authorization", "Basic Zm9vOmJhcg==")
                    .body(())
                    .unwrap(),
                "MALFORMED_TOKEN",
            ),
            (
                Request::get("/")
                    .header("sec-websocket-protocol", "bearer")
                    .body(())
                    .unwrap(),
                "MALFORMED_TOKEN",
            ),
            (
                Request::get("/?access_token=secret-token-value")
                    .body(())
                    .unwrap(),
                "INVALID_TOKEN",
            ),
        ] {
            let response = call(request).await;
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
            assert_eq!(response.headers()["www-authenticate"], "Bearer");
            let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
            assert_eq!(body["error_type"], "authentication_error");
            assert_eq!(body["details"]["error_code"], code);
            assert!(!String::from_utf8_lossy(response.body()).contains("secret-token-value"));
        }
    }

    #[tokio::test]
    async fn bearer_is_selected_on_a_101_when_offered() {
        let switching = service_fn(|_request: Request<()>| async move {
            let mut response = Response::new(Bytes::new());
            *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            Ok::<_, Infallible>(response)
        });
        let service = AuthLayer::new(Fixed).layer(switching);
        let via_subprotocol = Request::get("/")
            .header("sec-websocket-protocol", "bearer, good")
            .body(())
            .unwrap();
        let response = service.clone().oneshot(via_subprotocol).await.unwrap();
        assert_eq!(response.headers()["sec-websocket-protocol"], "bearer");

        let via_header = Request::get("/")
            .header("authorization", "Bearer good")
            .body(())
            .unwrap();
        let response = service.oneshot(via_header).await.unwrap();
        assert!(!response.headers().contains_key("sec-websocket-protocol"));
    }

    #[test]
    fn identity_acts_for_itself_unless_privileged() {
        let alice = Identity::new("alice", Role::Player);
        assert!(alice.may_act_for("alice"));
        assert!(!alice.may_act_for("bob"));
        assert!(Identity::new("backend", Role::Service).may_act_for("bob"));
    }
}
