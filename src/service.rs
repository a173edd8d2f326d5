//! [`Dualcast::builder`]: the default stack composed once, as a layer around a host's
//! service ([`DualcastLayer`]) or alone ([`DualcastBuilder::build_service`]).
//!
//! ```text
//! request ─ router ─┬─ not dualcast's ─────────────────────────────► the host's service
//!                   ├─ {prefix}/healthz ───────────────────────────► {"status":"ok"}
//!                   └─ a dualcast route ─ auth (Identity) ─ handler   WebSocketHandler
//!                                                                     SseHandler
//!                                                                     PublishApi
//! ```
//!
//! The router matches only dualcast's own routes (see [the route table](crate::routes))
//! under the configured [prefix](DualcastBuilder::prefix) and passes every other request to
//! the host's service untouched, so the host keeps its own routes, its own 404 and its own
//! auth. A matched request gets what its path names in the extensions (a
//! [`RequestedPlayer`], an [`ApiTarget`](crate::ApiTarget)), then
//! goes through the auth layer given to the builder, built once, polled for readiness,
//! and on to the handler. Errors use the SPEC's JSON body.
//!
//! ```no_run
//! use dualcast::{AuthLayer, Dualcast, JwtAuthenticator};
//!
//! # async fn run() -> std::io::Result<()> {
//! let auth = AuthLayer::new(JwtAuthenticator::hs256(b"a secret of at least 32 bytes....."));
//! let (app, hub) = Dualcast::builder(auth).build_service();
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
//! # let _ = hub;
//! dualcast::serve(listener, app, async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```

use std::convert::Infallible;
use std::fmt;
use std::future::{ready, Future, Ready};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use pin_project::pin_project;
use tower::{Layer, Service};

use crate::api::openapi::HealthAnswer;
use crate::api::{json_response, PublishApi, PublishFuture};
use crate::body::{LayerBody, ResponseBody};
use crate::error::{ApiError, ErrorType};
use crate::extract::{allow, answer, require_privileged, RequestedPlayer};
use crate::hub::Hub;
use crate::inbound::MessageHandler;
use crate::routes::{Route, RouteTable};
use crate::sse::{SseHandler, SseSettings};
use crate::ws::{WebSocketHandler, WebSocketSettings};
use dualcast_layers::metrics::{
    encode_text, Metrics, MetricsLayer, RecordMetrics, RouteTemplate, TEXT_CONTENT_TYPE,
};
use dualcast_layers::session::{ResolveSessions, SessionLayer};
use dualcast_layers::track::{Track, TrackLayer};
use prometheus_client::registry::Registry;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Where a dualcast stack's routes are and which hub serves them: what
/// [`serve_with_settings`](crate::serve_with_settings) needs to shut the hub down with the
/// server and to answer SSE streams itself. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Endpoints {
    hub: Hub,
    table: Arc<RouteTable>,
    registry: Arc<Registry>,
    /// The OpenAPI document of `table` (about 50 KiB), made when first asked for, once.
    openapi: OpenApiJson,
}

/// The OpenAPI document's bytes, shared by the clones, which `Debug` gives the size of,
/// not the 50 KiB.
#[derive(Clone, Default)]
struct OpenApiJson(Arc<std::sync::OnceLock<Bytes>>);

impl fmt::Debug for OpenApiJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.get() {
            Some(json) => write!(f, "OpenApiJson({} bytes)", json.len()),
            None => f.write_str("OpenApiJson(not made yet)"),
        }
    }
}

impl Endpoints {
    pub(crate) fn new(hub: Hub, table: RouteTable, registry: Arc<Registry>) -> Self {
        Self {
            hub,
            table: Arc::new(table),
            registry,
            openapi: OpenApiJson::default(),
        }
    }

    /// The OpenAPI 3.1 document (JSON) of the routes this stack serves, under its prefix:
    /// what `GET {prefix}/api/openapi.json` answers, for a host that serves it at a path of
    /// its own or merges its paths into its own document. There even when the route is
    /// switched off ([`DualcastBuilder::openapi_route`]).
    #[must_use]
    pub fn openapi_json(&self) -> Bytes {
        self.openapi
            .0
            .get_or_init(|| crate::api::openapi::document_json(&self.table))
            .clone()
    }

    /// `GET /api/openapi.json`.
    fn openapi<B>(&self, request: &Request<B>) -> Response<ResponseBody> {
        let result = allow(request.method(), &[Method::GET]).map(|()| {
            let mut response = Response::new(ResponseBody::from(self.openapi_json()));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        });
        answer(request.method(), request.uri().path(), result)
    }

    /// `GET /metrics` when it needs no token.
    fn public_metrics<B>(&self, request: &Request<B>) -> Response<ResponseBody> {
        let endpoint = MetricsEndpoint {
            registry: self.registry.clone(),
            public: true,
        };
        endpoint.answer(request)
    }

    /// The hub.
    #[must_use]
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    pub(crate) fn table(&self) -> &Arc<RouteTable> {
        &self.table
    }
}

/// Which handler a matched request goes to; put in the extensions by the router.
#[derive(Debug, Clone, Copy)]
enum Matched {
    WebSocket,
    DeprecatedWebSocket,
    Sse,
    Api,
    Metrics,
}

/// A connection handler behind the admission layers: session resolution, then admission
/// (rate limits and the per-player connection limit), both answered by the [`Hub`].
pub type Admitted<H> = ResolveSessions<Track<H, Hub>, Hub>;

/// dualcast's handlers behind one service: a request the router matched goes to the
/// handler its route names. The innermost service of the stack the builder composes; the
/// auth layer given to [`Dualcast::builder`] wraps it. The connection handlers sit behind
/// the session and admission layers ([`Admitted`]); the API and `/metrics` do not.
#[derive(Debug, Clone)]
pub struct Handlers {
    websocket: Admitted<WebSocketHandler>,
    sse: Admitted<SseHandler>,
    api: PublishApi,
    metrics: MetricsEndpoint,
    /// The successor of the deprecated WebSocket path, for its `Link` header.
    successor: HeaderValue,
}

/// `GET /metrics`: the registry in Prometheus text.
#[derive(Clone)]
struct MetricsEndpoint {
    registry: Arc<Registry>,
    public: bool,
}

impl fmt::Debug for MetricsEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsEndpoint")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl MetricsEndpoint {
    fn answer<B>(&self, request: &Request<B>) -> Response<ResponseBody> {
        let result = allow(request.method(), &[Method::GET])
            .and_then(|()| {
                if !self.public {
                    require_privileged(request)?;
                }
                encode_text(&self.registry)
                    .map_err(|_| ApiError::system("could not encode the metrics"))
            })
            .map(|text| {
                let mut response = Response::new(ResponseBody::from(Bytes::from(text)));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(TEXT_CONTENT_TYPE),
                );
                response
            });
        answer(request.method(), request.uri().path(), result)
    }
}

type AdmittedFuture<H, B> = <Admitted<H> as Service<Request<B>>>::Future;

/// The response future of [`Handlers`].
// A ready answer is carried inline (as tower-http's futures do): boxing it would cost an
// allocation per request to save stack bytes.
#[allow(clippy::large_enum_variant)]
#[pin_project(project = HandlersFutureProj)]
pub enum HandlersFuture<B>
where
    Admitted<WebSocketHandler>: Service<Request<B>>,
    Admitted<SseHandler>: Service<Request<B>>,
{
    /// An answer made at once (a refusal, `/metrics`).
    Ready(Option<Response<ResponseBody>>),
    /// A WebSocket upgrade, through the admission layers; `deprecated` holds the `Link`
    /// of the successor path when the request came by the deprecated path.
    WebSocket {
        /// The handler's future.
        #[pin]
        future: AdmittedFuture<WebSocketHandler, B>,
        /// The successor's `Link`, for the deprecated path.
        deprecated: Option<HeaderValue>,
    },
    /// An SSE stream, through the admission layers.
    Sse(#[pin] AdmittedFuture<SseHandler, B>),
    /// The publishing API, reading a body.
    Api(#[pin] PublishFuture),
}

impl<B> fmt::Debug for HandlersFuture<B>
where
    Admitted<WebSocketHandler>: Service<Request<B>>,
    Admitted<SseHandler>: Service<Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HandlersFuture")
    }
}

impl<B> Future for HandlersFuture<B>
where
    Admitted<WebSocketHandler>:
        Service<Request<B>, Response = Response<ResponseBody>, Error = Infallible>,
    Admitted<SseHandler>:
        Service<Request<B>, Response = Response<ResponseBody>, Error = Infallible>,
{
    type Output = Result<Response<ResponseBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            HandlersFutureProj::Ready(response) => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                None => Poll::Pending,
            },
            HandlersFutureProj::WebSocket { future, deprecated } => {
                let Ok(mut response) = std::task::ready!(future.poll(cx));
                if let Some(link) = deprecated.take() {
                    mark_deprecated(&mut response, &link);
                }
                Poll::Ready(Ok(response))
            }
            HandlersFutureProj::Sse(future) => future.poll(cx),
            HandlersFutureProj::Api(future) => future.poll(cx),
        }
    }
}

/// The answer's `Deprecation` and the `Link` to the successor of the deprecated path.
fn mark_deprecated(response: &mut Response<ResponseBody>, link: &HeaderValue) {
    let headers = response.headers_mut();
    headers.insert("deprecation", HeaderValue::from_static("true"));
    headers.insert(header::LINK, link.clone());
}

impl<B> Service<Request<B>> for Handlers
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    Admitted<WebSocketHandler>:
        Service<Request<B>, Response = Response<ResponseBody>, Error = Infallible>,
    Admitted<SseHandler>:
        Service<Request<B>, Response = Response<ResponseBody>, Error = Infallible>,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = HandlersFuture<B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The handlers and the admission layers in front of them are always ready; asked
        // anyway, as the Service contract wants.
        let websocket = self.websocket.poll_ready(cx)?;
        let sse = self.sse.poll_ready(cx)?;
        if websocket.is_ready() && sse.is_ready() {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    fn call(&mut self, request: Request<B>) -> HandlersFuture<B> {
        let matched = request.extensions().get::<Matched>().copied();
        // What the handler would refuse anyway is refused before the session and admission
        // layers: a malformed request must not take over a session or use up a limit.
        let early = match matched {
            Some(Matched::WebSocket | Matched::DeprecatedWebSocket) => {
                WebSocketHandler::check_request(&request)
            }
            Some(Matched::Sse) => SseHandler::check_request(&request),
            _ => Ok(()),
        };
        if let Err(error) = early {
            let mut response = answer(request.method(), request.uri().path(), Err(error));
            if matches!(matched, Some(Matched::DeprecatedWebSocket)) {
                mark_deprecated(&mut response, &self.successor);
            }
            return HandlersFuture::Ready(Some(response));
        }
        match matched {
            Some(Matched::WebSocket) => HandlersFuture::WebSocket {
                future: self.websocket.call(request),
                deprecated: None,
            },
            Some(Matched::DeprecatedWebSocket) => HandlersFuture::WebSocket {
                future: self.websocket.call(request),
                deprecated: Some(self.successor.clone()),
            },
            Some(Matched::Sse) => HandlersFuture::Sse(self.sse.call(request)),
            Some(Matched::Api) => HandlersFuture::Api(self.api.call(request)),
            Some(Matched::Metrics) => HandlersFuture::Ready(Some(self.metrics.answer(&request))),
            None => {
                let error = ApiError::system("Handlers reached without a route");
                let response = answer(request.method(), request.uri().path(), Err(error));
                HandlersFuture::Ready(Some(response))
            }
        }
    }
}

/// The default stack's settings; from [`Dualcast::builder`].
#[must_use]
pub struct DualcastBuilder<L> {
    auth: L,
    hub: Option<Hub>,
    prefix: String,
    publish_api: bool,
    membership_api: bool,
    health_route: bool,
    sessions_api: bool,
    client_messages_api: bool,
    monitoring_api: bool,
    /// `None`: on for `build_service`, off for `build`.
    openapi_route: Option<bool>,
    message_handler: Option<MessageHandler>,
    websocket: WebSocketSettings,
    sse: SseSettings,
    max_publish_body: usize,
    publish_body_timeout: Duration,
    track: TrackLayer,
    metrics: Option<(Metrics, Arc<Registry>)>,
    metrics_route: bool,
    metrics_public: bool,
}

impl<L> fmt::Debug for DualcastBuilder<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DualcastBuilder")
            .field("prefix", &self.prefix)
            .field("publish_api", &self.publish_api)
            .field("membership_api", &self.membership_api)
            .finish_non_exhaustive()
    }
}

impl<L> DualcastBuilder<L> {
    /// The hub the endpoints serve. Default: a new [`Hub`] with default settings.
    pub fn hub(mut self, hub: Hub) -> Self {
        self.hub = Some(hub);
        self
    }

    /// The path every dualcast route lives under, e.g. `/rt` for `/rt/api/ws`. Default:
    /// none (`/api/ws`). With axum, use this rather than `nest_service`, which strips the
    /// prefix before dualcast sees the path. As a layer, dualcast answers its own routes
    /// first: a host with routes at the same paths (`/healthz`, `/sse/…`) sets a prefix.
    /// Characters that a URL path cannot hold as themselves (a space, `{`) are matched
    /// percent-encoded, as clients send them.
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.to_owned();
        self
    }

    /// Whether the publishing routes (`POST /api/players/{id}/messages`,
    /// `/api/rooms/{room}/messages`, `/api/broadcast`) are served. Off, those paths go to
    /// the host's service, which can still publish through the [`Hub`]. Default: on.
    pub fn publish_api(mut self, on: bool) -> Self {
        self.publish_api = on;
        self
    }

    /// Whether the room-membership routes (`PUT`/`DELETE /api/rooms/{room}/members/{id}`)
    /// are served. Default: on.
    pub fn membership_api(mut self, on: bool) -> Self {
        self.membership_api = on;
        self
    }

    /// Whether `GET {prefix}/healthz` is answered by dualcast (`{"status":"ok"}`, no
    /// token). Switch it off when the host has its own health route at that path: as the
    /// outer layer, dualcast's route would otherwise answer first. Default: on.
    pub fn health_route(mut self, on: bool) -> Self {
        self.health_route = on;
        self
    }

    /// Whether the session and logout routes (`POST`/`GET
    /// /api/connections/{id}/session`, `POST /api/connections/{id}/logout`) are served.
    /// Default: on.
    pub fn sessions_api(mut self, on: bool) -> Self {
        self.sessions_api = on;
        self
    }

    /// Whether the management and monitoring routes of seed `004`
    /// (`GET /api/connections/{id}`, `GET /api/connections/stats`, `GET /monitoring/…`) are
    /// served. Default: on.
    pub fn monitoring_api(mut self, on: bool) -> Self {
        self.monitoring_api = on;
        self
    }

    /// Whether `GET {prefix}/api/openapi.json` serves the OpenAPI 3.1 document of the
    /// routes this stack serves (under its prefix, without the switched-off ones), without
    /// a token. Default: on for [`build_service`](Self::build_service), where dualcast is
    /// the whole server; off for [`build`](Self::build), where the layer would shadow a
    /// host's own `/api/openapi.json` (the host can serve or merge
    /// [`Endpoints::openapi_json`] itself).
    pub fn openapi_route(mut self, on: bool) -> Self {
        self.openapi_route = Some(on);
        self
    }

    /// Whether `POST /api/messages` (client messages from SSE-only clients, SPEC §6) is
    /// served. Default: on.
    pub fn client_messages_api(mut self, on: bool) -> Self {
        self.client_messages_api = on;
        self
    }

    /// The host's handler of client messages (WebSocket text frames and
    /// `POST /api/messages` bodies of every type but `ping` and `ack`): a tower
    /// `Service<ClientMessage>` whose reply, if any, goes back to the sender only. It is
    /// set on the hub ([`Hub::set_message_handler`]) unless the hub has one already.
    /// Default: none (such messages get an `UNKNOWN_TYPE` error).
    ///
    /// ```
    /// use dualcast::inbound::{ClientMessage, MessageHandler};
    /// use dualcast::{AuthLayer, Dualcast, JwtAuthenticator, Message};
    /// use serde_json::json;
    ///
    /// let echo = MessageHandler::from_fn(|message: ClientMessage| async move {
    ///     Some(Message::json("echo", json!({ "type": message.message_type() })))
    /// });
    /// let auth = AuthLayer::new(JwtAuthenticator::hs256(b"a secret of at least 32 bytes....."));
    /// let (_layer, _hub) = Dualcast::builder(auth).on_message(echo).build();
    /// ```
    pub fn on_message(mut self, handler: MessageHandler) -> Self {
        self.message_handler = Some(handler);
        self
    }

    /// The admission settings of the connection routes: the per-player connection limit
    /// and the connection-attempt rate limits, per player and per client address (see
    /// [`TrackLayer`] for each default). Its per-player count is replaced by the hub's,
    /// which counts live connections (not those of a replaced session that are still
    /// closing). Default: [`TrackLayer::pair`]'s defaults (4 connections per player, 10
    /// attempts a second per player, 50 per address).
    pub fn track(mut self, track: TrackLayer) -> Self {
        self.track = track;
        self
    }

    /// The metrics the stack records (HTTP requests by route, connections, deliveries,
    /// refusals) and the registry `GET {prefix}/metrics` serves: the host's own
    /// [`Registry`], in which it registered `metrics` ([`Metrics::new`]) and anything of
    /// its own. The hub reports to `metrics` too, unless it has an observer already.
    /// Default: a registry of dualcast's metrics alone.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use dualcast::dualcast_layers::metrics::Metrics;
    /// use dualcast::{AuthLayer, Dualcast, JwtAuthenticator};
    ///
    /// let mut registry = prometheus_client::registry::Registry::default();
    /// let metrics = Metrics::new(&mut registry);
    /// // … the host registers its own metrics in `registry` here …
    /// let auth = AuthLayer::new(JwtAuthenticator::hs256(b"a secret of at least 32 bytes....."));
    /// let (_layer, _hub) = Dualcast::builder(auth).metrics(metrics, Arc::new(registry)).build();
    /// ```
    pub fn metrics(mut self, metrics: Metrics, registry: Arc<Registry>) -> Self {
        self.metrics = Some((metrics, registry));
        self
    }

    /// Whether `GET {prefix}/metrics` is served. Default: on.
    pub fn metrics_route(mut self, on: bool) -> Self {
        self.metrics_route = on;
        self
    }

    /// Whether `GET {prefix}/metrics` is answered without a token. Default: off (a
    /// `service` or `admin` token is needed: the figures tell an outsider how busy the
    /// server is).
    pub fn metrics_public(mut self, public: bool) -> Self {
        self.metrics_public = public;
        self
    }

    /// WebSocket settings. Default: [`WebSocketSettings::default`].
    pub fn websocket(mut self, settings: WebSocketSettings) -> Self {
        self.websocket = settings;
        self
    }

    /// SSE settings. Default: [`SseSettings::default`].
    pub fn sse(mut self, settings: SseSettings) -> Self {
        self.sse = settings;
        self
    }

    /// Largest publish body accepted, in bytes; larger ones get `413`. Default: 1 MiB.
    pub fn max_publish_body(mut self, bytes: usize) -> Self {
        self.max_publish_body = bytes;
        self
    }

    /// How long a publish body may take to arrive; past it the request is answered `408`
    /// and the connection is closed. Default: 10 seconds.
    pub fn publish_body_timeout(mut self, timeout: Duration) -> Self {
        self.publish_body_timeout = timeout;
        self
    }

    fn compose(self, openapi_by_default: bool) -> (RecordMetrics<L::Service>, Endpoints)
    where
        L: Layer<Handlers>,
    {
        let hub = self.hub.unwrap_or_default();
        let mut table = RouteTable::new(
            &self.prefix,
            self.publish_api,
            self.membership_api,
            self.health_route,
        );
        table.sessions = self.sessions_api;
        table.client_messages = self.client_messages_api;
        table.monitoring = self.monitoring_api;
        table.openapi = self.openapi_route.unwrap_or(openapi_by_default);
        if let Some(handler) = self.message_handler {
            if !hub.set_message_handler(handler) {
                tracing::warn!("the hub has a message handler already: it keeps it");
            }
        }
        table.metrics = self.metrics_route;
        table.metrics_public = self.metrics_public;
        let (metrics, registry) = self.metrics.unwrap_or_else(|| {
            let mut registry = Registry::default();
            let metrics = Metrics::new(&mut registry);
            (metrics, Arc::new(registry))
        });
        if !hub.set_observer(Arc::new(metrics.clone())) {
            tracing::debug!("the hub has an observer already: it keeps it");
        }
        let track = self.track.admission(hub.clone());
        let admitted = |handler| SessionLayer::new(hub.clone()).layer(track.layer(handler));
        let admitted_sse = |handler| SessionLayer::new(hub.clone()).layer(track.layer(handler));
        let successor = HeaderValue::from_str(&format!(
            "<{}>; rel=\"successor-version\"",
            table.websocket_path()
        ))
        .unwrap_or_else(|_| HeaderValue::from_static("</api/ws>; rel=\"successor-version\""));
        let handlers = Handlers {
            websocket: admitted(WebSocketHandler::new(hub.clone()).settings(self.websocket)),
            sse: admitted_sse(SseHandler::new(hub.clone()).settings(self.sse)),
            api: PublishApi::new(hub.clone())
                .max_body(self.max_publish_body)
                .body_timeout(self.publish_body_timeout),
            metrics: MetricsEndpoint {
                registry: registry.clone(),
                public: self.metrics_public,
            },
            successor,
        };
        let stack = MetricsLayer::new(metrics).layer(self.auth.layer(handlers));
        (stack, Endpoints::new(hub, table, registry))
    }

    /// The stack as a layer around a host's service, and the hub: dualcast's routes are
    /// served, every other request goes to the host's service untouched.
    ///
    /// ```
    /// use dualcast::{AuthLayer, Dualcast, JwtAuthenticator};
    /// use tower::{Layer, ServiceExt};
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let auth = AuthLayer::new(JwtAuthenticator::hs256(b"a secret of at least 32 bytes....."));
    /// let (layer, _hub) = Dualcast::builder(auth).prefix("/rt").build();
    /// let host = tower::service_fn(|_request: http::Request<String>| async {
    ///     Ok::<_, std::convert::Infallible>(http::Response::new(String::from("the host's")))
    /// });
    /// let app = layer.layer(host);
    ///
    /// let favicon = http::Request::get("/favicon.ico").body(String::new()).unwrap();
    /// let response = app.clone().oneshot(favicon).await.unwrap();
    /// assert_eq!(response.status(), 200, "not dualcast's: the host answered");
    ///
    /// let ws = http::Request::get("/rt/api/ws").body(String::new()).unwrap();
    /// let response = app.oneshot(ws).await.unwrap();
    /// assert_eq!(response.status(), 401, "dualcast's, and it needs a token");
    /// # });
    /// ```
    pub fn build(self) -> (DualcastLayer<RecordMetrics<L::Service>>, Hub)
    where
        L: Layer<Handlers>,
    {
        let (stack, endpoints) = self.compose(false);
        let hub = endpoints.hub.clone();
        (DualcastLayer { stack, endpoints }, hub)
    }

    /// The stack alone, answering `404` for what is not its own, and the hub.
    pub fn build_service(self) -> (Dualcast<NotFound, RecordMetrics<L::Service>>, Hub)
    where
        L: Layer<Handlers>,
    {
        let (stack, endpoints) = self.compose(true);
        let hub = endpoints.hub.clone();
        let service = Dualcast {
            host: NotFound,
            stack,
            endpoints,
        };
        (service, hub)
    }
}

/// dualcast as a tower [`Layer`]: serves its routes and passes every other request to the
/// wrapped service; from [`DualcastBuilder::build`].
///
/// Shutdown: under [`serve`](crate::serve()) it is built in. Under `axum::serve` (or any
/// server with a graceful-shutdown signal), pass [`Hub::shutdown_on`] to it, so the
/// realtime connections are told and closed before the server waits for its connections:
/// `axum::serve(listener, app).with_graceful_shutdown(hub.shutdown_on(ctrl_c))`.
#[derive(Clone)]
#[must_use]
pub struct DualcastLayer<T> {
    stack: T,
    endpoints: Endpoints,
}

impl<T> DualcastLayer<T> {
    /// Where its routes are and which hub serves them, for
    /// [`serve_with_settings`](crate::serve_with_settings).
    #[must_use]
    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }
}

impl<T> fmt::Debug for DualcastLayer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DualcastLayer")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

impl<S, T: Clone> Layer<S> for DualcastLayer<T> {
    type Service = Dualcast<S, T>;

    fn layer(&self, host: S) -> Dualcast<S, T> {
        Dualcast {
            host,
            stack: self.stack.clone(),
            endpoints: self.endpoints.clone(),
        }
    }
}

/// The service of [`DualcastLayer`]: dualcast's routes through its stack `T`, everything
/// else to the host's service `S`. See [the module docs](self).
#[derive(Clone)]
pub struct Dualcast<S, T> {
    host: S,
    stack: T,
    endpoints: Endpoints,
}

impl Dualcast<NotFound, Handlers> {
    /// The default stack with `auth` in front of the handlers: usually an
    /// [`AuthLayer`](crate::AuthLayer), which also takes an `Identity` a host layer set
    /// and an async identify hook; any tower layer that puts an
    /// [`Identity`](crate::Identity) in the request extensions will do.
    pub fn builder<L>(auth: L) -> DualcastBuilder<L> {
        DualcastBuilder {
            auth,
            hub: None,
            prefix: String::new(),
            publish_api: true,
            membership_api: true,
            health_route: true,
            sessions_api: true,
            client_messages_api: true,
            monitoring_api: true,
            openapi_route: None,
            message_handler: None,
            websocket: WebSocketSettings::default(),
            sse: SseSettings::default(),
            max_publish_body: 1024 * 1024,
            publish_body_timeout: Duration::from_secs(10),
            track: TrackLayer::pair().0,
            metrics: None,
            metrics_route: true,
            metrics_public: false,
        }
    }
}

impl<S, T> Dualcast<S, T> {
    /// Where its routes are and which hub serves them.
    #[must_use]
    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    /// The hub its endpoints serve.
    #[must_use]
    pub fn hub(&self) -> &Hub {
        &self.endpoints.hub
    }
}

impl<S, T> fmt::Debug for Dualcast<S, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dualcast")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

impl<S, T, B, HostBody> Service<Request<B>> for Dualcast<S, T>
where
    S: Service<Request<B>, Response = Response<HostBody>>,
    T: Service<Request<B>, Response = Response<ResponseBody>, Error = Infallible>,
{
    type Response = Response<LayerBody<HostBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, T::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        // Both, as tower's `Steer` does: the next request may go to either.
        let host = self.host.poll_ready(cx)?;
        let stack = self
            .stack
            .poll_ready(cx)
            .map(|ready| ready.unwrap_or_else(|never| match never {}));
        if host.is_ready() && stack.is_ready() {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let Some(route) = self.endpoints.table.route(request.uri().path()) else {
            return ResponseFuture::Host(self.host.call(request));
        };
        if let Ok(route) = &route {
            request
                .extensions_mut()
                .insert(RouteTemplate(route.template()));
        }
        let matched = match route {
            Ok(Route::Metrics) if self.endpoints.table.metrics_public => {
                // Public: answered before the auth layer, which would want a token.
                let response = self.endpoints.public_metrics(&request);
                return ResponseFuture::Ready(Some(response));
            }
            Ok(Route::Metrics) => Matched::Metrics,
            Ok(Route::OpenApi) => {
                return ResponseFuture::Ready(Some(self.endpoints.openapi(&request)));
            }
            Ok(Route::Health) => {
                let result = allow(request.method(), &[Method::GET])
                    .and_then(|()| json_response(StatusCode::OK, &HealthAnswer::of(self.hub())));
                let response = answer(request.method(), request.uri().path(), result);
                return ResponseFuture::Ready(Some(response));
            }
            Err(error) => {
                let response = answer(request.method(), request.uri().path(), Err(error));
                return ResponseFuture::Ready(Some(response));
            }
            Ok(Route::WebSocket) => Matched::WebSocket,
            Ok(Route::WebSocketOf(player)) => {
                request.extensions_mut().insert(RequestedPlayer(player));
                Matched::DeprecatedWebSocket
            }
            Ok(Route::Sse) => Matched::Sse,
            Ok(Route::SseOf(player)) => {
                request.extensions_mut().insert(RequestedPlayer(player));
                Matched::Sse
            }
            Ok(Route::Api(target)) => {
                request.extensions_mut().insert(target);
                Matched::Api
            }
        };
        request.extensions_mut().insert(matched);
        ResponseFuture::Stack(self.stack.call(request))
    }
}

/// The response future of [`Dualcast`].
// A ready answer inline, for the reason given on `HandlersFuture`.
#[allow(clippy::large_enum_variant)]
#[pin_project(project = ResponseFutureProj)]
#[derive(Debug)]
pub enum ResponseFuture<H, T> {
    /// The host's service answers.
    Host(#[pin] H),
    /// dualcast's stack answers.
    Stack(#[pin] T),
    /// Answered at once (health, a malformed dualcast path).
    Ready(Option<Response<ResponseBody>>),
}

impl<H, T, HostBody, E> Future for ResponseFuture<H, T>
where
    H: Future<Output = Result<Response<HostBody>, E>>,
    T: Future<Output = Result<Response<ResponseBody>, Infallible>>,
{
    type Output = Result<Response<LayerBody<HostBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ResponseFutureProj::Host(future) => future
                .poll(cx)
                .map(|result| result.map(|response| response.map(LayerBody::host))),
            ResponseFutureProj::Stack(future) => future.poll(cx).map(|result| match result {
                Ok(response) => Ok(response.map(LayerBody::dualcast)),
                Err(never) => match never {},
            }),
            ResponseFutureProj::Ready(response) => match response.take() {
                Some(response) => Poll::Ready(Ok(response.map(LayerBody::dualcast))),
                None => Poll::Pending,
            },
        }
    }
}

/// The host service of [`DualcastBuilder::build_service`]: `404` with the SPEC's error
/// body for every path that is not dualcast's.
#[derive(Debug, Clone, Copy, Default)]
pub struct NotFound;

impl<B> Service<Request<B>> for NotFound {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = Ready<Result<Response<ResponseBody>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let error = ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorType::ValidationError,
            "ROUTE_NOT_FOUND",
            "no such endpoint",
        )
        .detail("path", request.uri().path());
        ready(Ok(answer(
            request.method(),
            request.uri().path(),
            Err(error),
        )))
    }
}
