//! [`Prefixed`]: an IO whose first bytes were already read from it, given back first.
//!
//! [`serve`](crate::serve()) reads the head of a connection's first request itself when it
//! arrives in pieces and may look like an SSE request (see `direct_sse`); when it turns out
//! to be something else, hyper serves the connection and must see those bytes first.
//! (A private module: its tests are its examples.)

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use pin_project::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// `inner`, whose reads yield `prefix` before anything `inner` gives; writes go straight
/// to `inner`. The prefix's memory is freed as soon as it has all been read.
#[pin_project]
pub(crate) struct Prefixed<T> {
    prefix: Bytes,
    #[pin]
    inner: T,
}

impl<T> Prefixed<T> {
    /// `inner`, with `prefix` to be read first.
    pub(crate) fn new(prefix: Bytes, inner: T) -> Self {
        Self { prefix, inner }
    }
}

impl<T: AsyncRead> AsyncRead for Prefixed<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        if this.prefix.is_empty() {
            return this.inner.poll_read(cx, buf);
        }
        let count = this.prefix.len().min(buf.remaining());
        buf.put_slice(&this.prefix[..count]);
        this.prefix.advance(count);
        if this.prefix.is_empty() {
            // An advanced `Bytes` still holds its whole buffer: let it go.
            *this.prefix = Bytes::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite> AsyncWrite for Prefixed<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn the_prefix_is_read_first_then_the_inner_io() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut io = Prefixed::new(Bytes::from_static(b"hello "), server);
        client.write_all(b"world").await.unwrap();
        drop(client);
        let mut small = [0u8; 4];
        io.read_exact(&mut small).await.unwrap();
        assert_eq!(&small, b"hell", "a short read takes part of the prefix");
        let mut rest = Vec::new();
        io.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"o world");
        assert!(io.prefix.is_empty());
    }

    #[tokio::test]
    async fn writes_go_to_the_inner_io() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut io = Prefixed::new(Bytes::from_static(b"unread"), server);
        let slices = [IoSlice::new(b"ab"), IoSlice::new(b"cd")];
        assert!(io.is_write_vectored());
        assert_eq!(io.write_vectored(&slices).await.unwrap(), 4);
        io.write_all(b"ef").await.unwrap();
        io.shutdown().await.unwrap();
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, b"abcdef");
    }
}
