//! [`Dualcast`]: the assembled tower service with every route of SPEC §8 built so far.
//!
//! | route | who | what |
//! |---|---|---|
//! | `GET /api/ws?session_id=…` | a player | WebSocket |
//! | `GET /api/ws/{player_id}` | that player | WebSocket (deprecated path) |
//! | `GET /sse/{player_id}?session_id=…` | that player | SSE |
//! | `GET /api/sse` | a player | SSE, player from the token |
//! | `POST /api/players/{player_id}/messages` | service, admin | publish to a player |
//! | `POST /api/rooms/{room}/messages` | service, admin | publish to a room |
//! | `POST /api/broadcast` | service, admin | publish to everyone |
//! | `PUT`, `DELETE /api/rooms/{room}/members/{player_id}` | service, admin | membership |
//! | `GET /healthz` | anyone | liveness |
//!
//! Everything but `/healthz` goes through [`AuthLayer`](crate::AuthLayer). Path segments are
//! percent-decoded. Errors use the SPEC's JSON body.
//!
//! A publish body is bounded in size ([`max_publish_body`](Dualcast::max_publish_body),
//! `413` past it) and in time ([`publish_body_timeout`](Dualcast::publish_body_timeout):
//! the whole body within 10 s by default, `408` and the connection closed past it).
//!
//! ```no_run
//! use dualcast::{Dualcast, Hub, JwtAuthenticator};
//!
//! # async fn run() -> std::io::Result<()> {
//! let hub = Hub::new();
//! let app = Dualcast::new(hub.clone(), JwtAuthenticator::hs256(b"a secret of at least 32 bytes....."));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
//! dualcast::serve(listener, app, async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```

use std::borrow::Cow;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use dualcast_layers::auth::{Auth, AuthError, AuthErrorKind, Authenticate, Identity};
use dualcast_layers::query::{percent_decode_path, query_param};
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use pin_project::pin_project;
use tower::Service;

use crate::api::{self, Target};
use crate::body::ResponseBody;
use crate::connection::ConnectionKind;
use crate::error::{ApiError, ErrorType};
use crate::hub::{Hub, RegisterError};
use crate::sse::{self, SseSettings};
use crate::ws::{self, WebSocketSettings};

/// The request body bound the routes accept.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The assembled service: the realtime endpoints, the publishing API and auth, over one
/// [`Hub`]. Cheap to clone; serve it with [`serve`](crate::serve()) or mount it in axum.
#[derive(Clone)]
#[must_use]
pub struct Dualcast<A> {
    routes: Routes,
    authenticator: A,
}

#[derive(Clone)]
struct Routes {
    hub: Hub,
    settings: Arc<Settings>,
}

#[derive(Debug, Clone)]
struct Settings {
    sse: SseSettings,
    websocket: WebSocketSettings,
    max_publish_body: usize,
    publish_body_timeout: Duration,
}

impl<A> Dualcast<A> {
    /// The service over `hub`, verifying tokens with `authenticator`.
    pub fn new(hub: Hub, authenticator: A) -> Self {
        let settings = Settings {
            sse: SseSettings::default(),
            websocket: WebSocketSettings::default(),
            max_publish_body: 1024 * 1024,
            publish_body_timeout: Duration::from_secs(10),
        };
        Self {
            routes: Routes {
                hub,
                settings: Arc::new(settings),
            },
            authenticator,
        }
    }

    fn edit(mut self, edit: impl FnOnce(&mut Settings)) -> Self {
        edit(Arc::make_mut(&mut self.routes.settings));
        self
    }

    /// SSE settings. Default: [`SseSettings::default`].
    pub fn sse(self, settings: SseSettings) -> Self {
        self.edit(|s| s.sse = settings)
    }

    /// WebSocket settings. Default: [`WebSocketSettings::default`].
    pub fn websocket(self, settings: WebSocketSettings) -> Self {
        self.edit(|s| s.websocket = settings)
    }

    /// Largest publish body accepted, in bytes; larger ones get `413`. Default: 1 MiB.
    pub fn max_publish_body(self, bytes: usize) -> Self {
        self.edit(|s| s.max_publish_body = bytes)
    }

    /// How long a publish body may take to arrive: the whole body must arrive within this
    /// time of the service starting to read it; past it the request is answered `408` and
    /// the connection is closed. This bounds what a slow (or trickling) client can hold
    /// open. Default: 10 seconds.
    pub fn publish_body_timeout(self, timeout: Duration) -> Self {
        self.edit(|s| s.publish_body_timeout = timeout)
    }

    /// The hub this service serves.
    #[must_use]
    pub fn hub(&self) -> &Hub {
        &self.routes.hub
    }
}

impl<A> fmt::Debug for Dualcast<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dualcast")
            .field("hub", &self.routes.hub)
            .finish_non_exhaustive()
    }
}

type RoutesFuture =
    Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, Infallible>> + Send>>;

impl<A, B> Service<Request<B>> for Dualcast<A>
where
    A: Authenticate + Clone,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> ResponseFuture {
        if request.uri().path() == "/healthz" {
            return ResponseFuture::Public(self.routes.call(request));
        }
        let mut auth = Auth::new(self.routes.clone(), self.authenticator.clone());
        ResponseFuture::Authenticated(auth.call(request))
    }
}

/// Response future of [`Dualcast`].
// The authenticated variant carries a ready refusal inline (as tower-http's futures do);
// boxing it would cost an allocation per request to save stack bytes.
#[allow(clippy::large_enum_variant)]
#[pin_project(project = ResponseFutureProj)]
pub enum ResponseFuture {
    /// A route that needs no token.
    Public(#[pin] RoutesFuture),
    /// A route behind [`Auth`].
    Authenticated(#[pin] dualcast_layers::auth::ResponseFuture<RoutesFuture, ResponseBody>),
}

impl Future for ResponseFuture {
    type Output = Result<Response<ResponseBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ResponseFutureProj::Public(future) => future.poll(cx),
            ResponseFutureProj::Authenticated(future) => future.poll(cx),
        }
    }
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResponseFuture")
    }
}

impl<B> Service<Request<B>> for Routes
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = RoutesFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> RoutesFuture {
        let routes = self.clone();
        Box::pin(async move {
            let method = request.method().clone();
            let path = request.uri().path().to_owned();
            let response = routes.dispatch(request).await.unwrap_or_else(|error| {
                if error.status().is_server_error() {
                    tracing::error!(%method, path, "request failed: {error}");
                } else {
                    tracing::debug!(%method, path, "request refused: {error}");
                }
                error.into_response()
            });
            Ok(response)
        })
    }
}

impl Routes {
    async fn dispatch<B>(&self, request: Request<B>) -> Result<Response<ResponseBody>, ApiError>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let segments = path_segments(request.uri().path())?;
        let segments: Vec<&str> = segments.iter().map(AsRef::as_ref).collect();
        let method = request.method();
        match segments.as_slice() {
            ["healthz"] => {
                allow(method, &[Method::GET])?;
                api::json_response(StatusCode::OK, &serde_json::json!({ "status": "ok" }))
            }
            ["api", "ws"] => {
                allow(method, &[Method::GET])?;
                self.open(request, ConnectionKind::WebSocket, None)
            }
            ["api", "ws", player_id] => {
                allow(method, &[Method::GET])?;
                let player_id = (*player_id).to_owned();
                let mut response =
                    self.open(request, ConnectionKind::WebSocket, Some(&player_id))?;
                response
                    .headers_mut()
                    .insert("deprecation", HeaderValue::from_static("true"));
                response.headers_mut().insert(
                    header::LINK,
                    HeaderValue::from_static("</api/ws>; rel=\"successor-version\""),
                );
                Ok(response)
            }
            ["sse", player_id] => {
                allow(method, &[Method::GET])?;
                let player_id = (*player_id).to_owned();
                self.open(request, ConnectionKind::Sse, Some(&player_id))
            }
            ["api", "sse"] => {
                allow(method, &[Method::GET])?;
                self.open(request, ConnectionKind::Sse, None)
            }
            ["api", "players", player_id, "messages"] => {
                allow(method, &[Method::POST])?;
                api::validate_name("player_id", player_id)?;
                let player_id = (*player_id).to_owned();
                let body = self.privileged_body(request).await?;
                api::publish(&self.hub, Target::Player(&player_id), &body)
            }
            ["api", "rooms", room, "messages"] => {
                allow(method, &[Method::POST])?;
                api::validate_name("room", room)?;
                let room = (*room).to_owned();
                let body = self.privileged_body(request).await?;
                api::publish(&self.hub, Target::Room(&room), &body)
            }
            ["api", "broadcast"] => {
                allow(method, &[Method::POST])?;
                let body = self.privileged_body(request).await?;
                api::publish(&self.hub, Target::Everyone, &body)
            }
            ["api", "rooms", room, "members", player_id] => {
                allow(method, &[Method::PUT, Method::DELETE])?;
                require_privileged(&request)?;
                api::validate_name("room", room)?;
                api::validate_name("player_id", player_id)?;
                api::set_membership(&self.hub, room, player_id, method == Method::PUT)
            }
            _ => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorType::ValidationError,
                "ROUTE_NOT_FOUND",
                "no such endpoint",
            )
            .detail("path", request.uri().path())),
        }
    }

    /// Registers a connection of the token's player and answers with its stream or 101.
    fn open<B>(
        &self,
        request: Request<B>,
        kind: ConnectionKind,
        path_player: Option<&str>,
    ) -> Result<Response<ResponseBody>, ApiError> {
        let identity = require_identity(&request)?.clone();
        if let Some(path_player) = path_player {
            if path_player != identity.player_id() {
                return Err(ApiError::forbidden(
                    "PLAYER_MISMATCH",
                    "the token does not belong to this player",
                )
                .detail("player_id", path_player));
            }
        }
        let session_id = match query_param(request.uri(), "session_id") {
            Some(session_id) => Some(session_id.into_owned()),
            None => identity.session_id().map(str::to_owned),
        };
        if let Some(session_id) = &session_id {
            api::validate_session_id(session_id)?;
        }
        if kind == ConnectionKind::WebSocket {
            ws::validate(&request)?;
        }
        let (guard, outbox) = self
            .hub
            .register(identity.player_id(), kind, session_id.as_deref())
            .map_err(|error| match error {
                RegisterError::ShuttingDown => ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorType::ConnectionError,
                    "SHUTTING_DOWN",
                    error.to_string(),
                ),
            })?;
        let expires_at = identity.expires_at().and_then(instant_of);
        match kind {
            ConnectionKind::Sse => Ok(sse::response(guard, outbox, &self.settings.sse, expires_at)),
            ConnectionKind::WebSocket => {
                ws::upgrade(request, guard, outbox, &self.settings.websocket, expires_at)
            }
        }
    }

    /// The body of a request that needs a `service` or `admin` token.
    async fn privileged_body<B>(&self, request: Request<B>) -> Result<Bytes, ApiError>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        require_privileged(&request)?;
        api::read_body(
            request.into_body(),
            self.settings.max_publish_body,
            self.settings.publish_body_timeout,
        )
        .await
    }
}

fn require_identity<B>(request: &Request<B>) -> Result<&Identity, ApiError> {
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

fn require_privileged<B>(request: &Request<B>) -> Result<&Identity, ApiError> {
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

fn allow(method: &Method, allowed: &[Method]) -> Result<(), ApiError> {
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
    Err(match HeaderValue::from_str(&allowed) {
        Ok(value) => error.header(header::ALLOW, value),
        Err(_) => error,
    })
}

fn path_segments(path: &str) -> Result<Vec<Cow<'_, str>>, ApiError> {
    path.trim_start_matches('/')
        .split('/')
        .map(|segment| {
            percent_decode_path(segment).ok_or_else(|| {
                ApiError::bad_request(
                    "INVALID_PATH",
                    "the path is not valid percent-encoded UTF-8",
                )
            })
        })
        .collect()
}

/// The tokio instant of a wall-clock time (now, if it has passed; `None` if it is too far
/// ahead to represent, which is as good as never).
fn instant_of(time: SystemTime) -> Option<tokio::time::Instant> {
    let left = time.duration_since(SystemTime::now()).unwrap_or_default();
    tokio::time::Instant::now().checked_add(left)
}
