//! Load generator for a running dualcast server, through its public surface only: the
//! WebSocket and SSE endpoints and the HTTP publishing API, with tokens minted from
//! `DUALCAST_JWT_SECRET`.
//!
//! ```text
//! DUALCAST_JWT_SECRET=… cargo run --release --example loadgen -- MODE [OPTIONS]
//!
//! modes:
//!   idle     open N connections and hold them: server memory per connection, connect rate
//!   connect  open N WebSockets as fast as possible: handshakes/s and latency percentiles
//!   fanout   N subscribers in one room, M publishes: deliveries/s, delivery latency,
//!            lost messages, server CPU-seconds per million deliveries
//!
//! options (defaults in brackets):
//!   --url URL            server [http://127.0.0.1:8000]
//!   --subscribe-urls U,U servers the connections are spread over, player i on the i % n-th
//!                        (room membership and publishes still go through --url) [--url]
//!   --server-pid PID,PID the servers' pids, for memory and CPU from /proc, summed; with
//!                        several, one per --subscribe-urls entry, in order, and fanout
//!                        reports each server's own figures too [none: not measured]
//!   --kind ws|sse|both   connections per player [ws]
//!   --connections N      connections (idle, connect) or subscribing players (fanout) [1000]
//!   --concurrency C      handshakes in flight [128]
//!   --publishes M        publishes (fanout) [200]
//!   --in-flight K        publish requests in flight, without --rate [4]
//!   --window W           publishes not yet received by the slowest subscriber, at most;
//!                        keep it under the server's outbox capacity (256) [128]
//!   --rate R             publishes per second instead of as fast as possible [off]
//!   --payload-bytes B    filler in each published message [64]
//!   --settle-ms MS       pause before reading memory after connecting (idle) [1000]
//!   --hold-secs S        then keep the connections open S seconds, answering pings, and
//!                        measure the server's CPU while they idle (idle) [0]
//!   --timeout-secs T     bound on the whole run [120]
//!   --label NAME         name of the run in the JSON line [the mode]
//! ```
//!
//! Prints a table for people and one JSON line (starting with `{`) for scripts. Exits
//! non-zero on any failed connection, lost message or time-out.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dualcast::dualcast_layers::jwt::{issue_hs256, Claims};
use dualcast::Role;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message as WsMessage;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Client connections per loopback source address, to stay clear of ephemeral-port limits.
const PER_SOURCE_ADDRESS: usize = 20_000;

/// The second and third octets of this run's source addresses: 127.A.B.x.
static SOURCE_PREFIX: std::sync::LazyLock<[u8; 2]> = std::sync::LazyLock::new(|| {
    let mut bytes = [0u8; 2];
    let _ = getrandom::fill(&mut bytes);
    [bytes[0].max(1), bytes[1]]
});

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ws,
    Sse,
    Both,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::Ws => "ws",
            Self::Sse => "sse",
            Self::Both => "both",
        }
    }
}

#[derive(Debug, Clone)]
struct Options {
    mode: String,
    server: SocketAddr,
    /// Where the connections go: player i to `subscribe[i % len]`.
    subscribe: Vec<SocketAddr>,
    /// One per server, in `subscribe` order when there are several; empty: not measured.
    server_pids: Vec<u32>,
    kind: Kind,
    connections: usize,
    concurrency: usize,
    publishes: usize,
    in_flight: usize,
    window: usize,
    rate: Option<f64>,
    payload_bytes: usize,
    settle: Duration,
    hold: Duration,
    timeout: Duration,
    label: String,
    secret: Vec<u8>,
}

fn main() -> ExitCode {
    let options = match parse_options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("loadgen: {message}\n(see the top of examples/loadgen.rs for usage)");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("loadgen: cannot start a runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let timeout = options.timeout;
    let result = runtime.block_on(async { tokio::time::timeout(timeout, run(options)).await });
    match result {
        Ok(Ok(true)) => ExitCode::SUCCESS,
        Ok(Ok(false)) => ExitCode::FAILURE,
        Ok(Err(error)) => {
            eprintln!("loadgen: {error}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!(
                "loadgen: the run took longer than --timeout-secs {}",
                timeout.as_secs()
            );
            ExitCode::FAILURE
        }
    }
}

fn parse_options() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let mode = args
        .next()
        .ok_or("a mode is required: idle, connect or fanout")?;
    if !["idle", "connect", "fanout"].contains(&mode.as_str()) {
        return Err(format!(
            "unknown mode {mode:?}: use idle, connect or fanout"
        ));
    }
    let mut values = HashMap::new();
    while let Some(flag) = args.next() {
        let name = flag
            .strip_prefix("--")
            .ok_or_else(|| format!("expected an --option, got {flag:?}"))?;
        let value = args
            .next()
            .ok_or_else(|| format!("--{name} needs a value"))?;
        values.insert(name.to_owned(), value);
    }
    let take = |name: &str, default: &str| {
        values
            .get(name)
            .cloned()
            .unwrap_or_else(|| default.to_owned())
    };
    let number = |name: &str, default: &str| -> Result<usize, String> {
        take(name, default)
            .parse()
            .map_err(|_| format!("--{name} must be a whole number"))
    };
    let server = server_address("url", &take("url", "http://127.0.0.1:8000"))?;
    let subscribe = match values.get("subscribe-urls") {
        Some(urls) => urls
            .split(',')
            .map(|url| server_address("subscribe-urls", url.trim()))
            .collect::<Result<Vec<_>, _>>()?,
        None => vec![server],
    };
    let kind = match take("kind", "ws").as_str() {
        "ws" => Kind::Ws,
        "sse" => Kind::Sse,
        "both" => Kind::Both,
        other => return Err(format!("--kind must be ws, sse or both, got {other:?}")),
    };
    let rate = match values.get("rate") {
        Some(rate) => Some(
            rate.parse::<f64>()
                .ok()
                .filter(|r| *r > 0.0)
                .ok_or("--rate must be a positive number")?,
        ),
        None => None,
    };
    let server_pids = match values.get("server-pid") {
        Some(pids) => pids
            .split(',')
            .map(|pid| pid.trim().parse())
            .collect::<Result<Vec<u32>, _>>()
            .map_err(|_| "--server-pid must be a number or a comma-separated list of them")?,
        None => Vec::new(),
    };
    if server_pids.len() > 1 && server_pids.len() != subscribe.len() {
        return Err(format!(
            "--server-pid names {} servers but --subscribe-urls {}: give one pid per server",
            server_pids.len(),
            subscribe.len()
        ));
    }
    let secret =
        std::env::var("DUALCAST_JWT_SECRET").map_err(|_| "DUALCAST_JWT_SECRET must be set")?;
    let options = Options {
        label: take("label", &mode),
        mode,
        server,
        subscribe,
        server_pids,
        kind,
        connections: number("connections", "1000")?.max(1),
        concurrency: number("concurrency", "128")?.max(1),
        publishes: number("publishes", "200")?.max(1),
        in_flight: number("in-flight", "4")?.max(1),
        window: number("window", "128")?.max(1),
        rate,
        payload_bytes: number("payload-bytes", "64")?,
        settle: Duration::from_millis(number("settle-ms", "1000")? as u64),
        hold: Duration::from_secs(number("hold-secs", "0")? as u64),
        timeout: Duration::from_secs(number("timeout-secs", "120")? as u64),
        secret: secret.into_bytes(),
    };
    check_file_limit(&options)?;
    Ok(options)
}

/// The loopback `IP:PORT` of an `http://IP:PORT` URL given to `--{flag}`.
fn server_address(flag: &str, url: &str) -> Result<SocketAddr, String> {
    let host = url
        .strip_prefix("http://")
        .ok_or(format!("--{flag} must start with http://"))?
        .trim_end_matches('/');
    let server: SocketAddr = host
        .parse()
        .map_err(|_| format!("--{flag} must be http://IP:PORT, got {url:?}"))?;
    if !server.ip().is_loopback() {
        return Err("the load generator only talks to loopback addresses".into());
    }
    Ok(server)
}

/// Refuses a run that would exceed this process's open-file limit.
fn check_file_limit(options: &Options) -> Result<(), String> {
    let per_player = if options.kind == Kind::Both { 2 } else { 1 };
    let needed = options.connections * per_player + options.in_flight + 64;
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let soft = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .and_then(|line| line.split_whitespace().nth(3))
        .and_then(|value| value.parse::<usize>().ok());
    match soft {
        Some(soft) if soft < needed => {
            Err(format!("this run needs {needed} open files but the limit is {soft}: raise it with `ulimit -n {needed}`"))
        }
        _ => Ok(()),
    }
}

async fn run(options: Options) -> Result<bool, Error> {
    match options.mode.as_str() {
        "idle" => idle(&options).await,
        "connect" => connect(&options).await,
        _ => fanout(&options).await,
    }
}

// ---------------------------------------------------------------------------------------
// Server process readings.

/// The servers' resident memory in KiB, summed; `None` without pids or when one is gone.
fn server_rss_kib(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().try_fold(0, |sum, pid| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
        Some(sum + line.split_whitespace().nth(1)?.parse::<u64>().ok()?)
    })
}

/// The servers' user + system CPU time in seconds, summed; `None` without pids or when one
/// is gone.
fn server_cpu_seconds(pids: &[u32]) -> Option<f64> {
    if pids.is_empty() {
        return None;
    }
    let ticks = clock_ticks_per_second();
    pids.iter().try_fold(0.0, |sum, pid| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name, which is in parentheses and may hold spaces.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        Some(sum + (utime + stime) as f64 / ticks)
    })
}

fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100.0)
}

// ---------------------------------------------------------------------------------------
// Connections.

fn token(options: &Options, player: &str, role: Role) -> Result<String, Error> {
    Ok(issue_hs256(
        &options.secret,
        &Claims::new(player, role, 3600),
    )?)
}

/// A TCP connection to the server from a loopback source address of this run's own,
/// 127.A.B.(1 + index / 20,000): a run never meets ports left in TIME_WAIT by earlier runs,
/// and no address carries more than 20,000 connections.
async fn tcp(server: SocketAddr, index: usize) -> Result<TcpStream, Error> {
    let socket = TcpSocket::new_v4()?;
    let [a, b] = *SOURCE_PREFIX;
    let host = 1 + (index / PER_SOURCE_ADDRESS).min(253) as u8;
    socket.bind(SocketAddr::from((Ipv4Addr::new(127, a, b, host), 0)))?;
    let stream = socket.connect(server).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

type WsClient = tokio_tungstenite::WebSocketStream<TcpStream>;

async fn open_ws(server: SocketAddr, token: &str, index: usize) -> Result<WsClient, Error> {
    let mut request = format!("ws://{server}/api/ws").into_client_request()?;
    request.headers_mut().insert(
        "sec-websocket-protocol",
        format!("bearer, {token}").parse()?,
    );
    let stream = tcp(server, index).await?;
    // Small client buffers: the load generator holds thousands of connections too.
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (socket, _) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await?;
    Ok(socket)
}

/// An SSE client on a plain socket: sends the request, checks the head, then parses the
/// events in place (chunked or close-delimited), without a copy per event.
struct SseClient {
    stream: TcpStream,
    /// Bytes read and not yet decoded.
    raw: Vec<u8>,
    /// Decoded stream bytes not yet parsed into events.
    events: Vec<u8>,
    chunked: bool,
    /// Bytes left in the current chunk, and whether its closing CRLF is still due.
    chunk_left: usize,
    chunk_crlf: usize,
}

async fn open_sse(server: SocketAddr, token: &str, index: usize) -> Result<SseClient, Error> {
    let mut stream = tcp(server, index).await?;
    let request = format!(
        "GET /api/sse HTTP/1.1\r\nhost: {server}\r\nauthorization: Bearer {token}\r\naccept: text/event-stream\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::with_capacity(4096);
    let head_end = loop {
        if let Some(end) = find(&raw, b"\r\n\r\n") {
            break end + 4;
        }
        if raw.len() > 16 * 1024 || stream.read_buf(&mut raw).await? == 0 {
            return Err("the SSE response head did not arrive".into());
        }
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
    if !head.starts_with("http/1.1 200") {
        let status = head.lines().next().unwrap_or_default().to_owned();
        return Err(format!("SSE refused: {status}").into());
    }
    let chunked = head.contains("transfer-encoding: chunked");
    raw.drain(..head_end);
    Ok(SseClient {
        stream,
        raw,
        events: Vec::with_capacity(4096),
        chunked,
        chunk_left: 0,
        chunk_crlf: 0,
    })
}

impl SseClient {
    /// Reads what has arrived and calls `on_message` with each event's data; `false` once
    /// the stream ended or `on_message` asked to stop.
    async fn read(&mut self, on_message: &mut impl FnMut(&[u8]) -> bool) -> bool {
        self.raw.reserve(16 * 1024);
        match self.stream.read_buf(&mut self.raw).await {
            Ok(0) | Err(_) => return false,
            Ok(_) => {}
        }
        if !self.dechunk() {
            return false;
        }
        let mut consumed = 0;
        let mut keep_going = true;
        while let Some(end) = find(&self.events[consumed..], b"\n\n") {
            let record = &self.events[consumed..consumed + end];
            consumed += end + 2;
            if let Some(data) = record
                .split(|b| *b == b'\n')
                .find_map(|line| line.strip_prefix(b"data: "))
            {
                if !on_message(data) {
                    keep_going = false;
                    break;
                }
            }
        }
        self.events.drain(..consumed);
        keep_going
    }

    /// Moves the stream bytes in `raw` to `events`, removing chunk framing; `false` at the
    /// last chunk or on bad framing.
    fn dechunk(&mut self) -> bool {
        if !self.chunked {
            self.events.extend_from_slice(&self.raw);
            self.raw.clear();
            return true;
        }
        let mut at = 0;
        loop {
            if self.chunk_left > 0 {
                let take = self.chunk_left.min(self.raw.len() - at);
                self.events.extend_from_slice(&self.raw[at..at + take]);
                at += take;
                self.chunk_left -= take;
                if self.chunk_left > 0 {
                    break;
                }
            }
            if self.chunk_crlf > 0 {
                let take = self.chunk_crlf.min(self.raw.len() - at);
                at += take;
                self.chunk_crlf -= take;
                if self.chunk_crlf > 0 {
                    break;
                }
            }
            let Some(line_end) = find(&self.raw[at..], b"\r\n") else {
                break;
            };
            let size = std::str::from_utf8(&self.raw[at..at + line_end])
                .ok()
                .and_then(|line| {
                    usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16).ok()
                });
            at += line_end + 2;
            match size {
                Some(0) | None => return false,
                Some(size) => {
                    self.chunk_left = size;
                    self.chunk_crlf = 2;
                }
            }
        }
        self.raw.drain(..at);
        true
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

enum Client {
    Ws(Box<WsClient>),
    Sse(Box<SseClient>),
}

impl Client {
    /// Reads what has arrived and calls `on_message` with each message's text; `false`
    /// once the connection ended or `on_message` asked to stop.
    async fn read(&mut self, on_message: &mut impl FnMut(&[u8]) -> bool) -> bool {
        match self {
            Self::Ws(socket) => loop {
                match socket.next().await {
                    Some(Ok(WsMessage::Text(text))) => return on_message(text.as_bytes()),
                    Some(Ok(WsMessage::Close(_)) | Err(_)) | None => return false,
                    Some(Ok(_)) => continue,
                }
            },
            Self::Sse(stream) => stream.read(on_message).await,
        }
    }
}

/// The connections of `players` players (one or two each, per `--kind`), opened with at
/// most `--concurrency` handshakes in flight, player i's to the i % n-th of
/// `--subscribe-urls`. Returns them with each handshake's latency.
async fn open_all(
    options: &Options,
    players: usize,
    name: &str,
) -> Result<(Vec<(usize, Client)>, Vec<Duration>, Duration), Error> {
    let kinds: &[Kind] = match options.kind {
        Kind::Both => &[Kind::Ws, Kind::Sse],
        Kind::Ws => &[Kind::Ws],
        Kind::Sse => &[Kind::Sse],
    };
    let mut jobs = Vec::with_capacity(players * kinds.len());
    for player in 0..players {
        let token = Arc::new(token(options, &format!("{name}-{player}"), Role::Player)?);
        for kind in kinds {
            jobs.push((player, *kind, token.clone()));
        }
    }
    let started = Instant::now();
    let results = futures_util::stream::iter(jobs.into_iter().enumerate())
        .map(|(index, (player, kind, token))| async move {
            let begun = Instant::now();
            let server = options.subscribe[player % options.subscribe.len()];
            let client = match kind {
                Kind::Sse => Client::Sse(Box::new(open_sse(server, &token, index).await?)),
                _ => Client::Ws(Box::new(open_ws(server, &token, index).await?)),
            };
            Ok::<_, Error>((player, client, begun.elapsed()))
        })
        .buffer_unordered(options.concurrency)
        .collect::<Vec<_>>()
        .await;
    let elapsed = started.elapsed();
    let mut clients = Vec::with_capacity(results.len());
    let mut latencies = Vec::with_capacity(results.len());
    for result in results {
        let (player, client, latency) = result?;
        clients.push((player, client));
        latencies.push(latency);
    }
    Ok((clients, latencies, elapsed))
}

fn run_name() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("lg{:x}", nanos ^ std::process::id())
}

// ---------------------------------------------------------------------------------------
// Modes.

async fn idle(options: &Options) -> Result<bool, Error> {
    let before = server_rss_kib(&options.server_pids);
    let (clients, _, elapsed) = open_all(options, options.connections, &run_name()).await?;
    tokio::time::sleep(options.settle).await;
    let after = server_rss_kib(&options.server_pids);
    let connections = clients.len();
    let per_connection = before
        .zip(after)
        .map(|(b, a)| a.saturating_sub(b) as f64 / connections as f64);
    let rate = connections as f64 / elapsed.as_secs_f64();
    let (idle_cpu, still_open) = hold(options, clients).await;

    print_table(&[
        ("mode", format!("idle {}", options.kind.name())),
        (
            "server CPU while idle",
            idle_cpu.map_or("n/a".into(), |c| {
                format!(
                    "{c:.2} s over {} s ({:.2} %), {still_open} connections still open",
                    options.hold.as_secs(),
                    100.0 * c / options.hold.as_secs_f64().max(1e-9)
                )
            }),
        ),
        ("connections", connections.to_string()),
        ("connect time", format!("{:.2} s", elapsed.as_secs_f64())),
        ("connect rate", format!("{rate:.0} /s")),
        (
            "server RSS before",
            before.map_or("n/a".into(), |v| format!("{v} KiB")),
        ),
        (
            "server RSS after",
            after.map_or("n/a".into(), |v| format!("{v} KiB")),
        ),
        (
            "memory per connection",
            per_connection.map_or("n/a".into(), |v| format!("{v:.2} KiB")),
        ),
    ]);
    println!(
        "{}",
        json!({
            "label": options.label, "mode": "idle", "kind": options.kind.name(), "connections": connections,
            "connect_seconds": elapsed.as_secs_f64(), "connects_per_second": rate,
            "rss_before_kib": before, "rss_after_kib": after, "kib_per_connection": per_connection,
            "hold_seconds": options.hold.as_secs(), "server_cpu_s_idle": idle_cpu,
            "open_after_hold": still_open,
        })
    );
    Ok(still_open == connections)
}

/// Keeps `clients` open for `--hold-secs`, each read (so a WebSocket answers the server's
/// pings), and measures the server's CPU meanwhile; then closes them. Returns the CPU
/// seconds (when measured) and how many connections were still open at the end.
async fn hold(options: &Options, clients: Vec<(usize, Client)>) -> (Option<f64>, usize) {
    let total = clients.len();
    if options.hold.is_zero() {
        return (None, total);
    }
    let open = Arc::new(AtomicU64::new(total as u64));
    let cpu_before = server_cpu_seconds(&options.server_pids);
    let readers: Vec<_> = clients
        .into_iter()
        .map(|(_, mut client)| {
            let open = open.clone();
            tokio::spawn(async move {
                while client.read(&mut |_| true).await {}
                open.fetch_sub(1, Ordering::Relaxed);
            })
        })
        .collect();
    tokio::time::sleep(options.hold).await;
    let cpu = cpu_before
        .zip(server_cpu_seconds(&options.server_pids))
        .map(|(b, a)| a - b);
    let still_open = open.load(Ordering::Relaxed) as usize;
    for reader in readers {
        reader.abort();
    }
    (cpu, still_open)
}

async fn connect(options: &Options) -> Result<bool, Error> {
    let options = Options {
        kind: Kind::Ws,
        ..options.clone()
    };
    let cpu_before = server_cpu_seconds(&options.server_pids);
    let (clients, mut latencies, elapsed) =
        open_all(&options, options.connections, &run_name()).await?;
    let cpu = cpu_before
        .zip(server_cpu_seconds(&options.server_pids))
        .map(|(b, a)| a - b);
    drop(clients);
    latencies.sort_unstable();
    let rate = latencies.len() as f64 / elapsed.as_secs_f64();
    let ms = |p: f64| percentile(&latencies, p).as_secs_f64() * 1000.0;
    print_table(&[
        ("mode", "connect ws (JWT in the bearer subprotocol)".into()),
        ("handshakes", latencies.len().to_string()),
        ("in flight", options.concurrency.to_string()),
        ("handshakes per second", format!("{rate:.0}")),
        (
            "latency p50 / p99 / max",
            format!("{:.2} / {:.2} / {:.2} ms", ms(0.5), ms(0.99), ms(1.0)),
        ),
        (
            "server CPU",
            cpu.map_or("n/a".into(), |c| format!("{c:.2} s")),
        ),
    ]);
    println!(
        "{}",
        json!({
            "label": options.label, "mode": "connect", "kind": "ws", "connections": latencies.len(),
            "concurrency": options.concurrency, "connects_per_second": rate,
            "latency_ms": { "p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99), "max": ms(1.0) },
            "server_cpu_seconds": cpu,
        })
    );
    Ok(true)
}

#[derive(Deserialize)]
struct Received {
    data: Probe,
}

#[derive(Deserialize)]
struct Probe {
    seq: u64,
    t: u64,
}

async fn fanout(options: &Options) -> Result<bool, Error> {
    let name = run_name();
    let room = format!("{name}-room");
    let service = token(options, &format!("{name}-publisher"), Role::Service)?;

    // Room membership first, over one keep-alive connection.
    let mut admin = http_client(options.server).await?;
    for player in 0..options.connections {
        let path = format!("/api/rooms/{room}/members/{name}-{player}");
        let (status, _) = call(
            &mut admin,
            options.server,
            "PUT",
            &path,
            &service,
            Bytes::new(),
        )
        .await?;
        if status != http::StatusCode::OK {
            return Err(format!("joining the room answered {status}").into());
        }
    }
    let (clients, _, connect_time) = open_all(options, options.connections, &name).await?;
    let subscribers = clients.len();

    // Each subscriber counts what it receives and records delivery latencies.
    let base = Instant::now();
    let received = Arc::new(AtomicU64::new(0));
    // Woken each time the deliveries of one more whole publish have arrived.
    let progress = Arc::new(tokio::sync::Notify::new());
    // Per subscriber, what it has received: the window bounds the slowest one.
    let counts: Arc<Vec<AtomicU64>> =
        Arc::new((0..subscribers).map(|_| AtomicU64::new(0)).collect());
    // Per server (`--subscribe-urls`), the deliveries to its subscribers.
    let servers = options.subscribe.len();
    let by_server: Arc<Vec<AtomicU64>> =
        Arc::new((0..servers).map(|_| AtomicU64::new(0)).collect());
    let mut readers = Vec::with_capacity(subscribers);
    for (index, (player, mut client)) in clients.into_iter().enumerate() {
        let (received, progress, counts) = (received.clone(), progress.clone(), counts.clone());
        let (server, by_server) = (player % servers, by_server.clone());
        let publishes = options.publishes;
        readers.push(tokio::spawn(async move {
            let mut latencies_us: Vec<u32> = Vec::with_capacity(publishes);
            let mut duplicates = 0u64;
            let mut seen = vec![false; publishes];
            let mut on_message = |text: &[u8]| {
                let Ok(message) = serde_json::from_slice::<Received>(text) else {
                    return true;
                };
                let now = base.elapsed().as_nanos() as u64;
                let latency = now.saturating_sub(message.data.t) / 1000;
                latencies_us.push(u32::try_from(latency).unwrap_or(u32::MAX));
                match seen.get_mut(message.data.seq as usize) {
                    Some(flag) if !*flag => *flag = true,
                    _ => duplicates += 1,
                }
                counts[index].fetch_add(1, Ordering::Relaxed);
                by_server[server].fetch_add(1, Ordering::Relaxed);
                if (received.fetch_add(1, Ordering::Relaxed) + 1) % subscribers as u64 == 0 {
                    progress.notify_waiters();
                }
                latencies_us.len() < publishes
            };
            while client.read(&mut on_message).await {}
            // Done, or the connection ended: either way the publishers stop waiting on this
            // subscriber, and what it missed is counted as lost.
            counts[index].store(u64::MAX, Ordering::Relaxed);
            progress.notify_waiters();
            (server, latencies_us, duplicates)
        }));
    }

    let expected = (subscribers * options.publishes) as u64;
    let padding = "x".repeat(options.payload_bytes);
    let cpu_before = server_cpu_seconds(&options.server_pids);
    let cpu_before_by_server: Vec<_> = options
        .server_pids
        .iter()
        .map(|pid| server_cpu_seconds(&[*pid]))
        .collect();
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut publishers = Vec::new();
    let rate = options.rate;
    let window = options.window as u64;
    for _ in 0..options.in_flight {
        let (server, room, service, padding, next) = (
            options.server,
            room.clone(),
            service.clone(),
            padding.clone(),
            next.clone(),
        );
        let (counts, progress) = (counts.clone(), progress.clone());
        let publishes = options.publishes as u64;
        publishers.push(tokio::spawn(async move {
            let mut client = http_client(server).await?;
            let path = format!("/api/rooms/{room}/messages");
            let mut failures = 0u64;
            loop {
                let seq = next.fetch_add(1, Ordering::Relaxed);
                if seq >= publishes {
                    return Ok::<u64, Error>(failures);
                }
                if let Some(rate) = rate {
                    // Fixed rate: publish `seq` at its own moment, whichever lane sends it.
                    let due = started + Duration::from_secs_f64(seq as f64 / rate);
                    tokio::time::sleep_until(due.into()).await;
                } else {
                    // As fast as possible, but with at most `window` publishes not yet
                    // received by every subscriber: faster, and the server would rightly end
                    // the connections of a load generator that cannot keep up.
                    let need = (seq + 1).saturating_sub(window);
                    loop {
                        let notified = progress.notified();
                        if counts
                            .iter()
                            .all(|count| count.load(Ordering::Relaxed) >= need)
                        {
                            break;
                        }
                        notified.await;
                    }
                }
                let t = base.elapsed().as_nanos() as u64;
                let body = json!({"type": "bench", "data": {"seq": seq, "t": t, "pad": padding}})
                    .to_string();
                let (status, report) = call(
                    &mut client,
                    server,
                    "POST",
                    &path,
                    &service,
                    Bytes::from(body),
                )
                .await?;
                if status != http::StatusCode::OK || report["failed"].as_u64() != Some(0) {
                    failures += 1;
                }
            }
        }));
    }
    let mut publish_failures = 0;
    for publisher in publishers {
        publish_failures += publisher.await??;
    }
    let publish_time = started.elapsed();

    // Wait, bounded, for the last deliveries.
    let deadline = Instant::now() + Duration::from_secs(10);
    while received.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let delivery_time = started.elapsed();
    let cpu = cpu_before
        .zip(server_cpu_seconds(&options.server_pids))
        .map(|(b, a)| a - b);
    let cpu_by_server: Vec<Option<f64>> = options
        .server_pids
        .iter()
        .zip(cpu_before_by_server)
        .map(|(pid, before)| before.zip(server_cpu_seconds(&[*pid])).map(|(b, a)| a - b))
        .collect();
    let delivered = received.load(Ordering::Relaxed);
    let delivered_by_server: Vec<u64> = by_server
        .iter()
        .map(|count| count.load(Ordering::Relaxed))
        .collect();

    let mut latencies: Vec<u32> = Vec::with_capacity(expected as usize);
    let mut latencies_by_server: Vec<Vec<u32>> = vec![Vec::new(); servers];
    let mut duplicates = 0;
    for reader in readers {
        reader.abort();
        if let Ok((server, samples, dups)) = reader.await {
            if servers > 1 {
                latencies_by_server[server].extend_from_slice(&samples);
            }
            latencies.extend(samples);
            duplicates += dups;
        }
    }
    latencies.sort_unstable();
    for samples in &mut latencies_by_server {
        samples.sort_unstable();
    }
    let ms_by_server = |p: f64| -> Vec<f64> {
        latencies_by_server
            .iter()
            .map(|samples| percentile(samples, p) as f64 / 1000.0)
            .collect()
    };
    let cpu_per_million_by_server: Vec<Option<f64>> = cpu_by_server
        .iter()
        .zip(&delivered_by_server)
        .map(|(cpu, delivered)| cpu.map(|c| c / (*delivered).max(1) as f64 * 1e6))
        .collect();
    let lost = expected.saturating_sub(delivered);
    let rate = delivered as f64 / delivery_time.as_secs_f64();
    let ms = |p: f64| percentile(&latencies, p) as f64 / 1000.0;
    let cpu_per_million = cpu.map(|c| c / delivered.max(1) as f64 * 1e6);
    let mode = match options.rate {
        Some(rate) => format!("fanout {} at {rate} publishes/s", options.kind.name()),
        None => format!(
            "fanout {} as fast as possible, {} requests in flight, window {}",
            options.kind.name(),
            options.in_flight,
            options.window
        ),
    };
    let mut rows = vec![
        ("mode", mode),
        ("subscribing players", options.connections.to_string()),
        ("connections", subscribers.to_string()),
        (
            "connect time",
            format!("{:.2} s", connect_time.as_secs_f64()),
        ),
        ("publishes", options.publishes.to_string()),
        (
            "publish time",
            format!("{:.2} s", publish_time.as_secs_f64()),
        ),
        ("deliveries", format!("{delivered} of {expected}")),
        ("deliveries per second", format!("{rate:.0}")),
        (
            "latency p50 / p99 / p99.9",
            format!("{:.2} / {:.2} / {:.2} ms", ms(0.5), ms(0.99), ms(0.999)),
        ),
        ("lost messages", lost.to_string()),
        ("duplicates", duplicates.to_string()),
        ("publish failures", publish_failures.to_string()),
        (
            "server CPU",
            cpu.map_or("n/a".into(), |c| format!("{c:.2} s")),
        ),
        (
            "server CPU-s per 1M deliveries",
            cpu_per_million.map_or("n/a".into(), |c| format!("{c:.3}")),
        ),
    ];
    // Each server's own figures, when there are several.
    let list = |values: Vec<String>| values.join(", ");
    if servers > 1 {
        let (p50, p99) = (ms_by_server(0.5), ms_by_server(0.99));
        rows.push((
            "deliveries by server",
            list(delivered_by_server.iter().map(u64::to_string).collect()),
        ));
        rows.push((
            "latency p50 / p99 by server",
            list(
                p50.iter()
                    .zip(&p99)
                    .map(|(a, b)| format!("{a:.2} / {b:.2} ms"))
                    .collect(),
            ),
        ));
    }
    if cpu_by_server.len() > 1 {
        let show = |values: &[Option<f64>], digits: usize| {
            list(
                values
                    .iter()
                    .map(|v| v.map_or("n/a".into(), |v| format!("{v:.digits$}")))
                    .collect(),
            )
        };
        rows.push(("server CPU by server", show(&cpu_by_server, 2) + " s"));
        rows.push((
            "CPU-s per 1M deliveries by server",
            show(&cpu_per_million_by_server, 3),
        ));
    }
    print_table(&rows);
    let mut line = json!({
        "label": options.label, "mode": "fanout", "kind": options.kind.name(),
        "players": options.connections, "connections": subscribers, "publishes": options.publishes,
        "rate": options.rate, "in_flight": options.in_flight, "window": options.window, "deliveries": delivered, "expected": expected,
        "deliveries_per_second": rate, "lost": lost, "duplicates": duplicates,
        "publish_failures": publish_failures,
        "latency_ms": { "p50": ms(0.5), "p99": ms(0.99), "p999": ms(0.999), "max": ms(1.0) },
        "server_cpu_seconds": cpu, "cpu_seconds_per_million": cpu_per_million,
    });
    if servers > 1 {
        line["deliveries_by_server"] = json!(delivered_by_server);
        line["p50_ms_by_server"] = json!(ms_by_server(0.5));
        line["p99_ms_by_server"] = json!(ms_by_server(0.99));
    }
    if cpu_by_server.len() > 1 {
        line["cpu_s_by_server"] = json!(cpu_by_server);
        line["cpu_seconds_per_million_by_server"] = json!(cpu_per_million_by_server);
    }
    println!("{line}");
    Ok(lost == 0 && duplicates == 0 && publish_failures == 0)
}

// ---------------------------------------------------------------------------------------
// Helpers.

async fn http_client(server: SocketAddr) -> Result<SendRequest<Full<Bytes>>, Error> {
    let stream = TcpStream::connect(server).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

async fn call(
    client: &mut SendRequest<Full<Bytes>>,
    server: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    body: Bytes,
) -> Result<(http::StatusCode, serde_json::Value), Error> {
    client.ready().await?;
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", server.to_string())
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Full::new(body))?;
    let response = client.send_request(request).await?;
    let status = response.status();
    let bytes = response.into_body().collect().await?.to_bytes();
    Ok((
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    ))
}

fn percentile<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

fn print_table(rows: &[(&str, String)]) {
    let width = rows.iter().map(|(name, _)| name.len()).max().unwrap_or(0);
    for (name, value) in rows {
        println!("  {name:<width$}  {value}");
    }
}
