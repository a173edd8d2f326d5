//! [`SseHandler`]: the SSE endpoint as a path-independent tower service.

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::task::{Context, Poll};

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use tower::Service;

use super::stream::KeepAlive;
use super::{SseSettings, SseStream};
use crate::body::ResponseBody;
use crate::connection::ConnectionKind;
use crate::error::ApiError;
use crate::extract::{allow, answer, check_connection, register};
use crate::hub::{ConnectionGuard, Hub, Outbox};
use dualcast_layers::query::{has_query_param, query_param};

/// Opens an SSE connection for the request's [`Identity`](crate::Identity) and answers
/// `200 text/event-stream` with a body that streams it (see [the module docs](super)).
///
/// Path-independent: mount it at any path. It needs an `Identity` in the request
/// extensions (put [`AuthLayer`](crate::AuthLayer) in front; `401` without one); it honours
/// a [`RequestedPlayer`](crate::RequestedPlayer) (`403` when it is not the identity's
/// player), the `session_id` query parameter (else the token's `sid`), and takes the
/// request's [`Leases`](crate::Leases), which then live as long as the stream. Only `GET`
/// (`405` otherwise). `keepalive=event` makes the stream's keep-alive an `event: ping`
/// with empty data instead of a comment line, so that a browser's `EventSource` sees it
/// (the default, `keepalive=comment`, is invisible to the page); any other value is
/// `400 INVALID_KEEPALIVE`.
///
/// ```
/// use dualcast::{AuthLayer, Hub, JwtAuthenticator, SseHandler};
/// use tower::ServiceBuilder;
///
/// let hub = Hub::new();
/// let sse = ServiceBuilder::new()
///     .layer(AuthLayer::new(JwtAuthenticator::hs256(b"a secret of at least 32 bytes.....")))
///     .service(SseHandler::new(hub.clone()));
/// // e.g. axum: Router::new().route_service("/events", sse)
/// # let _ = sse;
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct SseHandler {
    hub: Hub,
    settings: SseSettings,
}

impl SseHandler {
    /// The handler over `hub`, with [`SseSettings::default`].
    pub fn new(hub: Hub) -> Self {
        Self {
            hub,
            settings: SseSettings::default(),
        }
    }

    /// Its settings. Default: [`SseSettings::default`].
    pub fn settings(mut self, settings: SseSettings) -> Self {
        self.settings = settings;
        self
    }

    /// What this handler refuses before it asks the hub anything: a method other than
    /// `GET` (`405`), a path's player that is not the token's (`403`), a resume id that is
    /// not one or a `keepalive` that is neither `comment` nor `event` (`400`). The default
    /// stack checks it before the session and admission layers, so a request refused for
    /// these takes over no session; a host that stacks those layers around this handler
    /// itself must call it first too.
    ///
    /// # Errors
    ///
    /// The answer to give instead of the stream.
    pub fn check_request<B>(request: &Request<B>) -> Result<(), ApiError> {
        allow(request.method(), &[Method::GET])?;
        keep_alive_style(request)?;
        check_connection(request)
    }

    fn open<B>(&self, request: &Request<B>) -> Result<Response<ResponseBody>, ApiError> {
        Self::check_request(request)?;
        let style = keep_alive_style(request)?;
        let (guard, outbox) = register(&self.hub, request, ConnectionKind::Sse)?;
        Ok(stream_response(guard, outbox, &self.settings, style))
    }
}

/// The keep-alive the request asks for with `keepalive=comment|event` (default: comment).
fn keep_alive_style<B>(request: &Request<B>) -> Result<KeepAlive, ApiError> {
    match query_param(request.uri(), "keepalive").as_deref() {
        None if !has_query_param(request.uri(), "keepalive") => Ok(KeepAlive::Comment),
        Some("comment") => Ok(KeepAlive::Comment),
        Some("event") => Ok(KeepAlive::PingEvent),
        _ => Err(ApiError::bad_request(
            "INVALID_KEEPALIVE",
            "keepalive must be `comment` or `event`",
        )),
    }
}

/// The `200 text/event-stream` answer streaming `guard`'s connection.
pub(crate) fn stream_response(
    guard: ConnectionGuard,
    outbox: Outbox,
    settings: &SseSettings,
    style: KeepAlive,
) -> Response<ResponseBody> {
    let (stream, control) = SseStream::new(guard, outbox, settings.keep_alive, style);
    let mut response = Response::new(ResponseBody::sse(stream));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response.extensions_mut().insert(control);
    response
}

impl<B> Service<Request<B>> for SseHandler {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = Ready<Result<Response<ResponseBody>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let result = self.open(&request);
        ready(Ok(answer(request.method(), request.uri().path(), result)))
    }
}
