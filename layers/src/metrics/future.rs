//! The response future of [`RecordMetrics`](super::RecordMetrics).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use http::Response;
use pin_project::pin_project;

use super::layer::UNMATCHED_ROUTE;
use super::{Metrics, RouteTemplate};
use crate::error::AdmissionRefused;

/// Response future of [`RecordMetrics`](super::RecordMetrics): the inner future, and what
/// to record when it resolves. It lets go of the [`Metrics`] handle as soon as it has
/// recorded, and puts nothing in the response.
#[pin_project]
pub struct ResponseFuture<F> {
    #[pin]
    inner: F,
    /// `None` once the response is recorded.
    metrics: Option<Metrics>,
    /// The request's template, if it had one (else the response's is looked for).
    route: Option<&'static str>,
    method: &'static str,
    start: Instant,
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(
        inner: F,
        metrics: Metrics,
        route: Option<&'static str>,
        method: &'static str,
        start: Instant,
    ) -> Self {
        Self {
            inner,
            metrics: Some(metrics),
            route,
            method,
            start,
        }
    }
}

impl<F, ResBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<ResBody>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let outcome = ready!(this.inner.poll(cx));
        // An error from the inner service is passed through and not counted: no response
        // was written, so there is no status to label it with.
        if let (Ok(response), Some(metrics)) = (&outcome, this.metrics.take()) {
            let duration = this.start.elapsed();
            let route = this
                .route
                .or_else(|| {
                    response
                        .extensions()
                        .get::<RouteTemplate>()
                        .map(|template| template.0)
                })
                .unwrap_or(UNMATCHED_ROUTE);
            metrics.record_request(route, this.method, response.status(), duration);
            if let Some(refused) = response.extensions().get::<AdmissionRefused>() {
                metrics.admission_refused(refused.cause);
            }
        }
        Poll::Ready(outcome)
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("route", &self.route)
            .field("method", &self.method)
            .field("start", &self.start)
            .finish_non_exhaustive()
    }
}
