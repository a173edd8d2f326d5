//! Tower layers for realtime connections, usable on their own.
//!
//! `dualcast-layers` holds the pieces of [dualcast] that make sense around *any* hyper or
//! axum service. A host stacks them in front of its handlers, outermost first:
//!
//! ```text
//! request ─▶ AuthLayer ─▶ TrackLayer ─▶ handler (reads Identity and Leases)
//! ```
//!
//! - [`auth`]: [`AuthLayer`] identifies each request, by an [`Identity`] a host layer put
//!   in the request extensions, by a token (`Authorization: Bearer`, the WebSocket
//!   subprotocol list `Sec-WebSocket-Protocol: bearer, <jwt>`, or the `access_token` query
//!   parameter) verified with an [`Authenticate`], or by an async [`Identify`] hook (a
//!   session cookie); it checks the `Origin` of cookie-borne requests, and puts the
//!   [`Identity`] in the request extensions.
//! - [`session`]: [`SessionLayer`] resolves the game session a connection request names
//!   (the `session_id` query parameter, else the token's `sid`) with a [`ResolveSession`],
//!   puts the [`Session`] in the request extensions, and answers a stale or unknown
//!   session `409` and a malformed id `400`.
//! - [`track`]: [`TrackLayer`] admits the connection attempts of identified players (a
//!   rate per [`ClientAddress`], honouring `X-Forwarded-For` from a [`TrustedProxy`]; a
//!   rate per player; a per-player connection limit through an [`Admit`], by default
//!   [`LocalAdmission`]), answering `429` with `Retry-After` past them ([`TrackRefused`]),
//!   and counts open connections in a [`ConnectionTracker`] with a lease in the request's
//!   [`Leases`], which the handler of a long-lived connection keeps ([`OwnedLeases`]) until
//!   the connection ends.
//! - [`metrics`]: [`Metrics`] registers dualcast's Prometheus metrics in a host's
//!   `Registry` and is the hub's [`Observer`]; [`MetricsLayer`] counts HTTP requests by
//!   [`RouteTemplate`], method and status, with their latency.
//! - [`jwt`]: [`JwtAuthenticator`], the [`Authenticate`] for JSON Web Tokens.
//! - [`error`]: the JSON error body every dualcast response uses.
//! - [`query`]: reading one query parameter without allocating when it needs no decoding.
//!
//! Each layer defines the small trait it needs ([`Authenticate`], [`Identify`]) so a host
//! can plug in its own verification. The crate knows nothing of dualcast's hub: the
//! handlers behind the layers read [`Identity`] and [`Leases`] from the request.
//!
//! ```
//! use dualcast_layers::{AuthLayer, Identity, JwtAuthenticator, OwnedLeases, Role, TrackLayer};
//! use dualcast_layers::jwt::{issue_hs256, Claims};
//! use http::{Request, Response, StatusCode};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # tokio_test_block_on(async {
//! let secret = b"an example secret of enough length";
//! let (track, connections) = TrackLayer::pair();
//! let service = ServiceBuilder::new()
//!     .layer(AuthLayer::new(JwtAuthenticator::hs256(secret)))
//!     .layer(track)
//!     .service(service_fn(|request: Request<()>| async move {
//!         let identity = request.extensions().get::<Identity>().expect("set by AuthLayer");
//!         // A streaming handler keeps the leases for as long as its connection lives.
//!         let leases = OwnedLeases::from_request(&request);
//!         let body = Body::Stream { player: identity.player_id().to_owned(), leases };
//!         Ok::<_, std::convert::Infallible>(Response::new(body))
//!     }));
//!
//! let token = issue_hs256(secret, &Claims::new("alice", Role::Player, 3600)).unwrap();
//! let request = Request::get("/").header("authorization", format!("Bearer {token}")).body(()).unwrap();
//! let response = service.clone().oneshot(request).await.unwrap();
//! assert_eq!(response.status(), StatusCode::OK);
//! assert_eq!(connections.open(), 1);
//! let Body::Stream { player, leases } = response.into_body() else { unreachable!() };
//! assert_eq!((player.as_str(), leases.len()), ("alice", 1));
//! drop(leases); // the stream ended
//! assert_eq!(connections.open(), 0);
//!
//! // Refused by AuthLayer: the handler is not reached, and nothing is counted.
//! let anonymous = Request::get("/").body(()).unwrap();
//! let response = service.oneshot(anonymous).await.unwrap();
//! assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
//! assert_eq!(connections.open(), 0);
//! # });
//!
//! /// The handler's body: a stream holding its connection's leases, or a refusal (`AuthLayer`
//! /// answers with a body made `From<Bytes>`).
//! enum Body {
//!     Refusal(bytes::Bytes),
//!     Stream { player: String, leases: OwnedLeases },
//! }
//! impl From<bytes::Bytes> for Body {
//!     fn from(refusal: bytes::Bytes) -> Self {
//!         Body::Refusal(refusal)
//!     }
//! }
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
//! # }
//! ```
//!
//! [dualcast]: https://docs.rs/dualcast
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

pub mod auth;
pub mod error;
pub mod jwt;
pub mod metrics;
pub mod query;
pub mod session;
pub mod track;

pub use auth::{
    Auth, AuthError, AuthErrorKind, AuthLayer, Authenticate, CredentialSource, Identify, Identity,
    NoHook, NoTokens, Role,
};
pub use error::{ErrorResponse, ErrorType};
pub use jwt::JwtAuthenticator;
pub use metrics::{
    Metrics, MetricsLayer, Observer, RecordMetrics, RequestStart, RouteTemplate, Transport,
};
pub use session::{ResolveSession, ResolveSessions, Session, SessionLayer, SessionRefused};
pub use track::{
    Admit, ClientAddress, ConnectionTracker, Leases, LocalAdmission, OwnedLeases, Track,
    TrackLayer, TrackRefused, TrustedProxy,
};
