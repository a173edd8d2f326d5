use super::*;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;

use http::{HeaderMap, HeaderValue, StatusCode};
use tokio::task::JoinHandle;
use tower::{service_fn, ServiceBuilder, ServiceExt};

use crate::error::AdmissionRefused;
use crate::Role;

/// A response body that keeps a connection's leases, as an SSE stream does, or the JSON of
/// a refusal.
struct LeasedBody {
    _leases: OwnedLeases,
    refusal: Option<Bytes>,
}

impl LeasedBody {
    fn new(leases: OwnedLeases) -> Self {
        Self {
            _leases: leases,
            refusal: None,
        }
    }
}

impl From<Bytes> for LeasedBody {
    fn from(refusal: Bytes) -> Self {
        Self {
            _leases: OwnedLeases::none(),
            refusal: Some(refusal),
        }
    }
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

/// A request identified as `player`, as AuthLayer leaves it.
fn identified(player: &str) -> Request<()> {
    let mut request = Request::new(());
    request
        .extensions_mut()
        .insert(Identity::new(player, Role::Player));
    request
}

/// A request identified as `player`, from the socket address `socket` (`ip:port`).
fn identified_from(player: &str, socket: &str) -> Request<()> {
    let mut request = identified(player);
    let socket: SocketAddr = socket.parse().unwrap();
    request.extensions_mut().insert(ClientAddress(socket));
    request
}

/// `request` with one more `X-Forwarded-For` header of `value`.
fn forwarded(mut request: Request<()>, value: &'static str) -> Request<()> {
    request
        .headers_mut()
        .append("x-forwarded-for", HeaderValue::from_static(value));
    request
}

/// A handler that keeps its connection's leases in the response body.
fn keeps_leases(
) -> impl Service<Request<()>, Response = Response<LeasedBody>, Error = Infallible, Future = impl Send>
       + Clone {
    service_fn(|request: Request<()>| async move {
        let leases = OwnedLeases::from_request(&request);
        Ok::<_, Infallible>(Response::new(LeasedBody::new(leases)))
    })
}

/// A layer with every limit off, to turn on one at a time.
fn unlimited() -> (TrackLayer, ConnectionTracker) {
    let (layer, tracker) = TrackLayer::pair();
    let layer = layer
        .max_connections_per_player(0)
        .connect_rate_per_player(0)
        .connect_rate_per_address(0);
    (layer, tracker)
}

async fn connect<S>(service: &S, request: Request<()>) -> Response<LeasedBody>
where
    S: Service<Request<()>, Response = Response<LeasedBody>, Error = Infallible> + Clone,
{
    service.clone().oneshot(request).await.unwrap()
}

/// Checks a `429` refusal (body fields, `Retry-After`, cause); returns the `Retry-After`
/// seconds.
fn assert_refused(
    response: &Response<LeasedBody>,
    code: &str,
    cause: &'static str,
    limit: u64,
) -> u64 {
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body = response.body().refusal.as_ref().expect("a refusal body");
    let body: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(body["error"], true);
    assert_eq!(body["error_type"], "rate_limited");
    assert_eq!(body["details"]["error_code"], code);
    assert_eq!(body["details"]["retry_after_seconds"], retry_after);
    assert_eq!(body["details"]["limit"], limit);
    assert!(body["message"].is_string());
    assert!(body["timestamp"].is_string());
    assert_eq!(
        response.extensions().get::<AdmissionRefused>(),
        Some(&AdmissionRefused { cause })
    );
    assert_eq!(
        response.extensions().get::<crate::ErrorType>(),
        Some(&crate::ErrorType::RateLimited)
    );
    retry_after
}

// The lease contract.

#[tokio::test]
async fn leases_moved_into_the_body_end_when_the_body_is_dropped() {
    let (layer, tracker) = TrackLayer::pair();
    let service = layer.layer(keeps_leases());
    assert_eq!(tracker.open(), 0);
    let response = service.oneshot(identified("alice")).await.unwrap();
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
        Ok::<_, Infallible>(Response::new(Bytes::new()))
    }));
    let response = service.oneshot(identified("alice")).await.unwrap();
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
                let mut response = Response::new(Bytes::new());
                *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                Ok::<_, Infallible>(response)
            }
        }
    }));
    let response = service.oneshot(identified("alice")).await.unwrap();
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
            Ok::<_, Infallible>(Response::new(LeasedBody::new(leases)))
        }));
    let response = service.oneshot(identified("alice")).await.unwrap();
    assert_eq!(tracker.open(), 2);
    drop(response);
    assert_eq!(tracker.open(), 0);
}

#[tokio::test]
async fn a_request_dropped_before_the_call_resolves_ends_its_lease() {
    let (layer, tracker) = TrackLayer::pair();
    let admission = LocalAdmission::new();
    let mut service =
        layer
            .admission(admission.clone())
            .layer(service_fn(|request: Request<()>| async move {
                let _request = request;
                std::future::pending::<()>().await;
                Ok::<_, Infallible>(Response::new(Bytes::new()))
            }));
    let future = service.ready().await.unwrap().call(identified("alice"));
    assert_eq!(tracker.open(), 1);
    assert_eq!(admission.open("alice"), 1);
    drop(future);
    assert_eq!(tracker.open(), 0);
    assert_eq!(admission.open("alice"), 0);
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

// Admission.

#[tokio::test]
async fn an_admitted_connection_holds_one_lease_counted_by_tracker_and_admission() {
    let (layer, tracker) = TrackLayer::pair();
    let admission = LocalAdmission::new();
    let service =
        layer
            .admission(admission.clone())
            .layer(service_fn(|request: Request<()>| async move {
                let mut leases = OwnedLeases::from_request(&request);
                assert_eq!(leases.len(), 1, "one lease for the count and the admission");
                let admitted = leases
                    .get_mut::<LocalAdmissionLease>()
                    .expect("the admission lease is found inside the connection's lease");
                assert_eq!(admitted.player_id(), "alice");
                Ok::<_, Infallible>(Response::new(LeasedBody::new(leases)))
            }));
    let response = connect(&service, identified("alice")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(tracker.open(), 1);
    assert_eq!(admission.open("alice"), 1);
    drop(response);
    assert_eq!(tracker.open(), 0);
    assert_eq!(admission.open("alice"), 0);
}

#[tokio::test]
async fn the_fifth_connection_of_a_player_is_refused_429() {
    let (layer, tracker) = TrackLayer::pair();
    let service = layer.layer(keeps_leases());
    let mut open = Vec::new();
    for _ in 0..4 {
        let response = connect(&service, identified("alice")).await;
        assert_eq!(response.status(), StatusCode::OK);
        open.push(response);
    }
    assert_eq!(tracker.open(), 4);

    let refused = connect(&service, identified("alice")).await;
    let retry_after = assert_refused(&refused, "TOO_MANY_CONNECTIONS", "player_limit", 4);
    assert_eq!(retry_after, 1);
    assert_eq!(tracker.open(), 4, "a refusal is not counted");

    let bob = connect(&service, identified("bob")).await;
    assert_eq!(bob.status(), StatusCode::OK, "another player is admitted");
    assert_eq!(tracker.open(), 5);

    drop(open.pop());
    let again = connect(&service, identified("alice")).await;
    assert_eq!(
        again.status(),
        StatusCode::OK,
        "a dropped lease frees its slot at once"
    );
}

#[tokio::test]
async fn max_connections_per_player_zero_is_no_limit() {
    let (layer, tracker) = unlimited();
    let service = layer.layer(keeps_leases());
    let mut open = Vec::new();
    for _ in 0..50 {
        let response = connect(&service, identified("alice")).await;
        assert_eq!(response.status(), StatusCode::OK);
        open.push(response);
    }
    assert_eq!(tracker.open(), 50);
}

#[tokio::test]
async fn the_player_rate_refuses_a_burst_past_its_size() {
    // 1 attempt a second, bursts of 2.
    let (layer, _tracker) = unlimited();
    let service = layer.connect_rate_per_player(1).layer(keeps_leases());
    for _ in 0..2 {
        let response = connect(&service, identified_from("alice", "192.0.2.1:1000")).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    // From another address too: the rate is the player's.
    let refused = connect(&service, identified_from("alice", "192.0.2.2:1000")).await;
    assert_refused(&refused, "CONNECT_RATE_PLAYER", "player_rate", 1);

    let bob = connect(&service, identified_from("bob", "192.0.2.1:1000")).await;
    assert_eq!(bob.status(), StatusCode::OK, "each player has its own rate");
}

#[tokio::test]
async fn the_address_rate_refuses_a_burst_past_its_size_per_address() {
    let (layer, _tracker) = unlimited();
    let service = layer.connect_rate_per_address(1).layer(keeps_leases());
    // Different players from one address: the rate is the address's.
    for player in ["alice", "bob"] {
        let response = connect(&service, identified_from(player, "192.0.2.1:1000")).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    let refused = connect(&service, identified_from("carol", "192.0.2.1:2000")).await;
    assert_refused(&refused, "CONNECT_RATE_ADDRESS", "address_rate", 1);

    let other = connect(&service, identified_from("carol", "192.0.2.2:1000")).await;
    assert_eq!(
        other.status(),
        StatusCode::OK,
        "another address is independent"
    );
}

#[tokio::test]
async fn ipv6_clients_are_rate_limited_per_64() {
    let (layer, _tracker) = unlimited();
    let service = layer.connect_rate_per_address(1).layer(keeps_leases());
    for socket in ["[2001:db8:1:2::1]:1000", "[2001:db8:1:2::ffff]:1000"] {
        let response = connect(&service, identified_from("alice", socket)).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    let refused = connect(&service, identified_from("alice", "[2001:db8:1:2:aa::1]:1")).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let other = connect(&service, identified_from("alice", "[2001:db8:1:3::1]:1")).await;
    assert_eq!(other.status(), StatusCode::OK, "another /64 is independent");
}

#[tokio::test]
async fn checks_run_address_rate_then_player_rate_then_connection_limit() {
    let (layer, _tracker) = unlimited();
    let service = layer
        .connect_rate_per_address(1)
        .connect_rate_per_player(1)
        .max_connections_per_player(1)
        .layer(keeps_leases());
    let held = connect(&service, identified_from("alice", "192.0.2.1:1")).await;
    assert_eq!(held.status(), StatusCode::OK);

    // Second attempt: both rates have a token left, the connection limit refuses.
    let refused = connect(&service, identified_from("alice", "192.0.2.1:1")).await;
    assert_refused(&refused, "TOO_MANY_CONNECTIONS", "player_limit", 1);
    // Third: the address's burst is spent first.
    let refused = connect(&service, identified_from("alice", "192.0.2.1:1")).await;
    assert_refused(&refused, "CONNECT_RATE_ADDRESS", "address_rate", 1);
    // From another address: the player's burst is spent too.
    let refused = connect(&service, identified_from("alice", "192.0.2.2:1")).await;
    assert_refused(&refused, "CONNECT_RATE_PLAYER", "player_rate", 1);
}

#[tokio::test]
async fn a_rate_refusal_takes_no_connection_slot() {
    let (layer, tracker) = unlimited();
    let admission = LocalAdmission::new();
    let service = layer
        .connect_rate_per_player(1)
        .max_connections_per_player(3)
        .admission(admission.clone())
        .layer(keeps_leases());
    let mut open = Vec::new();
    for _ in 0..2 {
        open.push(connect(&service, identified("alice")).await);
    }
    let refused = connect(&service, identified("alice")).await;
    assert_refused(&refused, "CONNECT_RATE_PLAYER", "player_rate", 1);
    assert_eq!(admission.open("alice"), 2);
    assert_eq!(tracker.open(), 2);
}

#[tokio::test]
async fn a_rate_of_zero_is_off() {
    let (layer, tracker) = unlimited();
    let service = layer.layer(keeps_leases());
    let mut open = Vec::new();
    for _ in 0..5000 {
        let response = connect(&service, identified_from("alice", "192.0.2.1:1000")).await;
        assert_eq!(response.status(), StatusCode::OK);
        open.push(response);
    }
    assert_eq!(tracker.open(), 5000);
    assert_eq!(service.tracked_keys(), (0, 0));
}

#[tokio::test]
async fn x_forwarded_for_is_ignored_from_an_untrusted_socket() {
    let (layer, _tracker) = unlimited();
    let service = layer
        .connect_rate_per_address(1)
        .trusted_proxies(["10.0.0.0/8".parse::<TrustedProxy>().unwrap()])
        .layer(keeps_leases());
    let from_client =
        |xff: &'static str| forwarded(identified_from("alice", "192.0.2.9:1000"), xff);
    for xff in ["198.51.100.1", "198.51.100.2"] {
        let response = connect(&service, from_client(xff)).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    // A new forwarded address each time: still the socket's address that counts.
    let refused = connect(&service, from_client("198.51.100.3")).await;
    assert_refused(&refused, "CONNECT_RATE_ADDRESS", "address_rate", 1);
}

#[tokio::test]
async fn x_forwarded_for_from_a_trusted_proxy_names_the_rightmost_untrusted_entry() {
    let (layer, _tracker) = unlimited();
    let service = layer
        .connect_rate_per_address(1)
        .trusted_proxies([
            "10.0.0.0/8".parse::<TrustedProxy>().unwrap(),
            TrustedProxy::from("192.0.2.1".parse::<IpAddr>().unwrap()),
        ])
        .layer(keeps_leases());
    // Through two proxies, then through another front proxy: the same client counts.
    let first = forwarded(
        identified_from("alice", "10.0.0.1:1000"),
        "203.0.113.99, 198.51.100.7, 10.0.0.2",
    );
    assert_eq!(connect(&service, first).await.status(), StatusCode::OK);
    let second = forwarded(
        forwarded(identified_from("bob", "192.0.2.1:1000"), "203.0.113.98"),
        "198.51.100.7",
    );
    assert_eq!(connect(&service, second).await.status(), StatusCode::OK);
    let third = forwarded(identified_from("carol", "10.9.9.9:1000"), "198.51.100.7");
    let refused = connect(&service, third).await;
    assert_refused(&refused, "CONNECT_RATE_ADDRESS", "address_rate", 1);

    // Another client behind the same proxy is independent of 198.51.100.7.
    let other = forwarded(identified_from("dave", "10.0.0.1:1000"), "198.51.100.8");
    assert_eq!(connect(&service, other).await.status(), StatusCode::OK);
    // A trusted proxy's own request, without the header, counts for the proxy.
    let own = identified_from("erin", "10.0.0.1:1000");
    assert_eq!(connect(&service, own).await.status(), StatusCode::OK);
}

#[test]
fn client_ip_walks_x_forwarded_for_from_the_right() {
    let trusted: Vec<TrustedProxy> = ["10.0.0.0/8", "2001:db8::/32"]
        .iter()
        .map(|proxy| proxy.parse().unwrap())
        .collect();
    let ip = |text: &str| text.parse::<IpAddr>().unwrap();
    let client = |socket: &str, values: &[&'static str]| {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("x-forwarded-for", HeaderValue::from_static(value));
        }
        address::client_ip(ip(socket), &headers, &trusted)
    };
    // No header: the socket.
    assert_eq!(client("10.0.0.1", &[]), ip("10.0.0.1"));
    // Untrusted socket: the header is ignored.
    assert_eq!(client("192.0.2.1", &["198.51.100.7"]), ip("192.0.2.1"));
    // The rightmost untrusted entry, not a spoofable one on its left.
    assert_eq!(
        client("10.0.0.1", &["1.1.1.1, 198.51.100.7 ,10.0.0.3"]),
        ip("198.51.100.7")
    );
    // Every header, in order.
    assert_eq!(
        client("10.0.0.1", &["1.1.1.1", "10.0.0.9, 10.0.0.3"]),
        ip("1.1.1.1")
    );
    // Every entry trusted: the leftmost.
    assert_eq!(client("10.0.0.1", &["10.0.0.7, 10.0.0.3"]), ip("10.0.0.7"));
    // An entry that does not parse ends the walk: the last good one stands.
    assert_eq!(
        client("10.0.0.1", &["198.51.100.9, unknown, 10.0.0.3"]),
        ip("10.0.0.3")
    );
    assert_eq!(client("10.0.0.1", &["198.51.100.9, "]), ip("10.0.0.1"));
    assert_eq!(client("10.0.0.1", &["_hidden"]), ip("10.0.0.1"));
    // Entries with a port, IPv6, and an IPv4-mapped socket.
    assert_eq!(
        client("10.0.0.1", &["198.51.100.9:4711"]),
        ip("198.51.100.9")
    );
    assert_eq!(
        client("2001:db8::1", &["[2001:db9::5]:4711"]),
        ip("2001:db9::5")
    );
    assert_eq!(
        client("::ffff:10.0.0.1", &["198.51.100.9"]),
        ip("198.51.100.9")
    );
}

#[test]
fn trusted_proxies_parse_cidr_networks_and_bare_addresses() {
    let parse = |text: &str| text.parse::<TrustedProxy>();
    let ip = |text: &str| text.parse::<IpAddr>().unwrap();

    let network = parse("10.0.0.0/8").unwrap();
    assert!(network.contains(ip("10.255.0.1")));
    assert!(!network.contains(ip("11.0.0.0")));
    assert!(
        network.contains(ip("::ffff:10.1.2.3")),
        "an IPv4-mapped address"
    );
    assert!(!network.contains(ip("::1")));
    assert_eq!(network.prefix_len(), 8);
    assert_eq!(network.network(), ip("10.0.0.0"));

    let host_bits = parse(" 10.1.2.3/8 ").unwrap();
    assert_eq!(host_bits, network, "bits past the prefix are ignored");
    assert_eq!(host_bits.to_string(), "10.0.0.0/8");

    let one = parse("192.0.2.7").unwrap();
    assert_eq!(one.to_string(), "192.0.2.7/32");
    assert!(one.contains(ip("192.0.2.7")));
    assert!(!one.contains(ip("192.0.2.8")));

    let v6 = parse("2001:db8::/32").unwrap();
    assert!(v6.contains(ip("2001:db8:ffff::1")));
    assert!(!v6.contains(ip("2001:db9::1")));
    assert_eq!(parse("::1").unwrap().to_string(), "::1/128");
    assert_eq!(parse("::ffff:10.0.0.0/104").unwrap(), network);

    let everything = parse("0.0.0.0/0").unwrap();
    assert!(everything.contains(ip("203.0.113.1")));
    assert!(parse("::/0").unwrap().contains(ip("2001:db8::1")));

    for invalid in [
        "",
        "abc",
        "10.0.0.0/",
        "10.0.0.0/33",
        "10.0.0.0/+8",
        "10.0.0.0/8/8",
        "::/129",
        "10.0.0/8",
        "::ffff:10.0.0.0/95",
    ] {
        assert_eq!(parse(invalid), Err(InvalidTrustedProxy), "{invalid:?}");
    }
    assert!(InvalidTrustedProxy.to_string().contains("CIDR"));
    assert!(TrustedProxy::new(ip("10.0.0.0"), 33).is_none());
}

#[tokio::test]
async fn without_a_client_address_the_address_rate_is_skipped() {
    let (layer, _tracker) = unlimited();
    let service = layer.connect_rate_per_address(1).layer(keeps_leases());
    for _ in 0..10 {
        let response = connect(&service, identified("alice")).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    assert_eq!(service.tracked_keys(), (0, 0));
}

#[tokio::test]
async fn without_an_identity_a_request_passes_untouched_and_uncounted() {
    let (layer, tracker) = TrackLayer::pair();
    let admission = LocalAdmission::new();
    let service = layer
        .connect_rate_per_address(1)
        .connect_rate_per_player(1)
        .max_connections_per_player(1)
        .admission(admission.clone())
        .layer(service_fn(|request: Request<()>| async move {
            assert!(request.extensions().get::<Leases>().is_none());
            let leases = OwnedLeases::from_request(&request);
            Ok::<_, Infallible>(Response::new(LeasedBody::new(leases)))
        }));
    let mut open = Vec::new();
    for _ in 0..10 {
        let mut request = Request::new(());
        let socket: SocketAddr = "192.0.2.1:1000".parse().unwrap();
        request.extensions_mut().insert(ClientAddress(socket));
        let response = connect(&service, request).await;
        assert_eq!(response.status(), StatusCode::OK);
        open.push(response);
    }
    assert_eq!(tracker.open(), 0);
    assert_eq!(admission.players(), 0);
    assert_eq!(service.tracked_keys(), (0, 0));
}

#[tokio::test]
async fn local_admission_keeps_no_entry_after_the_leases_drop() {
    let (layer, tracker) = TrackLayer::pair();
    let admission = LocalAdmission::new();
    let service = layer.admission(admission.clone()).layer(keeps_leases());
    let mut open = Vec::new();
    for player in ["alice", "alice", "bob", "carol"] {
        open.push(connect(&service, identified(player)).await);
    }
    assert_eq!(admission.players(), 3);
    assert_eq!(admission.open("alice"), 2);
    assert_eq!(format!("{admission:?}"), "LocalAdmission { players: 3 }");
    open.clear();
    assert_eq!(tracker.open(), 0);
    assert_eq!(
        admission.players(),
        0,
        "no entry is kept for players who left"
    );
    assert_eq!(admission.open("alice"), 0);
}

#[test]
fn local_admission_refuses_at_the_limit_and_shares_counts_with_clones() {
    let admission = LocalAdmission::new();
    let clone = admission.clone();
    let first = admission.admit("alice", 2).unwrap();
    let second = clone.admit("alice", 2).unwrap();
    assert_eq!(
        admission.admit("alice", 2).unwrap_err(),
        PlayerAtLimit { open: 2, limit: 2 }
    );
    assert!(PlayerAtLimit { open: 2, limit: 2 }
        .to_string()
        .contains("2 connections"));
    let unlimited: Vec<_> = (0..10).map(|_| clone.admit("alice", 0).unwrap()).collect();
    assert_eq!(admission.open("alice"), 12);
    drop((first, second, unlimited));
    assert_eq!(clone.players(), 0);

    // An `Arc` admits as what it holds.
    let shared = Arc::new(LocalAdmission::new());
    let lease = Admit::admit(&shared, "bob", 1).unwrap();
    assert!(Admit::admit(&shared, "bob", 1).is_err());
    assert_eq!(
        format!("{lease:?}"),
        "LocalAdmissionLease { player_id: \"bob\" }"
    );
}

#[tokio::test]
async fn each_rate_limit_holds_at_most_max_tracked_keys() {
    let (layer, _tracker) = unlimited();
    let service = layer
        .connect_rate_per_address(1)
        .connect_rate_per_player(1)
        .max_tracked_keys(8)
        .layer(keeps_leases());
    for n in 0..100 {
        let player = format!("player-{n}");
        let socket = format!("198.51.{}.{}:1000", n / 200, n % 200 + 1);
        let response = connect(&service, identified_from(&player, &socket)).await;
        assert_eq!(response.status(), StatusCode::OK, "attempt {n}");
        let (players, addresses) = service.tracked_keys();
        assert!(
            players <= 8 && addresses <= 8,
            "{players} and {addresses} keys"
        );
    }
    assert_eq!(service.tracked_keys(), (8, 8));

    // The keys held are still limited: the first address has one attempt of its burst
    // left (a new player, whose key is not tracked, passes its own rate).
    let again = connect(&service, identified_from("late-1", "198.51.0.1:1000")).await;
    assert_eq!(again.status(), StatusCode::OK);
    let refused = connect(&service, identified_from("late-2", "198.51.0.1:1000")).await;
    assert_refused(&refused, "CONNECT_RATE_ADDRESS", "address_rate", 1);
}

#[test]
fn refusals_round_retry_after_up_to_whole_seconds() {
    let rate = |millis| TrackRefused::PlayerRate {
        per_second: 10,
        retry_after: std::time::Duration::from_millis(millis),
    };
    assert_eq!(rate(0).retry_after_seconds(), 1);
    assert_eq!(rate(100).retry_after_seconds(), 1);
    assert_eq!(rate(1000).retry_after_seconds(), 1);
    assert_eq!(rate(1001).retry_after_seconds(), 2);
    assert_eq!(rate(2500).retry_after_seconds(), 3);
    let limit = TrackRefused::PlayerLimit(PlayerAtLimit { open: 4, limit: 4 });
    assert_eq!(limit.retry_after_seconds(), 1);
    assert_eq!(limit.limit(), 4);
    assert_eq!(
        (limit.code(), limit.cause()),
        ("TOO_MANY_CONNECTIONS", "player_limit")
    );
    let response: Response<Bytes> = rate(2500).into_response();
    assert_eq!(response.headers()["retry-after"], "3");
    assert!(!rate(1).to_string().is_empty());
}

#[test]
fn layer_settings_are_kept_across_setters_and_admission() {
    let (layer, _tracker) = TrackLayer::pair();
    let layer = layer
        .max_connections_per_player(7)
        .connect_rate_per_player(3)
        .connect_rate_per_address(0)
        .trusted_proxies(["10.0.0.0/8".parse::<TrustedProxy>().unwrap()])
        .max_tracked_keys(9)
        .admission(Arc::new(LocalAdmission::new()));
    let debug = format!("{layer:?}");
    for shown in [
        "max_connections_per_player: 7",
        "connect_rate_per_player: 3",
        "connect_rate_per_address: 0",
        "max_tracked_keys: 9",
        "10.0.0.0/8",
    ] {
        assert!(debug.contains(shown), "{shown} in {debug}");
    }
    let service = layer.layer(keeps_leases());
    assert!(service.shared.player_rate.is_some());
    assert!(service.shared.address_rate.is_none());
    assert_eq!(service.tracker().open(), 0);
    assert_eq!(service.admission().players(), 0);
}
