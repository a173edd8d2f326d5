//! The response future of [`Auth`](super::Auth).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::{header, request::Parts, HeaderValue, Request, Response, StatusCode};
use pin_project::pin_project;
use tower::Service;

use super::{AuthError, CredentialSource, Identify, Identity, NoHook};

/// Response future of [`Auth`](super::Auth).
///
/// A request identified by a token or by a host layer goes straight to the inner
/// service's future; one left to the [`Identify`] hook first awaits the hook, then calls
/// the inner service that was ready when [`Auth`](super::Auth) was called. Nothing is
/// boxed.
#[pin_project]
pub struct ResponseFuture<S, ReqBody, HookFuture = <NoHook as Identify>::Future>
where
    S: Service<Request<ReqBody>>,
{
    #[pin]
    state: State<S, ReqBody, HookFuture>,
}

/// A request waiting for the hook, with the ready inner service that will answer it.
struct Pending<S, ReqBody> {
    parts: Parts,
    body: ReqBody,
    inner: S,
}

// A refusal and a waiting request are kept inline, as tower-http's futures do: boxing them
// would cost an allocation per request to save stack bytes.
#[allow(clippy::large_enum_variant)]
#[pin_project(project = StateProj)]
enum State<S, ReqBody, HookFuture>
where
    S: Service<Request<ReqBody>>,
{
    Identifying {
        #[pin]
        hook: HookFuture,
        pending: Option<Pending<S, ReqBody>>,
        select_bearer: bool,
    },
    Inner {
        #[pin]
        future: S::Future,
        select_bearer: bool,
    },
    Refused {
        response: Option<S::Response>,
    },
}

impl<S, ReqBody, HookFuture> ResponseFuture<S, ReqBody, HookFuture>
where
    S: Service<Request<ReqBody>>,
{
    pub(super) fn identifying(
        hook: HookFuture,
        parts: Parts,
        body: ReqBody,
        inner: S,
        select_bearer: bool,
    ) -> Self {
        Self {
            state: State::Identifying {
                hook,
                pending: Some(Pending { parts, body, inner }),
                select_bearer,
            },
        }
    }

    pub(super) fn inner(future: S::Future, select_bearer: bool) -> Self {
        Self {
            state: State::Inner {
                future,
                select_bearer,
            },
        }
    }

    pub(super) fn refused(response: S::Response) -> Self {
        Self {
            state: State::Refused {
                response: Some(response),
            },
        }
    }
}

impl<S, ReqBody, ResBody, HookFuture> Future for ResponseFuture<S, ReqBody, HookFuture>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    HookFuture: Future<Output = Result<Identity, AuthError>>,
    ResBody: From<Bytes>,
{
    type Output = Result<Response<ResBody>, S::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let mut state = self.as_mut().project().state;
            match state.as_mut().project() {
                StateProj::Identifying {
                    hook,
                    pending,
                    select_bearer,
                } => {
                    let outcome = ready!(hook.poll(cx));
                    let select_bearer = *select_bearer;
                    let Some(Pending {
                        mut parts,
                        body,
                        mut inner,
                    }) = pending.take()
                    else {
                        polled_after_completion()
                    };
                    match outcome {
                        Ok(mut identity) => {
                            identity.set_credential_source(CredentialSource::IdentifyHook);
                            tracing::trace!(
                                player_id = identity.player_id(),
                                role = identity.role().as_str(),
                                credential_source = CredentialSource::IdentifyHook.as_str(),
                                "authenticated"
                            );
                            parts.extensions.insert(identity);
                            let future = inner.call(Request::from_parts(parts, body));
                            state.set(State::Inner {
                                future,
                                select_bearer,
                            });
                        }
                        Err(error) => {
                            tracing::debug!(
                                path = parts.uri.path(),
                                error_code = error.kind().code(),
                                "request refused by the identify hook: {error}"
                            );
                            state.set(State::Refused { response: None });
                            return Poll::Ready(Ok(error.into_response()));
                        }
                    }
                }
                StateProj::Inner {
                    future,
                    select_bearer,
                } => {
                    let mut response = ready!(future.poll(cx))?;
                    if *select_bearer
                        && response.status() == StatusCode::SWITCHING_PROTOCOLS
                        && !response
                            .headers()
                            .contains_key(header::SEC_WEBSOCKET_PROTOCOL)
                    {
                        response.headers_mut().insert(
                            header::SEC_WEBSOCKET_PROTOCOL,
                            HeaderValue::from_static("bearer"),
                        );
                    }
                    return Poll::Ready(Ok(response));
                }
                StateProj::Refused { response } => match response.take() {
                    Some(response) => return Poll::Ready(Ok(response)),
                    None => polled_after_completion(),
                },
            }
        }
    }
}

fn polled_after_completion() -> ! {
    panic!("auth::ResponseFuture polled after completion")
}

impl<S, ReqBody, HookFuture> fmt::Debug for ResponseFuture<S, ReqBody, HookFuture>
where
    S: Service<Request<ReqBody>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Identifying { .. } => "Identifying",
            State::Inner { .. } => "Inner",
            State::Refused { .. } => "Refused",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
