//! The OpenAPI document over a real server: served without a token, its methods are the
//! methods the routes answer (every other method is `405` with an `Allow` naming exactly
//! the documented ones), and every error type of the SPEC answers with the error body the
//! document describes.

mod common;

use std::collections::BTreeSet;

use common::*;
use dualcast::{Hub, InboundSettings, ServeSettings};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "DELETE", "PATCH"];

async fn document(server: &TestServer) -> Value {
    let (status, document) = server.request("GET", "/api/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    document
}

/// The document of a default server, started and stopped for it.
async fn default_document() -> Value {
    let server = TestServer::start().await;
    let document = document(&server).await;
    server.shutdown().await;
    document
}

/// `template` with every `{parameter}` filled in.
fn concrete(template: &str) -> String {
    template
        .split('/')
        .map(|segment| {
            if segment.starts_with('{') {
                "p"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The status and `Allow` header of `method path` with `token`.
async fn probe(
    server: &TestServer,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (u16, String) {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", server.addr.to_string());
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = server
        .send(request.body(Full::new(bytes::Bytes::new())).unwrap())
        .await;
    let status = response.status().as_u16();
    let allow = response
        .headers()
        .get("allow")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = within("the body", response.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    if status >= 400 {
        let body: Value = serde_json::from_slice(&body).expect("an error body");
        assert_eq!(body["error"], true, "{method} {path}: {body}");
    }
    (status, allow)
}

#[tokio::test]
async fn the_document_is_served_without_a_token_and_names_each_routes_methods() {
    let server = TestServer::start().await;
    let document = document(&server).await;
    assert_eq!(document["openapi"], "3.1.0");
    let paths = document["paths"].as_object().unwrap();
    assert!(paths.len() >= 19, "{:?}", paths.keys());
    let service = service_token();
    for (template, item) in paths {
        let documented: BTreeSet<String> = item
            .as_object()
            .unwrap()
            .keys()
            .map(|m| m.to_uppercase())
            .collect();
        let path = concrete(template);
        for method in METHODS {
            if documented.contains(method) {
                // Without a token, so that no stream opens: anything but 405.
                let (status, _) = probe(&server, method, &path, None).await;
                assert_ne!(status, 405, "{method} {template} is documented");
            } else {
                let (status, allow) = probe(&server, method, &path, Some(&service)).await;
                assert_eq!(status, 405, "{method} {template} is not documented");
                let allowed: BTreeSet<String> = allow.split(", ").map(str::to_owned).collect();
                assert_eq!(allowed, documented, "Allow of {template}");
            }
        }
    }
    server.shutdown().await;
}

#[tokio::test]
async fn the_document_follows_a_prefix_and_switched_off_routes() {
    let server = TestServer::start_with(Hub::new(), |builder| {
        builder
            .prefix("/rt")
            .publish_api(false)
            .monitoring_api(false)
    })
    .await;
    let (status, document) = server
        .request("GET", "/rt/api/openapi.json", None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let paths: Vec<&String> = document["paths"].as_object().unwrap().keys().collect();
    assert!(paths.iter().all(|p| p.starts_with("/rt/")), "{paths:?}");
    assert!(paths.iter().any(|p| *p == "/rt/api/sse"), "{paths:?}");
    assert!(!paths
        .iter()
        .any(|p| p.contains("broadcast") || p.contains("monitoring")));
    server.shutdown().await;

    let server = TestServer::start_with(Hub::new(), |builder| builder.openapi_route(false)).await;
    let (status, body) = server.request("GET", "/api/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    server.shutdown().await;
}

/// Checks `body` against the document's `ErrorBody`: its required fields, of their types,
/// and an `error_type` the document lists.
fn assert_error_body(document: &Value, body: &Value, error_type: &str, code: &str) {
    let schemas = &document["components"]["schemas"];
    let schema = &schemas["ErrorBody"];
    for field in schema["required"].as_array().unwrap() {
        let field = field.as_str().unwrap();
        assert!(body.get(field).is_some(), "{field} missing from {body}");
    }
    assert_eq!(body["error"], true);
    assert!(body["message"].is_string());
    assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
    let types = schemas["ErrorTypeName"]["enum"].as_array().unwrap();
    assert!(
        types.contains(&json!(error_type)),
        "{error_type} in {types:?}"
    );
    assert_eq!(body["error_type"], error_type, "{body}");
    assert_eq!(body["details"]["error_code"], code, "{body}");
}

/// Whether the document lists `status` for `method template`.
fn documented(document: &Value, method: &str, template: &str, status: StatusCode) -> bool {
    document["paths"][template][method]["responses"]
        .get(status.as_str())
        .is_some()
}

#[tokio::test]
async fn every_error_type_is_a_documented_status_with_the_error_body() {
    let hub = Hub::builder()
        .inbound(InboundSettings::new().rate(1, 1))
        .build();
    let server = TestServer::start_with(hub, |builder| builder).await;
    let document = document(&server).await;
    let service = service_token();
    let alice = player_token("alice");

    let mut cases: Vec<(&str, &str, StatusCode, Value, &str, &str)> = Vec::new();
    let mut check = |method: &'static str,
                     template: &'static str,
                     status: StatusCode,
                     body: Value,
                     error_type: &'static str,
                     code: &'static str| {
        cases.push((method, template, status, body, error_type, code));
    };

    // authentication_error: no token.
    let (status, body) = server
        .request("GET", "/monitoring/performance", None, None)
        .await;
    check(
        "get",
        "/monitoring/performance",
        status,
        body,
        "authentication_error",
        "MISSING_TOKEN",
    );
    // authorization_error: a player on a service route, and on another player.
    let (status, body) = server
        .request("GET", "/api/connections/stats", Some(&alice), None)
        .await;
    check(
        "get",
        "/api/connections/stats",
        status,
        body,
        "authorization_error",
        "ROLE_REQUIRED",
    );
    let (status, body) = server
        .request("GET", "/api/connections/bob", Some(&alice), None)
        .await;
    check(
        "get",
        "/api/connections/{player_id}",
        status,
        body,
        "authorization_error",
        "PLAYER_MISMATCH",
    );
    // validation_error: a bad name, a bad body.
    let (status, body) = server
        .request("GET", "/api/connections/%01", Some(&service), None)
        .await;
    check(
        "get",
        "/api/connections/{player_id}",
        status,
        body,
        "validation_error",
        "INVALID_NAME",
    );
    let (status, body) = server
        .request(
            "POST",
            "/api/broadcast",
            Some(&service),
            Some(json!({"type": "x", "ttl_ms": 0})),
        )
        .await;
    check(
        "post",
        "/api/broadcast",
        status,
        body,
        "validation_error",
        "INVALID_TTL",
    );
    // session_error: a replaced session named again.
    for session in ["s1", "s2"] {
        let (status, _) = server
            .request(
                "POST",
                "/api/connections/alice/session",
                Some(&service),
                Some(json!({ "session_id": session })),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, body) = server
        .request(
            "POST",
            "/api/connections/alice/session",
            Some(&service),
            Some(json!({ "session_id": "s1" })),
        )
        .await;
    check(
        "post",
        "/api/connections/{player_id}/session",
        status,
        body,
        "session_error",
        "STALE_SESSION",
    );
    // connection_error: a client message without a connection, and naming another's.
    let (status, body) = server
        .request(
            "POST",
            "/api/messages",
            Some(&alice),
            Some(json!({"type": "ping"})),
        )
        .await;
    check(
        "post",
        "/api/messages",
        status,
        body,
        "connection_error",
        "NOT_CONNECTED",
    );
    let (status, body) = server
        .request(
            "POST",
            "/api/messages?connection_id=c999999",
            Some(&alice),
            Some(json!({"type": "ping"})),
        )
        .await;
    check(
        "post",
        "/api/messages",
        status,
        body,
        "connection_error",
        "CONNECTION_NOT_FOUND",
    );
    // rate_limited: client messages past the rate (one a second, a burst of one).
    let _stream = server.sse("/api/sse?session_id=s2", &alice).await;
    let mut limited = None;
    for _ in 0..5 {
        let (status, body) = server
            .request(
                "POST",
                "/api/messages",
                Some(&alice),
                Some(json!({"type": "ping"})),
            )
            .await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            limited = Some((status, body));
            break;
        }
    }
    let (status, body) = limited.expect("a message past the rate is refused");
    check(
        "post",
        "/api/messages",
        status,
        body,
        "rate_limited",
        "RATE_LIMITED",
    );

    for (method, template, status, body, error_type, code) in cases {
        assert!(
            documented(&document, method, template, status),
            "{status} of {method} {template} is not documented"
        );
        assert_error_body(&document, &body, error_type, code);
    }
    server.shutdown().await;
}

#[tokio::test]
async fn past_the_connection_cap_the_documented_503_carries_the_error_body() {
    let document = default_document().await;
    let server = TestServer::start_with_settings(ServeSettings::new().max_connections(1)).await;
    let _held = server.sse("/api/sse", &player_token("alice")).await;
    let (status, body) = server
        .request(
            "GET",
            "/monitoring/performance",
            Some(&service_token()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(documented(
        &document,
        "get",
        "/monitoring/performance",
        status
    ));
    assert_error_body(&document, &body, "connection_error", "SERVER_AT_CAPACITY");
    server.shutdown().await;
}

/// `system_error` is the server's own failure, never the client's: the one a host can cause
/// is mounting the publishing API without telling it what a request is for.
#[tokio::test]
async fn a_wiring_mistake_is_a_system_error_with_the_error_body() {
    use tower::ServiceExt;

    let api = dualcast::PublishApi::new(Hub::new());
    let request = Request::post("/anything")
        .header("authorization", format!("Bearer {}", service_token()))
        .body(Full::new(bytes::Bytes::from_static(b"{\"type\":\"x\"}")))
        .unwrap();
    let response = api.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body = within("the body", response.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    let body: Value = serde_json::from_slice(&body).unwrap();
    let document = default_document().await;
    assert_error_body(&document, &body, "system_error", "INTERNAL");
    assert!(
        !body.to_string().contains(&service_token()),
        "no token in the body"
    );
}
