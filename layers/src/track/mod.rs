//! Connection tracking: [`TrackLayer`] counts the connections open through it, for exactly
//! as long as each connection lives.
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
//! ```
//! use dualcast_layers::{OwnedLeases, TrackLayer};
//! use http::{Request, Response};
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let (layer, tracker) = TrackLayer::pair();
//! let service = layer.layer(service_fn(|request: Request<()>| async move {
//!     // An SSE handler keeps the leases in its body; here, in the response itself.
//!     let leases = OwnedLeases::from_request(&request);
//!     Ok::<_, std::convert::Infallible>(Response::new(leases))
//! }));
//!
//! let response = service.oneshot(Request::new(())).await.unwrap();
//! assert_eq!(tracker.open(), 1, "the connection lives in the body");
//! drop(response);
//! assert_eq!(tracker.open(), 0);
//! # });
//! ```

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Request;
use tower::{Layer, Service};

mod admit;
mod leases;

#[cfg(test)]
mod tests;

pub use self::admit::{Admit, PlayerAtLimit};
pub use self::leases::{Leases, OwnedLeases};

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

/// Layer that applies [`Track`]: counts connections in a [`ConnectionTracker`].
#[derive(Debug, Clone)]
#[must_use]
pub struct TrackLayer {
    tracker: ConnectionTracker,
}

impl TrackLayer {
    /// A layer counting in `tracker` (several layers may share one tracker).
    pub fn new(tracker: ConnectionTracker) -> Self {
        Self { tracker }
    }

    /// A layer with a new tracker, and that tracker to observe it.
    pub fn pair() -> (Self, ConnectionTracker) {
        let tracker = ConnectionTracker::new();
        (Self::new(tracker.clone()), tracker)
    }
}

impl<S> Layer<S> for TrackLayer {
    type Service = Track<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Track::new(inner, self.tracker.clone())
    }
}

/// Middleware that counts each request as an open connection for as long as its lease
/// lives; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct Track<S> {
    inner: S,
    tracker: ConnectionTracker,
}

impl<S> Track<S> {
    /// Wraps `inner`, counting in `tracker`.
    pub fn new(inner: S, tracker: ConnectionTracker) -> Self {
        Self { inner, tracker }
    }

    /// The same as [`TrackLayer::new`].
    pub fn layer(tracker: ConnectionTracker) -> TrackLayer {
        TrackLayer::new(tracker)
    }

    /// The tracker this service counts in.
    pub fn tracker(&self) -> &ConnectionTracker {
        &self.tracker
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
}

impl<S, ReqBody> Service<Request<ReqBody>> for Track<S>
where
    S: Service<Request<ReqBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        Leases::of(&mut request).push(self.tracker.lease());
        self.inner.call(request)
    }
}
