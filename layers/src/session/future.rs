//! The response future of [`ResolveSessions`](super::ResolveSessions).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;
use pin_project::pin_project;

/// Response future of [`ResolveSessions`](super::ResolveSessions).
///
/// A request whose session resolved (or that carries no [`Identity`](crate::Identity))
/// is the inner service's future; a refused one is the refusal, ready at once. The session
/// is resolved when the service is called, so this future holds nothing of it. Nothing is
/// boxed.
#[pin_project]
pub struct ResponseFuture<F, ResBody> {
    #[pin]
    state: State<F, ResBody>,
}

#[pin_project(project = StateProj)]
enum State<F, ResBody> {
    Inner {
        #[pin]
        future: F,
    },
    Refused {
        response: Option<Response<ResBody>>,
    },
}

impl<F, ResBody> ResponseFuture<F, ResBody> {
    pub(super) fn inner(future: F) -> Self {
        Self {
            state: State::Inner { future },
        }
    }

    pub(super) fn refused(response: Response<ResBody>) -> Self {
        Self {
            state: State::Refused {
                response: Some(response),
            },
        }
    }
}

impl<F, ResBody, E> Future for ResponseFuture<F, ResBody>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<ResBody>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Inner { future } => future.poll(cx),
            StateProj::Refused { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                None => panic!("session::ResponseFuture polled after completion"),
            },
        }
    }
}

impl<F, ResBody> fmt::Debug for ResponseFuture<F, ResBody> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Inner { .. } => "Inner",
            State::Refused { .. } => "Refused",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
