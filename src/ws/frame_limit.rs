//! [`FrameLimit`]: a read-side filter between the TCP stream and tungstenite that turns an
//! oversized client message into an empty one, so the connection can answer `error` and
//! stay open (SPEC: a text frame over 64 KiB gets an `error` reply, not a closed socket).
//!
//! tungstenite can only fail the whole connection on an oversized frame: its
//! `max_frame_size` check errors and leaves the stream out of sync, and raising the limit
//! makes it buffer the whole frame (and keep that buffer's capacity for the connection's
//! life). The filter instead follows the client's frame headers as the bytes pass and,
//! for a single-frame data message (FIN set, opcode text or binary, masked) whose payload
//! is over the limit, rewrites the header to claim an empty payload and drops the payload
//! bytes as they stream by, without buffering them. tungstenite then yields an empty
//! Text/Binary message, and the connection's task asks [`FrameLimit::take_oversized`]
//! whether that message stands for a discarded one.
//!
//! Everything else passes byte for byte: fragments, control frames, unmasked frames and
//! frames over [`SKIP_LIMIT`] reach tungstenite unchanged, which refuses the bad ones.
//! The state is a few inline bytes (at most 14 held header bytes), no allocation: there
//! are tens of thousands of connections per process.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The largest payload [`FrameLimit`] discards. Larger frames are passed through
/// unchanged, so tungstenite's own `max_frame_size` (which the caller sets to the same
/// limit as the filter's) refuses them and the connection ends with `protocol_error`:
/// a client streaming that much is not worth keeping.
pub(crate) const SKIP_LIMIT: u64 = 1024 * 1024;

/// The longest frame header: 2 bytes, an 8-byte extended length and a 4-byte mask key.
const MAX_HEADER: usize = 14;

/// Where the filter is in the client's byte stream.
#[derive(Debug, Clone, Copy)]
enum State {
    /// Collecting a frame header; `have[..len]` are its bytes so far. Bytes held here at
    /// the end of a read (the carry) have not been handed out yet.
    Header { have: [u8; MAX_HEADER], len: u8 },
    /// Inside a payload: `remaining` bytes of it are still to come, dropped if `discard`.
    Payload { remaining: u64, discard: bool },
}

impl State {
    /// The start of a frame, no header bytes seen.
    const FRAME_START: Self = Self::Header {
        have: [0; MAX_HEADER],
        len: 0,
    };
}

/// The length of the header whose first bytes are `have`: 2 while fewer than 2 are known.
fn header_len(have: &[u8]) -> usize {
    let Some(&second) = have.get(1) else {
        return 2;
    };
    let extended = match second & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if second & 0x80 != 0 { 4 } else { 0 };
    2 + extended + mask
}

/// The payload length a complete header declares.
fn payload_len(header: &[u8]) -> u64 {
    let be = |bytes: &[u8]| bytes.iter().fold(0u64, |n, &b| (n << 8) | u64::from(b));
    match header[1] & 0x7f {
        126 => be(&header[2..4]),
        127 => be(&header[2..10]),
        short => u64::from(short),
    }
}

/// A read-side filter that replaces each oversized single-frame data message from the
/// client by an empty one (see the module docs). Writes pass through to the inner stream.
#[derive(Debug)]
pub(crate) struct FrameLimit<S> {
    inner: S,
    state: State,
    /// Payloads over this many bytes are discarded; at most [`SKIP_LIMIT`].
    limit: u32,
    /// Discarded frames not yet reported by [`FrameLimit::take_oversized`].
    oversized: u32,
    /// The payload length of the latest discarded frame.
    oversized_len: u32,
}

impl<S> FrameLimit<S> {
    /// Wraps `inner`, discarding whole data messages whose payload is over `limit` bytes
    /// (and at most [`SKIP_LIMIT`]).
    pub(crate) fn new(inner: S, limit: usize) -> Self {
        let limit = u64::try_from(limit).unwrap_or(u64::MAX).min(SKIP_LIMIT);
        Self {
            inner,
            state: State::FRAME_START,
            // At most SKIP_LIMIT, so lossless.
            limit: u32::try_from(limit).unwrap_or(u32::MAX),
            oversized: 0,
            oversized_len: 0,
        }
    }

    /// Whether a frame was discarded since the last call, with its payload length: each
    /// call reports one discarded frame. Ask at every empty data message tungstenite
    /// yields. Frames are counted, not positioned: if several are pending (read ahead in
    /// one chunk) each is reported with the latest one's length.
    pub(crate) fn take_oversized(&mut self) -> Option<u64> {
        let pending = self.oversized.checked_sub(1)?;
        self.oversized = pending;
        Some(u64::from(self.oversized_len))
    }

    /// Filters in place bytes the client sent that were read before this filter (the
    /// handshake's leftovers, handed to tungstenite with `from_partially_read`), so the
    /// state continues into later reads: call it before the first read. A header cut at
    /// the end is held back and handed out by the next read.
    pub(crate) fn filter_early(&mut self, early: &mut Vec<u8>) {
        let (carry, carry_len) = self.take_carry();
        early.splice(0..0, carry[..carry_len].iter().copied());
        let written = self.filter(early);
        early.truncate(written);
    }

    /// The largest frame passed on (larger whole messages are discarded).
    pub(crate) fn limit(&self) -> usize {
        usize::try_from(self.limit).unwrap_or(usize::MAX)
    }

    /// The held header bytes not yet handed out (empty if none).
    fn carry(&self) -> &[u8] {
        match &self.state {
            State::Header { have, len } => &have[..usize::from(*len)],
            State::Payload { .. } => &[],
        }
    }

    /// Takes the held header bytes out of the state, to be filtered again as input.
    fn take_carry(&mut self) -> ([u8; MAX_HEADER], usize) {
        let carry = match self.state {
            State::Header { have, len } => (have, usize::from(len)),
            State::Payload { .. } => return ([0; MAX_HEADER], 0),
        };
        self.state = State::FRAME_START;
        carry
    }

    /// Filters `data` in place (moving kept bytes down, dropping discarded payload and
    /// holding a cut header in the state) and returns how many bytes at its front are
    /// the output. Any held carry must already be at the front of `data`.
    fn filter(&mut self, data: &mut [u8]) -> usize {
        // Invariant: `written <= read - (header bytes held)`, since held header bytes
        // were read from `data` and a rewritten header is never longer than the original.
        let (mut read, mut written) = (0, 0);
        while read < data.len() {
            match &mut self.state {
                State::Payload { remaining, discard } => {
                    let available = data.len() - read;
                    let n = usize::try_from(*remaining).map_or(available, |r| r.min(available));
                    if !*discard {
                        data.copy_within(read..read + n, written);
                        written += n;
                    }
                    read += n;
                    *remaining -= n as u64;
                    if *remaining == 0 {
                        self.state = State::FRAME_START;
                    }
                }
                State::Header { have, len } => {
                    let (mut have, mut have_len) = (*have, usize::from(*len));
                    while have_len < header_len(&have[..have_len]) && read < data.len() {
                        have[have_len] = data[read];
                        have_len += 1;
                        read += 1;
                    }
                    let header = &have[..have_len];
                    if have_len < header_len(header) {
                        // Cut at the end: held as the carry. At most MAX_HEADER, so lossless.
                        let len = u8::try_from(have_len).unwrap_or(u8::MAX);
                        self.state = State::Header { have, len };
                        break;
                    }
                    let payload = payload_len(header);
                    let discard = self.is_oversized_message(header, payload);
                    if discard {
                        // The same first byte, the mask bit and key, a length of 0.
                        data[written] = header[0];
                        data[written + 1] = 0x80;
                        data[written + 2..written + 6].copy_from_slice(&header[have_len - 4..]);
                        written += 6;
                        self.oversized = self.oversized.saturating_add(1);
                        // At most SKIP_LIMIT, so lossless.
                        self.oversized_len = u32::try_from(payload).unwrap_or(u32::MAX);
                    } else {
                        data[written..written + have_len].copy_from_slice(header);
                        written += have_len;
                    }
                    self.state = if payload == 0 {
                        State::FRAME_START
                    } else {
                        State::Payload {
                            remaining: payload,
                            discard,
                        }
                    };
                }
            }
        }
        written
    }

    /// Whether the frame of this complete `header` and `payload` length is a masked,
    /// whole text or binary message to discard.
    fn is_oversized_message(&self, header: &[u8], payload: u64) -> bool {
        let fin = header[0] & 0x80 != 0;
        let data_opcode = matches!(header[0] & 0x0f, 1 | 2);
        let masked = header[1] & 0x80 != 0;
        fin && data_opcode && masked && payload > u64::from(self.limit) && payload <= SKIP_LIMIT
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FrameLimit<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            let start = buf.filled().len();
            let carry = this.carry();
            if !carry.is_empty() {
                if buf.remaining() <= carry.len() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "read buffer too small",
                    )));
                }
                buf.put_slice(carry);
            }
            let before = buf.filled().len();
            match Pin::new(&mut this.inner).poll_read(cx, buf) {
                Poll::Ready(Ok(())) if buf.filled().len() > before => {}
                other => {
                    // Pending, an error or EOF: the carry stays held (and is dropped at EOF).
                    buf.set_filled(start);
                    return other;
                }
            }
            if before > start {
                this.take_carry(); // It is at the front of the region now.
            }
            let written = this.filter(&mut buf.filled_mut()[start..]);
            buf.set_filled(start + written);
            if written > 0 {
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FrameLimit<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::VecDeque;

    use futures_util::{SinkExt, StreamExt};
    use proptest::prelude::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
    use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
    use tokio_tungstenite::tungstenite::Message as WsMessage;
    use tokio_tungstenite::WebSocketStream;

    const MASK_KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
    const KIB: usize = 1024;

    /// A client frame to encode.
    #[derive(Debug, Clone, Copy)]
    struct TestFrame {
        fin: bool,
        opcode: u8,
        masked: bool,
        len: u64,
        /// Encode the length in 64 bits whatever it is.
        wide: bool,
    }

    impl TestFrame {
        fn whole(opcode: u8, len: usize) -> Self {
            Self {
                fin: true,
                opcode,
                masked: true,
                len: len as u64,
                wide: false,
            }
        }

        fn header(&self) -> Vec<u8> {
            let mask_bit = if self.masked { 0x80 } else { 0 };
            let mut out = vec![u8::from(self.fin) << 7 | self.opcode];
            match self.len {
                len if self.wide || len > 0xffff => {
                    out.push(mask_bit | 127);
                    out.extend_from_slice(&len.to_be_bytes());
                }
                len if len > 125 => {
                    out.push(mask_bit | 126);
                    out.extend_from_slice(&(len as u16).to_be_bytes());
                }
                len => out.push(mask_bit | len as u8),
            }
            if self.masked {
                out.extend_from_slice(&MASK_KEY);
            }
            out
        }

        fn encode(&self) -> Vec<u8> {
            let mut out = self.header();
            out.extend((0..self.len).map(|i| (i as u8) ^ MASK_KEY[i as usize % 4]));
            out
        }

        fn is_oversized(&self, limit: u64) -> bool {
            self.fin
                && matches!(self.opcode, 1 | 2)
                && self.masked
                && self.len > limit
                && self.len <= SKIP_LIMIT
        }

        /// What the filter should make of the frame.
        fn filtered(&self, limit: u64) -> Vec<u8> {
            if self.is_oversized(limit) {
                let mut out = vec![u8::from(self.fin) << 7 | self.opcode, 0x80];
                out.extend_from_slice(&MASK_KEY);
                out
            } else {
                self.encode()
            }
        }
    }

    /// Yields `chunks` one read at a time, with a `Pending` before each.
    #[derive(Debug)]
    struct Chunks {
        chunks: VecDeque<Vec<u8>>,
        pending: bool,
    }

    impl Chunks {
        fn new(bytes: &[u8], chunk_size: usize) -> Self {
            let chunks = bytes.chunks(chunk_size.max(1)).map(<[u8]>::to_vec);
            Self {
                chunks: chunks.collect(),
                pending: true,
            }
        }
    }

    impl AsyncRead for Chunks {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            self.pending = !self.pending;
            if !self.pending {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if let Some(mut chunk) = self.chunks.pop_front() {
                let n = chunk.len().min(buf.remaining());
                buf.put_slice(&chunk[..n]);
                if n < chunk.len() {
                    self.chunks.push_front(chunk.split_off(n));
                }
            }
            Poll::Ready(Ok(()))
        }
    }

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }

    /// Everything the filter yields until EOF, read `read_size` bytes at a time.
    fn read_all<S: AsyncRead + Unpin>(filter: &mut FrameLimit<S>, read_size: usize) -> Vec<u8> {
        block_on(async {
            let mut out = Vec::new();
            let mut buf = vec![0; read_size];
            loop {
                match filter.read(&mut buf).await.unwrap() {
                    0 => return out,
                    n => out.extend_from_slice(&buf[..n]),
                }
            }
        })
    }

    fn oversized_reports<S>(filter: &mut FrameLimit<S>) -> Vec<u64> {
        std::iter::from_fn(|| filter.take_oversized()).collect()
    }

    fn concat(frames: &[TestFrame], each: impl Fn(&TestFrame) -> Vec<u8>) -> Vec<u8> {
        frames.iter().flat_map(each).collect()
    }

    fn any_frame() -> impl Strategy<Value = TestFrame> {
        (
            any::<bool>(),
            prop::sample::select(vec![0u8, 1, 2, 8, 9, 10]),
            prop::bool::weighted(0.9),
            // Around the test's limit (100) and the 7-bit length's end, or any.
            prop_oneof![prop::sample::select(vec![100u64, 101, 125, 126]), 0u64..400],
            prop::bool::weighted(0.2),
        )
            .prop_map(|(fin, opcode, masked, len, wide)| TestFrame {
                fin,
                opcode,
                masked,
                len,
                wide,
            })
    }

    proptest! {
        #![proptest_config(crate::proptest_config(64))]

        #[test]
        fn frames_come_out_as_the_reference_filter_says_whatever_the_chunking(
            frames in prop::collection::vec(any_frame(), 1..12),
            chunk_size in prop::sample::select(vec![1usize, 2, 3, 7, 13, 64, usize::MAX]),
            read_size in 15usize..200,
            early_len in 0usize..40,
        ) {
            const LIMIT: u64 = 100;
            let input = concat(&frames, TestFrame::encode);
            let early_len = early_len.min(input.len());
            let mut early = input[..early_len].to_vec();
            let mut filter = FrameLimit::new(Chunks::new(&input[early_len..], chunk_size), 100);
            filter.filter_early(&mut early);
            let mut output = early;
            output.extend(read_all(&mut filter, read_size));
            prop_assert_eq!(output, concat(&frames, |frame| frame.filtered(LIMIT)));
            let oversized = frames.iter().filter(|frame| frame.is_oversized(LIMIT)).count();
            prop_assert_eq!(oversized_reports(&mut filter).len(), oversized);
        }
    }

    #[test]
    fn an_oversized_text_frame_becomes_an_empty_one_between_its_neighbours() {
        let frames = [
            TestFrame::whole(1, 5),
            TestFrame::whole(1, 200 * KIB),
            TestFrame::whole(2, 7),
        ];
        let input = concat(&frames, TestFrame::encode);
        let mut filter = FrameLimit::new(Chunks::new(&input, 2 * KIB), 64 * KIB);
        let output = read_all(&mut filter, 2 * KIB);
        let expected = [
            frames[0].encode(),
            vec![0x81, 0x80],
            MASK_KEY.to_vec(),
            frames[2].encode(),
        ]
        .concat();
        assert_eq!(output, expected);
        assert_eq!(filter.take_oversized(), Some(200 * KIB as u64));
        assert_eq!(filter.take_oversized(), None);
    }

    #[test]
    fn every_discarded_frame_is_reported_once() {
        let frames = [TestFrame::whole(1, 300), TestFrame::whole(2, 200)];
        let input = concat(&frames, TestFrame::encode);
        let mut filter = FrameLimit::new(Chunks::new(&input, usize::MAX), 100);
        assert_eq!(read_all(&mut filter, 64).len(), 12);
        assert_eq!(oversized_reports(&mut filter), [200, 200]);
    }

    #[test]
    fn a_fragmented_oversized_message_passes_unchanged() {
        let first = TestFrame {
            fin: false,
            ..TestFrame::whole(1, 200 * KIB)
        };
        let frames = [first, TestFrame::whole(0, 10)];
        let input = concat(&frames, TestFrame::encode);
        let mut filter = FrameLimit::new(Chunks::new(&input, 4 * KIB), 64 * KIB);
        assert_eq!(read_all(&mut filter, 4 * KIB), input);
        assert_eq!(filter.take_oversized(), None);
    }

    #[test]
    fn unmasked_and_control_frames_pass_unchanged_whatever_their_size() {
        let unmasked = TestFrame {
            masked: false,
            ..TestFrame::whole(1, 300)
        };
        let wide = TestFrame {
            wide: true,
            ..TestFrame::whole(2, 400)
        };
        let frames = [unmasked, TestFrame::whole(9, 300), wide];
        let input = concat(&frames, TestFrame::encode);
        let mut filter = FrameLimit::new(Chunks::new(&input, 33), 100);
        let expected = [
            concat(&frames[..2], TestFrame::encode),
            frames[2].filtered(100),
        ]
        .concat();
        assert_eq!(read_all(&mut filter, 100), expected);
        assert_eq!(oversized_reports(&mut filter), [400]);
    }

    #[test]
    fn a_frame_over_the_skip_limit_passes_unchanged() {
        let mut input = TestFrame::whole(1, SKIP_LIMIT as usize + 1).header();
        input.extend_from_slice(b"the start of the payload");
        let mut filter = FrameLimit::new(Chunks::new(&input, 5), 100);
        assert_eq!(read_all(&mut filter, 100), input);
        assert_eq!(filter.take_oversized(), None);
        let mut input = TestFrame::whole(1, SKIP_LIMIT as usize).header();
        input.extend_from_slice(b"the start of the payload");
        let mut filter = FrameLimit::new(Chunks::new(&input, 5), 100);
        assert_eq!(
            read_all(&mut filter, 100),
            [&[0x81, 0x80][..], &MASK_KEY].concat()
        );
        assert_eq!(filter.take_oversized(), Some(SKIP_LIMIT));
    }

    #[test]
    fn a_limit_over_the_skip_limit_discards_nothing() {
        let mut input = TestFrame::whole(1, SKIP_LIMIT as usize).header();
        input.extend_from_slice(b"payload");
        let mut filter = FrameLimit::new(Chunks::new(&input, 5), usize::MAX);
        assert_eq!(read_all(&mut filter, 100), input);
        assert_eq!(filter.take_oversized(), None);
    }

    #[test]
    fn a_header_cut_in_the_early_bytes_continues_in_the_next_read() {
        let frames = [TestFrame::whole(1, 3), TestFrame::whole(1, 300)];
        let input = concat(&frames, TestFrame::encode);
        // The early bytes end 3 bytes into the second (oversized) frame's 8-byte header.
        let cut = frames[0].encode().len() + 3;
        let mut early = input[..cut].to_vec();
        let mut filter = FrameLimit::new(Chunks::new(&input[cut..], 1), 100);
        filter.filter_early(&mut early);
        assert_eq!(early, frames[0].encode(), "the cut header is held back");
        let rest = read_all(&mut filter, 15);
        assert_eq!(rest, frames[1].filtered(100));
        assert_eq!(filter.take_oversized(), Some(300));
    }

    #[test]
    fn a_read_buffer_too_small_for_the_held_header_is_refused() {
        let input = TestFrame::whole(1, 300).encode();
        let mut filter = FrameLimit::new(Chunks::new(&input, 3), 100);
        let mut early = input[..5].to_vec();
        filter.filter_early(&mut early);
        assert!(early.is_empty());
        let mut small = [0; 5];
        let error = block_on(filter.read(&mut small)).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn the_state_is_small_and_inline() {
        type Inner = [u64; 4];
        let overhead = size_of::<FrameLimit<Inner>>() - size_of::<Inner>();
        assert!(overhead <= 40, "{overhead} bytes");
    }

    #[test]
    fn writes_stay_vectored() {
        #[derive(Debug)]
        struct Vectored;
        impl AsyncWrite for Vectored {
            fn poll_write(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                Poll::Ready(Ok(buf.len()))
            }
            fn poll_write_vectored(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                Poll::Ready(Ok(bufs.iter().map(|buf| buf.len()).sum()))
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
        let mut filter = FrameLimit::new(Vectored, 10);
        assert!(filter.is_write_vectored());
        let bufs = [io::IoSlice::new(b"ab"), io::IoSlice::new(b"cde")];
        assert_eq!(block_on(filter.write_vectored(&bufs)).unwrap(), 5);
    }

    fn server_config() -> Option<WebSocketConfig> {
        let config = WebSocketConfig::default()
            .max_frame_size(Some(64 * KIB))
            .max_message_size(Some(64 * KIB));
        Some(config)
    }

    #[tokio::test]
    async fn tungstenite_reads_an_empty_text_for_an_oversized_one_and_carries_on() {
        let (client_io, server_io) = tokio::io::duplex(1 << 20);
        let filter = FrameLimit::new(server_io, 64 * KIB);
        let mut server =
            WebSocketStream::from_raw_socket(filter, Role::Server, server_config()).await;
        let mut client = WebSocketStream::from_raw_socket(client_io, Role::Client, None).await;

        client
            .send(WsMessage::text("x".repeat(200 * KIB)))
            .await
            .unwrap();
        client.send(WsMessage::text("after")).await.unwrap();
        client.send(WsMessage::Ping("ping".into())).await.unwrap();

        assert_eq!(server.next().await.unwrap().unwrap(), WsMessage::text(""));
        assert_eq!(server.get_mut().take_oversized(), Some(200 * KIB as u64));
        assert_eq!(
            server.next().await.unwrap().unwrap(),
            WsMessage::text("after")
        );
        assert_eq!(server.get_mut().take_oversized(), None);
        assert_eq!(
            server.next().await.unwrap().unwrap(),
            WsMessage::Ping("ping".into())
        );
        server.flush().await.unwrap();
        assert_eq!(
            client.next().await.unwrap().unwrap(),
            WsMessage::Pong("ping".into())
        );
    }

    #[tokio::test]
    async fn a_frame_over_the_skip_limit_fails_the_read_with_a_capacity_error() {
        let (mut client_io, server_io) = tokio::io::duplex(1 << 20);
        let filter = FrameLimit::new(server_io, 64 * KIB);
        let mut server =
            WebSocketStream::from_raw_socket(filter, Role::Server, server_config()).await;
        let mut raw = TestFrame::whole(1, 20 * KIB * KIB).header();
        raw.extend_from_slice(b"some bytes");
        client_io.write_all(&raw).await.unwrap();
        let error = server.next().await.unwrap().unwrap_err();
        assert!(
            matches!(
                error,
                WsError::Capacity(CapacityError::MessageTooLong { .. })
            ),
            "{error:?}"
        );
    }
}
