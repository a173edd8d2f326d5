//! [`Leases`], the request extension, and [`OwnedLeases`], what a connection keeps.

use std::any::Any;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use http::Request;

use super::AdmittedConnection;

/// A lease: any value whose drop ends something (a count, a permit).
type Lease = Box<dyn Any + Send + Sync>;

/// The leases of a request, as a request extension: a cheap shared handle that layers push
/// leases into and the handler of a long-lived connection takes them out of.
///
/// Clones share the same leases. A lease lives until someone [takes](Self::take) it and
/// drops the [`OwnedLeases`], or else until the last handle is dropped (normally with the
/// request): see the [module docs](super#the-lease-contract).
///
/// ```
/// use dualcast_layers::{Leases, OwnedLeases};
///
/// let mut request = http::Request::new(());
/// Leases::of(&mut request).push("a lease");
/// assert_eq!(Leases::of(&mut request).len(), 1);
///
/// let owned = OwnedLeases::from_request(&request);
/// assert_eq!(owned.len(), 1);
/// assert!(Leases::of(&mut request).is_empty());
/// ```
#[derive(Clone, Default)]
pub struct Leases(Arc<Mutex<Vec<Lease>>>);

impl Leases {
    /// An empty handle.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The request's handle, inserting an empty one if it has none.
    pub fn of<B>(request: &mut Request<B>) -> &Leases {
        request.extensions_mut().get_or_insert_default::<Leases>()
    }

    /// Adds a lease; it is dropped with the other leases, after those pushed before it.
    pub fn push<T: Send + Sync + 'static>(&self, lease: T) {
        let lease: Lease = Box::new(lease);
        self.lock().push(lease);
    }

    /// Moves every lease out. Leases pushed later go to this handle again.
    #[must_use = "dropping the taken leases ends them at once"]
    pub fn take(&self) -> OwnedLeases {
        let taken = std::mem::take(&mut *self.lock());
        OwnedLeases((!taken.is_empty()).then(|| Box::new(taken)))
    }

    /// How many leases the handle holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// `true` when the handle holds no lease.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Lease>> {
        // No user code runs under the lock (leases are dropped after it is released), so
        // even a poisoned lock guards a well-formed list.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for Leases {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Leases").field("len", &self.len()).finish()
    }
}

/// Leases taken out of a request: dropping this drops them all, in the order they were
/// pushed.
///
/// Whoever keeps a connection open after its response holds these until the connection
/// ends (see the [module docs](super#the-lease-contract)). Not `Clone`: a lease ends once.
///
/// ```
/// use dualcast_layers::OwnedLeases;
///
/// let mut leases = OwnedLeases::none();
/// assert!(leases.is_empty());
/// leases.push(std::sync::Arc::new(()));
/// assert_eq!(leases.len(), 1);
/// assert_eq!(format!("{leases:?}"), "OwnedLeases { len: 1 }");
/// ```
// One word: a connection's guard holds this for the connection's whole life, and most
// connections hold no lease at all.
// A boxed `Vec`, not a `Vec`: one word instead of three in every guard.
#[allow(clippy::box_collection)]
#[derive(Default)]
pub struct OwnedLeases(Option<Box<Vec<Lease>>>);

impl OwnedLeases {
    /// No leases; allocates nothing.
    #[must_use]
    pub const fn none() -> Self {
        Self(None)
    }

    /// Takes the request's leases if it has a [`Leases`] extension; none otherwise.
    #[must_use = "dropping the taken leases ends them at once"]
    pub fn from_request<B>(request: &Request<B>) -> Self {
        request
            .extensions()
            .get::<Leases>()
            .map_or_else(Self::none, Leases::take)
    }

    /// Adds a lease, dropped after those already held.
    pub fn push<T: Send + Sync + 'static>(&mut self, lease: T) {
        self.0
            .get_or_insert_with(Box::default)
            .push(Box::new(lease));
    }

    /// The first held lease of type `T`, for its owner to update (dualcast's hub marks its
    /// admission lease registered this way).
    ///
    /// An admission lease that [`Track`](super::Track) pushed together with its connection
    /// count (one lease, so that both end together) is found as well.
    pub fn get_mut<T: Send + Sync + 'static>(&mut self) -> Option<&mut T> {
        self.0.as_mut()?.iter_mut().find_map(|lease| {
            if lease.is::<T>() {
                lease.downcast_mut::<T>()
            } else {
                lease
                    .downcast_mut::<AdmittedConnection<T>>()
                    .map(|admitted| &mut admitted.admission)
            }
        })
    }

    /// How many leases are held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |leases| leases.len())
    }

    /// `true` when no lease is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for OwnedLeases {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedLeases")
            .field("len", &self.len())
            .finish()
    }
}
