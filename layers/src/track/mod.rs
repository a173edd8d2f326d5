//! Connection admission and tracking: [`TrackLayer`] admits each connection attempt of an
//! identified player (per-address and per-player attempt rates, the per-player connection
//! limit) and counts the connections open through it, for exactly as long as each lives.
//!
//! tower-http's in-flight-requests counter ends a count when the response body ends. A
//! realtime connection outlives that: an SSE response resolves at its headers and the
//! stream lives in the body; a WebSocket response is the `101` and the connection lives in
//! a spawned task. So [`Track`] does not hold its count itself: it pushes a *lease* into
//! the request's [`Leases`] extension, and the count ends when the lease is dropped.
//!
//! # The lease contract
//!
//! Whoever opens a long-lived connection takes the request's leases
//! ([`OwnedLeases::from_request`]) and drops them when the connection ends (dualcast's
//! `ConnectionGuard` owns them). If nobody takes them, they end when the request is
//! dropped, i.e. they count an in-flight request. A layer that wants its own count to
//! follow connections pushes its own lease with [`Leases::push`].
//!
//! [`Track`] pushes one lease per admitted request, holding both its
//! [`ConnectionTracker`] count and the [`Admit`] lease, so the two end together.
//! [`OwnedLeases::get_mut`] finds the admission lease inside it.
//!
//! # Admission
//!
//! Only requests that carry an [`Identity`] (put there by [`AuthLayer`](crate::AuthLayer)
//! in front) are admitted and counted. A request without one passes through untouched,
//! counting nothing: the handler behind answers it (`401`). Each identified request is
//! checked in this order, and the first refusal answers:
//!
//! 1. **Per-address attempt rate** ([`TrackLayer::connect_rate_per_address`]): attempts of
//!    the [client address](#client-address).
//! 2. **Per-player attempt rate** ([`TrackLayer::connect_rate_per_player`]): attempts of
//!    the player, from any address.
//! 3. **Per-player connection limit** ([`TrackLayer::max_connections_per_player`]): the
//!    [`Admit`] ([`LocalAdmission`] by default; dualcast's `Hub`, which counts the
//!    connections it holds, through [`TrackLayer::admission`]) admits the connection if the
//!    player holds fewer than the limit (SPEC §1: 4).
//!
//! A check counts its attempt whatever a later check decides: an attempt refused by the
//! player's rate has used a token of its address's rate, and one refused by the connection
//! limit a token of both rates. An attempt refused by a rate never reaches the connection
//! limit, so it takes no slot.
//!
//! # Rate limits
//!
//! Both rates are GCRA token buckets (governor): `n` attempts a second on average, in
//! bursts of up to `2 × n`. The defaults are generous (10 a second per player, 50 per
//! address): a client that reconnects a few times a second (a flaky network, a page
//! reloaded) is never refused; a client retrying in a tight loop, or one address opening
//! connections for many players, is. A rate of `0` turns that limit off.
//!
//! Each rate keeps a state per key (player, address) only while it differs from a fresh
//! one, that is for up to two seconds after the key's last attempts. At most
//! [`max_tracked_keys`](TrackLayer::max_tracked_keys) keys are held per rate: when a check
//! finds them all held, the stale ones are dropped (at most once a second); if none is
//! stale, the new key is not tracked and its attempt passes (the limit fails open for it,
//! and a warning is logged at most once a minute), while the keys already held stay
//! limited. Stale keys are also dropped every 4096 checks.
//!
//! # Client address
//!
//! The per-address rate limits the request's [`ClientAddress`] extension, which
//! `dualcast::serve` inserts (and an axum host inserts from `ConnectInfo`; see
//! [`ClientAddress`]). A request without one is not limited per address (logged at
//! `debug`). IPv6 clients are limited per `/64`, which one host can pick addresses from at
//! will; an IPv4-mapped IPv6 address counts as its IPv4 address.
//!
//! # Trusted proxies
//!
//! Behind a reverse proxy, every request comes from the proxy's address. With
//! [`TrackLayer::trusted_proxies`] (default: none), a request whose socket address is a
//! [`TrustedProxy`] is counted for the client its `X-Forwarded-For` names: the entries of
//! every `X-Forwarded-For` header (comma-separated) are read from the right, skipping those
//! that are trusted proxies themselves, and the first untrusted one is the client. An entry
//! that is not an address ends the walk, and the last address read stands (the socket's if
//! it was the first). A request with no `X-Forwarded-For` counts for the socket address.
//! The header of a request from any other address is ignored: a client cannot choose the
//! address it is counted for.
//!
//! # Refusals
//!
//! A refused attempt never reaches the inner service. It is answered at once with the
//! SPEC's JSON error body (`error_type` `rate_limited`), a `Retry-After` header in whole
//! seconds (the wait rounded up, at least `1`; `1` for the connection limit),
//! `details.retry_after_seconds`, `details.limit`, and an
//! [`AdmissionRefused`](crate::error::AdmissionRefused) in the response extensions:
//!
//! | Why | Status | `details.error_code` | cause | `details.limit` |
//! |---|---|---|---|---|
//! | the address's attempt rate | `429` | `CONNECT_RATE_ADDRESS` | `address_rate` | attempts a second |
//! | the player's attempt rate | `429` | `CONNECT_RATE_PLAYER` | `player_rate` | attempts a second |
//! | the player's connection limit | `429` | `TOO_MANY_CONNECTIONS` | `player_limit` | connections |
//!
//! Refusals are logged at `debug` with `player_id`, `cause` and the client address; never
//! a token.
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use dualcast_layers::error::AdmissionRefused;
//! use dualcast_layers::{Identity, OwnedLeases, Role, TrackLayer};
//! use http::{Request, Response, StatusCode};
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! /// The handler's body: an open stream holding its connection's leases, or a refusal.
//! enum Body {
//!     Stream(OwnedLeases),
//!     Refusal(Bytes),
//! }
//! impl From<Bytes> for Body {
//!     fn from(refusal: Bytes) -> Self {
//!         Body::Refusal(refusal)
//!     }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let (layer, tracker) = TrackLayer::pair();
//! let service = layer.max_connections_per_player(4).layer(service_fn(
//!     |request: Request<()>| async move {
//!         // An SSE handler keeps the leases in its body, for as long as the stream lives.
//!         let leases = OwnedLeases::from_request(&request);
//!         Ok::<_, std::convert::Infallible>(Response::new(Body::Stream(leases)))
//!     },
//! ));
//! // What AuthLayer does in front: put the request's Identity in its extensions.
//! let connect = |player: &str| {
//!     let mut request = Request::new(());
//!     request.extensions_mut().insert(Identity::new(player, Role::Player));
//!     service.clone().oneshot(request)
//! };
//!
//! let mut streams = Vec::new();
//! for _ in 0..4 {
//!     let response = connect("alice").await.unwrap();
//!     assert_eq!(response.status(), StatusCode::OK);
//!     streams.push(response.into_body());
//! }
//! assert_eq!(tracker.open(), 4);
//!
//! // The fifth connection of alice is refused; bob is admitted.
//! let refused = connect("alice").await.unwrap();
//! assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
//! assert_eq!(refused.headers()["retry-after"], "1");
//! let cause = refused.extensions().get::<AdmissionRefused>().map(|refused| refused.cause);
//! assert_eq!(cause, Some("player_limit"));
//! let Body::Refusal(body) = refused.into_body() else { unreachable!() };
//! let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
//! assert_eq!(body["error_type"], "rate_limited");
//! assert_eq!(body["details"]["error_code"], "TOO_MANY_CONNECTIONS");
//! assert_eq!(body["details"]["limit"], 4);
//! assert_eq!(connect("bob").await.unwrap().status(), StatusCode::OK);
//!
//! // One of alice's streams ends: its slot is free at once.
//! drop(streams.pop());
//! assert_eq!(tracker.open(), 3);
//! assert_eq!(connect("alice").await.unwrap().status(), StatusCode::OK);
//! # });
//! ```

use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use tower::{Layer, Service};

use crate::session::{Session, SessionOutcome};
use crate::Identity;

mod address;
mod admit;
pub mod future;
mod leases;
mod rate;
mod refused;

#[cfg(test)]
mod tests;

pub use self::address::{ClientAddress, InvalidTrustedProxy, TrustedProxy};
pub use self::admit::{Admit, LocalAdmission, LocalAdmissionLease, PlayerAtLimit};
pub use self::future::ResponseFuture;
pub use self::leases::{Leases, OwnedLeases};
pub use self::refused::TrackRefused;

use self::address::{client_ip, rate_key};
use self::rate::KeyedRateLimit;

/// The default of [`TrackLayer::max_connections_per_player`] (SPEC §1).
pub const DEFAULT_MAX_CONNECTIONS_PER_PLAYER: usize = 4;
/// The default of [`TrackLayer::connect_rate_per_player`], in attempts a second.
pub const DEFAULT_CONNECT_RATE_PER_PLAYER: u32 = 10;
/// The default of [`TrackLayer::connect_rate_per_address`], in attempts a second.
pub const DEFAULT_CONNECT_RATE_PER_ADDRESS: u32 = 50;
/// The default of [`TrackLayer::max_tracked_keys`].
pub const DEFAULT_MAX_TRACKED_KEYS: usize = 65_536;

/// Observes the connections a [`TrackLayer`] counts. Clones observe the same count.
#[derive(Clone, Default)]
pub struct ConnectionTracker {
    open: Arc<AtomicUsize>,
}

impl ConnectionTracker {
    /// A tracker counting nothing yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// How many tracked connections are open: leases pushed and not yet dropped.
    #[must_use]
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    fn lease(&self) -> ConnectionLease {
        self.open.fetch_add(1, Ordering::AcqRel);
        ConnectionLease {
            open: Arc::clone(&self.open),
        }
    }
}

impl fmt::Debug for ConnectionTracker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionTracker")
            .field("open", &self.open())
            .finish()
    }
}

/// One open connection in a [`ConnectionTracker`]'s count, until dropped.
struct ConnectionLease {
    open: Arc<AtomicUsize>,
}

impl Drop for ConnectionLease {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The one lease [`Track`] pushes for an admitted connection: the admission and the count
/// end together. [`OwnedLeases::get_mut`] reaches the admission inside.
struct AdmittedConnection<L> {
    admission: L,
    _connection: ConnectionLease,
}

/// The settings of a [`TrackLayer`].
#[derive(Debug, Clone)]
struct Settings {
    max_connections_per_player: usize,
    connect_rate_per_player: u32,
    connect_rate_per_address: u32,
    max_tracked_keys: usize,
    trusted_proxies: Arc<[TrustedProxy]>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_connections_per_player: DEFAULT_MAX_CONNECTIONS_PER_PLAYER,
            connect_rate_per_player: DEFAULT_CONNECT_RATE_PER_PLAYER,
            connect_rate_per_address: DEFAULT_CONNECT_RATE_PER_ADDRESS,
            max_tracked_keys: DEFAULT_MAX_TRACKED_KEYS,
            trusted_proxies: Arc::from([]),
        }
    }
}

/// The settings of a [`TrackLayer`] and the rate-limit state built from them, shared by
/// the layer's clones and services.
#[derive(Debug)]
struct Shared {
    settings: Settings,
    player_rate: Option<KeyedRateLimit<Arc<str>>>,
    address_rate: Option<KeyedRateLimit<IpAddr>>,
}

impl Shared {
    fn new(mut settings: Settings) -> Self {
        settings.max_tracked_keys = settings.max_tracked_keys.max(1);
        let keys = settings.max_tracked_keys;
        Self {
            player_rate: KeyedRateLimit::new(settings.connect_rate_per_player, keys, "player"),
            address_rate: KeyedRateLimit::new(settings.connect_rate_per_address, keys, "address"),
            settings,
        }
    }

    /// These settings after `change`, with fresh rate-limit state.
    fn rebuilt(&self, change: impl FnOnce(&mut Settings)) -> Arc<Self> {
        let mut settings = self.settings.clone();
        change(&mut settings);
        Arc::new(Self::new(settings))
    }
}

impl Default for Shared {
    fn default() -> Self {
        Self::new(Settings::default())
    }
}

/// Layer that applies [`Track`]: admits connection attempts and counts connections in a
/// [`ConnectionTracker`]; see the [module docs](self).
///
/// Clones share the tracker, the admission and the rate-limit state, so one layer applied
/// to several handlers (WebSocket, SSE) limits them together. A setter starts fresh
/// rate-limit state: configure the layer before serving with it.
#[derive(Debug, Clone)]
#[must_use]
pub struct TrackLayer<A = LocalAdmission> {
    tracker: ConnectionTracker,
    admission: A,
    shared: Arc<Shared>,
}

impl TrackLayer {
    /// A layer counting in `tracker` (several layers may share one tracker).
    ///
    /// Defaults: a new [`LocalAdmission`], 4 connections per player, 10 attempts a second
    /// per player (bursts of 20), 50 per address (bursts of 100), no trusted proxy, 65 536
    /// keys per rate.
    pub fn new(tracker: ConnectionTracker) -> Self {
        Self {
            tracker,
            admission: LocalAdmission::new(),
            shared: Arc::default(),
        }
    }

    /// A layer with a new tracker and the defaults of [`new`](Self::new), and that tracker
    /// to observe it.
    pub fn pair() -> (Self, ConnectionTracker) {
        let tracker = ConnectionTracker::new();
        (Self::new(tracker.clone()), tracker)
    }
}

impl<A> TrackLayer<A> {
    /// Admits connections with `admission` instead (dualcast's `Hub`, which counts the
    /// connections it holds); it is shared by clones of the layer if it is a shared
    /// handle, as `Hub` and `Arc` are. The other settings and the rate-limit state stay.
    ///
    /// Default: a new [`LocalAdmission`].
    pub fn admission<A2>(self, admission: A2) -> TrackLayer<A2> {
        TrackLayer {
            tracker: self.tracker,
            admission,
            shared: self.shared,
        }
    }

    /// The most connections one player may hold at once; `0`: no limit. The
    /// `max_connections_per_player + 1`-th is refused `429` with `TOO_MANY_CONNECTIONS`.
    ///
    /// Default: 4 (SPEC §1).
    pub fn max_connections_per_player(mut self, max: usize) -> Self {
        self.shared = self
            .shared
            .rebuilt(|settings| settings.max_connections_per_player = max);
        self
    }

    /// Connection attempts a second each player may make on average, in bursts of up to
    /// twice as many; `0` turns the limit off. Past it, `429` with `CONNECT_RATE_PLAYER`.
    ///
    /// Default: 10 a second, bursts of 20: generous, so that a client reconnecting a few
    /// times a second is never refused while one retrying in a tight loop is.
    pub fn connect_rate_per_player(mut self, per_second: u32) -> Self {
        self.shared = self
            .shared
            .rebuilt(|settings| settings.connect_rate_per_player = per_second);
        self
    }

    /// Connection attempts a second each client address (an IPv6 `/64`) may make on
    /// average, for any players, in bursts of up to twice as many; `0` turns the limit off.
    /// Past it, `429` with `CONNECT_RATE_ADDRESS`. Needs the [`ClientAddress`] extension;
    /// see the [module docs](self#client-address).
    ///
    /// Default: 50 a second, bursts of 100: generous, so that a few clients behind one NAT
    /// reconnecting a few times a second are never refused.
    pub fn connect_rate_per_address(mut self, per_second: u32) -> Self {
        self.shared = self
            .shared
            .rebuilt(|settings| settings.connect_rate_per_address = per_second);
        self
    }

    /// The proxies whose `X-Forwarded-For` names the client: addresses or CIDR networks
    /// ([`TrustedProxy`], or an [`IpAddr`]); replaces the previous list. See the
    /// [module docs](self#trusted-proxies).
    ///
    /// Default: none (every request counts for its socket's address).
    pub fn trusted_proxies<I>(mut self, proxies: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<TrustedProxy>,
    {
        let proxies: Arc<[TrustedProxy]> = proxies.into_iter().map(Into::into).collect();
        self.shared = self
            .shared
            .rebuilt(|settings| settings.trusted_proxies = proxies);
        self
    }

    /// The most keys (players, addresses) each rate limit holds at once (at least 1). Past
    /// it, stale keys are dropped, and a new key is left untracked (its attempts pass) while
    /// none is stale. See the [module docs](self#rate-limits).
    ///
    /// Default: 65 536 per rate limit.
    pub fn max_tracked_keys(mut self, max: usize) -> Self {
        self.shared = self
            .shared
            .rebuilt(|settings| settings.max_tracked_keys = max);
        self
    }

    /// The tracker this layer counts in.
    pub fn tracker(&self) -> &ConnectionTracker {
        &self.tracker
    }
}

impl<S, A: Clone> Layer<S> for TrackLayer<A> {
    type Service = Track<S, A>;

    fn layer(&self, inner: S) -> Self::Service {
        Track {
            inner,
            tracker: self.tracker.clone(),
            admission: self.admission.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

/// Middleware that admits each identified request (rates, connection limit) and counts it
/// as an open connection for as long as its lease lives; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct Track<S, A = LocalAdmission> {
    inner: S,
    tracker: ConnectionTracker,
    admission: A,
    shared: Arc<Shared>,
}

impl<S> Track<S> {
    /// Wraps `inner`, counting in `tracker`, with the defaults of [`TrackLayer::new`]: the
    /// same as `TrackLayer::new(tracker).layer(inner)`.
    pub fn new(inner: S, tracker: ConnectionTracker) -> Self {
        TrackLayer::new(tracker).layer(inner)
    }

    /// The same as [`TrackLayer::new`].
    pub fn layer(tracker: ConnectionTracker) -> TrackLayer {
        TrackLayer::new(tracker)
    }
}

impl<S, A> Track<S, A> {
    /// The tracker this service counts in.
    pub fn tracker(&self) -> &ConnectionTracker {
        &self.tracker
    }

    /// The admission of the per-player connection limit.
    pub fn admission(&self) -> &A {
        &self.admission
    }

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

    /// How many keys the per-player and the per-address rate limits hold.
    #[cfg(test)]
    pub(crate) fn tracked_keys(&self) -> (usize, usize) {
        let player = self
            .shared
            .player_rate
            .as_ref()
            .map_or(0, |rate| rate.len());
        let address = self
            .shared
            .address_rate
            .as_ref()
            .map_or(0, |rate| rate.len());
        (player, address)
    }
}

impl<S, A, ReqBody, ResBody> Service<Request<ReqBody>> for Track<S, A>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    A: Admit,
    ResBody: From<Bytes>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let admitted = match request.extensions().get::<Identity>() {
            // No identity: the handler answers (401); nothing is counted.
            None => None,
            Some(identity) => match self.admit(identity, &request) {
                Ok(admission) => Some(admission),
                Err(refused) => return ResponseFuture::refused(refused.into_response()),
            },
        };
        if let Some(admission) = admitted {
            Leases::of(&mut request).push(AdmittedConnection {
                admission,
                _connection: self.tracker.lease(),
            });
        }
        ResponseFuture::inner(self.inner.call(request))
    }
}

impl<S, A: Admit> Track<S, A> {
    /// Checks the attempt of `identity` (address rate, player rate, connection limit, in
    /// that order) and admits it, or says why not.
    fn admit<B>(
        &self,
        identity: &Identity,
        request: &Request<B>,
    ) -> Result<A::Lease, TrackRefused> {
        let shared = &*self.shared;
        let player_id = identity.player_id();
        let client = request
            .extensions()
            .get::<ClientAddress>()
            .map(|ClientAddress(socket)| {
                client_ip(
                    socket.ip(),
                    request.headers(),
                    &shared.settings.trusted_proxies,
                )
            });

        if let Some(rate) = &shared.address_rate {
            match client {
                Some(client) => {
                    if let Err(retry_after) = rate.check(&rate_key(client)) {
                        return Err(refused(
                            player_id,
                            Some(client),
                            TrackRefused::AddressRate {
                                per_second: rate.per_second(),
                                retry_after,
                            },
                        ));
                    }
                }
                None => tracing::debug!(
                    player_id,
                    "no ClientAddress in the request: the per-address rate limit is skipped"
                ),
            }
        }

        if let Some(rate) = &shared.player_rate {
            if let Err(retry_after) = rate.check(identity.player_id_arc()) {
                return Err(refused(
                    player_id,
                    client,
                    TrackRefused::PlayerRate {
                        per_second: rate.per_second(),
                        retry_after,
                    },
                ));
            }
        }

        let limit = shared.settings.max_connections_per_player;
        let taking_over = request
            .extensions()
            .get::<Session>()
            .filter(|session| session.outcome() == SessionOutcome::TakesOver);
        match taking_over {
            Some(session) => self
                .admission
                .admit_taking_over(player_id, session.id(), limit),
            None => self.admission.admit(player_id, limit),
        }
        .map_err(|at_limit| refused(player_id, client, TrackRefused::PlayerLimit(at_limit)))
    }
}

/// Logs a refusal at `debug` and returns it.
fn refused(player_id: &str, client: Option<IpAddr>, refusal: TrackRefused) -> TrackRefused {
    tracing::debug!(
        player_id,
        cause = refusal.cause(),
        client = ?client,
        retry_after_seconds = refusal.retry_after_seconds(),
        "connection attempt refused: {refusal}"
    );
    refusal
}
