use super::*;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::StatusCode;
use tower::{service_fn, ServiceExt};

#[derive(Debug, Clone)]
struct Fixed;

impl Authenticate for Fixed {
    fn authenticate(&self, token: &str) -> Result<Identity, AuthError> {
        match token {
            "good" => Ok(Identity::new("alice", Role::Player)),
            _ => Err(AuthError::invalid("bad token")),
        }
    }
}

fn echo(
) -> impl Service<Request<()>, Response = Response<Bytes>, Error = Infallible, Future = impl Send> + Clone
{
    service_fn(|request: Request<()>| async move {
        let identity = request.extensions().get::<Identity>().cloned();
        let body = identity
            .map(|i| format!("{}:{:?}", i.player_id(), i.credential_source()))
            .unwrap_or_default();
        Ok::<_, Infallible>(Response::new(Bytes::from(body)))
    })
}

/// A hook that admits `session=<player>` cookies and counts its calls.
fn cookie_hook(
    calls: &Arc<AtomicUsize>,
) -> impl Fn(&Parts) -> Ready<Result<Identity, AuthError>> + Clone {
    let calls = Arc::clone(calls);
    move |request: &Parts| {
        calls.fetch_add(1, Ordering::SeqCst);
        let player = request
            .headers
            .get("cookie")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("session="));
        ready(match player {
            Some(player) => Ok(Identity::new(player, Role::Player)),
            None => Err(AuthError::missing("no session cookie")),
        })
    }
}

async fn call(request: Request<()>) -> Response<Bytes> {
    AuthLayer::new(Fixed)
        .layer(echo())
        .oneshot(request)
        .await
        .unwrap()
}

fn json(response: &Response<Bytes>) -> serde_json::Value {
    serde_json::from_slice(response.body()).unwrap()
}

#[tokio::test]
async fn sources_are_tried_in_order() {
    let response = call(
        Request::get("/?access_token=bad")
            .header("authorization", "Bearer good")
            .header("sec-websocket-protocol", "bearer, bad")
            .body(())
            .unwrap(),
    )
    .await;
    assert_eq!(response.body(), "alice:AuthorizationHeader");

    let response = call(
        Request::get("/?access_token=bad")
            .header("sec-websocket-protocol", "chat, bearer, good")
            .body(())
            .unwrap(),
    )
    .await;
    assert_eq!(response.body(), "alice:Subprotocol");

    let response = call(Request::get("/?x=1&access_token=good").body(()).unwrap()).await;
    assert_eq!(response.body(), "alice:QueryParameter");
}

#[tokio::test]
async fn failures_answer_401_without_the_token() {
    for (request, code) in [
        (Request::get("/").body(()).unwrap(), "MISSING_TOKEN"),
        (
            Request::get("/")
                .header("authorization", "Basic Zm9vOmJhcg==")
                .body(())
                .unwrap(),
            "MALFORMED_TOKEN",
        ),
        (
            Request::get("/")
                .header("sec-websocket-protocol", "bearer")
                .body(())
                .unwrap(),
            "MALFORMED_TOKEN",
        ),
        (
            Request::get("/?access_token=secret-token-value")
                .body(())
                .unwrap(),
            "INVALID_TOKEN",
        ),
    ] {
        let response = call(request).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        let body = json(&response);
        assert_eq!(body["error_type"], "authentication_error");
        assert_eq!(body["details"]["error_code"], code);
        assert!(!String::from_utf8_lossy(response.body()).contains("secret-token-value"));
        assert!(response.extensions().get::<AuthErrorKind>().is_some());
    }
}

#[tokio::test]
async fn bearer_is_selected_on_a_101_when_offered() {
    let switching = service_fn(|_request: Request<()>| async move {
        let mut response = Response::new(Bytes::new());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        Ok::<_, Infallible>(response)
    });
    let service = AuthLayer::new(Fixed).layer(switching);
    let via_subprotocol = Request::get("/")
        .header("sec-websocket-protocol", "bearer, good")
        .body(())
        .unwrap();
    let response = service.clone().oneshot(via_subprotocol).await.unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "bearer");

    let via_header = Request::get("/")
        .header("authorization", "Bearer good")
        .body(())
        .unwrap();
    let response = service.oneshot(via_header).await.unwrap();
    assert!(!response.headers().contains_key("sec-websocket-protocol"));
}

#[tokio::test]
async fn bearer_is_selected_on_a_101_after_the_hook() {
    let switching = service_fn(|_request: Request<()>| async move {
        let mut response = Response::new(Bytes::new());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        Ok::<_, Infallible>(response)
    });
    let calls = Arc::new(AtomicUsize::new(0));
    let service = AuthLayer::identify(cookie_hook(&calls)).layer(switching);
    let request = Request::get("/ws")
        .header("cookie", "session=bob")
        .header("sec-websocket-protocol", "bearer")
        .body(())
        .unwrap();
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "bearer");
}

#[test]
fn identity_acts_for_itself_unless_privileged() {
    let alice = Identity::new("alice", Role::Player);
    assert!(alice.may_act_for("alice"));
    assert!(!alice.may_act_for("bob"));
    assert!(Identity::new("backend", Role::Service).may_act_for("bob"));
}

#[test]
fn only_the_three_token_places_are_tokens() {
    assert!(CredentialSource::AuthorizationHeader.is_token());
    assert!(CredentialSource::Subprotocol.is_token());
    assert!(CredentialSource::QueryParameter.is_token());
    assert!(!CredentialSource::IdentifyHook.is_token());
    assert!(!CredentialSource::Host.is_token());
}

#[tokio::test]
async fn host_identity_wins_over_a_token() {
    let calls = Arc::new(AtomicUsize::new(0));
    let service = AuthLayer::new(Fixed)
        .identify_with(cookie_hook(&calls))
        .layer(echo());
    let mut request = Request::get("/")
        .header("authorization", "Bearer bad")
        .header("cookie", "session=bob")
        .body(())
        .unwrap();
    request
        .extensions_mut()
        .insert(Identity::new("carol", Role::Service));
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.body(), "carol:Host");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn bad_token_does_not_fall_through_to_the_hook() {
    let calls = Arc::new(AtomicUsize::new(0));
    let service = AuthLayer::new(Fixed)
        .identify_with(cookie_hook(&calls))
        .layer(echo());
    for request in [
        Request::get("/?access_token=bad").header("cookie", "session=bob"),
        Request::get("/")
            .header("authorization", "Bearer bad")
            .header("cookie", "session=bob"),
        Request::get("/")
            .header("sec-websocket-protocol", "bearer")
            .header("cookie", "session=bob"),
    ] {
        let response = service
            .clone()
            .oneshot(request.body(()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn request_without_a_token_goes_to_the_hook() {
    let calls = Arc::new(AtomicUsize::new(0));
    let service = AuthLayer::new(Fixed)
        .identify_with(cookie_hook(&calls))
        .layer(echo());
    let request = Request::get("/")
        .header("cookie", "session=bob")
        .body(())
        .unwrap();
    let response = service.clone().oneshot(request).await.unwrap();
    assert_eq!(response.body(), "bob:IdentifyHook");

    let request = Request::get("/").body(()).unwrap();
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(json(&response)["message"], "no session cookie");
    assert_eq!(json(&response)["details"]["error_code"], "MISSING_TOKEN");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn no_hook_answers_401_missing_token() {
    let response = call(Request::get("/").body(()).unwrap()).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    assert_eq!(json(&response)["details"]["error_code"], "MISSING_TOKEN");
    assert_eq!(
        response.extensions().get::<AuthErrorKind>(),
        Some(&AuthErrorKind::Missing)
    );
    assert_eq!(
        NoHook
            .identify(&Request::get("/").body(()).unwrap().into_parts().0)
            .await
            .unwrap_err()
            .kind(),
        AuthErrorKind::Missing
    );
}

#[tokio::test]
async fn async_hook_awaits_then_reads_a_cookie() {
    let hook = |request: &Parts| {
        let cookie = request.headers.get("cookie").cloned();
        async move {
            tokio::task::yield_now().await;
            match cookie.as_ref().and_then(|value| value.to_str().ok()) {
                Some("session=s-1") => Ok(Identity::new("dora", Role::Player)),
                Some(_) => Err(AuthError::invalid("unknown session")),
                None => Err(AuthError::missing("no session cookie")),
            }
        }
    };
    let service = AuthLayer::identify(hook).layer(echo());
    let request = Request::get("/")
        .header("cookie", "session=s-1")
        .body(())
        .unwrap();
    let response = service.clone().oneshot(request).await.unwrap();
    assert_eq!(response.body(), "dora:IdentifyHook");

    let request = Request::get("/")
        .header("cookie", "session=s-2")
        .body(())
        .unwrap();
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(json(&response)["details"]["error_code"], "INVALID_TOKEN");
}

#[tokio::test]
async fn identify_only_ignores_an_access_token() {
    let calls = Arc::new(AtomicUsize::new(0));
    let service = AuthLayer::identify(cookie_hook(&calls)).layer(echo());
    let request = Request::get("/?access_token=good")
        .header("authorization", "Bearer good")
        .header("cookie", "session=bob")
        .body(())
        .unwrap();
    let response = service.clone().oneshot(request).await.unwrap();
    assert_eq!(response.body(), "bob:IdentifyHook");

    let request = Request::get("/?access_token=good").body(()).unwrap();
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[test]
fn no_tokens_refuses_any_token_when_called_directly() {
    assert_eq!(
        NoTokens.authenticate("good").unwrap_err().kind(),
        AuthErrorKind::Invalid
    );
}

/// Answers "ready" only when `poll_ready` was called on this very instance; a clone
/// starts not ready.
#[derive(Debug, Default)]
struct MustBeReady {
    ready: bool,
}

impl Clone for MustBeReady {
    fn clone(&self) -> Self {
        Self { ready: false }
    }
}

impl Service<Request<()>> for MustBeReady {
    type Response = Response<Bytes>;
    type Error = Infallible;
    type Future = Ready<Result<Response<Bytes>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.ready = true;
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _request: Request<()>) -> Self::Future {
        let was_ready = std::mem::replace(&mut self.ready, false);
        ready(Ok(Response::new(Bytes::from_static(if was_ready {
            b"ready"
        } else {
            b"not ready"
        }))))
    }
}

#[tokio::test]
async fn the_ready_service_is_the_one_called() {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut service = AuthLayer::new(Fixed)
        .identify_with(cookie_hook(&calls))
        .layer(MustBeReady::default());

    // The hook path moves the ready service into the future and leaves a fresh clone.
    service.ready().await.unwrap();
    let request = Request::get("/")
        .header("cookie", "session=bob")
        .body(())
        .unwrap();
    let future = service.call(request);
    assert!(
        !service.get_ref().ready,
        "the clone left behind is not ready"
    );
    assert_eq!(future.await.unwrap().body(), "ready");

    // The token path calls the ready service in place.
    service.ready().await.unwrap();
    let request = Request::get("/")
        .header("authorization", "Bearer good")
        .body(())
        .unwrap();
    assert_eq!(service.call(request).await.unwrap().body(), "ready");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

fn upgrade(uri: &str) -> http::request::Builder {
    Request::get(uri)
        .header("host", "a.test")
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
}

#[tokio::test]
async fn same_origin_default_admits_the_requests_own_origin() {
    let calls = Arc::new(AtomicUsize::new(0));
    let service = AuthLayer::identify(cookie_hook(&calls)).layer(echo());
    let request = upgrade("/ws")
        .header("origin", "http://a.test")
        .header("cookie", "session=bob")
        .body(())
        .unwrap();
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.body(), "bob:IdentifyHook");
}

#[tokio::test]
async fn same_origin_default_refuses_another_origin_with_403() {
    let calls = Arc::new(AtomicUsize::new(0));
    let service = AuthLayer::new(Fixed)
        .identify_with(cookie_hook(&calls))
        .layer(echo());
    let request = upgrade("/ws")
        .header("origin", "http://evil.test")
        .header("cookie", "session=bob")
        .body(())
        .unwrap();
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let body = json(&response);
    assert_eq!(body["error"], true);
    assert_eq!(body["error_type"], "authorization_error");
    assert_eq!(body["details"]["error_code"], "ORIGIN_NOT_ALLOWED");
    assert_eq!(body["details"]["origin"], "http://evil.test");
    assert_eq!(
        response.extensions().get::<crate::ErrorType>(),
        Some(&crate::ErrorType::AuthorizationError)
    );
}

#[tokio::test]
async fn refused_origin_does_not_call_the_hook() {
    let calls = Arc::new(AtomicUsize::new(0));
    let service = AuthLayer::identify(cookie_hook(&calls))
        .allowed_origins(["https://app.test"])
        .layer(echo());
    for origin in ["http://evil.test", "http://app.test", "null"] {
        let request = Request::get("/sse/bob")
            .header("origin", origin)
            .header("cookie", "session=bob")
            .body(())
            .unwrap();
        let response = service.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{origin}");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn host_identity_is_origin_checked() {
    let service = AuthLayer::new(Fixed).layer(echo());
    let mut request = upgrade("/ws")
        .header("origin", "http://evil.test")
        .body(())
        .unwrap();
    request
        .extensions_mut()
        .insert(Identity::new("carol", Role::Player));
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn bearer_token_requests_are_not_origin_checked_by_default() {
    let service = AuthLayer::new(Fixed).layer(echo());
    for request in [
        upgrade("/ws").header("authorization", "Bearer good"),
        upgrade("/ws").header("sec-websocket-protocol", "bearer, good"),
        Request::get("/sse?access_token=good").header("host", "a.test"),
    ] {
        let request = request
            .header("origin", "http://evil.test")
            .body(())
            .unwrap();
        let response = service.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn allow_list_applies_to_a_token_authenticated_websocket_upgrade() {
    let service = AuthLayer::new(Fixed)
        .allowed_origins(["https://App.test/"])
        .layer(echo());
    let refused = upgrade("/ws")
        .header("authorization", "Bearer good")
        .header("origin", "http://evil.test")
        .body(())
        .unwrap();
    let response = service.clone().oneshot(refused).await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(json(&response)["details"]["origin"], "http://evil.test");

    let admitted = upgrade("/ws")
        .header("authorization", "Bearer good")
        .header("origin", "https://app.TEST")
        .body(())
        .unwrap();
    let response = service.clone().oneshot(admitted).await.unwrap();
    assert_eq!(response.body(), "alice:AuthorizationHeader");

    // Not an upgrade, and a token: the allow-list does not apply.
    let plain = Request::get("/sse?access_token=good")
        .header("origin", "http://evil.test")
        .body(())
        .unwrap();
    let response = service.oneshot(plain).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn missing_origin_passes() {
    let calls = Arc::new(AtomicUsize::new(0));
    let service = AuthLayer::new(Fixed)
        .identify_with(cookie_hook(&calls))
        .allowed_origins(["https://app.test"])
        .layer(echo());
    let request = upgrade("/ws")
        .header("cookie", "session=bob")
        .body(())
        .unwrap();
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.body(), "bob:IdentifyHook");
}

#[tokio::test]
async fn null_origin_is_refused() {
    let calls = Arc::new(AtomicUsize::new(0));
    let service = AuthLayer::identify(cookie_hook(&calls)).layer(echo());
    let request = upgrade("/ws")
        .header("origin", "null")
        .header("cookie", "session=bob")
        .body(())
        .unwrap();
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(json(&response)["details"]["origin"], "null");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn any_origin_turns_the_check_off() {
    let calls = Arc::new(AtomicUsize::new(0));
    let service = AuthLayer::identify(cookie_hook(&calls))
        .any_origin()
        .layer(echo());
    for origin in ["http://evil.test", "null"] {
        let request = upgrade("/ws")
            .header("origin", origin)
            .header("cookie", "session=bob")
            .body(())
            .unwrap();
        let response = service.clone().oneshot(request).await.unwrap();
        assert_eq!(response.body(), "bob:IdentifyHook");
    }
}

#[tokio::test]
async fn the_offered_origin_is_echoed_truncated_to_256_bytes() {
    let calls = Arc::new(AtomicUsize::new(0));
    let service = AuthLayer::identify(cookie_hook(&calls)).layer(echo());
    let long = format!("http://{}.test", "x".repeat(400));
    let request = upgrade("/ws")
        .header("origin", long.as_str())
        .header("cookie", "session=bob")
        .body(())
        .unwrap();
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(json(&response)["details"]["origin"], &long[..256]);
}

#[test]
fn layer_and_service_are_debug_with_a_closure_hook() {
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = AuthLayer::new(Fixed).identify_with(cookie_hook(&calls));
    let text = format!("{layer:?}");
    assert!(text.starts_with("AuthLayer"), "{text}");
    assert!(text.contains("Fixed"), "{text}");
    let service = layer.layer(MustBeReady::default());
    assert!(format!("{service:?}").starts_with("Auth {"));
    assert!(format!("{:?}", AuthLayer::new(Fixed)).contains("hook: None"));
}

#[tokio::test]
async fn with_a_hook_an_authorization_header_of_another_scheme_is_not_a_token() {
    // A browser resends the Basic credentials of a site behind HTTP authentication on every
    // request; they must not hide the session cookie from the hook.
    let calls = Arc::new(AtomicUsize::new(0));
    let service = AuthLayer::new(Fixed)
        .identify_with(cookie_hook(&calls))
        .layer(echo());
    let request = Request::get("/")
        .header("authorization", "Basic Zm9vOmJhcg==")
        .header("cookie", "session=bob")
        .body(())
        .unwrap();
    let response = service.clone().oneshot(request).await.unwrap();
    assert_eq!(response.body(), "bob:IdentifyHook");

    let bad_bearer = Request::get("/")
        .header("authorization", "Bearer nonsense")
        .header("cookie", "session=bob")
        .body(())
        .unwrap();
    let response = service.oneshot(bad_bearer).await.unwrap();
    assert_eq!(
        response.status(),
        StatusCode::UNAUTHORIZED,
        "a bearer token is still a token"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    let without_hook = call(
        Request::get("/")
            .header("authorization", "Basic Zm9vOmJhcg==")
            .body(())
            .unwrap(),
    )
    .await;
    assert_eq!(
        json(&without_hook)["details"]["error_code"],
        "MALFORMED_TOKEN",
        "with no hook, a header of another scheme is still refused, not ignored"
    );
}
