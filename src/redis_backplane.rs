//! [`RedisBackplane`]: several nodes behave as one through one Redis (SPEC §10).

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::streams::StreamReadReply;
use redis::{AsyncConnectionConfig, Client, RedisError, Value};
use tokio::sync::Notify;

use crate::hub::{
    Backplane, BackplaneError, BackplaneState, BackplaneStatus, BoxFuture, LogEntries, LogSink,
};

/// The settings of a [`RedisBackplane`].
#[derive(Clone)]
#[must_use]
pub struct RedisSettings {
    url: String,
    node_id: Option<String>,
    prefix: String,
    log_length: usize,
    heartbeat: Duration,
    node_timeout: Duration,
    command_timeout: Duration,
}

impl fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may hold a password: never shown.
        f.debug_struct("RedisSettings")
            .field("node_id", &self.node_id)
            .field("prefix", &self.prefix)
            .field("log_length", &self.log_length)
            .field("heartbeat", &self.heartbeat)
            .field("node_timeout", &self.node_timeout)
            .field("command_timeout", &self.command_timeout)
            .finish_non_exhaustive()
    }
}

impl RedisSettings {
    /// Settings for the Redis at `url` (`redis://[:password@]host:port[/db]`).
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            node_id: None,
            prefix: "dualcast".into(),
            log_length: 100_000,
            heartbeat: Duration::from_secs(1),
            node_timeout: Duration::from_secs(5),
            command_timeout: Duration::from_secs(2),
        }
    }

    /// This node's id, unique in the cluster (1 to 64 characters of `A-Z a-z 0-9 . _ -`).
    /// Default: random (`n` and 8 hex digits).
    pub fn node_id(mut self, id: impl Into<String>) -> Self {
        self.node_id = Some(id.into());
        self
    }

    /// The prefix of every key, so that several clusters can share one Redis. Default:
    /// `dualcast`.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// About how many entries the log keeps (Redis trims it in whole blocks, so a few more).
    /// Default: 100,000. Minimum: 1,000.
    pub fn log_length(mut self, entries: usize) -> Self {
        self.log_length = entries.max(1_000);
        self
    }

    /// How often a node says it is alive. Default: 1 s. Minimum: 100 ms.
    pub fn heartbeat(mut self, every: Duration) -> Self {
        self.heartbeat = every.max(Duration::from_millis(100));
        self
    }

    /// How long after its last heartbeat a node counts as gone: publishes stop waiting for
    /// its answers. Default: 5 s. Minimum: twice the heartbeat.
    pub fn node_timeout(mut self, timeout: Duration) -> Self {
        self.node_timeout = timeout;
        self
    }

    /// How long a command (an append, a heartbeat) or a connection attempt may take before
    /// Redis counts as unreachable. Default: 2 s. Minimum: 50 ms.
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout.max(Duration::from_millis(50));
        self
    }
}

/// A [`Backplane`] on Redis: several nodes behave as one through one Redis (SPEC §10; cargo
/// feature `redis`; made for Redis 7.0, Debian's).
///
/// The keys, all under one prefix (default `dualcast`):
/// - `{prefix}:log`, a stream: the cluster's log of publishes, room changes and the nodes'
///   announcements, trimmed to about [`RedisSettings::log_length`] entries. Its entry ids
///   are the envelope ids.
/// - `{prefix}:reports:{node}`, a stream per node: the other nodes' answers to its entries.
/// - `{prefix}:nodes`, a sorted set: each node's last heartbeat, in Redis's clock.
///
/// Three tasks per node: a reader (its own connection, blocked in `XREAD` on the log and
/// its reports), a keeper (the command connection: heartbeats, reconnects with backoff),
/// and one that sends the answers to other nodes' entries, pipelined. While Redis is unreachable an append fails at once (the publish is
/// answered `503`), local connections go on, and the keeper reconnects by itself, with
/// backoff from 100 ms to 5 s; each change of state is logged once. The reader resumes
/// from the last entry it applied, so a node misses nothing the log kept. Run Redis with
/// `appendonly yes` so that a Redis restart keeps the log: an entry Redis accepted then
/// reaches every node after the restart.
///
/// ```no_run
/// use dualcast::{Hub, RedisBackplane, RedisSettings};
///
/// # async fn run() -> Result<(), dualcast::BackplaneError> {
/// let backplane = RedisBackplane::connect(
///     RedisSettings::new("redis://127.0.0.1:6379").node_id("node-a"),
/// )
/// .await?;
/// let hub = Hub::builder().backplane(backplane).build();
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisBackplane {
    shared: Arc<Shared>,
}

impl fmt::Debug for RedisBackplane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackplane")
            .field("node", &self.shared.node)
            .field("state", &self.shared.state())
            .finish_non_exhaustive()
    }
}

struct Shared {
    client: Client,
    node: Arc<str>,
    log_key: String,
    nodes_key: String,
    reports_prefix: String,
    settings: RedisSettings,
    /// The command connection; `None` while Redis is unreachable.
    connection: RwLock<Option<MultiplexedConnection>>,
    state: AtomicU8,
    peers: RwLock<Vec<Arc<str>>>,
    /// Wakes the keeper: the connection was lost.
    lost: Notify,
    leaving: AtomicBool,
    /// Where the reader starts, when [`RedisBackplane::connect`] found it.
    start_at: Mutex<Option<(String, String)>>,
    /// Whether the reader knows where it reads from: before that, an append could come
    /// back to every node but this one.
    reading: AtomicBool,
    heartbeat: redis::Script,
    /// Answers to other nodes' entries, for the task that sends them (bounded: past it,
    /// an answer is dropped, and its absence reported by the origin).
    answers: tokio::sync::mpsc::Sender<Answer>,
    answers_out: Mutex<Option<tokio::sync::mpsc::Receiver<Answer>>>,
}

/// An answer to another node's entry: that node's reports stream, and the answer.
type Answer = (String, Vec<u8>);

/// Answers waiting to be sent, at most.
const ANSWERS_WAITING: usize = 1024;

const CONNECTING: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// Says the node is alive (in Redis's clock), forgets long-gone nodes, and lists the live,
/// after `1` when the others had counted this node gone (its last beat too old, or none).
const HEARTBEAT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local last = redis.call('ZSCORE', KEYS[1], ARGV[1])
local gone = 0
if (not last) or (now - tonumber(last) > tonumber(ARGV[2])) then gone = 1 end
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[3]))
local live = redis.call('ZRANGEBYSCORE', KEYS[1], now - tonumber(ARGV[2]), '+inf')
return {gone, live}
";

impl RedisBackplane {
    /// A backplane with `settings`, not connected yet: the hub it is given to connects it,
    /// and reconnects it whenever Redis is lost. Fails on a URL that is not a Redis URL or
    /// a node id outside the allowed characters.
    pub fn new(settings: RedisSettings) -> Result<Self, BackplaneError> {
        let client = Client::open(settings.url.as_str()).map_err(|_| {
            BackplaneError::new("not a Redis URL: redis://[:password@]host:port[/db]")
        })?;
        let node = match &settings.node_id {
            Some(id) => {
                let valid = (1..=64).contains(&id.chars().count())
                    && id
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
                if !valid {
                    return Err(BackplaneError::new(
                        "a node id is 1 to 64 characters of A-Z a-z 0-9 . _ -",
                    ));
                }
                id.clone()
            }
            None => random_node_id(),
        };
        let prefix = &settings.prefix;
        let (answers, answers_out) = tokio::sync::mpsc::channel(ANSWERS_WAITING);
        Ok(Self {
            shared: Arc::new(Shared {
                log_key: format!("{prefix}:log"),
                nodes_key: format!("{prefix}:nodes"),
                reports_prefix: format!("{prefix}:reports:"),
                client,
                node: node.into(),
                settings,
                connection: RwLock::new(None),
                state: AtomicU8::new(CONNECTING),
                peers: RwLock::new(Vec::new()),
                lost: Notify::new(),
                leaving: AtomicBool::new(false),
                start_at: Mutex::new(None),
                reading: AtomicBool::new(false),
                heartbeat: redis::Script::new(HEARTBEAT),
                answers,
                answers_out: Mutex::new(Some(answers_out)),
            }),
        })
    }

    /// A backplane with `settings`, connected once to check that Redis answers: a clear
    /// start-up error rather than a node that begins cut off.
    pub async fn connect(settings: RedisSettings) -> Result<Self, BackplaneError> {
        let backplane = Self::new(settings)?;
        let shared = &backplane.shared;
        let unreachable = |error: RedisError| {
            BackplaneError::new(format!(
                "Redis at {} did not answer: {}",
                shared.address(),
                describe(&error)
            ))
        };
        let mut connection = shared
            .open(shared.settings.command_timeout)
            .await
            .map_err(unreachable)?;
        let start = shared
            .start_positions(&mut connection)
            .await
            .map_err(unreachable)?;
        *shared
            .start_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(start);
        shared.set_connection(Some(connection));
        Ok(backplane)
    }
}

impl Shared {
    fn address(&self) -> String {
        // The address alone: the URL may hold a password.
        self.client.get_connection_info().addr.to_string()
    }

    fn state(&self) -> BackplaneState {
        match self.state.load(Ordering::Acquire) {
            CONNECTING => BackplaneState::Connecting,
            UP => BackplaneState::Up,
            _ => BackplaneState::Down,
        }
    }

    async fn open(&self, response_timeout: Duration) -> Result<MultiplexedConnection, RedisError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(self.settings.command_timeout)
            .set_response_timeout(response_timeout);
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    fn connection(&self) -> Option<MultiplexedConnection> {
        self.connection
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_connection(&self, connection: Option<MultiplexedConnection>) {
        let up = connection.is_some();
        *self
            .connection
            .write()
            .unwrap_or_else(PoisonError::into_inner) = connection;
        let before = self
            .state
            .swap(if up { UP } else { DOWN }, Ordering::AcqRel);
        match (before, up) {
            (UP, false) => tracing::warn!(
                node = &*self.node,
                redis = %self.address(),
                "Redis backplane down: publishes are refused with 503 until it is back; \
                 local connections go on"
            ),
            (CONNECTING | DOWN, true) => tracing::info!(
                node = &*self.node,
                redis = %self.address(),
                "Redis backplane up"
            ),
            _ => {}
        }
    }

    /// A command on the command connection failed: Redis counts as lost until the keeper
    /// reconnects.
    fn failed(&self, error: &RedisError) {
        tracing::debug!(node = &*self.node, error = %describe(error), "Redis command failed");
        if self.state.load(Ordering::Acquire) == UP {
            self.set_connection(None);
        }
        self.lost.notify_one();
    }

    fn reports_key(&self) -> String {
        format!("{}{}", self.reports_prefix, self.node)
    }

    fn forward_timeout(&self) -> Duration {
        self.settings.node_timeout.max(self.settings.heartbeat * 2)
    }

    /// One heartbeat: this node is alive; the live peers (those no longer among them are
    /// gone: `sink` forgets their connections).
    async fn beat(
        &self,
        connection: &mut MultiplexedConnection,
        sink: &LogSink,
    ) -> Result<(), RedisError> {
        let timeout = self.forward_timeout();
        let (counted_gone, live): (i64, Vec<String>) = self
            .heartbeat
            .key(&self.nodes_key)
            .arg(&*self.node)
            .arg(millis(timeout))
            .arg(millis(timeout * 10))
            .invoke_async(connection)
            .await?;
        if counted_gone == 1 {
            // The others forgot this node (or never knew it): its list goes to them.
            sink.rejoined();
        }
        let peers: Vec<Arc<str>> = live
            .into_iter()
            .filter(|node| *node != *self.node)
            .map(Arc::from)
            .collect();
        let before = std::mem::replace(
            &mut *self.peers.write().unwrap_or_else(PoisonError::into_inner),
            peers.clone(),
        );
        for gone in before.iter().filter(|node| !peers.contains(node)) {
            sink.node_gone(gone, timeout + self.settings.heartbeat);
        }
        Ok(())
    }

    /// The keeper: connects, beats, and reconnects with backoff, until the hub is gone.
    async fn keep(self: Arc<Self>, sink: LogSink) {
        let mut backoff = Backoff::default();
        while sink.is_alive() && !self.leaving.load(Ordering::Acquire) {
            let Some(mut connection) = self.connection() else {
                match self.open(self.settings.command_timeout).await {
                    Ok(connection) => {
                        backoff.reset();
                        let was_down = self.state.load(Ordering::Acquire) == DOWN;
                        self.set_connection(Some(connection));
                        if was_down {
                            // The others may have forgotten this node meanwhile.
                            sink.rejoined();
                        }
                    }
                    Err(error) => {
                        if self.state.load(Ordering::Acquire) == CONNECTING {
                            self.state.store(DOWN, Ordering::Release);
                            tracing::warn!(
                                node = &*self.node,
                                redis = %self.address(),
                                error = %describe(&error),
                                "Redis backplane cannot connect: publishes are refused with 503 \
                                 until it can"
                            );
                        }
                        tokio::time::sleep(backoff.next()).await;
                    }
                }
                continue;
            };
            if let Err(error) = self.beat(&mut connection, &sink).await {
                self.failed(&error);
                continue;
            }
            tokio::select! {
                () = tokio::time::sleep(self.settings.heartbeat) => {}
                () = self.lost.notified() => {}
            }
        }
    }

    /// The reader: brings the log and this node's reports to `sink`, in order, from the
    /// log's end when it started, resuming where it stopped after each outage.
    async fn read(self: Arc<Self>, sink: LogSink) {
        let block = Duration::from_secs(1);
        let mut positions = self
            .start_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let mut connection: Option<MultiplexedConnection> = None;
        let mut backoff = Backoff::default();
        let mut cut_off = false;
        while sink.is_alive() {
            let conn = match connection.as_mut() {
                Some(conn) => conn,
                None => match self.open(block + self.settings.command_timeout).await {
                    Ok(conn) => connection.insert(conn),
                    Err(_) => {
                        tokio::time::sleep(backoff.next()).await;
                        continue;
                    }
                },
            };
            let (log_at, reports_at) = match &positions {
                Some(positions) => positions.clone(),
                None => match self.start_positions(conn).await {
                    Ok(start) => positions.insert(start).clone(),
                    Err(_) => {
                        connection = None;
                        tokio::time::sleep(backoff.next()).await;
                        continue;
                    }
                },
            };
            self.reading.store(true, Ordering::Release);
            let reply: Result<Option<StreamReadReply>, RedisError> = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(512)
                .arg("BLOCK")
                .arg(millis(block))
                .arg("STREAMS")
                .arg(&self.log_key)
                .arg(self.reports_key())
                .arg(&log_at)
                .arg(&reports_at)
                .query_async(conn)
                .await;
            let reply = match reply {
                Ok(reply) => reply,
                Err(error) => {
                    if !cut_off {
                        cut_off = true;
                        tracing::warn!(
                            node = &*self.node,
                            error = %describe(&error),
                            "Redis backplane: the cluster's log cannot be read; this node \
                             resumes from its last entry once Redis is back"
                        );
                    }
                    connection = None;
                    tokio::time::sleep(backoff.next()).await;
                    continue;
                }
            };
            if cut_off {
                cut_off = false;
                tracing::info!(node = &*self.node, "Redis backplane: reading the log again");
            }
            backoff.reset();
            let Some(reply) = reply else {
                continue;
            };
            let Some(positions) = positions.as_mut() else {
                continue;
            };
            for stream in reply.keys {
                let is_log = stream.key == self.log_key;
                for entry in stream.ids {
                    let alive = match entry.map.get("e") {
                        Some(Value::BulkString(bytes)) if is_log => sink.apply(&entry.id, bytes),
                        Some(Value::BulkString(bytes)) => sink.answered(bytes),
                        _ => sink.is_alive(),
                    };
                    if is_log {
                        positions.0 = entry.id;
                    } else {
                        positions.1 = entry.id;
                    }
                    if !alive {
                        return;
                    }
                }
            }
        }
    }

    /// Where reading starts: the log's last entry now; this node's reports from scratch
    /// (those of an earlier run of a node of the same id are dropped).
    async fn start_positions(
        &self,
        connection: &mut MultiplexedConnection,
    ) -> Result<(String, String), RedisError> {
        let (last,): (StreamRangeLast,) = redis::pipe()
            .cmd("XREVRANGE")
            .arg(&self.log_key)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .cmd("DEL")
            .arg(self.reports_key())
            .ignore()
            .query_async(connection)
            .await?;
        Ok((last.0.unwrap_or_else(|| "0-0".into()), "0-0".into()))
    }
}

impl Shared {
    /// Sends the answers to other nodes' entries, as many at once as are waiting, until
    /// the hub is gone. A failure drops them (the origin reports them missing) and does
    /// not count Redis lost: the keeper decides that.
    async fn send_answers(
        self: Arc<Self>,
        mut answers: tokio::sync::mpsc::Receiver<Answer>,
        sink: LogSink,
    ) {
        let mut batch = Vec::new();
        while answers.recv_many(&mut batch, 256).await > 0 {
            if !sink.is_alive() {
                return;
            }
            let Some(mut connection) = self.connection() else {
                batch.clear();
                continue;
            };
            let mut pipe = redis::pipe();
            for (key, answer) in batch.drain(..) {
                pipe.cmd("XADD")
                    .arg(&key)
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(1000)
                    .arg("*")
                    .arg("e")
                    .arg(answer)
                    .ignore()
                    .cmd("PEXPIRE")
                    .arg(&key)
                    .arg(60_000)
                    .ignore();
            }
            let sent: Result<(), RedisError> = pipe.query_async(&mut connection).await;
            if let Err(error) = sent {
                tracing::debug!(node = &*self.node, error = %describe(&error), "answers not sent");
            }
        }
    }
}

/// The id of a stream's last entry, from `XREVRANGE … COUNT 1`.
struct StreamRangeLast(Option<String>);

impl redis::FromRedisValue for StreamRangeLast {
    fn from_redis_value(value: &Value) -> redis::RedisResult<Self> {
        let reply: redis::streams::StreamRangeReply =
            redis::FromRedisValue::from_redis_value(value)?;
        Ok(Self(reply.ids.into_iter().next().map(|entry| entry.id)))
    }
}

impl Backplane for RedisBackplane {
    fn node_id(&self) -> &str {
        &self.shared.node
    }

    fn start(&self, sink: LogSink) {
        tokio::spawn(self.shared.clone().keep(sink.clone()));
        tokio::spawn(self.shared.clone().read(sink.clone()));
        let answers = self
            .shared
            .answers_out
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(answers) = answers {
            tokio::spawn(self.shared.clone().send_answers(answers, sink));
        }
    }

    fn append(&self, entry: Vec<u8>) -> BoxFuture<Result<Arc<str>, BackplaneError>> {
        let shared = self.shared.clone();
        Box::pin(async move {
            let Some(mut connection) = shared.connection() else {
                return Err(BackplaneError::new(
                    "the cluster's Redis is unreachable: nothing was published; retry later",
                ));
            };
            if !shared.reading.load(Ordering::Acquire) {
                return Err(BackplaneError::new(
                    "this node has not joined the cluster's log yet: nothing was published; \
                     retry later",
                ));
            }
            let appended: Result<String, RedisError> = redis::cmd("XADD")
                .arg(&shared.log_key)
                .arg("MAXLEN")
                .arg("~")
                .arg(shared.settings.log_length)
                .arg("*")
                .arg("e")
                .arg(entry)
                .query_async(&mut connection)
                .await;
            appended.map(Arc::from).map_err(|error| {
                shared.failed(&error);
                BackplaneError::new(
                    "the cluster's Redis did not take the publish: it may not have been \
                     published; retry later",
                )
            })
        })
    }

    fn answer(&self, origin: &str, answer: Vec<u8>) {
        let key = format!("{}{origin}", self.shared.reports_prefix);
        // Best effort: a full queue drops it, and the origin says the node did not answer.
        let _ = self.shared.answers.try_send((key, answer));
    }

    fn read_from(&self, from: &str, count: usize) -> BoxFuture<Result<LogEntries, BackplaneError>> {
        let shared = self.shared.clone();
        let from = from.to_owned();
        Box::pin(async move {
            let Some(mut connection) = shared.connection() else {
                return Err(BackplaneError::new("the cluster's Redis is unreachable"));
            };
            let range: Result<redis::streams::StreamRangeReply, RedisError> = redis::cmd("XRANGE")
                .arg(&shared.log_key)
                .arg(&from)
                .arg("+")
                .arg("COUNT")
                .arg(count)
                .query_async(&mut connection)
                .await;
            let range = range.map_err(|error| {
                shared.failed(&error);
                BackplaneError::new("the cluster's log could not be read")
            })?;
            Ok(range
                .ids
                .into_iter()
                .filter_map(|entry| match entry.map.get("e") {
                    Some(Value::BulkString(bytes)) => Some((Arc::from(entry.id), bytes.clone())),
                    _ => None,
                })
                .collect())
        })
    }

    fn peers(&self) -> Vec<Arc<str>> {
        self.shared
            .peers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn status(&self) -> BackplaneStatus {
        BackplaneStatus {
            node: self.shared.node.clone(),
            state: self.shared.state(),
            peers: self
                .shared
                .peers
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .len(),
        }
    }

    fn leave(&self) {
        self.shared.leaving.store(true, Ordering::Release);
        let (Some(mut connection), Ok(runtime)) = (
            self.shared.connection(),
            tokio::runtime::Handle::try_current(),
        ) else {
            return;
        };
        let shared = self.shared.clone();
        runtime.spawn(async move {
            let _: Result<(), RedisError> = redis::cmd("ZREM")
                .arg(&shared.nodes_key)
                .arg(&*shared.node)
                .query_async(&mut connection)
                .await;
        });
    }
}

/// Waits between reconnection attempts: 100 ms, doubling, at most 5 s.
#[derive(Default)]
struct Backoff {
    attempts: u32,
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let wait = Duration::from_millis(100).saturating_mul(1 << self.attempts.min(6));
        self.attempts = self.attempts.saturating_add(1);
        wait.min(Duration::from_secs(5))
    }

    fn reset(&mut self) {
        self.attempts = 0;
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// An error for a log line: what the client or Redis said (never the URL, which the
/// client's errors do not hold).
fn describe(error: &RedisError) -> String {
    error.to_string()
}

fn random_node_id() -> String {
    let mut bytes = [0u8; 4];
    let _ = getrandom::fill(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("n{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_five_seconds_and_resets() {
        let mut backoff = Backoff::default();
        let waits: Vec<u64> = (0..8).map(|_| millis(backoff.next())).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        backoff.reset();
        assert_eq!(millis(backoff.next()), 100);
    }

    #[test]
    fn settings_never_show_the_url_and_node_ids_are_checked() {
        let settings = RedisSettings::new("redis://:hunter2-secret@127.0.0.1:6379");
        assert!(!format!("{settings:?}").contains("hunter2"));
        let error = RedisBackplane::new(settings.clone().node_id("bad id!")).unwrap_err();
        assert!(error.to_string().contains("node id"));
        let error = RedisBackplane::new(RedisSettings::new("http://x")).unwrap_err();
        assert!(!error.to_string().contains("http://x"), "{error}");
        let backplane = RedisBackplane::new(settings).unwrap();
        assert!(backplane.node_id().starts_with('n'));
        assert!(!format!("{backplane:?}").contains("hunter2"));
    }
}
