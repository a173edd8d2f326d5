//! Server-Sent-Events streams that [`serve`](crate::serve()) writes itself, without hyper.
//!
//! An SSE stream lives for hours and hyper keeps an 8 KiB read buffer and an 8 KiB write
//! buffer for every connection it serves, so a stream served through hyper costs about
//! 14 KiB of memory while idle. When the first request on a new connection is a plain
//! `GET` of an SSE route and its head has fully arrived, `serve` reads that head itself,
//! calls the same service with it, and, when the answer is a `text/event-stream`, writes
//! the head and then the events straight to the socket, every ready event in one `writev`.
//! Any other answer (a 401, say) is written whole and the connection closed. Everything
//! else (other requests, a head that arrives in pieces, a connection that already served a
//! request) goes through hyper as usual, with the same result for the client.
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
use http_body_util::{BodyExt, Empty, Limited};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;
use tower::{Service, ServiceExt};

use dualcast_layers::error::http_date;

use crate::connection::DisconnectReason;
use crate::sse::SseControl;
use crate::write_batch::WriteBatch;

/// Most bytes of a request head looked at; a longer head goes to hyper.
const MAX_HEAD: usize = 4096;
/// Most headers in a request taken here; more go to hyper.
const MAX_HEADERS: usize = 32;
/// Most body bytes of a non-stream answer written here.
const MAX_ANSWER: usize = 64 * 1024;

/// What the first bytes of a connection are.
pub(crate) enum FirstRequest {
    /// A complete plain `GET` of an SSE route: the request and the length of its head.
    Sse(Box<Request<Empty<Bytes>>>, usize),
    /// Anything else, for hyper; nothing was consumed.
    Other,
    /// Nothing arrived in time, or the socket failed: drop the connection.
    Nothing,
}

/// Looks at (without consuming) the first request on `stream`, for at most `timeout`.
pub(crate) async fn first_request(stream: &TcpStream, timeout: Duration) -> FirstRequest {
    tokio::time::timeout(timeout, peek_first_request(stream))
        .await
        .unwrap_or(FirstRequest::Nothing)
}

async fn peek_first_request(stream: &TcpStream) -> FirstRequest {
    if stream.readable().await.is_err() {
        return FirstRequest::Nothing;
    }
    let mut buffer = vec![0u8; MAX_HEAD];
    let mut pause = Duration::from_millis(1);
    loop {
        let read = match stream.peek(&mut buffer).await {
            Ok(0) | Err(_) => return FirstRequest::Nothing,
            Ok(read) => read,
        };
        match parse_sse_request(&buffer[..read]) {
            Head::Sse(request, head_len) => return FirstRequest::Sse(request, head_len),
            Head::Other => return FirstRequest::Other,
            // A head split over several TCP segments: a peek cannot wait for more bytes,
            // so look again shortly (the caller bounds the whole wait).
            Head::Partial if read < MAX_HEAD => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            Head::Partial => return FirstRequest::Other,
        }
    }
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

/// Classifies the bytes of a request head.
fn parse_sse_request(bytes: &[u8]) -> Head {
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
            path == "/api/sse"
                || path
                    .strip_prefix("/sse/")
                    .is_some_and(|player| !player.is_empty() && !player.contains('/'))
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

/// Serves the request `serve` took from `stream` (its head is still in the socket and is
/// consumed here), answering on the socket directly.
pub(crate) async fn serve_sse<S, B>(
    mut stream: TcpStream,
    request: Box<Request<Empty<Bytes>>>,
    head_len: usize,
    service: S,
) where
    S: Service<Request<Empty<Bytes>>, Response = Response<B>, Error = Infallible>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut head = vec![0u8; head_len];
    if tokio::io::AsyncReadExt::read_exact(&mut stream, &mut head)
        .await
        .is_err()
    {
        return;
    }
    drop(head);
    let Ok(response) = service.oneshot(*request).await;
    let is_stream = response.status() == http::StatusCode::OK
        && response
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    let (parts, body) = response.into_parts();
    if !is_stream {
        let status = parts.status.as_u16();
        let bodiless = status < 200 || status == 204 || status == 304;
        let body = match Limited::new(body, MAX_ANSWER).collect().await {
            Ok(collected) if !bodiless => collected.to_bytes(),
            _ => Bytes::new(),
        };
        let mut head = response_head(&parts);
        if !bodiless {
            head.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
        }
        head.extend_from_slice(b"\r\n");
        let _ = stream.write_all(&head).await;
        let _ = stream.write_all(&body).await;
        let _ = stream.shutdown().await;
        return;
    }
    let control = parts.extensions.get::<SseControl>().cloned();
    let mut head = response_head(&parts);
    head.extend_from_slice(b"\r\n");
    if stream.write_all(&head).await.is_err() {
        return;
    }
    drop(head);
    let timer = control
        .as_ref()
        .and_then(|control| control.expires_at)
        .map(|at| Box::pin(tokio::time::sleep_until(at)));
    let mut pump = Pump {
        stream,
        body: Box::pin(body),
        control,
        timer,
        ending: false,
        batch: WriteBatch::new(|bytes: &Bytes| bytes.as_ref()),
        ended: false,
    };
    // A task of its own, holding only the stream and the body: the request, the service
    // and this function's other state are freed now, not kept for the stream's life.
    tokio::spawn(async move {
        poll_fn(|cx| pump.poll(cx)).await;
        let _ = pump.stream.shutdown().await;
    });
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
struct Pump<B> {
    stream: TcpStream,
    body: Pin<Box<B>>,
    /// The connection's end signal, watched even while a write is blocked.
    control: Option<SseControl>,
    /// The credential's expiry; once the connection ends, the deadline of its last writes.
    timer: Option<Pin<Box<Sleep>>>,
    ending: bool,
    /// Events being written.
    batch: WriteBatch<Bytes>,
    ended: bool,
}

impl<B> Pump<B>
where
    B: Body<Data = Bytes>,
{
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

    /// Watches the connection's end and the credential's expiry, which the body only sees
    /// when it is polled, and it is not while a write is blocked. Once the connection
    /// ends, its last events get [`CLOSE_TIMEOUT`] to go out; `true` when that is over.
    fn poll_ending(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(control) = &self.control else {
            return false;
        };
        if !self.ending {
            let expired = self
                .timer
                .as_mut()
                .is_some_and(|timer| timer.as_mut().poll(cx).is_ready());
            if expired {
                control.end.end(DisconnectReason::AuthExpired);
            }
            if expired || control.end.poll_end(cx).is_ready() {
                self.ending = true;
                self.timer = Some(Box::pin(tokio::time::sleep(CLOSE_TIMEOUT)));
            }
        }
        self.ending
            && self
                .timer
                .as_mut()
                .is_some_and(|timer| timer.as_mut().poll(cx).is_ready())
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

    #[test]
    fn only_complete_plain_gets_of_sse_routes_are_taken() {
        let taken = |head: &str| match parse_sse_request(head.as_bytes()) {
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
        let partial = |head: &str| matches!(parse_sse_request(head.as_bytes()), Head::Partial);
        assert!(partial("GET /sse/alice HTTP/1.1\r\nHost: x\r\nAuthoriz"));
        assert!(partial("GET /api/sse HTTP/1.1\r\n"));
        assert!(!partial("GET /api/ws HTTP/1.1\r\n"));
        assert!(!partial("POST /api/sse HTTP/1.1\r\n"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_split_over_segments_is_waited_for() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
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
        let first = first_request(&server, Duration::from_secs(10)).await;
        assert!(
            matches!(first, FirstRequest::Sse(_, 61)),
            "the whole head was waited for"
        );
        let _client = rest.await.unwrap();
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
}
