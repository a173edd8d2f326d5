//! Server-Sent-Events streams that [`serve`](crate::serve()) writes itself, without hyper.
//!
//! An SSE stream lives for hours and hyper keeps an 8 KiB read buffer and an 8 KiB write
//! buffer for every connection it serves, so a stream served through hyper costs about
//! 14 KiB of memory while idle. When the first request on a new connection is a plain
//! `GET` of an SSE route, `serve` reads that head itself, calls the same service with it,
//! and, when the answer is a `text/event-stream`, writes the head and then the events
//! straight to the socket, every ready event in one `writev`. Any other answer (a 401, or
//! a host's own route that looks like one of dualcast's) is relayed as it is, whole, and
//! the connection closed. Everything else (other requests, a
//! connection that already served a request) goes through hyper as usual, with the same
//! result for the client.
//!
//! The first bytes are looked at once the socket is readable, without consuming them: a
//! complete SSE head (the usual case: it fits in one segment) is taken as it is, and
//! anything else goes to hyper untouched. When they are the start of an SSE `GET` whose
//! head has not fully arrived, the head is read (consumed) as it comes, each read waiting
//! for the socket to become readable again, never on a timer, so a client that stalls
//! costs no CPU and only a buffer the size of what it sent (at most 4 KiB). Should that
//! head turn out not to be a plain SSE `GET`, hyper serves the connection and is given the
//! bytes read so far first.
//!
//! The stream is close-delimited (`Connection: close`, no chunked encoding), which every
//! SSE client reads; a client that hangs up is noticed at once, not at the next write.

use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, Version};
use http_body::Body;
use http_body_util::{BodyExt, Empty};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;
use tower::{Service, ServiceExt};

use dualcast_layers::error::http_date;

use crate::routes::RouteTable;
use crate::sse::SseControl;
use crate::write_batch::WriteBatch;

/// Most bytes of a request head looked at; a longer head goes to hyper.
const MAX_HEAD: usize = 4096;
/// The smallest buffer a head that arrives in pieces is read into; it grows (doubling, up
/// to [`MAX_HEAD`]) only as the head does.
const MIN_HEAD_BUFFER: usize = 512;
/// Most headers in a request taken here; more go to hyper.
const MAX_HEADERS: usize = 32;

/// What the first bytes of a connection are.
pub(crate) enum FirstRequest {
    /// A complete plain `GET` of an SSE route, and how many bytes of its head are still in
    /// the socket: all of them when the head came whole and was only peeked at, none when
    /// it came in pieces and was read.
    Sse(Box<Request<Empty<Bytes>>>, usize),
    /// Anything else, for hyper, which must be given these bytes (already read from the
    /// socket) before the socket's; empty when nothing was read.
    Other(Bytes),
    /// Part of a request head came, and not the rest in time: answer `408` and close.
    TimedOut,
    /// Nothing arrived in time, or the socket failed or closed: drop the connection.
    Nothing,
}

/// Finds out what the first request on `stream` is, for at most `timeout`. Consumes
/// nothing unless the head arrives in pieces (see [`FirstRequest`]).
pub(crate) async fn first_request(
    stream: &TcpStream,
    timeout: Duration,
    table: &RouteTable,
) -> FirstRequest {
    let mut arrived = false;
    match tokio::time::timeout(timeout, look_at_first_request(stream, table, &mut arrived)).await {
        Ok(first) => first,
        Err(_) if arrived => FirstRequest::TimedOut,
        // A connection that never sent a byte is not refused a request: it is closed.
        Err(_) => FirstRequest::Nothing,
    }
}

/// What [`first_request`] finds; sets `arrived` once any byte of a request came.
async fn look_at_first_request(
    stream: &TcpStream,
    table: &RouteTable,
    arrived: &mut bool,
) -> FirstRequest {
    if stream.readable().await.is_err() {
        return FirstRequest::Nothing;
    }
    // The peek's buffer lives only for the peek: a head that has to be waited for is read
    // into a buffer the size of what came.
    let seen = {
        let mut buffer = vec![0u8; MAX_HEAD];
        let seen = match stream.peek(&mut buffer).await {
            Ok(0) | Err(_) => return FirstRequest::Nothing,
            Ok(seen) => seen,
        };
        *arrived = true;
        match parse_sse_request(&buffer[..seen], table) {
            Head::Sse(request, head_len) if head_len == seen => {
                return FirstRequest::Sse(request, head_len)
            }
            // Bytes after the head, which an SSE client never sends: hyper serves it.
            Head::Sse(..) => return FirstRequest::Other(Bytes::new()),
            // Any other request, once its head is whole (so that one that never is gets its
            // `408` here, not a silent close from hyper's own header timeout).
            Head::Other if seen < MAX_HEAD && !head_is_whole(&buffer[..seen]) => seen,
            Head::Other => return FirstRequest::Other(Bytes::new()),
            Head::Partial if seen < MAX_HEAD => seen,
            Head::Partial => return FirstRequest::Other(Bytes::new()),
        }
    };
    read_split_head(stream, seen, table).await
}

/// Reads, consuming it, a request head that has partly arrived (`seen` bytes of it), as
/// the rest comes. A peek cannot wait for more bytes (the socket stays readable
/// until a read finds nothing), a read can: each one that finds nothing clears the
/// socket's readiness, and the next waits for new bytes.
async fn read_split_head(stream: &TcpStream, seen: usize, table: &RouteTable) -> FirstRequest {
    let mut buffer = vec![0u8; (2 * seen).clamp(MIN_HEAD_BUFFER, MAX_HEAD)];
    let mut filled = 0;
    loop {
        if filled == buffer.len() {
            buffer.resize((2 * filled).min(MAX_HEAD), 0);
        }
        match stream.try_read(&mut buffer[filled..]) {
            Ok(0) => return FirstRequest::Nothing,
            Ok(read) => filled += read,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                if stream.readable().await.is_err() {
                    return FirstRequest::Nothing;
                }
                continue;
            }
            Err(_) => return FirstRequest::Nothing,
        }
        match parse_sse_request(&buffer[..filled], table) {
            Head::Sse(request, head_len) if head_len == filled => {
                return FirstRequest::Sse(request, 0);
            }
            Head::Partial if filled < MAX_HEAD => {}
            Head::Other if filled < MAX_HEAD && !head_is_whole(&buffer[..filled]) => {}
            // Not a plain SSE GET after all, a head too long, or bytes after the head,
            // which an SSE client never sends: hyper serves it, from the first byte.
            Head::Sse(..) | Head::Partial | Head::Other => {
                buffer.truncate(filled);
                return FirstRequest::Other(Bytes::from(buffer));
            }
        }
    }
}

/// Whether `bytes` hold a whole request head (up to its blank line; bare line feeds
/// count, as httparse takes them).
fn head_is_whole(bytes: &[u8]) -> bool {
    bytes.windows(2).any(|window| window == b"\n\n")
        || bytes.windows(4).any(|window| window == b"\r\n\r\n")
        || bytes.windows(3).any(|window| window == b"\n\r\n")
}

/// What a request head that has (partly) arrived is.
enum Head {
    /// A complete plain `GET` of an SSE route, and the length of its head.
    Sse(Box<Request<Empty<Bytes>>>, usize),
    /// The start of a `GET` of an SSE route; the rest has not arrived yet.
    Partial,
    /// Anything else.
    Other,
}

/// Classifies the bytes of a request head: only dualcast's own SSE routes, under its
/// prefix, are taken.
fn parse_sse_request(bytes: &[u8], table: &RouteTable) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let complete = match parsed.parse(bytes) {
        Ok(httparse::Status::Complete(head_len)) => Some(head_len),
        Ok(httparse::Status::Partial) => None,
        Err(_) => return Head::Other,
    };
    let is_sse_get = parsed.method == Some("GET")
        && parsed.path.is_some_and(|target| {
            let path = target.split('?').next().unwrap_or(target);
            table.is_sse(path)
        });
    match (is_sse_get, complete) {
        (false, _) => Head::Other,
        (true, None) => Head::Partial,
        (true, Some(head_len)) => match build_request(&parsed) {
            Some(request) => Head::Sse(Box::new(request), head_len),
            None => Head::Other,
        },
    }
}

/// The request of a complete SSE head; `None` when it is not a plain GET hyper should see.
fn build_request(parsed: &httparse::Request<'_, '_>) -> Option<Request<Empty<Bytes>>> {
    let mut request = Request::builder()
        .method(Method::GET)
        .uri(parsed.path?)
        .version(if parsed.version? == 0 {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        });
    let mut map = HeaderMap::with_capacity(parsed.headers.len());
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        if name == header::UPGRADE
            || name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
        {
            return None; // not a plain GET: hyper knows what to do with it
        }
        map.append(name, HeaderValue::from_bytes(h.value).ok()?);
    }
    if let Some(headers) = request.headers_mut() {
        *headers = map;
    }
    request.body(Empty::new()).ok()
}

/// Serves the request `serve` took from `stream`, answering on the socket directly. The
/// last `unread` bytes of its head are still in the socket and are consumed here.
pub(crate) async fn serve_sse<IO, S, B>(
    mut stream: IO,
    request: Box<Request<Empty<Bytes>>>,
    unread: usize,
    service: S,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Empty<Bytes>>, Response = Response<B>, Error = Infallible>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if unread > 0 {
        let mut head = vec![0u8; unread];
        if stream.read_exact(&mut head).await.is_err() {
            return;
        }
    }
    let version = request.version();
    let Ok(response) = service.oneshot(*request).await;
    if let Some(pump) = respond(stream, response, version).await {
        // A task of its own, holding only the stream and the body: the request, the
        // service and this function's other state are freed now, not kept for the
        // stream's life.
        tokio::spawn(pump.run());
    }
}

/// Writes `response` on `io`. dualcast's own event stream (it carries [`SseControl`]) gets
/// its head written and is returned as the [`Pump`] that writes its events; any other
/// answer is [relayed](relay) as it is and `io` closed.
async fn respond<IO, B>(io: IO, response: Response<B>, version: Version) -> Option<Pump<IO, B>>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (parts, body) = response.into_parts();
    let Some(control) = parts.extensions.get::<SseControl>().cloned() else {
        relay(io, &parts, body, version).await;
        return None;
    };
    let mut io = io;
    let mut head = response_head(&parts);
    head.extend_from_slice(b"\r\n");
    if io.write_all(&head).await.is_err() {
        return None;
    }
    drop(head);
    Some(Pump {
        stream: io,
        body: Box::pin(body),
        control,
        close_deadline: None,
        batch: WriteBatch::new(|bytes: &Bytes| bytes.as_ref()),
        ended: false,
    })
}

/// Writes an answer dualcast did not make (a host's route, a refusal) as it is: status,
/// headers and the whole body, however long, then closes `io`. Only the framing is
/// rewritten (the connection closes after it): `content-length` when the body's size is
/// known; otherwise chunked for an HTTP/1.1 request, so that a body that fails midway shows
/// as an abort (no last chunk) rather than as a complete answer, and close-delimited for
/// HTTP/1.0.
async fn relay<IO, B>(mut io: IO, parts: &http::response::Parts, body: B, version: Version)
where
    IO: AsyncWrite + Unpin,
    B: Body<Data = Bytes>,
{
    let status = parts.status.as_u16();
    let bodiless = status < 200 || status == 204 || status == 304;
    let length = body.size_hint().exact();
    let chunked = !bodiless && length.is_none() && version == Version::HTTP_11;
    let mut head = response_head(parts);
    if !bodiless {
        match length {
            Some(length) => {
                head.extend_from_slice(format!("content-length: {length}\r\n").as_bytes());
            }
            None if chunked => head.extend_from_slice(b"transfer-encoding: chunked\r\n"),
            None => {}
        }
    }
    head.extend_from_slice(b"\r\n");
    if io.write_all(&head).await.is_err() {
        return;
    }
    if !bodiless {
        let mut body = std::pin::pin!(body);
        loop {
            // Taken out of the `Option` at once: the body's error need not be `Send`.
            let frame = match body.frame().await {
                Some(Ok(frame)) => frame,
                // The body failed: close without the last chunk, so the client sees the cut.
                Some(Err(_)) => return,
                None => break,
            };
            let Ok(data) = frame.into_data() else {
                continue; // trailers are not relayed
            };
            if data.is_empty() {
                continue;
            }
            let written = if chunked {
                let size = format!("{:x}\r\n", data.len());
                write_all(&mut io, &[size.as_bytes(), &data, b"\r\n"]).await
            } else {
                io.write_all(&data).await
            };
            if written.is_err() {
                return;
            }
        }
        if chunked && io.write_all(b"0\r\n\r\n").await.is_err() {
            return;
        }
    }
    let _ = io.shutdown().await;
}

/// Writes each of `pieces`, in order.
async fn write_all<IO: AsyncWrite + Unpin>(io: &mut IO, pieces: &[&[u8]]) -> io::Result<()> {
    for piece in pieces {
        io.write_all(piece).await?;
    }
    Ok(())
}

/// Status line and headers (with `connection: close`), without the final blank line.
fn response_head(parts: &http::response::Parts) -> Vec<u8> {
    let mut head = Vec::with_capacity(256);
    let status = parts.status;
    head.extend_from_slice(
        format!(
            "HTTP/1.1 {} {}\r\n",
            status.as_str(),
            status.canonical_reason().unwrap_or("")
        )
        .as_bytes(),
    );
    for (name, value) in &parts.headers {
        if name == header::CONNECTION
            || name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
        {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"date: ");
    head.extend_from_slice(http_date(SystemTime::now()).as_bytes());
    head.extend_from_slice(b"\r\nconnection: close\r\n");
    head
}

/// How long an ended stream may take to write its last events before it is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Moves the body's events to the socket until the body ends or the client leaves.
struct Pump<IO, B> {
    stream: IO,
    body: Pin<Box<B>>,
    /// The connection's end signal, watched even while a write is blocked.
    control: SseControl,
    /// Once the connection ends, the deadline of its last writes.
    close_deadline: Option<Pin<Box<Sleep>>>,
    /// Events being written.
    batch: WriteBatch<Bytes>,
    ended: bool,
}

impl<IO, B> Pump<IO, B>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    B: Body<Data = Bytes>,
{
    /// Writes the stream until it is over (see [`poll`](Self::poll)), then closes `IO`.
    ///
    /// Not an `async fn`: its future would hold the pump twice (as the argument and as
    /// the local it is moved into), and this future is what a stream's task holds.
    #[allow(clippy::manual_async_fn)]
    fn run(mut self) -> impl Future<Output = ()> {
        async move {
            poll_fn(|cx| self.poll(cx)).await;
            let _ = self.stream.shutdown().await;
        }
    }

    /// Ready when the stream is over: the body ended and all was written, the client left,
    /// or the socket failed.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.client_left(cx) {
            return Poll::Ready(());
        }
        if self.poll_ending(cx) {
            return Poll::Ready(());
        }
        loop {
            if self.batch.is_empty() {
                if self.ended {
                    return Poll::Ready(());
                }
                while !self.batch.is_full() {
                    match self.body.as_mut().poll_frame(cx) {
                        Poll::Ready(Some(Ok(frame))) => {
                            if let Ok(data) = frame.into_data() {
                                if !data.is_empty() {
                                    self.batch.push(data);
                                }
                            }
                        }
                        Poll::Ready(Some(Err(_))) | Poll::Ready(None) => {
                            self.ended = true;
                            break;
                        }
                        Poll::Pending => break,
                    }
                }
                if self.batch.is_empty() {
                    return if self.ended {
                        Poll::Ready(())
                    } else {
                        Poll::Pending
                    };
                }
            }
            match self.batch.poll_write(Pin::new(&mut self.stream), cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Watches the connection's end (the hub's decision: expiry, shutdown, ...), which the
    /// body only sees when it is polled, and it is not while a write is blocked. Once the
    /// connection ends, its last events get [`CLOSE_TIMEOUT`] to go out; `true` when that
    /// is over.
    fn poll_ending(&mut self, cx: &mut Context<'_>) -> bool {
        if self.close_deadline.is_none() && self.control.end.poll_end(cx).is_ready() {
            self.close_deadline = Some(Box::pin(tokio::time::sleep(CLOSE_TIMEOUT)));
        }
        self.close_deadline
            .as_mut()
            .is_some_and(|deadline| deadline.as_mut().poll(cx).is_ready())
    }

    /// Whether the client closed its side (or sent what an SSE client never sends).
    fn client_left(&mut self, cx: &mut Context<'_>) -> bool {
        let mut scratch = [0u8; 64];
        let mut buffer = ReadBuf::new(&mut scratch);
        match Pin::new(&mut self.stream).poll_read(cx, &mut buffer) {
            Poll::Ready(Ok(())) => true, // end of stream, or unexpected bytes
            Poll::Ready(Err(error)) => error.kind() != io::ErrorKind::WouldBlock,
            Poll::Pending => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn only_complete_plain_gets_of_sse_routes_are_taken() {
        let taken = |head: &str| match parse_sse_request(head.as_bytes(), &RouteTable::default()) {
            Head::Sse(request, len) => Some((request.uri().to_string(), len)),
            _ => None,
        };
        let sse =
            "GET /sse/alice?session_id=s1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\n\r\n";
        assert_eq!(
            taken(sse),
            Some(("/sse/alice?session_id=s1".to_owned(), sse.len()))
        );
        assert!(taken("GET /api/sse HTTP/1.1\r\nHost: x\r\n\r\n").is_some());
        for other in [
            "GET /sse/alice HTTP/1.1\r\nHost: x\r\n",    // incomplete
            "POST /api/sse HTTP/1.1\r\nHost: x\r\n\r\n", // not a GET
            "GET /api/ws HTTP/1.1\r\nHost: x\r\n\r\n",   // not SSE
            "GET /sse/a/b HTTP/1.1\r\nHost: x\r\n\r\n",  // not a route
            "GET /sse/ HTTP/1.1\r\nHost: x\r\n\r\n",     // no player
            "GET /api/sse HTTP/1.1\r\nUpgrade: websocket\r\n\r\n", // an upgrade
            "GET /api/sse HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", // a body
            "garbage\r\n\r\n",
        ] {
            assert_eq!(taken(other), None, "{other:?}");
        }
    }

    #[test]
    fn the_start_of_an_sse_get_waits_for_the_rest_and_anything_else_does_not() {
        let partial = |head: &str| {
            matches!(
                parse_sse_request(head.as_bytes(), &RouteTable::default()),
                Head::Partial
            )
        };
        assert!(partial("GET /sse/alice HTTP/1.1\r\nHost: x\r\nAuthoriz"));
        assert!(partial("GET /api/sse HTTP/1.1\r\n"));
        assert!(!partial("GET /api/ws HTTP/1.1\r\n"));
        assert!(!partial("POST /api/sse HTTP/1.1\r\n"));
    }

    /// A server-side and a client-side socket of one loopback connection.
    async fn connected_pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        client.set_nodelay(true).unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (server, client)
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_split_over_segments_is_waited_for() {
        let (server, mut client) = connected_pair().await;
        client
            .write_all(b"GET /sse/alice HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let rest = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await; // the next segment, later
            client
                .write_all(b"Authorization: Bearer t\r\n\r\n")
                .await
                .unwrap();
            client
        });
        let first = first_request(&server, Duration::from_secs(10), &RouteTable::default()).await;
        let FirstRequest::Sse(request, unread) = first else {
            panic!("the whole head was waited for");
        };
        assert_eq!(
            unread, 0,
            "the head was read, nothing of it is left in the socket"
        );
        assert_eq!(request.uri(), "/sse/alice");
        assert_eq!(request.headers()[header::AUTHORIZATION], "Bearer t");
        let _client = rest.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_head_is_not_polled_on_a_timer() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let (server, mut client) = connected_pair().await;
        client
            .write_all(b"GET /sse/alice HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let polls = Arc::new(AtomicUsize::new(0));
        let counter = polls.clone();
        let task = tokio::spawn(async move {
            let table = RouteTable::default();
            let mut first = std::pin::pin!(first_request(&server, Duration::from_secs(10), &table));
            poll_fn(|cx| {
                counter.fetch_add(1, Ordering::Relaxed);
                first.as_mut().poll(cx)
            })
            .await
        });
        // Five seconds of a stalled client, on the paused clock (it jumps to each timer).
        tokio::time::sleep(Duration::from_secs(5)).await;
        let stalled = polls.load(Ordering::Relaxed);
        assert!(
            (1..=3).contains(&stalled),
            "polled {stalled} times while nothing arrived"
        );
        client
            .write_all(b"Authorization: Bearer t\r\n\r\n")
            .await
            .unwrap();
        let FirstRequest::Sse(request, 0) = task.await.unwrap() else {
            panic!("the SSE request, read");
        };
        assert_eq!(request.uri(), "/sse/alice");
        assert_eq!(request.headers()[header::HOST], "x");
        assert_eq!(request.headers()[header::AUTHORIZATION], "Bearer t");
        assert!(
            polls.load(Ordering::Relaxed) <= stalled + 2,
            "one wake-up for the rest of the head"
        );
    }

    #[tokio::test]
    async fn a_whole_head_is_only_peeked_at() {
        let (server, mut client) = connected_pair().await;
        let head = b"GET /api/sse HTTP/1.1\r\nHost: x\r\n\r\n";
        client.write_all(head).await.unwrap();
        let first = first_request(&server, Duration::from_secs(10), &RouteTable::default()).await;
        assert!(matches!(first, FirstRequest::Sse(_, unread) if unread == head.len()));
        let mut still_there = [0u8; 64];
        let seen = server.peek(&mut still_there).await.unwrap();
        assert_eq!(&still_there[..seen], head);

        let (server, mut client) = connected_pair().await;
        client
            .write_all(b"GET /api/ws HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let first = first_request(&server, Duration::from_secs(10), &RouteTable::default()).await;
        assert!(
            matches!(&first, FirstRequest::Other(read) if read.is_empty()),
            "any other whole head goes to hyper untouched"
        );

        // Any other head that comes in pieces is waited for whole, and handed over read.
        let (server, mut client) = connected_pair().await;
        client.write_all(b"GET /api/ws HTTP/1.1\r\n").await.unwrap();
        let waiting = tokio::spawn(async move {
            first_request(&server, Duration::from_secs(10), &RouteTable::default()).await
        });
        tokio::task::yield_now().await;
        client.write_all(b"Host: x\r\n\r\n").await.unwrap();
        let first = waiting.await.unwrap();
        assert!(
            matches!(&first, FirstRequest::Other(read) if &read[..] == b"GET /api/ws HTTP/1.1\r\nHost: x\r\n\r\n"),
            "the head, read whole"
        );

        let (server, mut client) = connected_pair().await;
        client
            .write_all(b"GET /api/sse HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        let first = first_request(&server, Duration::from_secs(10), &RouteTable::default()).await;
        assert!(
            matches!(&first, FirstRequest::Other(read) if read.is_empty()),
            "a whole head with more behind it goes to hyper untouched"
        );
    }

    /// What `first_request` makes of a head sent as `segments`, each once the server has
    /// read everything before it.
    async fn first_request_of(segments: &[&[u8]]) -> FirstRequest {
        let (server, mut client) = connected_pair().await;
        let (first, rest) = segments.split_first().unwrap();
        client.write_all(first).await.unwrap();
        let sent: usize = segments.iter().map(|segment| segment.len()).sum();
        let server = std::sync::Arc::new(server);
        let reading = tokio::spawn({
            let server = server.clone();
            async move { first_request(&server, Duration::from_secs(10), &RouteTable::default()).await }
        });
        for segment in rest {
            // Until the server has consumed what came before (a peek alone consumes
            // nothing), so that each segment is read on its own.
            let mut probe = vec![0u8; sent];
            loop {
                let unread = poll_fn(|cx| {
                    let mut buffer = ReadBuf::new(&mut probe);
                    Poll::Ready(matches!(
                        server.poll_peek(cx, &mut buffer),
                        Poll::Ready(Ok(seen)) if seen > 0
                    ))
                })
                .await;
                if reading.is_finished() || !unread {
                    break;
                }
                tokio::task::yield_now().await;
            }
            client.write_all(segment).await.unwrap();
        }
        let first = tokio::time::timeout(Duration::from_secs(5), reading)
            .await
            .expect("an answer")
            .unwrap();
        drop(client);
        first
    }

    #[tokio::test]
    async fn a_split_head_that_is_not_a_plain_sse_get_goes_to_hyper_with_what_was_read() {
        let start: &[u8] = b"GET /sse/alice HTTP/1.1\r\nHost: x\r\n";
        for rest in [
            &b"Upgrade: websocket\r\n\r\n"[..],     // an upgrade
            b"Content-Length: 2\r\n\r\nhi",         // a body: bytes after the head
            b"\r\nGET /sse/alice HTTP/1.1\r\n\r\n", // a second request
            b"Bad header\r\n\r\n",                  // not HTTP
        ] {
            let FirstRequest::Other(read) = first_request_of(&[start, rest]).await else {
                panic!("{:?}: for hyper", String::from_utf8_lossy(rest));
            };
            assert_eq!(
                &read[..],
                [start, rest].concat(),
                "everything read is replayed"
            );
        }
    }

    #[tokio::test]
    async fn a_split_head_longer_than_the_limit_goes_to_hyper() {
        let start: &[u8] = b"GET /sse/alice HTTP/1.1\r\n";
        let long = format!("X-Long: {}\r\n", "a".repeat(MAX_HEAD));
        let FirstRequest::Other(read) = first_request_of(&[start, long.as_bytes()]).await else {
            panic!("for hyper");
        };
        assert_eq!(read.len(), MAX_HEAD, "no more than the limit is read");
        assert!(long.as_bytes().starts_with(&read[start.len()..]));
    }

    #[tokio::test]
    async fn a_client_that_leaves_mid_head_is_dropped() {
        let (server, mut client) = connected_pair().await;
        client
            .write_all(b"GET /sse/alice HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        client.shutdown().await.unwrap();
        let first = first_request(&server, Duration::from_secs(10), &RouteTable::default()).await;
        assert!(matches!(first, FirstRequest::Nothing));
    }

    /// A head that stops half way is refused at the timeout (the caller answers `408`),
    /// whatever request it starts; a connection that sent nothing is only dropped.
    #[tokio::test(start_paused = true)]
    async fn a_stalled_head_is_refused_at_the_timeout() {
        for start in [&b"GET /api/sse HTTP/1.1\r\n"[..], b"POST /api/rooms/lob"] {
            let (server, mut client) = connected_pair().await;
            client.write_all(start).await.unwrap();
            let started = tokio::time::Instant::now();
            let first =
                first_request(&server, Duration::from_secs(10), &RouteTable::default()).await;
            assert!(matches!(first, FirstRequest::TimedOut));
            assert_eq!(started.elapsed(), Duration::from_secs(10));
        }
        let (server, _client) = connected_pair().await;
        let first = first_request(&server, Duration::from_secs(10), &RouteTable::default()).await;
        assert!(matches!(first, FirstRequest::Nothing));
    }

    /// Answers any request with its method, URI and body length, as `text/plain`.
    #[derive(Clone)]
    struct Echo;

    impl<T> Service<Request<T>> for Echo
    where
        T: Body + Send + 'static,
        T::Data: Send,
    {
        type Response = Response<http_body_util::Full<Bytes>>;
        type Error = Infallible;
        type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: Request<T>) -> Self::Future {
            Box::pin(async move {
                let line = format!("{} {}", request.method(), request.uri());
                let length = match request.into_body().collect().await {
                    Ok(body) => body.to_bytes().len(),
                    Err(_) => usize::MAX,
                };
                let mut response = Response::new(format!("{line} {length}").into());
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                Ok(response)
            })
        }
    }

    /// The whole answer of `serve` to a request sent as `segments`, some time apart.
    async fn served(segments: &[&[u8]]) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let endpoints = crate::Endpoints::new(
            crate::Hub::new(),
            RouteTable::default(),
            std::sync::Arc::default(),
        );
        let server = tokio::spawn(crate::serve_with_settings(
            listener,
            endpoints,
            Echo,
            crate::ServeSettings::default(),
            std::future::pending(),
        ));
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.set_nodelay(true).unwrap();
        for segment in segments {
            client.write_all(segment).await.unwrap();
            tokio::time::sleep(Duration::from_millis(30)).await; // a segment of its own
        }
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut answer))
            .await
            .expect("an answer, and the connection closed")
            .unwrap();
        server.abort();
        String::from_utf8(answer).unwrap()
    }

    #[tokio::test]
    async fn serve_answers_a_split_sse_head_itself_and_hands_anything_else_to_hyper() {
        let direct = served(&[b"GET /sse/alice HTTP/1.1\r\nHost: x\r\n", b"\r\n"]).await;
        assert!(direct.starts_with("HTTP/1.1 200 OK\r\n"), "{direct}");
        assert!(
            direct.contains("connection: close\r\n"),
            "written here: {direct}"
        );
        assert!(direct.ends_with("\r\n\r\nGET /sse/alice 0"), "{direct}");

        let through_hyper = served(&[
            b"GET /sse/alice HTTP/1.1\r\nHost: x\r\n",
            b"Content-Length: 5\r\nConnection: close\r\n\r\nhello",
        ])
        .await;
        assert!(
            through_hyper.starts_with("HTTP/1.1 200 OK\r\n"),
            "{through_hyper}"
        );
        assert!(
            through_hyper.ends_with("\r\n\r\nGET /sse/alice 5"),
            "hyper read the replayed head and then the body: {through_hyper}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_blocked_write_still_ends_when_the_credential_expires() {
        use crate::{ConnectionKind, HubEvent, Message};
        let hub = crate::Hub::new();
        let mut events = hub.subscribe();
        let expiry = tokio::time::Instant::now() + Duration::from_secs(10);
        let (guard, outbox) = hub
            .register(
                crate::Registration::new("p", ConnectionKind::Sse).credential_deadline(expiry),
            )
            .unwrap();
        let response = crate::sse::stream_response(
            guard,
            outbox,
            &crate::SseSettings::new(),
            crate::sse::stream::KeepAlive::Comment,
        );
        // A client that never reads: the pipe holds 1 KiB, then every write blocks.
        let (mut client, server) = tokio::io::duplex(1024);
        let pump = respond(server, response, Version::HTTP_11)
            .await
            .expect("an event stream");
        let message = Message::json("tick", serde_json::json!({ "text": "x".repeat(100) }));
        let published = 100;
        for _ in 0..published {
            assert_eq!(hub.send_to_player("p", &message).failed, 0);
        }
        let pump = tokio::spawn(pump.run());
        tokio::time::sleep_until(expiry - Duration::from_secs(1)).await;
        assert!(!pump.is_finished(), "blocked, not over");

        tokio::time::timeout(Duration::from_secs(60), pump)
            .await
            .expect("the pump ends")
            .unwrap();
        let ended = tokio::time::Instant::now();
        assert!(
            ended >= expiry && ended - expiry <= CLOSE_TIMEOUT + Duration::from_millis(1),
            "ended {:?} after the expiry",
            ended.checked_duration_since(expiry)
        );
        let reason = loop {
            match events.try_recv() {
                Ok(HubEvent::Disconnected { reason, .. }) => break reason,
                Ok(_) => {}
                Err(error) => panic!("no disconnection: {error}"),
            }
        };
        assert_eq!(reason, crate::DisconnectReason::AuthExpired);

        let mut received = Vec::new();
        client.read_to_end(&mut received).await.unwrap();
        let received = String::from_utf8_lossy(&received);
        assert!(received.starts_with("HTTP/1.1 200 OK\r\n"), "{received}");
        let delivered = received.matches("\"tick\"").count();
        assert!(
            delivered < published,
            "the write was blocked: {delivered} of {published} messages got out"
        );
        assert!(received.len() <= 1024, "no more than the pipe holds");
    }

    /// What `relay` writes for a host answer of `frames`, with no known size, to a request
    /// of `version`.
    async fn relayed(frames: Vec<Result<&'static str, ()>>, version: Version) -> String {
        let frames = frames.into_iter().map(|frame| match frame {
            Ok(data) => Ok(http_body::Frame::data(Bytes::from_static(data.as_bytes()))),
            Err(()) => Err(io::Error::other("the host's body failed")),
        });
        let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
        let response = Response::builder()
            .status(200)
            .header("content-type", "text/plain")
            .body(body)
            .unwrap();
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let (parts, body) = response.into_parts();
        relay(server, &parts, body, version).await;
        let mut written = Vec::new();
        client.read_to_end(&mut written).await.unwrap();
        String::from_utf8(written).unwrap()
    }

    #[tokio::test]
    async fn a_host_body_of_unknown_size_is_relayed_chunked_and_a_failure_shows_as_a_cut() {
        let whole = relayed(vec![Ok("first "), Ok("second")], Version::HTTP_11).await;
        assert!(whole.contains("transfer-encoding: chunked\r\n"), "{whole}");
        assert!(
            whole.ends_with("\r\n\r\n6\r\nfirst \r\n6\r\nsecond\r\n0\r\n\r\n"),
            "{whole}"
        );

        let cut = relayed(vec![Ok("first half"), Err(())], Version::HTTP_11).await;
        assert!(cut.ends_with("a\r\nfirst half\r\n"), "no last chunk: {cut}");

        let old = relayed(vec![Ok("first "), Ok("second")], Version::HTTP_10).await;
        assert!(!old.contains("transfer-encoding"), "{old}");
        assert!(
            old.ends_with("\r\n\r\nfirst second"),
            "close-delimited: {old}"
        );
    }

    #[test]
    fn the_head_closes_the_connection_and_drops_framing_headers() {
        let response = Response::builder()
            .status(200)
            .header("content-type", "text/event-stream")
            .header("transfer-encoding", "chunked")
            .body(())
            .unwrap();
        let (parts, ()) = response.into_parts();
        let head = String::from_utf8(response_head(&parts)).unwrap();
        let date = http_date(SystemTime::now());
        let prefix = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ndate: ";
        assert!(head.starts_with(prefix), "{head}");
        assert!(head.ends_with(" GMT\r\nconnection: close\r\n"), "{head}");
        assert_eq!(
            head.len(),
            prefix.len() + date.len() + "\r\nconnection: close\r\n".len()
        );
        assert!(!head.contains("transfer-encoding"));
    }

    /// Property tests of [`parse_sse_request`], over arbitrary bytes and over generated
    /// request heads, plausible and odd.
    mod properties {
        use super::*;
        use proptest::collection::vec;
        use proptest::prelude::*;
        use proptest::sample::select;

        // Every generator below takes `odd`, the weight of its odd choices against 16 for
        // its plain ones.

        /// A byte of a token or a value: mostly plain, sometimes odd (a lower weight
        /// than elsewhere: a head has many bytes).
        fn odd_byte(odd: u32) -> impl Strategy<Value = u8> {
            prop_oneof![
                64 => b'a'..=b'z',
                16 => 0x21u8..0x7f,
                odd => select(b" \t\r\n\0\x01\x7f\x80\xfe\xff%?#:;/\\\"".to_vec()),
                odd => any::<u8>(),
            ]
        }

        fn odd_bytes(odd: u32, length: std::ops::Range<usize>) -> impl Strategy<Value = Vec<u8>> {
            vec(odd_byte(odd), length)
        }

        fn one_of(choices: &[&'static str]) -> impl Strategy<Value = Vec<u8>> {
            select(choices.to_vec()).prop_map(|choice| choice.as_bytes().to_vec())
        }

        fn method(odd: u32) -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                16 => Just(b"GET".to_vec()),
                odd => one_of(&["get", "POST", "HEAD", "PUT", "CONNECT", "OPTIONS", "GE", "G\0T"]),
            ]
        }

        fn target(odd: u32) -> impl Strategy<Value = Vec<u8>> {
            let path = prop_oneof![
                12 => odd_bytes(odd, 1..12).prop_map(|player| [&b"/sse/"[..], &player].concat()),
                4 => Just(b"/api/sse".to_vec()),
                odd => one_of(&[
                    "/api/ws", "/sse/", "/sse/a/b", "/sse//", "/api/sse/", "//sse/a", "/SSE/a",
                    "*", "http://x/sse/alice", "/sse/alice#top", "/sse/%2F",
                ]),
                odd => odd_bytes(odd, 0..16),
            ];
            let query = prop_oneof![
                12 => Just(Vec::new()),
                4 => odd_bytes(odd, 0..16).prop_map(|query| [&b"?"[..], &query].concat()),
            ];
            (path, query).prop_map(|(path, query)| [path, query].concat())
        }

        fn version(odd: u32) -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                12 => Just(b"HTTP/1.1".to_vec()),
                4 => Just(b"HTTP/1.0".to_vec()),
                odd => one_of(&["HTTP/1.2", "HTTP/2.0", "http/1.1", "HTTP/1", "HTTP/1.1 ", ""]),
            ]
        }

        fn space(odd: u32) -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![16 => Just(b" ".to_vec()), odd => one_of(&["  ", "\t", ""])]
        }

        fn line_end(odd: u32) -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                16 => Just(b"\r\n".to_vec()),
                odd => Just(b"\n".to_vec()),
                odd => one_of(&["\r", " \r\n", "\r\r\n", "\n\r", ""]),
            ]
        }

        fn header(odd: u32) -> impl Strategy<Value = Vec<u8>> {
            let name = prop_oneof![
                16 => one_of(&[
                    "Host", "Authorization", "Accept", "Last-Event-ID", "Cookie", "Connection",
                    "Cache-Control", "User-Agent", "X-Forwarded-For", "accept", "HOST",
                ]),
                odd => one_of(&[
                    "Upgrade", "Content-Length", "Transfer-Encoding", "Expect", "Host ", " Host",
                    "",
                ]),
                odd => odd_bytes(odd, 1..10),
            ];
            let separator = prop_oneof![
                16 => Just(b": ".to_vec()),
                odd => one_of(&[":", " : ", ":\t", ":   ", " :"]),
            ];
            let value = prop_oneof![
                16 => odd_bytes(odd, 0..24),
                odd => vec(any::<u8>(), 0..8),
                odd => one_of(&["", " ", "websocket", "100-continue", "close", "5", "x \t"]),
            ];
            (name, separator, value, line_end(odd))
                .prop_map(|(name, separator, value, end)| [name, separator, value, end].concat())
        }

        prop_compose! {
            /// A request head, plausible but for oddities anywhere, each of weight `odd`.
            fn request_head(odd: u32)(
                leading in prop_oneof![16 => Just(Vec::new()), odd => one_of(&["\r\n", "\n", " "])],
                method in method(odd),
                before_target in space(odd),
                target in target(odd),
                before_version in space(odd),
                version in version(odd),
                end_of_line in line_end(odd),
                headers in prop_oneof![
                    16 => vec(header(odd), 0..6),
                    odd => vec(header(odd), 28..36),
                ],
                end_of_head in line_end(odd),
                after in prop_oneof![16 => Just(Vec::new()), odd => odd_bytes(odd, 0..8)],
            ) -> Vec<u8> {
                let mut head = [
                    leading, method, before_target, target, before_version, version, end_of_line,
                ]
                .concat();
                head.extend(headers.into_iter().flatten());
                head.extend(end_of_head);
                head.extend(after);
                head
            }
        }

        /// Heads of every kind: few oddities (a third accepted) to many (hardly any).
        fn any_head() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![request_head(1), request_head(4), request_head(16)]
        }

        /// Heads that the parser accepts, so that each case checks one (from the kinds
        /// where they are not rare).
        fn accepted_head() -> impl Strategy<Value = Vec<u8>> {
            let head = prop_oneof![3 => request_head(1), 1 => request_head(4)];
            head.prop_filter("an accepted head", |head| {
                matches!(
                    parse_sse_request(head, &RouteTable::default()),
                    Head::Sse(..)
                )
            })
        }

        /// What a server makes of a request: compared between our parser and hyper's.
        #[derive(Debug, PartialEq)]
        struct Seen {
            method: Method,
            uri: http::Uri,
            version: Version,
            /// Name and value of every header, sorted: a multiset.
            headers: Vec<(String, Vec<u8>)>,
        }

        fn seen<B>(request: &Request<B>) -> Seen {
            let mut headers: Vec<_> = request
                .headers()
                .iter()
                .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
                .collect();
            headers.sort();
            Seen {
                method: request.method().clone(),
                uri: request.uri().clone(),
                version: request.version(),
                headers,
            }
        }

        /// The request hyper's server makes of `head`, if it makes one.
        fn hyper_sees(head: &[u8]) -> Option<Seen> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let (mut client, server) = tokio::io::duplex(64 * 1024);
                let (sender, receiver) = std::sync::mpsc::channel();
                let service = hyper::service::service_fn(move |request: Request<_>| {
                    let _ = sender.send(seen(&request));
                    async { Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new())) }
                });
                client.write_all(head).await.unwrap();
                client.shutdown().await.unwrap();
                let connection = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(server), service);
                let _ = tokio::time::timeout(Duration::from_secs(5), connection).await;
                receiver.try_recv().ok()
            })
        }

        proptest! {
            #![proptest_config(crate::proptest_config(256))]

            #[test]
            fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..600)) {
                if let Head::Sse(_, head_len) = parse_sse_request(&bytes, &RouteTable::default()) {
                    prop_assert!(head_len <= bytes.len());
                }
            }

            #[test]
            fn request_heads_never_panic(head in any_head()) {
                if let Head::Sse(_, head_len) = parse_sse_request(&head, &RouteTable::default()) {
                    prop_assert!(head_len <= head.len());
                }
            }

            /// Never accepted before it is all there, and waited for (not handed to hyper)
            /// once its request line is.
            #[test]
            fn a_strict_prefix_of_an_accepted_head_is_never_accepted(head in accepted_head()) {
                if let Head::Sse(_, head_len) = parse_sse_request(&head, &RouteTable::default()) {
                    let start = head.iter().position(|b| !matches!(b, b'\r' | b'\n'));
                    let start = start.unwrap_or(head.len());
                    let line = head[start..].iter().position(|&b| b == b'\n');
                    let line_end = start + line.map_or(head.len(), |end| end + 1);
                    for cut in 0..head_len {
                        let prefix = &head[..cut];
                        match parse_sse_request(prefix, &RouteTable::default()) {
                            Head::Sse(..) => prop_assert!(
                                false,
                                "{:?} accepted, cut at {cut} of {head_len}",
                                String::from_utf8_lossy(prefix)
                            ),
                            Head::Other => prop_assert!(
                                cut < line_end,
                                "{:?} not waited for, cut at {cut} of {head_len}",
                                String::from_utf8_lossy(prefix)
                            ),
                            Head::Partial => {}
                        }
                    }
                }
            }

            #[test]
            fn an_accepted_head_is_the_request_hyper_sees(head in accepted_head()) {
                if let Head::Sse(request, head_len) = parse_sse_request(&head, &RouteTable::default()) {
                    let ours = seen(&request);
                    let hypers = hyper_sees(&head[..head_len]);
                    prop_assert_eq!(
                        Some(ours),
                        hypers,
                        "{:?}",
                        String::from_utf8_lossy(&head[..head_len])
                    );
                }
            }
        }
    }
}
