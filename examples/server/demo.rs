//! The example server's own routes, the host service dualcast's layer wraps: the demo
//! page, the browser client's files, and demo tokens.
//!
//! - `GET /`: the demo page (`client/demo/index.html`);
//! - `GET /client/dualcast.js`, `/client/react.js` and their `.d.ts`: the browser client;
//! - `GET /demo/token?player=<id>&role=player|service[&ttl=<seconds>]`: a token, only when
//!   the server generated its own secret (nobody else can mint one then); with
//!   `DUALCAST_JWT_SECRET` set the route does not exist;
//! - anything else: dualcast's JSON `404`.
//!
//! The files are compiled in, so the binary serves them from anywhere.

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::sync::Arc;
use std::task::{Context, Poll};

use dualcast::dualcast_layers::jwt::{issue_hs256, Claims};
use dualcast::dualcast_layers::query::query_param;
use dualcast::error::ErrorType;
use dualcast::{ApiError, NotFound, ResponseBody, Role};
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use tower::Service;

/// The files served, by path: `(path, content type, content)`.
const FILES: &[(&str, &str, &str)] = &[
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("../../client/demo/index.html"),
    ),
    (
        "/client/dualcast.js",
        "text/javascript; charset=utf-8",
        include_str!("../../client/dualcast.js"),
    ),
    (
        "/client/react.js",
        "text/javascript; charset=utf-8",
        include_str!("../../client/react.js"),
    ),
    (
        "/client/dualcast.d.ts",
        "text/plain; charset=utf-8",
        include_str!("../../client/dualcast.d.ts"),
    ),
    (
        "/client/react.d.ts",
        "text/plain; charset=utf-8",
        include_str!("../../client/react.d.ts"),
    ),
];

/// The longest demo token lifetime, and the default one, in seconds.
const MAX_TTL: u64 = 24 * 3600;
const DEFAULT_TTL: u64 = 3600;

/// The example server's routes; see the module's documentation.
#[derive(Clone)]
pub struct DemoRoutes {
    /// The secret demo tokens are signed with: `Some` only when the server generated it.
    generated_secret: Option<Arc<[u8]>>,
}

impl DemoRoutes {
    /// The routes; `/demo/token` only with `generated_secret`.
    pub fn new(generated_secret: Option<&[u8]>) -> Self {
        Self {
            generated_secret: generated_secret.map(Arc::from),
        }
    }

    fn answer<B>(&self, request: &Request<B>) -> Result<Response<ResponseBody>, ApiError> {
        let path = request.uri().path();
        let file = FILES.iter().find(|(p, _, _)| *p == path);
        let is_token = path == "/demo/token" && self.generated_secret.is_some();
        if file.is_none() && !is_token {
            return Ok(NotFound
                .call(request_head(request))
                .into_inner()
                .unwrap_or_else(|never| match never {}));
        }
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                ErrorType::ValidationError,
                "METHOD_NOT_ALLOWED",
                "use GET",
            )
            .detail("allow", "GET, HEAD")
            .header(header::ALLOW, HeaderValue::from_static("GET, HEAD")));
        }
        let (content_type, body) = match (file, &self.generated_secret) {
            (Some((_, content_type, content)), _) => (*content_type, ResponseBody::from(*content)),
            (None, Some(secret)) => (
                "application/json",
                ResponseBody::from(demo_token(secret, request.uri())?),
            ),
            (None, None) => return Err(ApiError::system("no route")),
        };
        let body = if request.method() == Method::HEAD {
            ResponseBody::empty()
        } else {
            body
        };
        let mut response = Response::new(body);
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        Ok(response)
    }
}

/// The request's head alone, for [`NotFound`] (which reads only the method and the path).
fn request_head<B>(request: &Request<B>) -> Request<()> {
    let mut head = Request::new(());
    *head.method_mut() = request.method().clone();
    *head.uri_mut() = request.uri().clone();
    head
}

/// `GET /demo/token`'s answer: a token for `player` with `role`, valid `ttl` seconds.
fn demo_token(secret: &[u8], uri: &http::Uri) -> Result<String, ApiError> {
    let player = query_param(uri, "player").unwrap_or_default();
    if player.is_empty()
        || player.len() > 64
        || !player
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(ApiError::bad_request(
            "INVALID_PLAYER",
            "player must be 1 to 64 characters of A-Z a-z 0-9 . _ -",
        )
        .detail("field", "player"));
    }
    let role = match query_param(uri, "role").as_deref() {
        None | Some("player") => Role::Player,
        Some("service") => Role::Service,
        Some(_) => {
            return Err(
                ApiError::bad_request("INVALID_ROLE", "role must be player or service")
                    .detail("field", "role"),
            )
        }
    };
    let ttl = match query_param(uri, "ttl") {
        None => DEFAULT_TTL,
        Some(value) => match value.parse::<u64>() {
            Ok(ttl) if (1..=MAX_TTL).contains(&ttl) => ttl,
            _ => {
                return Err(ApiError::bad_request(
                    "INVALID_TTL",
                    format!("ttl must be 1 to {MAX_TTL} seconds"),
                )
                .detail("field", "ttl"))
            }
        },
    };
    let token = issue_hs256(secret, &Claims::new(&*player, role, ttl))
        .map_err(|e| ApiError::system(e.to_string()))?;
    Ok(serde_json::json!({
        "token": token,
        "player_id": player,
        "role": if role == Role::Service { "service" } else { "player" },
        "expires_in": ttl,
        "demo": true,
        "note": "a demo token: this route exists only because the server generated its own \
                 secret; with DUALCAST_JWT_SECRET set it is absent",
    })
    .to_string())
}

impl<B> Service<Request<B>> for DemoRoutes {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = Ready<Result<Response<ResponseBody>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        ready(Ok(self
            .answer(&request)
            .unwrap_or_else(ApiError::into_response)))
    }
}
