//! Authentication: [`AuthLayer`] puts a verified [`Identity`] in the request extensions.
//!
//! # Order
//!
//! [`Auth`] identifies a request by the first of these that applies:
//!
//! 1. **Host identity.** An [`Identity`] already in the request extensions, put there by a
//!    host layer in front of this one, is accepted as it is; its credential source becomes
//!    [`CredentialSource::Host`].
//! 2. **Token.** A token in any of the three places (SPEC §7), looked for in this order and
//!    verified with the [`Authenticate`] given to [`AuthLayer::new`]:
//!    1. `Authorization: Bearer <jwt>`;
//!    2. `Sec-WebSocket-Protocol: bearer, <jwt>`: browsers cannot set headers on a
//!       WebSocket, so the token travels as a second "subprotocol";
//!    3. the `access_token` query parameter (EventSource cannot set headers).
//!
//!    A token that is present but unusable (an `Authorization` header of another scheme,
//!    `bearer` with nothing after it, a token that does not verify) is answered `401`: it
//!    never falls through to the hook, so a client never has its credential silently
//!    ignored.
//! 3. **Hook.** A request that carries no token at all goes to the [`Identify`] hook given
//!    to [`AuthLayer::identify_with`] (or [`AuthLayer::identify`], which skips step 2):
//!    an async function of the request head, typically reading a session cookie and
//!    looking it up in a database. Its credential source is
//!    [`CredentialSource::IdentifyHook`].
//! 4. **Nothing.** Without a hook ([`NoHook`], the default), `401` with `MISSING_TOKEN`.
//!
//! A refused request is answered with the SPEC's JSON error body (`401` with
//! `WWW-Authenticate: Bearer` and the [`AuthErrorKind`] in the response extensions, or
//! `403` for an origin) and never reaches the inner service. Tokens never appear in a log
//! line, an error body or the [`Identity`].
//!
//! Whatever identified the request, when the client offered the `bearer` subprotocol and
//! the inner service answers `101 Switching Protocols` without choosing a subprotocol, the
//! layer selects `bearer`, as browsers require.
//!
//! # Origin policy
//!
//! A browser sends cookies on a cross-site WebSocket handshake by itself, so once requests
//! are identified by an ambient credential (the hook, or a host identity) any page could
//! open a connection as the user ("cross-site WebSocket hijacking"). [`Auth`] therefore
//! checks the `Origin` header:
//!
//! - by default (*same origin*), of requests whose credential is not a token
//!   ([`CredentialSource::is_token`]): the `Origin`'s `host[:port]` must equal the `Host`
//!   header, ASCII case-insensitively (a scheme's default port may be left out);
//! - with [`AuthLayer::allowed_origins`], of every WebSocket upgrade (`Upgrade:
//!   websocket`) and every request whose credential is not a token: the `Origin` must be
//!   one of the list;
//! - with [`AuthLayer::any_origin`], never.
//!
//! A request without `Origin` passes (non-browser clients, same-origin `GET`s).
//! `Origin: null`, or an origin not allowed, is answered `403` with `authorization_error`,
//! `details.error_code` `ORIGIN_NOT_ALLOWED` and `details.origin`. The origin is checked
//! before the hook runs, so a refused origin costs no database lookup.
//!
//! # Example
//!
//! ```
//! use dualcast_layers::{AuthError, AuthLayer, CredentialSource, Identity, Role};
//! use dualcast_layers::jwt::{issue_hs256, Claims, JwtAuthenticator};
//! use http::{request::Parts, Request, Response, StatusCode};
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let secret = b"an example secret of enough length";
//! let layer = AuthLayer::new(JwtAuthenticator::hs256(secret))
//!     // For requests without a token: a session cookie, looked up asynchronously.
//!     .identify_with(|request: &Parts| {
//!         let session = request
//!             .headers
//!             .get("cookie")
//!             .and_then(|cookie| cookie.to_str().ok())
//!             .and_then(|cookie| cookie.strip_prefix("session="))
//!             .map(str::to_owned);
//!         async move {
//!             // A database lookup would be awaited here.
//!             match session.as_deref() {
//!                 Some("s-42") => Ok(Identity::new("bob", Role::Player)),
//!                 Some(_) => Err(AuthError::invalid("unknown session")),
//!                 None => Err(AuthError::missing("no token and no session cookie")),
//!             }
//!         }
//!     })
//!     .allowed_origins(["https://app.example"]);
//! let service = layer.layer(service_fn(|request: Request<()>| async move {
//!     let identity = request.extensions().get::<Identity>().expect("set by AuthLayer");
//!     let body = format!("{}:{:?}", identity.player_id(), identity.credential_source());
//!     Ok::<_, std::convert::Infallible>(Response::new(bytes::Bytes::from(body)))
//! }));
//!
//! let token = issue_hs256(secret, &Claims::new("alice", Role::Player, 60)).unwrap();
//! let with_token = Request::get("/sse/alice")
//!     .header("authorization", format!("Bearer {token}"))
//!     .body(())
//!     .unwrap();
//! let response = service.clone().oneshot(with_token).await.unwrap();
//! assert_eq!(response.into_body(), "alice:AuthorizationHeader");
//!
//! let with_cookie = Request::get("/ws/bob")
//!     .header("cookie", "session=s-42")
//!     .header("origin", "https://app.example")
//!     .body(())
//!     .unwrap();
//! let response = service.clone().oneshot(with_cookie).await.unwrap();
//! assert_eq!(response.into_body(), "bob:IdentifyHook");
//!
//! let hijacking = Request::get("/ws/bob")
//!     .header("cookie", "session=s-42")
//!     .header("origin", "https://evil.example")
//!     .body(())
//!     .unwrap();
//! let response = service.oneshot(hijacking).await.unwrap();
//! assert_eq!(response.status(), StatusCode::FORBIDDEN);
//! let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
//! assert_eq!(body["details"]["error_code"], "ORIGIN_NOT_ALLOWED");
//! # });
//! ```

use std::fmt;
use std::future::{ready, Future, Ready};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{request::Parts, Request, Response};
use tower::{Layer, Service};

mod error;
pub mod future;
mod identity;
mod origin;
mod token;

#[cfg(test)]
mod tests;

pub use self::error::{AuthError, AuthErrorKind};
pub use self::future::ResponseFuture;
pub use self::identity::{CredentialSource, Identity, Role};

use self::origin::{OriginPolicy, OriginRefused};
use self::token::{authenticate_request, is_websocket_upgrade, offers_bearer, NO_TOKEN};

/// The longest token accepted, in bytes; longer input is refused before any parsing.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Verifies a token. Implemented by [`JwtAuthenticator`](crate::JwtAuthenticator); a host
/// may implement it for its own scheme.
pub trait Authenticate {
    /// Verifies `token` and returns who it speaks for.
    ///
    /// The returned identity's [`CredentialSource`] is set by the layer afterwards.
    fn authenticate(&self, token: &str) -> Result<Identity, AuthError>;
}

impl<A: Authenticate + ?Sized> Authenticate for Arc<A> {
    fn authenticate(&self, token: &str) -> Result<Identity, AuthError> {
        (**self).authenticate(token)
    }
}

/// The authenticator of a layer that accepts no tokens, made by [`AuthLayer::identify`].
///
/// Such a layer does not look for tokens at all, so this is never called by it; called
/// directly, it refuses every token with [`AuthErrorKind::Invalid`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoTokens;

impl Authenticate for NoTokens {
    fn authenticate(&self, _token: &str) -> Result<Identity, AuthError> {
        Err(AuthError::invalid("this server accepts no tokens"))
    }
}

/// An async identify hook: identifies a request that carries no token from its head
/// (typically a session cookie looked up in a database).
///
/// Implemented for every `Fn(&Parts) -> impl Future<Output = Result<Identity, AuthError>>`
/// whose future is `Send + 'static`: the function reads what it needs from the head
/// synchronously and returns an owned future. The identity's [`CredentialSource`] is set
/// to [`CredentialSource::IdentifyHook`] by the layer afterwards. Answer
/// [`AuthError::missing`] for a request without the credential, [`AuthError::invalid`] for
/// one whose credential does not verify.
///
/// ```
/// use dualcast_layers::{AuthError, Identify, Identity, Role};
/// use http::request::Parts;
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let hook = |request: &Parts| {
///     let is_bob = request.headers.get("cookie").is_some_and(|c| c == "session=bob");
///     async move {
///         match is_bob {
///             true => Ok(Identity::new("bob", Role::Player)),
///             false => Err(AuthError::missing("no session cookie")),
///         }
///     }
/// };
/// let (parts, ()) = http::Request::get("/").header("cookie", "session=bob").body(()).unwrap().into_parts();
/// assert_eq!(hook.identify(&parts).await.unwrap().player_id(), "bob");
/// # });
/// ```
pub trait Identify {
    /// The future of an identification.
    type Future: Future<Output = Result<Identity, AuthError>> + Send + 'static;

    /// Starts identifying the request whose head is `request`.
    fn identify(&self, request: &Parts) -> Self::Future;
}

impl<F, Fut> Identify for F
where
    F: Fn(&Parts) -> Fut,
    Fut: Future<Output = Result<Identity, AuthError>> + Send + 'static,
{
    type Future = Fut;

    fn identify(&self, request: &Parts) -> Fut {
        self(request)
    }
}

/// The default hook: no hook. A request without a token is answered `401` with
/// `MISSING_TOKEN`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoHook;

impl Identify for NoHook {
    type Future = Ready<Result<Identity, AuthError>>;

    fn identify(&self, _request: &Parts) -> Self::Future {
        ready(Err(AuthError::missing(NO_TOKEN)))
    }
}

/// Layer that applies [`Auth`]: identifies every request by a host identity, a token or
/// the hook, in that order; see the [module docs](self).
#[derive(Clone)]
#[must_use]
pub struct AuthLayer<A, H = NoHook> {
    /// `None` for a layer made by [`AuthLayer::identify`]: tokens are not looked for.
    authenticator: Option<A>,
    /// `None` for a layer made by [`AuthLayer::new`] and not given a hook.
    hook: Option<H>,
    origins: OriginPolicy,
}

impl<A> AuthLayer<A> {
    /// A layer verifying tokens with `authenticator` (e.g.
    /// [`JwtAuthenticator`](crate::JwtAuthenticator)).
    ///
    /// Defaults: no hook (a request without a token is refused `401`), the same-origin
    /// policy.
    pub fn new(authenticator: A) -> Self {
        Self {
            authenticator: Some(authenticator),
            hook: None,
            origins: OriginPolicy::default(),
        }
    }
}

impl<H> AuthLayer<NoTokens, H> {
    /// A layer identifying every request with `hook` alone: tokens are not looked for (an
    /// `access_token` or `Authorization` header is left to the hook to read or ignore).
    ///
    /// Default: the same-origin policy, which this layer applies to every request that has
    /// no host identity.
    pub fn identify(hook: H) -> Self {
        Self {
            authenticator: None,
            hook: Some(hook),
            origins: OriginPolicy::default(),
        }
    }
}

impl<A, H> AuthLayer<A, H> {
    /// Identifies the requests that carry no token at all with `hook`, after the tokens.
    ///
    /// Default: no hook.
    pub fn identify_with<H2>(self, hook: H2) -> AuthLayer<A, H2> {
        AuthLayer {
            authenticator: self.authenticator,
            hook: Some(hook),
            origins: self.origins,
        }
    }

    /// Admits only these origins (`scheme://host[:port]`, compared ASCII
    /// case-insensitively, a trailing `/` ignored) on every WebSocket upgrade and every
    /// request whose credential is not a token. `null` never matches.
    ///
    /// Default: same origin, and only for requests whose credential is not a token; see
    /// the [module docs](self#origin-policy).
    pub fn allowed_origins<I>(mut self, origins: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        self.origins = OriginPolicy::allow_list(origins);
        self
    }

    /// Turns the origin check off: any origin, `null` included, is admitted.
    ///
    /// Default: the check is on (same origin).
    pub fn any_origin(mut self) -> Self {
        self.origins = OriginPolicy::Any;
        self
    }
}

impl<S, A: Clone, H: Clone> Layer<S> for AuthLayer<A, H> {
    type Service = Auth<S, A, H>;

    fn layer(&self, inner: S) -> Self::Service {
        Auth {
            inner,
            authenticator: self.authenticator.clone(),
            hook: self.hook.clone(),
            origins: self.origins.clone(),
        }
    }
}

impl<A: fmt::Debug, H> fmt::Debug for AuthLayer<A, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthLayer")
            .field("authenticator", &self.authenticator)
            .field("hook", &HookName(self.hook.as_ref()))
            .field("origins", &self.origins)
            .finish()
    }
}

/// Prints a hook by its type name: closures are not `Debug`.
struct HookName<'a, H>(Option<&'a H>);

impl<H> fmt::Debug for HookName<'_, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(_) => f.write_str(std::any::type_name::<H>()),
            None => f.write_str("None"),
        }
    }
}

/// Middleware that identifies each request; see the [module docs](self).
#[derive(Clone)]
pub struct Auth<S, A, H = NoHook> {
    inner: S,
    authenticator: Option<A>,
    hook: Option<H>,
    origins: OriginPolicy,
}

impl<S, A> Auth<S, A> {
    /// Wraps `inner`, verifying tokens with `authenticator`, with no hook and the
    /// same-origin policy: the same as `AuthLayer::new(authenticator).layer(inner)`.
    pub fn new(inner: S, authenticator: A) -> Self {
        Self {
            inner,
            authenticator: Some(authenticator),
            hook: None,
            origins: OriginPolicy::default(),
        }
    }

    /// The same as [`AuthLayer::new`].
    pub fn layer(authenticator: A) -> AuthLayer<A> {
        AuthLayer::new(authenticator)
    }
}

impl<S, A, H> Auth<S, A, H> {
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

impl<S: fmt::Debug, A: fmt::Debug, H> fmt::Debug for Auth<S, A, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("inner", &self.inner)
            .field("authenticator", &self.authenticator)
            .field("hook", &HookName(self.hook.as_ref()))
            .field("origins", &self.origins)
            .finish()
    }
}

impl<S, A, H, ReqBody, ResBody> Service<Request<ReqBody>> for Auth<S, A, H>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    A: Authenticate,
    H: Identify,
    ResBody: From<Bytes>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody, H::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let select_bearer = offers_bearer(request.headers());
        // With an allow-list, every WebSocket upgrade is checked, whatever its credential.
        let upgrade_checked =
            self.origins.applies(true, true) && is_websocket_upgrade(request.headers());
        if upgrade_checked {
            if let Err(refused) = self.origins.check(request.headers(), request.uri()) {
                return refuse_origin(&request, refused);
            }
        }
        // Run before admitting an ambient (non-token) credential.
        let check_ambient = |request: &Request<ReqBody>| {
            if upgrade_checked || !self.origins.applies(false, false) {
                Ok(())
            } else {
                self.origins.check(request.headers(), request.uri())
            }
        };

        // 1. An identity a host layer already established.
        if request.extensions().get::<Identity>().is_some() {
            if let Err(refused) = check_ambient(&request) {
                return refuse_origin(&request, refused);
            }
            if let Some(identity) = request.extensions_mut().get_mut::<Identity>() {
                identity.set_credential_source(CredentialSource::Host);
                trace_authenticated(identity);
            }
            return ResponseFuture::inner(self.inner.call(request), select_bearer);
        }

        // 2. A token in one of the three places.
        if let Some(authenticator) = &self.authenticator {
            let hook_follows = self.hook.is_some();
            match authenticate_request(
                authenticator,
                request.headers(),
                request.uri(),
                hook_follows,
            ) {
                Ok(Some(identity)) => {
                    trace_authenticated(&identity);
                    request.extensions_mut().insert(identity);
                    return ResponseFuture::inner(self.inner.call(request), select_bearer);
                }
                Ok(None) => {}
                Err(error) => return refuse(&request, error),
            }
        }

        // 3. No token: the hook, once the origin is admitted.
        let Some(hook) = &self.hook else {
            // 4. No hook.
            return refuse(&request, AuthError::missing(NO_TOKEN));
        };
        if let Err(refused) = check_ambient(&request) {
            return refuse_origin(&request, refused);
        }
        let (parts, body) = request.into_parts();
        let identifying = hook.identify(&parts);
        // The ready service answers this request; the clone stays for the next poll_ready.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::identifying(identifying, parts, body, inner, select_bearer)
    }
}

fn trace_authenticated(identity: &Identity) {
    tracing::trace!(
        player_id = identity.player_id(),
        role = identity.role().as_str(),
        credential_source = identity.credential_source().as_str(),
        "authenticated"
    );
}

fn refuse<S, ReqBody, ResBody, HookFuture>(
    request: &Request<ReqBody>,
    error: AuthError,
) -> ResponseFuture<S, ReqBody, HookFuture>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: From<Bytes>,
{
    tracing::debug!(
        path = request.uri().path(),
        error_code = error.kind().code(),
        "request refused: {error}"
    );
    ResponseFuture::refused(error.into_response())
}

fn refuse_origin<S, ReqBody, ResBody, HookFuture>(
    request: &Request<ReqBody>,
    refused: OriginRefused,
) -> ResponseFuture<S, ReqBody, HookFuture>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: From<Bytes>,
{
    tracing::debug!(
        path = request.uri().path(),
        origin = refused.origin(),
        error_code = "ORIGIN_NOT_ALLOWED",
        "request refused: origin not allowed"
    );
    ResponseFuture::refused(refused.into_response())
}
