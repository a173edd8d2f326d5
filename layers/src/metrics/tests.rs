use super::*;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use tower::{service_fn, Layer, ServiceExt};

use crate::error::AdmissionRefused;
use crate::track::Leases;

fn registry_and_metrics() -> (Registry, Metrics) {
    let mut registry = Registry::default();
    let metrics = Metrics::new(&mut registry);
    (registry, metrics)
}

fn text(registry: &Registry) -> String {
    encode_text(registry).expect("prometheus-client metrics encode")
}

/// Sends one request through a `MetricsLayer` over a handler answering `status` (and, when
/// given, an `AdmissionRefused` with `refusal`).
async fn answer(
    metrics: &Metrics,
    request: Request<()>,
    status: StatusCode,
    refusal: Option<&'static str>,
) -> Response<()> {
    let service = MetricsLayer::new(metrics.clone()).layer(service_fn(
        move |_request: Request<()>| async move {
            let mut response = Response::new(());
            *response.status_mut() = status;
            if let Some(cause) = refusal {
                response.extensions_mut().insert(AdmissionRefused { cause });
            }
            Ok::<_, Infallible>(response)
        },
    ));
    service.oneshot(request).await.unwrap()
}

fn request(method: Method, template: Option<&'static str>) -> Request<()> {
    let mut request = Request::builder()
        .method(method)
        .uri("/sse/alice")
        .body(())
        .unwrap();
    if let Some(template) = template {
        request.extensions_mut().insert(RouteTemplate(template));
    }
    request
}

#[tokio::test]
async fn a_request_is_counted_under_its_template_method_and_status_with_a_duration() {
    let (registry, metrics) = registry_and_metrics();
    answer(
        &metrics,
        request(Method::GET, Some("/sse/{player_id}")),
        StatusCode::OK,
        None,
    )
    .await;
    answer(
        &metrics,
        request(Method::GET, Some("/sse/{player_id}")),
        StatusCode::OK,
        None,
    )
    .await;
    answer(
        &metrics,
        request(Method::POST, Some("/api/publish")),
        StatusCode::FORBIDDEN,
        None,
    )
    .await;

    let text = text(&registry);
    assert!(text.contains(
        "dualcast_http_requests_total{route=\"/sse/{player_id}\",method=\"GET\",status=\"200\"} 2\n"
    ));
    assert!(text.contains(
        "dualcast_http_requests_total{route=\"/api/publish\",method=\"POST\",status=\"403\"} 1\n"
    ));
    assert!(text.contains(
        "dualcast_http_request_duration_seconds_count{route=\"/sse/{player_id}\",method=\"GET\"} 2\n"
    ));
    assert!(text.contains(
        "dualcast_http_request_duration_seconds_bucket{le=\"+Inf\",route=\"/sse/{player_id}\",method=\"GET\"} 2\n"
    ));
    assert!(text.contains(
        "dualcast_http_request_duration_seconds_bucket{le=\"0.0001\",route=\"/api/publish\",method=\"POST\"} "
    ));
}

#[tokio::test]
async fn a_request_without_a_template_is_counted_as_unmatched() {
    let (registry, metrics) = registry_and_metrics();
    answer(
        &metrics,
        request(Method::GET, None),
        StatusCode::NOT_FOUND,
        None,
    )
    .await;
    let text = text(&registry);
    assert!(text.contains(
        "dualcast_http_requests_total{route=\"unmatched\",method=\"GET\",status=\"404\"} 1\n"
    ));
    assert!(
        !text.contains("/sse/alice"),
        "the raw path is never a label"
    );
}

#[tokio::test]
async fn a_template_in_the_response_labels_a_request_without_one() {
    let (registry, metrics) = registry_and_metrics();
    let service =
        MetricsLayer::new(metrics.clone()).layer(service_fn(|_request: Request<()>| async move {
            let mut response = Response::new(());
            response
                .extensions_mut()
                .insert(RouteTemplate("/ws/{player_id}"));
            Ok::<_, Infallible>(response)
        }));
    service.oneshot(request(Method::GET, None)).await.unwrap();
    assert!(text(&registry).contains(
        "dualcast_http_requests_total{route=\"/ws/{player_id}\",method=\"GET\",status=\"200\"} 1\n"
    ));
}

#[tokio::test]
async fn an_unknown_method_is_counted_as_other() {
    let (registry, metrics) = registry_and_metrics();
    let made_up = Method::from_bytes(b"BREW").unwrap();
    answer(
        &metrics,
        request(made_up, Some("/health")),
        StatusCode::METHOD_NOT_ALLOWED,
        None,
    )
    .await;
    answer(
        &metrics,
        request(Method::DELETE, Some("/health")),
        StatusCode::METHOD_NOT_ALLOWED,
        None,
    )
    .await;
    let text = text(&registry);
    assert!(text.contains(
        "dualcast_http_requests_total{route=\"/health\",method=\"other\",status=\"405\"} 1\n"
    ));
    assert!(text.contains(
        "dualcast_http_requests_total{route=\"/health\",method=\"DELETE\",status=\"405\"} 1\n"
    ));
    assert!(!text.contains("BREW"));
}

#[test]
fn every_standard_method_is_its_own_label() {
    for method in [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::HEAD,
        Method::OPTIONS,
        Method::PATCH,
        Method::CONNECT,
        Method::TRACE,
    ] {
        assert_eq!(layer::method_label(&method), method.as_str());
    }
    let lowercase = Method::from_bytes(b"get").unwrap();
    assert_eq!(layer::method_label(&lowercase), "other");
}

#[tokio::test]
async fn a_refusal_with_admission_refused_counts_its_cause() {
    let (registry, metrics) = registry_and_metrics();
    for _ in 0..2 {
        answer(
            &metrics,
            request(Method::GET, Some("/ws/{player_id}")),
            StatusCode::CONFLICT,
            Some("stale_session"),
        )
        .await;
    }
    answer(
        &metrics,
        request(Method::GET, Some("/ws/{player_id}")),
        StatusCode::TOO_MANY_REQUESTS,
        Some("player_limit"),
    )
    .await;
    metrics.admission_refused("address_rate");

    let text = text(&registry);
    assert!(text.contains("dualcast_admissions_refused_total{cause=\"stale_session\"} 2\n"));
    assert!(text.contains("dualcast_admissions_refused_total{cause=\"player_limit\"} 1\n"));
    assert!(text.contains("dualcast_admissions_refused_total{cause=\"address_rate\"} 1\n"));
    assert!(text.contains(
        "dualcast_http_requests_total{route=\"/ws/{player_id}\",method=\"GET\",status=\"409\"} 2\n"
    ));
}

#[tokio::test]
async fn a_response_without_admission_refused_counts_no_refusal() {
    let (registry, metrics) = registry_and_metrics();
    answer(
        &metrics,
        request(Method::GET, Some("/ws/{player_id}")),
        StatusCode::UNAUTHORIZED,
        None,
    )
    .await;
    let text = text(&registry);
    // The known causes are there from the start, each at 0.
    assert!(text.contains("dualcast_admissions_refused_total{cause=\"stale_session\"} 0\n"));
    assert!(!text.contains("dualcast_admissions_refused_total{cause=\"stale_session\"} 1"));
}

#[tokio::test]
async fn request_start_reaches_the_handler() {
    let (_registry, metrics) = registry_and_metrics();
    let seen: Arc<Mutex<Option<RequestStart>>> = Arc::default();
    let before = std::time::Instant::now();
    let service = MetricsLayer::new(metrics).layer(service_fn({
        let seen = Arc::clone(&seen);
        move |request: Request<()>| {
            let seen = Arc::clone(&seen);
            async move {
                *seen.lock().unwrap() = request.extensions().get::<RequestStart>().copied();
                Ok::<_, Infallible>(Response::new(()))
            }
        }
    }));
    service.oneshot(request(Method::GET, None)).await.unwrap();
    let RequestStart(start) = seen.lock().unwrap().expect("RequestStart in the request");
    assert!(start >= before);
    assert!(start <= std::time::Instant::now());
}

#[tokio::test]
async fn an_error_from_the_inner_service_is_passed_through_and_not_counted() {
    let (registry, metrics) = registry_and_metrics();
    let service =
        MetricsLayer::new(metrics.clone()).layer(service_fn(|_request: Request<()>| async move {
            Err::<Response<()>, _>("inner failed")
        }));
    let outcome = service.oneshot(request(Method::GET, Some("/health"))).await;
    assert_eq!(outcome.unwrap_err(), "inner failed");
    assert!(!text(&registry).contains("dualcast_http_requests"));
    assert_eq!(metrics.handles(), 1);
}

#[test]
fn connections_opened_and_closed_move_the_series_of_their_kind() {
    let (registry, metrics) = registry_and_metrics();
    metrics.connection_opened(Transport::WebSocket, Duration::from_millis(2));
    metrics.connection_opened(Transport::WebSocket, Duration::from_millis(20));
    metrics.connection_opened(Transport::Sse, Duration::ZERO);
    assert_eq!(metrics.live_connections(Transport::WebSocket), 2);
    assert_eq!(metrics.live_connections(Transport::Sse), 1);
    assert_eq!(metrics.connections_opened(Transport::WebSocket), 2);
    assert_eq!(metrics.connections_opened(Transport::Sse), 1);

    metrics.connection_closed(Transport::WebSocket, "heartbeat_timeout");
    metrics.connection_closed(Transport::Sse, "a_reason_not_known_ahead");
    assert_eq!(metrics.live_connections(Transport::WebSocket), 1);
    assert_eq!(metrics.live_connections(Transport::Sse), 0);

    let text = text(&registry);
    for line in [
        "dualcast_connections{kind=\"websocket\"} 1\n",
        "dualcast_connections{kind=\"sse\"} 0\n",
        "dualcast_connections_opened_total{kind=\"websocket\"} 2\n",
        "dualcast_connections_opened_total{kind=\"sse\"} 1\n",
        "dualcast_connections_closed_total{kind=\"websocket\",reason=\"heartbeat_timeout\"} 1\n",
        "dualcast_connections_closed_total{kind=\"sse\",reason=\"a_reason_not_known_ahead\"} 1\n",
        // The known reasons exist from the start.
        "dualcast_connections_closed_total{kind=\"sse\",reason=\"server_shutdown\"} 0\n",
        "dualcast_connections_closed_total{kind=\"websocket\",reason=\"client_closed\"} 0\n",
        // An establishment of zero is "unknown": not observed.
        "dualcast_connection_establishment_seconds_count{kind=\"websocket\"} 2\n",
        "dualcast_connection_establishment_seconds_count{kind=\"sse\"} 0\n",
        "dualcast_connection_establishment_seconds_sum{kind=\"websocket\"} 0.022\n",
        "dualcast_connection_establishment_seconds_bucket{le=\"0.002\",kind=\"websocket\"} 1\n",
        "dualcast_connection_establishment_seconds_bucket{le=\"0.016\",kind=\"websocket\"} 1\n",
        "dualcast_connection_establishment_seconds_bucket{le=\"0.032\",kind=\"websocket\"} 2\n",
        "dualcast_connection_establishment_seconds_bucket{le=\"+Inf\",kind=\"websocket\"} 2\n",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
}

#[test]
fn every_known_close_reason_lands_in_its_own_series() {
    let (registry, metrics) = registry_and_metrics();
    for reason in [
        "client_closed",
        "logout",
        "session_replaced",
        "auth_expired",
        "unauthorized",
        "protocol_error",
        "heartbeat_timeout",
        "slow_consumer",
        "server_shutdown",
    ] {
        metrics.connection_opened(Transport::Sse, Duration::ZERO);
        metrics.connection_closed(Transport::Sse, reason);
        let line =
            format!("dualcast_connections_closed_total{{kind=\"sse\",reason=\"{reason}\"}} 1\n");
        assert!(text(&registry).contains(&line), "missing {line:?}");
    }
    assert_eq!(metrics.live_connections(Transport::Sse), 0);
}

#[test]
fn hub_figures_move_their_counters() {
    let (registry, metrics) = registry_and_metrics();
    metrics.delivered(Transport::WebSocket, 5);
    metrics.delivered(Transport::Sse, 2);
    metrics.delivered(Transport::Sse, 1);
    metrics.delivery_failed(4);
    metrics.outbox_overflow();
    metrics.outbox_overflow();
    metrics.session_replaced();
    metrics.queued(2, 7);
    metrics.pending_dropped("expired", 3);
    metrics.pending_dropped("overflow", 1);
    metrics.recovered(true, 4);
    metrics.recovered(false, 0);
    metrics.ack_settled("acked");
    metrics.ack_settled("expired");
    metrics.ack_settled("expired");
    metrics.resent(6);

    assert_eq!(metrics.messages_delivered(Transport::WebSocket), 5);
    assert_eq!(metrics.messages_delivered(Transport::Sse), 3);
    assert_eq!(metrics.delivery_failures(), 4);
    assert_eq!(metrics.outbox_overflows(), 2);
    assert_eq!(metrics.sessions_replaced(), 1);
    assert_eq!((metrics.pending_depth(), metrics.pending_queued()), (7, 2));
    assert_eq!(metrics.pending_dropped_for("expired"), 3);
    assert_eq!(
        (metrics.recoveries(true), metrics.recoveries(false)),
        (1, 1)
    );
    assert_eq!(metrics.messages_replayed(), 4);
    assert_eq!((metrics.acks("acked"), metrics.acks("expired")), (1, 2));
    assert_eq!(metrics.messages_resent(), 6);
    let text = text(&registry);
    for line in [
        "dualcast_messages_delivered_total{kind=\"websocket\"} 5\n",
        "dualcast_messages_delivered_total{kind=\"sse\"} 3\n",
        "dualcast_delivery_failures_total 4\n",
        "dualcast_outbox_overflows_total 2\n",
        "dualcast_sessions_replaced_total 1\n",
        "dualcast_pending_queue_depth 7\n",
        "dualcast_pending_queued_total 2\n",
        "dualcast_pending_dropped_total{reason=\"expired\"} 3\n",
        "dualcast_pending_dropped_total{reason=\"overflow\"} 1\n",
        "dualcast_recoveries_total{complete=\"true\"} 1\n",
        "dualcast_messages_replayed_total 4\n",
        "dualcast_acks_total{outcome=\"expired\"} 2\n",
        "dualcast_acks_total{outcome=\"dropped\"} 0\n",
        "dualcast_messages_resent_total 6\n",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
}

#[test]
fn clones_record_into_the_same_series() {
    let (_registry, metrics) = registry_and_metrics();
    let clone = metrics.clone();
    clone.outbox_overflow();
    clone.connection_opened(Transport::Sse, Duration::ZERO);
    assert_eq!(metrics.outbox_overflows(), 1);
    assert_eq!(metrics.live_connections(Transport::Sse), 1);
}

#[tokio::test]
async fn the_exposition_names_every_metric() {
    let (registry, metrics) = registry_and_metrics();
    // The families whose series depend on traffic appear once they have one.
    answer(
        &metrics,
        request(Method::GET, Some("/ws/{player_id}")),
        StatusCode::CONFLICT,
        Some("stale_session"),
    )
    .await;
    let text = text(&registry);
    for line in [
        "# TYPE dualcast_connections gauge\n",
        "# TYPE dualcast_connections_opened counter\n",
        "# TYPE dualcast_connections_closed counter\n",
        "# TYPE dualcast_connection_establishment_seconds histogram\n",
        "# UNIT dualcast_connection_establishment_seconds seconds\n",
        "# TYPE dualcast_messages_delivered counter\n",
        "# TYPE dualcast_delivery_failures counter\n",
        "# TYPE dualcast_outbox_overflows counter\n",
        "# TYPE dualcast_sessions_replaced counter\n",
        "# TYPE dualcast_admissions_refused counter\n",
        "# TYPE dualcast_pending_queue_depth gauge\n",
        "# TYPE dualcast_pending_dropped counter\n",
        "# TYPE dualcast_pending_queued counter\n",
        "# TYPE dualcast_recoveries counter\n",
        "# TYPE dualcast_messages_replayed counter\n",
        "# TYPE dualcast_acks counter\n",
        "# TYPE dualcast_messages_resent counter\n",
        "# TYPE dualcast_http_requests counter\n",
        "# TYPE dualcast_http_request_duration_seconds histogram\n",
        "# UNIT dualcast_http_request_duration_seconds seconds\n",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    for sample in [
        "dualcast_connections{",
        "dualcast_connections_opened_total{",
        "dualcast_connections_closed_total{",
        "dualcast_connection_establishment_seconds_bucket{",
        "dualcast_messages_delivered_total{",
        "dualcast_delivery_failures_total ",
        "dualcast_outbox_overflows_total ",
        "dualcast_sessions_replaced_total ",
        "dualcast_admissions_refused_total{",
        "dualcast_pending_queue_depth ",
        "dualcast_pending_dropped_total{reason=\"expired\"} 0",
        "dualcast_pending_dropped_total{reason=\"overflow\"} 0",
        "dualcast_pending_queued_total 0",
        "dualcast_recoveries_total{complete=\"true\"} 0",
        "dualcast_recoveries_total{complete=\"false\"} 0",
        "dualcast_messages_replayed_total 0",
        "dualcast_acks_total{outcome=\"acked\"} 0",
        "dualcast_acks_total{outcome=\"expired\"} 0",
        "dualcast_acks_total{outcome=\"dropped\"} 0",
        "dualcast_messages_resent_total 0",
        "dualcast_http_requests_total{",
        "dualcast_http_request_duration_seconds_bucket{",
    ] {
        assert!(text.contains(sample), "no sample {sample:?} in\n{text}");
    }
    assert!(text.ends_with("# EOF\n"));
}

#[test]
fn the_host_keeps_its_own_metrics_in_the_same_registry() {
    let mut registry = Registry::default();
    let host_counter = prometheus_client::metrics::counter::Counter::<u64>::default();
    registry.register("host_jobs", "The host's own jobs", host_counter.clone());
    let _metrics = Metrics::new(&mut registry);
    host_counter.inc();
    let text = text(&registry);
    assert!(text.contains("host_jobs_total 1\n"));
    assert!(text.contains("# TYPE dualcast_connections gauge\n"));
}

#[tokio::test]
async fn lease_lifetime_the_layer_holds_nothing_per_request_after_the_response() {
    let (_registry, metrics) = registry_and_metrics();
    let layer = MetricsLayer::new(metrics.clone());
    let baseline = metrics.handles();
    let service = layer.layer(service_fn(|request: Request<()>| async move {
        assert!(
            request.extensions().get::<Leases>().is_none(),
            "MetricsLayer pushes no lease"
        );
        Ok::<_, Infallible>(Response::new(()))
    }));
    assert_eq!(
        metrics.handles(),
        baseline + 1,
        "the service holds one handle"
    );

    let mut future = Box::pin(service.clone().oneshot(request(Method::GET, None)));
    let response = (&mut future).await.unwrap();
    assert_eq!(
        metrics.handles(),
        baseline + 1,
        "the resolved future let go of its handle"
    );
    drop(future);
    drop(service);
    assert_eq!(metrics.handles(), baseline);
    assert!(response.extensions().get::<Leases>().is_none());
    assert!(
        response.extensions().is_empty(),
        "nothing put in the response"
    );
}

#[tokio::test]
async fn record_metrics_exposes_its_parts() {
    let (_registry, metrics) = registry_and_metrics();
    let _layer: MetricsLayer = RecordMetrics::<()>::layer(metrics.clone());
    let mut service = RecordMetrics::new(7_u8, metrics);
    assert_eq!(*service.get_ref(), 7);
    *service.get_mut() = 8;
    assert_eq!(service.metrics().outbox_overflows(), 0);
    assert_eq!(service.into_inner(), 8);
}
