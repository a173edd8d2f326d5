//! [`MetricsLayer`] and [`RecordMetrics`]: HTTP requests by route template, method and
//! status, with their latency.

use std::task::{Context, Poll};
use std::time::Instant;

use http::{Method, Request, Response};
use tower::{Layer, Service};

use super::future::ResponseFuture;
use super::{Metrics, RequestStart, RouteTemplate};

/// The `route` label of a request with no [`RouteTemplate`].
pub(super) const UNMATCHED_ROUTE: &str = "unmatched";

/// The `method` label of a request whose method is not one of the nine standard ones.
const OTHER_METHOD: &str = "other";

/// Layer that applies [`RecordMetrics`]: records every HTTP request in a [`Metrics`].
#[derive(Debug, Clone)]
#[must_use]
pub struct MetricsLayer {
    metrics: Metrics,
}

impl MetricsLayer {
    /// A layer recording in `metrics`.
    pub fn new(metrics: Metrics) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = RecordMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RecordMetrics::new(inner, self.metrics.clone())
    }
}

/// Middleware that counts each request by route template, method and status, observes its
/// latency, counts admission refusals by cause, and puts a [`RequestStart`] in the request
/// extensions; see the [module docs](super#http-requests).
#[derive(Debug, Clone)]
pub struct RecordMetrics<S> {
    inner: S,
    metrics: Metrics,
}

impl<S> RecordMetrics<S> {
    /// Wraps `inner`, recording in `metrics`.
    pub fn new(inner: S, metrics: Metrics) -> Self {
        Self { inner, metrics }
    }

    /// The same as [`MetricsLayer::new`].
    pub fn layer(metrics: Metrics) -> MetricsLayer {
        MetricsLayer::new(metrics)
    }

    /// The metrics this service records in.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
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

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RecordMetrics<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let route = request
            .extensions()
            .get::<RouteTemplate>()
            .map(|template| template.0);
        let method = method_label(request.method());
        let start = Instant::now();
        request.extensions_mut().insert(RequestStart(start));
        let future = self.inner.call(request);
        ResponseFuture::new(future, self.metrics.clone(), route, method, start)
    }
}

/// The `method` label: the standard method's name, or `"other"`, so a client cannot
/// create series with made-up methods.
pub(super) fn method_label(method: &Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        "PATCH" => "PATCH",
        "CONNECT" => "CONNECT",
        "TRACE" => "TRACE",
        _ => OTHER_METHOD,
    }
}
