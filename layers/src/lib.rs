//! Tower layers for realtime connections, usable on their own.
//!
//! `dualcast-layers` holds the pieces of [dualcast] that make sense around *any* hyper or
//! axum service:
//!
//! - [`auth`]: [`AuthLayer`] verifies a JWT taken from `Authorization: Bearer`, from the
//!   WebSocket subprotocol list (`Sec-WebSocket-Protocol: bearer, <jwt>`) or from the
//!   `access_token` query parameter, puts an [`Identity`] in the request extensions and, when
//!   the token came as a subprotocol, selects `bearer` on the `101 Switching Protocols`.
//! - [`jwt`]: [`JwtAuthenticator`], HS256 with a shared secret or RS256/EdDSA with a public key.
//! - [`error`]: the JSON error body every dualcast response uses.
//! - [`query`]: reading one query parameter without allocating when it needs no decoding.
//!
//! Each layer defines the small trait it needs ([`Authenticate`]) so a host can plug in its
//! own verification.
//!
//! ```
//! use dualcast_layers::{AuthLayer, Identity, JwtAuthenticator, Role};
//! use dualcast_layers::jwt::{issue_hs256, Claims};
//! use http::{Request, Response, StatusCode};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # tokio_test_block_on(async {
//! let secret = b"an example secret of enough length";
//! let service = ServiceBuilder::new()
//!     .layer(AuthLayer::new(JwtAuthenticator::hs256(secret)))
//!     .service(service_fn(|request: Request<()>| async move {
//!         let identity = request.extensions().get::<Identity>().expect("set by AuthLayer");
//!         let body = bytes::Bytes::copy_from_slice(identity.player_id().as_bytes());
//!         Ok::<_, std::convert::Infallible>(Response::new(body))
//!     }));
//!
//! let token = issue_hs256(secret, &Claims::new("alice", Role::Player, 3600)).unwrap();
//! let request = Request::get("/").header("authorization", format!("Bearer {token}")).body(()).unwrap();
//! let response = service.clone().oneshot(request).await.unwrap();
//! assert_eq!(response.status(), StatusCode::OK);
//! assert_eq!(response.into_body(), "alice");
//!
//! let anonymous = Request::get("/").body(()).unwrap();
//! let response = service.oneshot(anonymous).await.unwrap();
//! assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
//! # });
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
//! # }
//! ```
//!
//! [dualcast]: https://docs.rs/dualcast
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod error;
pub mod jwt;
pub mod query;

pub use auth::{
    Auth, AuthError, AuthErrorKind, AuthLayer, Authenticate, Identity, Role, TokenSource,
};
pub use error::{ErrorResponse, ErrorType};
pub use jwt::JwtAuthenticator;
