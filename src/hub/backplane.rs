//! The seam between the hub and a cluster (SPEC §10): a [`Backplane`] carries one ordered
//! log of publishes and room changes to every node, and each node applies it to its own
//! connections in the log's order, so every node sends the same envelope (one id, the
//! log's, and the same bytes) in the same order.
//!
//! Without a backplane (the default) the hub is the whole system and nothing here runs. With
//! one, [`Hub::publish`] and [`Hub::set_room_member`] append to the log and wait until this
//! node has applied the entry (and, for a publish, for the other nodes' counts within
//! [`HubSettings::report_wait`](super::HubSettings::report_wait)); the synchronous
//! [`Hub::send_to_player`] and its kin stay local to this node.
//!
//! Each node also announces in the log what the others must know of its connections
//! (opened, closed, their sessions, logouts, acknowledgements; `cluster`), so every node
//! holds the cluster's connections of each player beside its own.
//!
//! The entries are JSON with short keys, written and read only here, so that every
//! backplane carries opaque bytes: `{"o":origin node,"r":request,"k":kind,...}`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::delivery::{NodeDelivery, Publish};
use super::{ClusterFigures, DeliveryReport, Hub, Inner};
use crate::message::{unix_millis, Frame, Message};

/// A boxed, sendable future: what a [`Backplane`] returns for an append.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Entries of the log with their ids, in order: what [`Backplane::read_from`] reads.
pub type LogEntries = Vec<(Arc<str>, Vec<u8>)>;

/// How several nodes share one log (SPEC §10): the hub appends entries and the backplane
/// brings every entry, its own included, to every node's [`LogSink`] in one order.
///
/// `RedisBackplane` (cargo feature `redis`) is the one this crate
/// ships. An implementation must:
/// - give each appended entry an id unique in the cluster, the same on every node, and
///   growing in the log's order (it becomes the envelope id clients resume from);
/// - hand every entry to [`LogSink::apply`] exactly once per node, in the log's order,
///   entries appended by this node included (its own connections get them that way);
/// - fail an append it cannot make durable in the log, rather than accept and lose it.
pub trait Backplane: Send + Sync + 'static {
    /// This node's id, unique in the cluster.
    fn node_id(&self) -> &str;

    /// Starts bringing the log to `sink`, from the log's current end. Called once, when a
    /// hub is built with this backplane.
    fn start(&self, sink: LogSink);

    /// Appends `entry` to the log; resolves with the id the log gave it, or an error when the
    /// log could not take it (the caller answers `503`).
    fn append(&self, entry: Vec<u8>) -> BoxFuture<Result<Arc<str>, BackplaneError>>;

    /// Sends `answer` (what this node's connections got of an entry appended by `origin`)
    /// to node `origin`, whose [`LogSink::answered`] takes it. Best effort: an answer that
    /// cannot be sent is reported by its absence.
    fn answer(&self, origin: &str, answer: Vec<u8>);

    /// The other nodes seen alive lately, whose answers a publish waits for.
    fn peers(&self) -> Vec<Arc<str>>;

    /// Whether the backplane can append now, for `/healthz`.
    fn status(&self) -> BackplaneStatus;

    /// Leaves the cluster (the hub is shutting down): other nodes stop waiting for this
    /// one's answers. Default: nothing.
    fn leave(&self) {}

    /// Up to `count` entries of the log from entry `from` on (itself first, if the log
    /// still holds it), in order: what a client resuming on a node that did not see its
    /// messages is sent. Default: an error (a resume this node cannot serve from its own
    /// buffer is then answered `complete: false`).
    fn read_from(&self, from: &str, count: usize) -> BoxFuture<Result<LogEntries, BackplaneError>> {
        let _ = (from, count);
        Box::pin(async {
            Err(BackplaneError::new(
                "this backplane cannot read the log back",
            ))
        })
    }
}

/// A log id's place in the log's order (`1764816000000-3`: milliseconds, then sequence);
/// `None` for an id that is not the log's.
pub(super) fn log_order(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// A backplane that could not do what was asked.
#[derive(Debug, Clone)]
pub struct BackplaneError {
    message: String,
}

impl BackplaneError {
    /// An error saying `message` (no secret in it: it reaches logs and error bodies).
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

impl fmt::Display for BackplaneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for BackplaneError {}

/// Whether a backplane can carry publishes now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum BackplaneState {
    /// Not connected yet, since the start.
    Connecting,
    /// Connected: publishes reach the cluster.
    Up,
    /// Lost: publishes are refused with `503` until it is back; local connections go on.
    Down,
}

impl BackplaneState {
    /// The stable label: `connecting`, `up` or `down`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Up => "up",
            Self::Down => "down",
        }
    }
}

/// A backplane's state, as `/healthz` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct BackplaneStatus {
    /// This node's id.
    #[schema(value_type = String)]
    pub node: Arc<str>,
    /// Whether publishes reach the cluster now.
    pub state: BackplaneState,
    /// Other nodes seen alive lately.
    pub peers: usize,
}

/// Who a [`Hub::publish`] is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience<'a> {
    /// Every connection of one player.
    Player(&'a str),
    /// Every member of a room, except the players in `exclude`.
    Room {
        /// The room.
        room: &'a str,
        /// Players skipped.
        exclude: &'a [&'a str],
    },
    /// Every player, except the players in `exclude`.
    Everyone {
        /// Players skipped.
        exclude: &'a [&'a str],
    },
}

/// Where a backplane hands the log to its hub. Holds the hub weakly: once the hub is gone,
/// [`apply`](Self::apply) returns false and the backplane stops.
#[derive(Clone)]
pub struct LogSink {
    hub: Weak<Inner>,
}

impl fmt::Debug for LogSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogSink")
            .field("hub_alive", &(self.hub.strong_count() > 0))
            .finish()
    }
}

impl LogSink {
    /// Applies the log's entry `id` to this node's connections. False once the hub is gone.
    pub fn apply(&self, id: &str, entry: &[u8]) -> bool {
        let Some(inner) = self.hub.upgrade() else {
            return false;
        };
        Hub { inner }.apply_entry(id, entry);
        true
    }

    /// Takes another node's answer to an entry this node appended. False once the hub is gone.
    pub fn answered(&self, answer: &[u8]) -> bool {
        let Some(inner) = self.hub.upgrade() else {
            return false;
        };
        Hub { inner }.take_answer(answer);
        true
    }

    /// Node `node` stopped beating, and was silent for up to `silent_for`: this node
    /// forgets its connections (and their players' presence with them); what it recorded
    /// for those players in that time is queued for them, since it may not have reached
    /// them (a client that got it already recognizes the envelope id). False once the hub
    /// is gone.
    pub fn node_gone(&self, node: &str, silent_for: Duration) -> bool {
        let Some(inner) = self.hub.upgrade() else {
            return false;
        };
        Hub { inner }.node_gone(node, silent_for);
        true
    }

    /// This node is back in touch with the cluster after an outage (the others may have
    /// forgotten it): it sends its list of connections, and asks for theirs. False once
    /// the hub is gone.
    pub fn rejoined(&self) -> bool {
        let Some(inner) = self.hub.upgrade() else {
            return false;
        };
        if let Some(announcer) = inner.announcer.as_ref() {
            announcer.list_due(true);
        }
        true
    }

    /// Whether the hub still exists.
    #[must_use]
    pub fn is_alive(&self) -> bool {
        self.hub.strong_count() > 0
    }
}

/// The publishes and membership changes of this node waiting for their entries to come back
/// from the log, by request number.
#[derive(Default)]
pub(super) struct Waiting {
    waiters: Mutex<HashMap<u64, mpsc::UnboundedSender<Answer>>>,
}

impl Waiting {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, mpsc::UnboundedSender<Answer>>> {
        self.waiters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn send(&self, request: u64, answer: Answer) {
        if let Some(waiter) = self.lock().get(&request) {
            let _ = waiter.send(answer);
        }
    }
}

/// Removes its waiter when the publish is over (or its future dropped).
struct WaiterGuard<'a> {
    waiting: &'a Waiting,
    request: u64,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        self.waiting.lock().remove(&self.request);
    }
}

/// What came back for a waiting request.
enum Answer {
    /// This node applied the entry.
    Local(Applied),
    /// Another node's counts.
    Remote(NodeDelivery),
    /// Another node's figures.
    Figures(Arc<str>, super::figures::NodeFigures),
}

/// What applying one entry did here.
enum Applied {
    Delivery(DeliveryReport),
    Membership(bool),
}

/// A log entry. Short keys: every entry crosses the network once per node.
#[derive(Serialize, Deserialize, Default)]
pub(super) struct Entry<'a> {
    /// The node that appended it.
    #[serde(borrow)]
    pub(super) o: Cow<'a, str>,
    /// The origin's request number (0: nobody waits for it).
    #[serde(default)]
    pub(super) r: u64,
    /// `p` player, `r` room, `g` everyone, `j` join, `l` leave; and what nodes announce
    /// (see `cluster`): `c+` and `c-` a connection opened and closed, `s` a session
    /// begun, `o` a logout, `n` every connection of the node.
    #[serde(borrow)]
    pub(super) k: Cow<'a, str>,
    /// The player (`p`, `j`, `l`, `c+`, `c-`, `s`, `o`) or the room (`r`).
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub(super) t: Option<Cow<'a, str>>,
    /// The room of a join or leave.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub(super) room: Option<Cow<'a, str>>,
    /// Players a broadcast skips.
    #[serde(borrow, default, skip_serializing_if = "Vec::is_empty")]
    pub(super) x: Vec<Cow<'a, str>>,
    /// The message of a publish.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub(super) m: Option<WireMessage<'a>>,
    /// The connection of `c+` and `c-`.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub(super) c: Option<WireConnection<'a>>,
    /// The session of `s`.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub(super) s: Option<Cow<'a, str>>,
    /// `s`: begun through the session API. `n`: the node (re)joins, so every other node
    /// announces its own connections in turn.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(super) f: bool,
    /// `s`: a session minted for an unnamed connection, which joins rather than takes over.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(super) u: bool,
    /// Every connection of the node (`n`).
    #[serde(borrow, default, skip_serializing_if = "Vec::is_empty")]
    pub(super) n: Vec<WireConnection<'a>>,
    /// `n`: what the node knows of its players' state (sessions, rooms), which a node
    /// that knows nothing of a player (it started later) takes.
    #[serde(borrow, default, skip_serializing_if = "Vec::is_empty")]
    pub(super) pl: Vec<WirePlayer<'a>>,
    /// `c-`: the last log entry its node had applied when the connection left it; what
    /// came after may not have reached it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) q: Option<(u64, u64)>,
}

/// A player's state as a node's list carries it.
#[derive(Serialize, Deserialize, Clone)]
pub(super) struct WirePlayer<'a> {
    #[serde(borrow)]
    pub(super) p: Cow<'a, str>,
    /// The current session, then its aliases.
    #[serde(borrow, default, skip_serializing_if = "Vec::is_empty")]
    pub(super) s: Vec<Cow<'a, str>>,
    /// Sessions replaced, oldest first.
    #[serde(borrow, default, skip_serializing_if = "Vec::is_empty")]
    pub(super) x: Vec<Cow<'a, str>>,
    /// Its rooms.
    #[serde(borrow, default, skip_serializing_if = "Vec::is_empty")]
    pub(super) r: Vec<Cow<'a, str>>,
}

/// A connection as nodes announce it.
#[derive(Serialize, Deserialize, Clone)]
pub(super) struct WireConnection<'a> {
    /// Its player.
    #[serde(borrow)]
    pub(super) p: Cow<'a, str>,
    /// Its id on its node.
    pub(super) i: u64,
    /// `w` WebSocket, `s` SSE.
    pub(super) w: bool,
    /// Its session.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub(super) s: Option<Cow<'a, str>>,
    /// When it was established, in Unix milliseconds.
    pub(super) at: u64,
}

#[derive(Serialize, Deserialize)]
pub(super) struct WireMessage<'a> {
    #[serde(borrow, rename = "type")]
    message_type: Cow<'a, str>,
    v: u32,
    #[serde(borrow)]
    data: &'a RawValue,
    #[serde(default)]
    priority: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ttl_ms: Option<u64>,
    #[serde(default)]
    ack: bool,
    /// The envelope's `ts`, set by the origin so that every node makes the same bytes.
    ts: u64,
}

impl<'a> WireMessage<'a> {
    fn of(message: &'a Message) -> Self {
        Self {
            message_type: Cow::Borrowed(message.message_type()),
            v: message.version(),
            data: message.data(),
            priority: message.priority(),
            ttl_ms: message
                .ttl()
                .map(|ttl| u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)),
            ack: message.wants_ack(),
            ts: unix_millis(SystemTime::now()),
        }
    }

    fn message(&self) -> Message {
        let mut message = Message::raw(&*self.message_type, self.data.to_owned())
            .with_version(self.v)
            .with_priority(self.priority)
            .with_ack(self.ack);
        if let Some(ttl) = self.ttl_ms {
            message = message.with_ttl(Duration::from_millis(ttl));
        }
        message
    }
}

/// Another node's answer. Short keys, as the entries.
#[derive(Serialize, Deserialize, Default)]
struct WireAnswer<'a> {
    r: u64,
    #[serde(borrow)]
    n: Cow<'a, str>,
    #[serde(default)]
    d: usize,
    #[serde(default)]
    w: usize,
    #[serde(default)]
    s: usize,
    #[serde(default)]
    f: usize,
    #[serde(default)]
    q: bool,
    /// The answer to a figures request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fig: Option<super::figures::NodeFigures>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    p: Option<usize>,
}

impl Hub {
    /// The backplane this hub shares its log through, if any.
    pub(super) fn backplane(&self) -> Option<&Arc<dyn Backplane>> {
        self.inner.settings.backplane.as_ref()
    }

    /// Starts the backplane, if the settings gave one.
    pub(super) fn start_backplane(&self) {
        if let Some(backplane) = self.backplane() {
            backplane.start(LogSink {
                hub: Arc::downgrade(&self.inner),
            });
            self.start_announcer();
        }
    }

    /// The backplane's state, when the hub has one.
    #[must_use]
    pub fn backplane_status(&self) -> Option<BackplaneStatus> {
        self.backplane().map(|backplane| backplane.status())
    }

    /// Publishes `message` to `audience` on every node of the cluster, or on this hub alone
    /// when it has no [`backplane`](super::HubSettings::backplane).
    ///
    /// With a backplane, the message goes into the cluster's log first; an error means the
    /// log did not take it (no node delivered it: retry, or answer `503`). The report counts
    /// this node's connections exactly and the other nodes' as they answered within
    /// [`report_wait`](super::HubSettings::report_wait): `nodes` lists each node that did,
    /// `unanswered` the live nodes that did not (their connections may have got it; they
    /// are not counted). The envelope id is the log's, the same on every node.
    ///
    /// ```
    /// use dualcast::{Audience, Hub, Message};
    /// use serde_json::json;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let hub = Hub::new();
    /// let message = Message::json("chat", json!({"text": "hi"}));
    /// let report = hub.publish(Audience::Room { room: "lobby", exclude: &[] }, &message).await.unwrap();
    /// assert_eq!(report.delivered, 0);
    /// # });
    /// ```
    pub async fn publish(
        &self,
        audience: Audience<'_>,
        message: &Message,
    ) -> Result<DeliveryReport, BackplaneError> {
        let Some(backplane) = self.backplane().cloned() else {
            return Ok(match audience {
                Audience::Player(player_id) => self.send_to_player(player_id, message),
                Audience::Room { room, exclude } => self.broadcast_to_room(room, message, exclude),
                Audience::Everyone { exclude } => self.broadcast_global(message, exclude),
            });
        };
        let (kind, target, exclude) = match audience {
            Audience::Player(player_id) => ("p", Some(player_id), &[][..]),
            Audience::Room { room, exclude } => ("r", Some(room), exclude),
            Audience::Everyone { exclude } => ("g", None, exclude),
        };
        let peers = backplane.peers();
        let entry = Entry {
            o: Cow::Borrowed(backplane.node_id()),
            k: Cow::Borrowed(kind),
            t: target.map(Cow::Borrowed),
            x: exclude.iter().map(|p| Cow::Borrowed(*p)).collect(),
            m: Some(WireMessage::of(message)),
            ..Entry::default()
        };
        let (id, mut answers, _guard) = self.append(&*backplane, entry).await?;
        let deadline = Instant::now() + self.inner.settings.report_wait;
        let mut local = None;
        let mut nodes = Vec::new();
        let answered_peers =
            |nodes: &[NodeDelivery]| nodes.iter().filter(|n| peers.contains(&n.node)).count();
        while local.is_none() || answered_peers(&nodes) < peers.len() {
            match tokio::time::timeout_at(deadline, answers.recv()).await {
                Ok(Some(Answer::Local(Applied::Delivery(report)))) => local = Some(report),
                Ok(Some(Answer::Remote(node))) => {
                    if !nodes.iter().any(|n: &NodeDelivery| n.node == node.node) {
                        nodes.push(node);
                    }
                }
                Ok(Some(Answer::Local(Applied::Membership(_)) | Answer::Figures(..))) => {}
                Ok(None) | Err(_) => break,
            }
        }
        let node_id: Arc<str> = Arc::from(backplane.node_id());
        let (mut report, here) = match local {
            Some(report) => {
                let here = NodeDelivery::of(node_id, &report);
                (report, Some(here))
            }
            None => {
                // Not applied here within the wait (the log is slow to come back): this
                // node's connections get it when it does, but nothing is counted for them.
                let players = (kind != "p").then_some(0);
                let mut report = DeliveryReport::unapplied(id.clone(), players);
                report.unanswered = Some(vec![node_id]);
                (report, None)
            }
        };
        report.add_nodes(here, nodes, &peers);
        Ok(report)
    }

    /// Adds `player_id` to `room` (`member: true`) or removes it, on every node of the
    /// cluster (or on this hub alone without a backplane); returns whether that changed
    /// the membership, as this node saw it.
    pub async fn set_room_member(
        &self,
        player_id: &str,
        room: &str,
        member: bool,
    ) -> Result<bool, BackplaneError> {
        let Some(backplane) = self.backplane().cloned() else {
            return Ok(if member {
                self.join_room(player_id, room)
            } else {
                self.leave_room(player_id, room)
            });
        };
        let entry = Entry {
            o: Cow::Borrowed(backplane.node_id()),
            k: Cow::Borrowed(if member { "j" } else { "l" }),
            t: Some(Cow::Borrowed(player_id)),
            room: Some(Cow::Borrowed(room)),
            ..Entry::default()
        };
        let (_, mut answers, _guard) = self.append(&*backplane, entry).await?;
        let wait = self.inner.settings.report_wait.max(Duration::from_secs(5));
        loop {
            match tokio::time::timeout(wait, answers.recv()).await {
                Ok(Some(Answer::Local(Applied::Membership(changed)))) => return Ok(changed),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => {
                    return Err(BackplaneError::new(
                        "the membership change is in the cluster's log, but this node has not \
                         applied it yet",
                    ))
                }
            }
        }
    }

    /// The figures of every node of the cluster (or of this hub alone without a
    /// backplane): this node's, and the others' as they answered within
    /// [`report_wait`](super::HubSettings::report_wait). With the log unreachable, this
    /// node's own, every peer `unanswered`.
    pub async fn figures(&self) -> ClusterFigures {
        let here = self.node_figures();
        let players = match self.backplane() {
            Some(_) => self.cluster_players(),
            None => here.census,
        };
        let Some(backplane) = self.backplane().cloned() else {
            return ClusterFigures::merge(self, players, here, &[]);
        };
        let peers = backplane.peers();
        let entry = Entry {
            o: Cow::Borrowed(backplane.node_id()),
            k: Cow::Borrowed("f"),
            ..Entry::default()
        };
        let mut others: Vec<(Arc<str>, super::figures::NodeFigures)> = Vec::new();
        if let Ok((_, mut answers, _guard)) = self.append(&*backplane, entry).await {
            let deadline = Instant::now() + self.inner.settings.report_wait;
            while others.iter().filter(|(n, _)| peers.contains(n)).count() < peers.len() {
                match tokio::time::timeout_at(deadline, answers.recv()).await {
                    Ok(Some(Answer::Figures(node, figures))) => {
                        if !others.iter().any(|(n, _)| *n == node) {
                            others.push((node, figures));
                        }
                    }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
        }
        let mut figures = ClusterFigures::merge(self, players, here, &others);
        figures.unanswered = Some(
            peers
                .into_iter()
                .filter(|peer| !others.iter().any(|(n, _)| n == peer))
                .collect(),
        );
        figures
    }

    /// Answers another node's figures request `request`.
    pub(super) fn answer_figures(&self, origin: &str, request: u64) {
        let Some(backplane) = self.backplane() else {
            return;
        };
        let answer = WireAnswer {
            r: request,
            n: Cow::Borrowed(backplane.node_id()),
            fig: Some(self.node_figures()),
            ..WireAnswer::default()
        };
        if let Ok(bytes) = serde_json::to_vec(&answer) {
            backplane.answer(origin, bytes);
        }
    }

    /// Appends `entry` (its request number set here) with a waiter for what comes back.
    async fn append(
        &self,
        backplane: &dyn Backplane,
        mut entry: Entry<'_>,
    ) -> Result<(Arc<str>, mpsc::UnboundedReceiver<Answer>, WaiterGuard<'_>), BackplaneError> {
        let request = self.inner.next_request.fetch_add(1, Ordering::Relaxed);
        entry.r = request;
        let bytes = serde_json::to_vec(&entry)
            .map_err(|_| BackplaneError::new("the entry could not be encoded"))?;
        let (sender, answers) = mpsc::unbounded_channel();
        self.inner.waiting.lock().insert(request, sender);
        let guard = WaiterGuard {
            waiting: &self.inner.waiting,
            request,
        };
        let id = backplane.append(bytes).await?;
        Ok((id, answers, guard))
    }

    /// The last log entry this node applied (or is applying): a connection registering now
    /// gets the entries after it live.
    pub(super) fn log_position(&self) -> Option<(u64, u64)> {
        *self
            .inner
            .log_position
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// `player_id`'s frame of log entry `id` (`bytes`), if it was for the player (to it, a
    /// room it is in now, or everyone but it) and published at `oldest` or later.
    pub(super) fn entry_for(
        &self,
        player_id: &str,
        id: &str,
        bytes: &[u8],
        oldest: u64,
    ) -> Option<Frame> {
        let entry: Entry<'_> = serde_json::from_slice(bytes).ok()?;
        let wire = entry.m.as_ref()?;
        if wire.ts < oldest {
            return None;
        }
        let target = entry.t.as_deref().unwrap_or_default();
        let excluded = entry.x.iter().any(|p| **p == *player_id);
        let room = match &*entry.k {
            "p" if target == player_id => None,
            "r" if !excluded && self.is_member(target, player_id) => Some(target),
            "g" if !excluded => None,
            _ => return None,
        };
        Some(Frame::encode_at(
            Arc::from(id),
            &wire.message(),
            room,
            wire.ts,
        ))
    }

    /// Applies the log's entry `id` here; answers its origin.
    fn apply_entry(&self, id: &str, bytes: &[u8]) {
        // Before it is delivered: a connection registering meanwhile may get it both from
        // the log and live, and its outbox skips the second (never neither).
        if let Some(order) = log_order(id) {
            *self
                .inner
                .log_position
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(order);
        }
        let entry: Entry<'_> = match serde_json::from_slice(bytes) {
            Ok(entry) => entry,
            Err(error) => {
                tracing::warn!(id, %error, "a cluster log entry this node does not understand: skipped");
                return;
            }
        };
        let target = entry.t.as_deref().unwrap_or_default();
        let applied = match (&*entry.k, &entry.m, entry.room.as_deref()) {
            ("j", _, Some(room)) => Applied::Membership(self.join_room(target, room)),
            ("l", _, Some(room)) => Applied::Membership(self.leave_room(target, room)),
            (kind @ ("p" | "r" | "g"), Some(wire), _) => {
                let message = wire.message();
                let room = (kind == "r").then_some(target);
                let publish = Publish::new(
                    self,
                    Frame::encode_at(Arc::from(id), &message, room, wire.ts),
                    &message,
                );
                let exclude: Vec<&str> = entry.x.iter().map(|p| &**p).collect();
                Applied::Delivery(match kind {
                    "p" => self.player_delivery(target, &publish),
                    "r" => self.room_delivery(target, &exclude, &publish),
                    _ => self.global_delivery(&exclude, &publish),
                })
            }
            _ => {
                if !self.apply_announcement(&entry) {
                    tracing::warn!(
                        id,
                        kind = &*entry.k,
                        "a cluster log entry of an unknown kind: skipped"
                    );
                }
                return;
            }
        };
        let Some(backplane) = self.backplane() else {
            return;
        };
        if entry.o == backplane.node_id() {
            self.inner.waiting.send(entry.r, Answer::Local(applied));
        } else if let Applied::Delivery(report) = applied {
            let answer = WireAnswer {
                r: entry.r,
                n: Cow::Borrowed(backplane.node_id()),
                d: report.delivered,
                w: report.websocket,
                s: report.sse,
                f: report.failed,
                q: report.queued,
                p: report.players,
                fig: None,
            };
            if let Ok(bytes) = serde_json::to_vec(&answer) {
                backplane.answer(&entry.o, bytes);
            }
        }
    }

    /// Takes another node's answer to one of this node's entries.
    fn take_answer(&self, bytes: &[u8]) {
        let Ok(answer) = serde_json::from_slice::<WireAnswer<'_>>(bytes) else {
            tracing::debug!("an answer from another node this node does not understand: skipped");
            return;
        };
        if let Some(figures) = answer.fig {
            self.inner
                .waiting
                .send(answer.r, Answer::Figures(Arc::from(&*answer.n), figures));
            return;
        }
        self.inner.waiting.send(
            answer.r,
            Answer::Remote(NodeDelivery {
                node: Arc::from(&*answer.n),
                delivered: answer.d,
                websocket: answer.w,
                sse: answer.s,
                failed: answer.f,
                queued: answer.q,
                players: answer.p,
            }),
        );
    }
}
