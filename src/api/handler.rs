//! [`PublishApi`]: publishing and room membership as a path-independent tower service.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response};
use tower::Service;

use super::{
    messages, monitoring, publish, read_body, sessions, set_membership, validate_name, Target,
};
use crate::body::ResponseBody;
use crate::error::ApiError;
use crate::extract::{allow, answer, require_identity, require_privileged, ApiTarget};
use crate::hub::Hub;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The response future of [`PublishApi`]: it reads the request body.
pub type PublishFuture =
    Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, Infallible>> + Send>>;

/// Publishes to a player, a room or everyone (`POST`), and adds or removes room members
/// (`PUT` / `DELETE`), for `service` and `admin` identities (see [the module docs](super));
/// begins or reads a player's session and logs it out ([`ApiTarget::Session`],
/// [`ApiTarget::Logout`]) for the player itself or a `service`/`admin` identity.
///
/// Path-independent: what a request acts on is the [`ApiTarget`] in its extensions, which
/// dualcast's router sets from the path; a host mounting it at its own path sets one
/// itself. A request without one is a wiring mistake, answered `500`.
#[derive(Debug, Clone)]
#[must_use]
pub struct PublishApi {
    hub: Hub,
    settings: Arc<Settings>,
}

#[derive(Debug, Clone)]
struct Settings {
    max_body: usize,
    body_timeout: Duration,
}

impl PublishApi {
    /// The API over `hub`: bodies of at most 1 MiB, within 10 s.
    pub fn new(hub: Hub) -> Self {
        Self {
            hub,
            settings: Arc::new(Settings {
                max_body: 1024 * 1024,
                body_timeout: Duration::from_secs(10),
            }),
        }
    }

    fn edit(mut self, edit: impl FnOnce(&mut Settings)) -> Self {
        edit(Arc::make_mut(&mut self.settings));
        self
    }

    /// Largest publish body accepted, in bytes; larger ones get `413`. Default: 1 MiB.
    pub fn max_body(self, bytes: usize) -> Self {
        self.edit(|s| s.max_body = bytes)
    }

    /// How long a publish body may take to arrive: the whole body must arrive within this
    /// time of the service starting to read it; past it the request is answered `408` and
    /// the connection is closed. This bounds what a slow (or trickling) client can hold
    /// open. Default: 10 seconds.
    pub fn body_timeout(self, timeout: Duration) -> Self {
        self.edit(|s| s.body_timeout = timeout)
    }

    async fn handle<B>(self, request: Request<B>) -> Result<Response<ResponseBody>, ApiError>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let Some(target) = request.extensions().get::<ApiTarget>().cloned() else {
            return Err(ApiError::system(
                "PublishApi needs an ApiTarget in the request extensions",
            ));
        };
        let method = request.method().clone();
        match target {
            ApiTarget::Session(player) => {
                allow(&method, &[Method::GET, Method::POST])?;
                validate_name("player_id", &player)?;
                sessions::require_self_or_privileged(require_identity(&request)?, &player)?;
                if method == Method::GET {
                    return sessions::session_state(&self.hub, &player);
                }
                let limit = sessions::MAX_SESSION_BODY.min(self.settings.max_body);
                let body =
                    read_body(request.into_body(), limit, self.settings.body_timeout).await?;
                sessions::begin_session(&self.hub, &player, &body)
            }
            ApiTarget::Connections(player) => {
                allow(&method, &[Method::GET])?;
                validate_name("player_id", &player)?;
                sessions::require_self_or_privileged(require_identity(&request)?, &player)?;
                monitoring::player_connections(&self.hub, &player)
            }
            ApiTarget::ConnectionStats => {
                allow(&method, &[Method::GET])?;
                require_privileged(&request)?;
                monitoring::connection_stats(&self.hub.figures().await)
            }
            ApiTarget::Monitoring(view) => {
                allow(&method, &[Method::GET])?;
                require_privileged(&request)?;
                monitoring::monitoring(&self.hub.figures().await, view)
            }
            ApiTarget::Logout(player) => {
                allow(&method, &[Method::POST])?;
                validate_name("player_id", &player)?;
                sessions::require_self_or_privileged(require_identity(&request)?, &player)?;
                sessions::logout(&self.hub, &player)
            }
            ApiTarget::ClientMessage => {
                allow(&method, &[Method::POST])?;
                let identity = require_identity(&request)?;
                let connection = messages::sender_connection(&self.hub, identity, &request)?;
                let limit = self.hub.inbound_limits().max_message_size;
                let body = read_body(
                    request.into_body(),
                    limit.min(self.settings.max_body),
                    self.settings.body_timeout,
                )
                .await?;
                messages::post_message(&self.hub, &connection, &body).await
            }
            ApiTarget::Membership { room, player } => {
                allow(&method, &[Method::PUT, Method::DELETE])?;
                require_privileged(&request)?;
                validate_name("room", &room)?;
                validate_name("player_id", &player)?;
                set_membership(&self.hub, &room, &player, method == Method::PUT).await
            }
            target => {
                allow(&method, &[Method::POST])?;
                let target = match &target {
                    ApiTarget::Player(player) => {
                        validate_name("player_id", player)?;
                        Target::Player(player)
                    }
                    ApiTarget::Room(room) => {
                        validate_name("room", room)?;
                        Target::Room(room)
                    }
                    _ => Target::Everyone,
                };
                require_privileged(&request)?;
                let body = read_body(
                    request.into_body(),
                    self.settings.max_body,
                    self.settings.body_timeout,
                )
                .await?;
                publish(&self.hub, target, &body).await
            }
        }
    }
}

impl<B> Service<Request<B>> for PublishApi
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = PublishFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let api = self.clone();
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        Box::pin(async move {
            let result = api.handle(request).await;
            Ok(answer(&method, &path, result))
        })
    }
}
