//! [`ResponseBody`]: the body of every response dualcast answers with.

use std::convert::Infallible;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use pin_project::pin_project;

use crate::sse::stream::SseStream;

/// A response body: a whole buffer, or a Server-Sent-Events stream that owns its
/// connection's guard (so the connection ends when the body is dropped).
#[pin_project]
pub struct ResponseBody {
    #[pin]
    kind: Kind,
}

#[pin_project(project = KindProj)]
enum Kind {
    Full(Option<Bytes>),
    Sse(#[pin] SseStream),
}

impl ResponseBody {
    /// An empty body.
    #[must_use]
    pub fn empty() -> Self {
        Self {
            kind: Kind::Full(None),
        }
    }

    pub(crate) fn sse(stream: SseStream) -> Self {
        Self {
            kind: Kind::Sse(stream),
        }
    }
}

impl Default for ResponseBody {
    fn default() -> Self {
        Self::empty()
    }
}

impl From<Bytes> for ResponseBody {
    fn from(bytes: Bytes) -> Self {
        Self {
            kind: Kind::Full((!bytes.is_empty()).then_some(bytes)),
        }
    }
}

impl From<String> for ResponseBody {
    fn from(text: String) -> Self {
        Self::from(Bytes::from(text))
    }
}

impl From<&'static str> for ResponseBody {
    fn from(text: &'static str) -> Self {
        Self::from(Bytes::from_static(text.as_bytes()))
    }
}

impl fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Full(bytes) => f
                .debug_tuple("ResponseBody::Full")
                .field(&bytes.as_ref().map_or(0, Bytes::len))
                .finish(),
            Kind::Sse(_) => f.write_str("ResponseBody::Sse"),
        }
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.project().kind.project() {
            KindProj::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            KindProj::Sse(stream) => stream
                .poll_event(cx)
                .map(|event| event.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.kind, Kind::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Sse(_) => SizeHint::default(),
        }
    }
}

/// The body of a response from a service [`DualcastLayer`](crate::DualcastLayer) wraps:
/// dualcast's own answer, or the host service's, untouched.
#[pin_project]
#[derive(Debug)]
pub struct LayerBody<B> {
    #[pin]
    kind: Either<B>,
}

#[pin_project(project = EitherProj)]
#[derive(Debug)]
enum Either<B> {
    Dualcast(#[pin] ResponseBody),
    Host(#[pin] B),
}

impl<B> LayerBody<B> {
    pub(crate) fn dualcast(body: ResponseBody) -> Self {
        Self {
            kind: Either::Dualcast(body),
        }
    }

    pub(crate) fn host(body: B) -> Self {
        Self {
            kind: Either::Host(body),
        }
    }
}

impl<B> http_body::Body for LayerBody<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.project().kind.project() {
            EitherProj::Dualcast(body) => body
                .poll_frame(cx)
                .map(|frame| frame.map(|frame| frame.map_err(|never| match never {}))),
            EitherProj::Host(body) => body
                .poll_frame(cx)
                .map(|frame| frame.map(|frame| frame.map_err(Into::into))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Either::Dualcast(body) => body.is_end_stream(),
            Either::Host(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Either::Dualcast(body) => body.size_hint(),
            Either::Host(body) => body.size_hint(),
        }
    }
}
