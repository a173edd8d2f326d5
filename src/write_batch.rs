//! [`WriteBatch`]: buffers that wait for the socket, written with one `writev` each time.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::AsyncWrite;

/// Most buffers in one batch (and so in one `writev`).
pub(crate) const MAX_BATCH: usize = 64;

/// Buffers being written to a socket, and how many of their bytes are out. A batch is
/// written whole before the next one starts, so a frame is never interleaved with anything.
pub(crate) struct WriteBatch<T> {
    items: Vec<T>,
    written: usize,
    bytes: fn(&T) -> &[u8],
}

impl<T> WriteBatch<T> {
    /// An empty batch of items whose bytes `bytes` gives.
    pub(crate) fn new(bytes: fn(&T) -> &[u8]) -> Self {
        Self {
            items: Vec::new(),
            written: 0,
            bytes,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub(crate) fn is_full(&self) -> bool {
        self.items.len() >= MAX_BATCH
    }

    /// Whether part of the batch is on the wire and the rest is not.
    pub(crate) fn is_half_written(&self) -> bool {
        self.written > 0
    }

    /// Lets `fill` add up to as many items as the batch has room for (it returns how many it
    /// added); call only before writing starts.
    pub(crate) fn fill(&mut self, fill: impl FnOnce(&mut Vec<T>, usize) -> usize) {
        let room = MAX_BATCH.saturating_sub(self.items.len());
        fill(&mut self.items, room);
    }

    /// Adds an item; call only while not [full](Self::is_full) and before writing starts.
    pub(crate) fn push(&mut self, item: T) {
        self.items.push(item);
    }

    /// Writes the rest of the batch; ready once all of it is out (the batch is then empty).
    pub(crate) fn poll_write<W: AsyncWrite + ?Sized>(
        &mut self,
        mut io: Pin<&mut W>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while !self.items.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_BATCH];
            let mut count = 0;
            let mut skip = self.written;
            for item in &self.items {
                let bytes = (self.bytes)(item);
                if skip >= bytes.len() {
                    skip -= bytes.len();
                    continue;
                }
                if count == MAX_BATCH {
                    break;
                }
                slices[count] = IoSlice::new(&bytes[skip..]);
                skip = 0;
                count += 1;
            }
            let remaining: usize = slices[..count].iter().map(|s| s.len()).sum();
            match ready!(io.as_mut().poll_write_vectored(cx, &slices[..count])) {
                Ok(0) if remaining > 0 => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) if n >= remaining => {
                    self.items.clear();
                    self.written = 0;
                }
                Ok(n) => self.written += n,
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;

    /// A writer that takes at most `limit` bytes per call.
    struct Trickle {
        out: Vec<u8>,
        limit: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.limit);
            self.out.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let mut left = self.limit;
            let mut n = 0;
            for buf in bufs {
                let take = buf.len().min(left);
                self.out.extend_from_slice(&buf[..take]);
                left -= take;
                n += take;
            }
            Poll::Ready(Ok(n))
        }
        fn is_write_vectored(&self) -> bool {
            true
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn partial_writes_resume_where_they_stopped() {
        let mut batch: WriteBatch<Vec<u8>> = WriteBatch::new(Vec::as_slice);
        for word in ["alpha", "", "beta", "gamma"] {
            batch.push(word.as_bytes().to_vec());
        }
        let mut io = Trickle {
            out: Vec::new(),
            limit: 3,
        };
        poll_fn(|cx| batch.poll_write(Pin::new(&mut io), cx))
            .await
            .unwrap();
        assert_eq!(io.out, b"alphabetagamma");
        assert!(batch.is_empty() && !batch.is_half_written());
    }
}
