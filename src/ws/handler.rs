//! [`WebSocketHandler`]: the WebSocket endpoint as a path-independent tower service.

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Method, Request, Response};
use tower::Service;

use super::WebSocketSettings;
use crate::body::ResponseBody;
use crate::connection::ConnectionKind;
use crate::error::ApiError;
use crate::extract::{allow, answer, check_connection, register};
use crate::hub::Hub;

/// Checks a WebSocket upgrade, opens the connection for the request's
/// [`Identity`](crate::Identity), answers `101 Switching Protocols` and spawns the
/// connection's task (see [the module docs](super)).
///
/// Path-independent: mount it at any path. It needs an `Identity` in the request
/// extensions (put [`AuthLayer`](crate::AuthLayer) in front, which also selects the `bearer`
/// subprotocol on the 101; `401` without one); it honours a
/// [`RequestedPlayer`](crate::RequestedPlayer) (`403` when it is not the identity's player),
/// the `session_id` query parameter (else the token's `sid`), and takes the request's
/// [`Leases`](crate::Leases), which then live until the connection's task ends. The server
/// must serve upgrades (hyper's `with_upgrades()`; axum does). Only `GET` (`405` otherwise).
///
/// ```
/// use dualcast::{AuthLayer, Hub, JwtAuthenticator, WebSocketHandler};
/// use tower::ServiceBuilder;
///
/// let hub = Hub::new();
/// let ws = ServiceBuilder::new()
///     .layer(AuthLayer::new(JwtAuthenticator::hs256(b"a secret of at least 32 bytes.....")))
///     .service(WebSocketHandler::new(hub.clone()));
/// // e.g. axum: Router::new().route_service("/play", ws)
/// # let _ = ws;
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct WebSocketHandler {
    hub: Hub,
    settings: Arc<WebSocketSettings>,
}

impl WebSocketHandler {
    /// The handler over `hub`, with [`WebSocketSettings::default`].
    pub fn new(hub: Hub) -> Self {
        Self {
            hub,
            settings: Arc::new(WebSocketSettings::default()),
        }
    }

    /// Its settings. Default: [`WebSocketSettings::default`].
    pub fn settings(mut self, settings: WebSocketSettings) -> Self {
        self.settings = Arc::new(settings);
        self
    }

    /// What this handler refuses before it asks the hub anything: a method other than
    /// `GET` (`405`), a malformed opening handshake (`400`, `426`), a path's player that
    /// is not the token's (`403`), a resume id that is not one (`400`). The default stack
    /// checks it before the session and admission layers, so a request refused for these
    /// takes over no session; a host that stacks those layers around this handler itself
    /// must call it first too.
    ///
    /// # Errors
    ///
    /// The answer to give instead of the upgrade.
    pub fn check_request<B>(request: &Request<B>) -> Result<(), ApiError> {
        allow(request.method(), &[Method::GET])?;
        super::validate(request)?;
        check_connection(request)
    }

    fn open<B>(&self, request: &mut Request<B>) -> Result<Response<ResponseBody>, ApiError> {
        Self::check_request(request)?;
        let (guard, outbox) = register(&self.hub, request, ConnectionKind::WebSocket)?;
        super::upgrade(request, guard, outbox, &self.settings)
    }
}

impl<B> Service<Request<B>> for WebSocketHandler {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = Ready<Result<Response<ResponseBody>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let result = self.open(&mut request);
        ready(Ok(answer(request.method(), request.uri().path(), result)))
    }
}
