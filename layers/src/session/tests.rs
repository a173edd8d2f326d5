use super::*;
use std::convert::Infallible;
use std::sync::Mutex;

use crate::{Leases, Role};
use tower::{service_fn, ServiceExt};

/// A resolver with a fixed answer per named session, recording every call.
#[derive(Default)]
struct Recording {
    calls: Mutex<Vec<(String, Option<String>)>>,
}

impl Recording {
    fn calls(&self) -> Vec<(String, Option<String>)> {
        self.calls.lock().unwrap().clone()
    }
}

impl ResolveSession for Recording {
    fn resolve(&self, player_id: &str, named: Option<&str>) -> Result<Session, SessionRefused> {
        self.calls
            .lock()
            .unwrap()
            .push((player_id.to_owned(), named.map(str::to_owned)));
        match named {
            None => Ok(Session::new("current", false, SessionOutcome::Joined)),
            Some("old") => Err(SessionRefused::Stale),
            Some("unbegun") => Err(SessionRefused::Unknown),
            Some(id) => Ok(Session::new(id, true, SessionOutcome::TakesOver)),
        }
    }
}

/// What the handler saw of a request.
#[derive(Debug, Default)]
struct Observed {
    calls: usize,
    session: Option<Session>,
    identity: Option<Identity>,
    leases: Option<usize>,
}

type Seen = Arc<Mutex<Observed>>;

/// A handler recording what it saw, answering `200` with an empty body.
fn handler(
    seen: &Seen,
) -> impl Service<Request<()>, Response = Response<Bytes>, Error = Infallible> + Clone {
    let seen = Arc::clone(seen);
    service_fn(move |request: Request<()>| {
        let seen = Arc::clone(&seen);
        async move {
            let mut seen = seen.lock().unwrap();
            seen.calls += 1;
            seen.session = request.extensions().get::<Session>().cloned();
            seen.identity = request.extensions().get::<Identity>().cloned();
            seen.leases = request.extensions().get::<Leases>().map(Leases::len);
            Ok::<_, Infallible>(Response::new(Bytes::new()))
        }
    })
}

fn alice() -> Identity {
    Identity::new("alice", Role::Player)
}

fn request(uri: &str, identity: Option<Identity>) -> Request<()> {
    let mut request = Request::get(uri).body(()).unwrap();
    if let Some(identity) = identity {
        request.extensions_mut().insert(identity);
    }
    request
}

/// Calls a fresh stack over `resolver` with `request`.
async fn call(resolver: &Arc<Recording>, seen: &Seen, request: Request<()>) -> Response<Bytes> {
    SessionLayer::new(Arc::clone(resolver))
        .layer(handler(seen))
        .oneshot(request)
        .await
        .unwrap()
}

fn json(response: &Response<Bytes>) -> serde_json::Value {
    serde_json::from_slice(response.body()).unwrap()
}

#[tokio::test]
async fn accepted_session_named_by_the_query_reaches_the_handler() {
    let resolver = Arc::new(Recording::default());
    let seen = Seen::default();
    let response = call(
        &resolver,
        &seen,
        request("/ws?session_id=s-2", Some(alice())),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        seen.lock().unwrap().session,
        Some(Session::new("s-2", true, SessionOutcome::TakesOver))
    );
    assert_eq!(
        resolver.calls(),
        [("alice".to_owned(), Some("s-2".to_owned()))]
    );
}

#[tokio::test]
async fn accepted_session_named_by_the_query_is_percent_decoded() {
    let resolver = Arc::new(Recording::default());
    let seen = Seen::default();
    let response = call(
        &resolver,
        &seen,
        request("/ws?x=1&session_id=s%2F2", Some(alice())),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(resolver.calls()[0].1.as_deref(), Some("s/2"));
}

#[tokio::test]
async fn accepted_session_named_by_the_sid_claim_reaches_the_handler() {
    let resolver = Arc::new(Recording::default());
    let seen = Seen::default();
    let identity = alice().with_session_id("from-token");
    let response = call(&resolver, &seen, request("/sse/alice", Some(identity))).await;
    assert_eq!(response.status(), StatusCode::OK);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.session.as_ref().map(Session::id), Some("from-token"));
    assert_eq!(seen.session.as_ref().map(Session::named), Some(true));
    assert_eq!(resolver.calls()[0].1.as_deref(), Some("from-token"));
}

#[tokio::test]
async fn accepted_query_wins_over_the_sid_claim() {
    let resolver = Arc::new(Recording::default());
    let seen = Seen::default();
    let identity = alice().with_session_id("from-token");
    let response = call(
        &resolver,
        &seen,
        request("/sse/alice?session_id=from-query", Some(identity)),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        seen.lock().unwrap().session.as_ref().map(Session::id),
        Some("from-query")
    );
    assert_eq!(resolver.calls()[0].1.as_deref(), Some("from-query"));
}

#[tokio::test]
async fn no_session_named_passes_none_to_the_resolver() {
    let resolver = Arc::new(Recording::default());
    let seen = Seen::default();
    let response = call(&resolver, &seen, request("/ws?other=1", Some(alice()))).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(resolver.calls(), [("alice".to_owned(), None)]);
    assert_eq!(
        seen.lock().unwrap().session,
        Some(Session::new("current", false, SessionOutcome::Joined))
    );
}

#[tokio::test]
async fn refused_stale_session_answers_409_without_calling_the_handler() {
    let resolver = Arc::new(Recording::default());
    let seen = Seen::default();
    let response = call(
        &resolver,
        &seen,
        request("/ws?session_id=old", Some(alice())),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(
        response.extensions().get::<AdmissionRefused>(),
        Some(&AdmissionRefused {
            cause: "stale_session"
        })
    );
    assert_eq!(
        response.extensions().get::<ErrorType>(),
        Some(&ErrorType::SessionError)
    );
    let body = json(&response);
    assert_eq!(body["error"], true);
    assert_eq!(body["error_type"], "session_error");
    assert_eq!(body["details"]["error_code"], "STALE_SESSION");
    assert_eq!(body["details"]["session_id"], "old");
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("replaced by a newer one"));
    assert_eq!(seen.lock().unwrap().calls, 0, "the handler is not called");
}

#[tokio::test]
async fn refused_unknown_session_in_strict_mode_answers_409_unknown_session() {
    let resolver = Arc::new(Recording::default());
    let seen = Seen::default();
    let identity = alice().with_session_id("unbegun");
    let response = call(&resolver, &seen, request("/ws", Some(identity))).await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert_eq!(
        response.extensions().get::<AdmissionRefused>(),
        Some(&AdmissionRefused {
            cause: "unknown_session"
        })
    );
    let body = json(&response);
    assert_eq!(body["error_type"], "session_error");
    assert_eq!(body["details"]["error_code"], "UNKNOWN_SESSION");
    assert_eq!(body["details"]["session_id"], "unbegun");
    assert!(body["message"].as_str().unwrap().contains("session API"));
    assert_eq!(seen.lock().unwrap().calls, 0);
}

#[tokio::test]
async fn invalid_session_id_answers_400_without_asking_the_resolver() {
    let too_long = "a".repeat(MAX_SESSION_ID_LEN + 1);
    let cases: [(String, Option<&str>); 7] = [
        ("/ws?session_id=".to_owned(), Some("")),
        (format!("/ws?session_id={too_long}"), None),
        ("/ws?session_id=a%20b".to_owned(), Some("a b")),
        ("/ws?session_id=a+b".to_owned(), Some("a b")),
        ("/ws?session_id=a%07b".to_owned(), Some("a\u{7}b")),
        ("/ws?session_id=caf%C3%A9".to_owned(), Some("café")),
        // Not UTF-8 once decoded: invalid, not absent (the sid is not used instead).
        ("/ws?session_id=%ff".to_owned(), None),
    ];
    for (uri, echoed) in cases {
        let resolver = Arc::new(Recording::default());
        let seen = Seen::default();
        let identity = alice().with_session_id("valid-sid");
        let response = call(&resolver, &seen, request(&uri, Some(identity))).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{uri}");
        let body = json(&response);
        assert_eq!(body["error"], true);
        assert_eq!(body["error_type"], "validation_error");
        assert_eq!(body["details"]["error_code"], "INVALID_SESSION_ID");
        assert_eq!(
            body["message"],
            "session_id must be 1 to 128 bytes of printable ASCII"
        );
        assert_eq!(body["details"]["session_id"].as_str(), echoed, "{uri}");
        assert!(
            !String::from_utf8_lossy(response.body()).contains(&too_long),
            "a long value is never echoed"
        );
        assert!(
            resolver.calls().is_empty(),
            "{uri}: the resolver is not asked"
        );
        assert_eq!(seen.lock().unwrap().calls, 0, "{uri}");
    }
}

#[tokio::test]
async fn invalid_session_id_in_the_sid_claim_answers_400() {
    let resolver = Arc::new(Recording::default());
    let seen = Seen::default();
    let identity = alice().with_session_id("x".repeat(MAX_SESSION_ID_LEN + 1));
    let response = call(&resolver, &seen, request("/ws", Some(identity))).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body = json(&response);
    assert_eq!(body["details"]["error_code"], "INVALID_SESSION_ID");
    assert!(body["details"].get("session_id").is_none());
    assert!(resolver.calls().is_empty());
}

#[tokio::test]
async fn longest_valid_session_id_is_accepted() {
    let resolver = Arc::new(Recording::default());
    let seen = Seen::default();
    let longest = "~".repeat(MAX_SESSION_ID_LEN);
    let uri = format!("/ws?session_id={longest}");
    let response = call(&resolver, &seen, request(&uri, Some(alice()))).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        seen.lock().unwrap().session.as_ref().map(Session::id),
        Some(longest.as_str())
    );
}

#[tokio::test]
async fn no_identity_passes_through_untouched_without_asking_the_resolver() {
    let resolver = Arc::new(Recording::default());
    let seen = Seen::default();
    // Even an invalid session id is left to the handler, which answers 401.
    for uri in ["/ws", "/ws?session_id=old", "/ws?session_id="] {
        let response = call(&resolver, &seen, request(uri, None)).await;
        assert_eq!(response.status(), StatusCode::OK, "{uri}");
        let seen = seen.lock().unwrap();
        assert_eq!(seen.session, None);
        assert_eq!(seen.identity, None);
    }
    assert_eq!(seen.lock().unwrap().calls, 3);
    assert!(resolver.calls().is_empty());
}

#[tokio::test]
async fn lease_lifetime_the_layer_holds_nothing_per_connection() {
    let resolver = Arc::new(Recording::default());
    let seen = Seen::default();
    let service = SessionLayer::new(Arc::clone(&resolver)).layer(handler(&seen));

    // A request that has no leases gets none.
    let response = service
        .clone()
        .oneshot(request("/ws?session_id=s-1", Some(alice())))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(seen.lock().unwrap().leases, None);
    assert_eq!(resolver.calls().len(), 1, "asked once per request");

    // A request with leases (pushed by a layer in front) keeps exactly those.
    let mut with_leases = request("/ws", Some(alice()));
    Leases::of(&mut with_leases).push("an outer lease");
    let leases = with_leases.extensions().get::<Leases>().cloned().unwrap();
    let response = service.clone().oneshot(with_leases).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(seen.lock().unwrap().leases, Some(1));
    assert_eq!(leases.len(), 1, "nothing pushed");
    assert_eq!(resolver.calls().len(), 2, "asked once per request");

    // A refusal is answered at once and holds nothing either.
    let response = service
        .oneshot(request("/ws?session_id=old", Some(alice())))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert_eq!(resolver.calls().len(), 3);
    assert_eq!(seen.lock().unwrap().calls, 2);
    assert_eq!(
        Arc::strong_count(&resolver),
        1,
        "no clone of the resolver is kept"
    );
}

#[tokio::test]
async fn session_is_resolved_when_the_service_is_called() {
    let resolver = Arc::new(Recording::default());
    let seen = Seen::default();
    let mut service = ResolveSessions::new(handler(&seen), Arc::clone(&resolver));
    let future = service
        .ready()
        .await
        .unwrap()
        .call(request("/ws?session_id=old", Some(alice())));
    assert_eq!(resolver.calls().len(), 1, "before the future is polled");
    assert_eq!(
        format!("{future:?}"),
        "ResponseFuture { state: \"Refused\" }"
    );
    let response = future.await.unwrap();
    assert_eq!(response.status(), StatusCode::CONFLICT);
}

#[test]
fn resolvers_behind_arc_and_reference_resolve_as_the_resolver() {
    fn ask<R: ResolveSession>(resolver: R, named: Option<&str>) -> Result<Session, SessionRefused> {
        resolver.resolve("bob", named)
    }
    let resolver = Recording::default();
    assert_eq!(ask(&resolver, Some("old")), Err(SessionRefused::Stale));
    assert_eq!(resolver.calls().len(), 1);
    let shared: Arc<dyn ResolveSession> = Arc::new(Recording::default());
    assert_eq!(
        ask(shared, None).map(|session| session.outcome()),
        Ok(SessionOutcome::Joined)
    );
}

#[test]
fn layer_and_service_expose_their_parts() {
    let layer = ResolveSessions::<(), _>::layer(7_u8);
    assert_eq!(*layer.resolver(), 7);
    let mut service = layer.layer("inner");
    assert_eq!(*service.resolver(), 7);
    assert_eq!(*service.get_ref(), "inner");
    *service.get_mut() = "changed";
    assert_eq!(service.into_inner(), "changed");
}

#[test]
fn refusal_messages_and_codes() {
    assert_eq!(SessionRefused::Stale.code(), "STALE_SESSION");
    assert_eq!(SessionRefused::Unknown.code(), "UNKNOWN_SESSION");
    assert_eq!(
        SessionRefused::Stale.to_string(),
        "this session was replaced by a newer one; connect with the current session or none"
    );
    assert_eq!(
        SessionRefused::Unknown.to_string(),
        "strict sessions: begin this session through the session API first"
    );
    assert!(is_valid_session_id("!~"));
    assert!(!is_valid_session_id(""));
    assert!(!is_valid_session_id("a\tb"));
    assert!(!is_valid_session_id(&"a".repeat(MAX_SESSION_ID_LEN + 1)));
}
