use super::*;
use std::convert::Infallible;
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;

use http::Response;
use tokio::task::JoinHandle;
use tower::{service_fn, ServiceBuilder, ServiceExt};

/// A response body that keeps a connection's leases, as an SSE stream does.
struct LeasedBody {
    _leases: OwnedLeases,
}

/// Records its name in `log` when dropped.
struct Recorder {
    name: &'static str,
    log: Arc<Mutex<Vec<&'static str>>>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if let Ok(mut log) = self.log.lock() {
            log.push(self.name);
        }
    }
}

#[tokio::test]
async fn leases_moved_into_the_body_end_when_the_body_is_dropped() {
    let (layer, tracker) = TrackLayer::pair();
    let service = layer.layer(service_fn(|request: Request<()>| async move {
        let leases = OwnedLeases::from_request(&request);
        Ok::<_, Infallible>(Response::new(LeasedBody { _leases: leases }))
    }));
    assert_eq!(tracker.open(), 0);
    let response = service.oneshot(Request::new(())).await.unwrap();
    assert_eq!(tracker.open(), 1, "the response resolved, the body lives");
    let body = response.into_body();
    assert_eq!(tracker.open(), 1);
    drop(body);
    assert_eq!(tracker.open(), 0);
}

#[tokio::test]
async fn leases_nobody_takes_end_with_the_request() {
    let (layer, tracker) = TrackLayer::pair();
    let service = layer.layer(service_fn(|request: Request<()>| async move {
        assert_eq!(
            request.extensions().get::<Leases>().map(Leases::len),
            Some(1)
        );
        Ok::<_, Infallible>(Response::new(()))
    }));
    let response = service.oneshot(Request::new(())).await.unwrap();
    assert_eq!(
        tracker.open(),
        0,
        "an ignored lease counts the request only"
    );
    drop(response);
}

#[tokio::test]
async fn leases_moved_into_a_spawned_task_end_with_the_task() {
    let (layer, tracker) = TrackLayer::pair();
    let release = Arc::new(AtomicBool::new(false));
    let task: Arc<Mutex<Option<JoinHandle<()>>>> = Arc::default();
    let service = layer.layer(service_fn({
        let release = Arc::clone(&release);
        let task = Arc::clone(&task);
        move |request: Request<()>| {
            let release = Arc::clone(&release);
            let task = Arc::clone(&task);
            async move {
                // As a WebSocket handler does: answer 101, keep the connection in a task.
                let leases = OwnedLeases::from_request(&request);
                let handle = tokio::spawn(async move {
                    let _leases = leases;
                    while !release.load(Ordering::Acquire) {
                        tokio::task::yield_now().await;
                    }
                });
                *task.lock().unwrap() = Some(handle);
                let mut response = Response::new(());
                *response.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
                Ok::<_, Infallible>(response)
            }
        }
    }));
    let response = service.oneshot(Request::new(())).await.unwrap();
    drop(response);
    assert_eq!(tracker.open(), 1, "the connection lives in its task");
    tokio::task::yield_now().await;
    assert_eq!(tracker.open(), 1);

    release.store(true, Ordering::Release);
    let handle = task.lock().unwrap().take().unwrap();
    handle.await.unwrap();
    assert_eq!(tracker.open(), 0);
}

#[tokio::test]
async fn stacked_layers_each_push_a_lease_and_share_a_tracker() {
    let (outer, tracker) = TrackLayer::pair();
    let service = ServiceBuilder::new()
        .layer(outer)
        .layer(TrackLayer::new(tracker.clone()))
        .service(service_fn(|request: Request<()>| async move {
            let leases = OwnedLeases::from_request(&request);
            assert_eq!(leases.len(), 2);
            Ok::<_, Infallible>(Response::new(LeasedBody { _leases: leases }))
        }));
    let response = service.oneshot(Request::new(())).await.unwrap();
    assert_eq!(tracker.open(), 2);
    drop(response);
    assert_eq!(tracker.open(), 0);
}

#[tokio::test]
async fn a_request_dropped_before_the_call_resolves_ends_its_lease() {
    let (layer, tracker) = TrackLayer::pair();
    let mut service = layer.layer(service_fn(|request: Request<()>| async move {
        let _request = request;
        std::future::pending::<()>().await;
        Ok::<_, Infallible>(Response::new(()))
    }));
    let future = service.ready().await.unwrap().call(Request::new(()));
    assert_eq!(tracker.open(), 1);
    drop(future);
    assert_eq!(tracker.open(), 0);
}

#[test]
fn owned_leases_drop_in_push_order() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let leases = Leases::new();
    for name in ["first", "second"] {
        leases.push(Recorder {
            name,
            log: Arc::clone(&log),
        });
    }
    let mut owned = leases.take();
    owned.push(Recorder {
        name: "third",
        log: Arc::clone(&log),
    });
    assert_eq!(owned.len(), 3);
    assert!(leases.is_empty());
    drop(owned);
    assert_eq!(*log.lock().unwrap(), ["first", "second", "third"]);
}

#[test]
fn pushes_after_a_take_go_to_the_handle_again() {
    let mut request = Request::new(());
    let handle = Leases::of(&mut request).clone();
    handle.push(1_u8);
    let first = OwnedLeases::from_request(&request);
    assert_eq!(first.len(), 1);
    handle.push(2_u8);
    assert_eq!(Leases::of(&mut request).len(), 1);
    assert_eq!(OwnedLeases::from_request(&request).len(), 1);
    assert!(handle.is_empty());
}

#[test]
fn a_request_without_leases_gives_none() {
    let request = Request::new(());
    let owned = OwnedLeases::from_request(&request);
    assert!(owned.is_empty());
    assert!(request.extensions().get::<Leases>().is_none());
    assert_eq!(OwnedLeases::default().len(), 0);
    assert_eq!(format!("{owned:?}"), "OwnedLeases { len: 0 }");
}

#[test]
fn tracker_debug_shows_the_count() {
    let (layer, tracker) = TrackLayer::pair();
    let _ = layer;
    let lease = tracker.lease();
    assert_eq!(format!("{tracker:?}"), "ConnectionTracker { open: 1 }");
    drop(lease);
    assert_eq!(tracker.open(), 0);
}
