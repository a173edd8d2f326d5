// dualcast.js: the dualcast browser client. One dependency-free ES module.
//
// One player's WebSocket and EventSource (either or both) to a dualcast server; every
// message emitted once, whichever transport carried it first; a reconnect resumes from the
// last message seen on either; optionally one set of connections for all of a browser's
// tabs. Types and option defaults: `dualcast.d.ts`. Wire protocol: the server's README.
//
//   import { DualcastClient } from "/client/dualcast.js";
//   const client = new DualcastClient({ token: () => fetchToken() });
//   client.on("message", (envelope) => render(envelope));
//   client.connect();
//   await client.send("say", { room: "lobby", text: "hi" });

/** Reasons after which the client never reconnects. */
export const TERMINAL_REASONS = new Set(["session_replaced", "logout", "unauthorized"]);

/** The server's WebSocket close codes, for a close frame without a reason string. */
const CLOSE_REASONS = {
  1000: "client_closed",
  1001: "server_shutdown",
  1002: "protocol_error",
  4000: "logout",
  4001: "session_replaced",
  4002: "auth_expired",
  4003: "unauthorized",
  4004: "heartbeat_timeout",
  4005: "slow_consumer",
};

const TRANSPORTS = ["websocket", "sse"];
const EVENTS = ["message", "state", "disconnect", "recovery", "session", "leader", "error"];
/** Events a leader tab passes on to the others. */
const SHARED_EVENTS = new Set(["message", "state", "disconnect", "recovery", "session"]);

/**
 * The delay before reconnect attempt `attempt` (0-based): full jitter,
 * `random() * min(cap, base * 2 ** attempt)` milliseconds.
 */
export function backoffDelay(attempt, base = 1000, cap = 30000, random = Math.random) {
  const ceiling = Math.min(cap, base * 2 ** Math.min(Math.max(attempt, 0), 30));
  return Math.floor(random() * ceiling);
}

/** A refusal from the server (its JSON error body or an `error` envelope), or a network failure. */
export class DualcastError extends Error {
  constructor(message, { errorType = "network", errorCode = null, status = null, details = {} } = {}) {
    super(message);
    this.name = "DualcastError";
    this.errorType = errorType;
    this.errorCode = errorCode;
    this.status = status;
    this.details = details;
  }

  /** From the server's JSON error body (`{error, error_type, message, details}`). */
  static fromBody(body, status) {
    const details = (body && typeof body.details === "object" && body.details) || {};
    return new DualcastError((body && body.message) || `HTTP ${status}`, {
      errorType: (body && body.error_type) || "http_error",
      errorCode: details.error_code ?? null,
      status,
      details,
    });
  }

  /** From an `error` envelope's data (`{error_type, error_code, message, id?}`). */
  static fromEnvelope(data) {
    return new DualcastError(data.message || "the server refused the message", {
      errorType: data.error_type || "error",
      errorCode: data.error_code ?? null,
      details: data,
    });
  }
}

/** The ids last seen, at most `size` of them: `add` says whether an id is new. */
export class SeenIds {
  constructor(size = 1024) {
    this.size = Math.max(1, size);
    this.ids = new Set();
  }

  /** Remembers `id`; false when it was already remembered. */
  add(id) {
    if (this.ids.has(id)) return false;
    this.ids.add(id);
    if (this.ids.size > this.size) this.ids.delete(this.ids.values().next().value);
    return true;
  }
}

/** The `sub` claim of a JWT, or null when it is not one (the server still decides). */
export function tokenSubject(token) {
  try {
    const part = String(token).split(".")[1];
    const base64 = part.replace(/-/g, "+").replace(/_/g, "/");
    const json = decodeURIComponent(
      Array.from(atob(base64 + "===".slice((base64.length + 3) % 4)), (c) =>
        "%" + c.charCodeAt(0).toString(16).padStart(2, "0"),
      ).join(""),
    );
    const sub = JSON.parse(json).sub;
    return typeof sub === "string" && sub !== "" ? sub : null;
  } catch {
    return null;
  }
}

/** What the client takes from its surroundings; `options.env` replaces any of it (tests). */
function environment(overrides = {}) {
  const g = globalThis;
  return {
    WebSocket: g.WebSocket,
    EventSource: g.EventSource,
    fetch: g.fetch ? g.fetch.bind(g) : undefined,
    setTimeout: (fn, ms) => g.setTimeout(fn, ms),
    clearTimeout: (id) => g.clearTimeout(id),
    random: Math.random,
    locks: g.navigator && g.navigator.locks,
    BroadcastChannel: g.BroadcastChannel,
    /** Where `online` / `offline` are announced. */
    events: typeof g.addEventListener === "function" ? g : null,
    /** Is the browser online? */
    onLine: () => !(g.navigator && g.navigator.onLine === false),
    origin: g.location ? g.location.origin : undefined,
    ...overrides,
  };
}

/** One transport's moving parts. */
class Link {
  constructor(kind) {
    this.kind = kind;
    this.state = "closed";
    /** The open socket (WebSocket or EventSource), or null. */
    this.socket = null;
    /** Bumped whenever the socket is dropped: stale callbacks and attempts see it changed. */
    this.generation = 0;
    this.attempt = 0;
    this.opened = false;
    this.retry = null;
    this.watchdog = null;
    this.pinger = null;
    this.waitingOnline = false;
    /** 401s in a row on a freshly fetched token. */
    this.unauthorized = 0;
    /** The session the socket was opened for. */
    this.session = null;
  }
}

/**
 * A player's connections to a dualcast server. See `dualcast.d.ts` for the options, their
 * defaults and the events.
 */
export class DualcastClient {
  constructor(options) {
    if (!options || (typeof options.token !== "string" && typeof options.token !== "function")) {
      throw new TypeError("DualcastClient needs a token: a JWT string or a function returning one");
    }
    const transports = options.transports ?? TRANSPORTS;
    if (
      !Array.isArray(transports) ||
      transports.length === 0 ||
      transports.some((t) => !TRANSPORTS.includes(t))
    ) {
      throw new TypeError('transports must list "websocket", "sse" or both');
    }
    this._env = environment(options.env);
    const base = options.baseUrl ?? this._env.origin;
    if (!base) throw new TypeError("DualcastClient needs a baseUrl outside a page");
    this._base = String(base).replace(/\/+$/, "");
    this._tokenSource = options.token;
    this._transports = [...new Set(transports)];
    this._share = options.shareAcrossTabs === true;
    this._heartbeat = options.heartbeatTimeout ?? 45000;
    this._pingInterval = options.pingInterval ?? 20000;
    this._backoff = { base: options.backoff?.base ?? 1000, cap: options.backoff?.cap ?? 30000 };
    this._replyTimeout = options.replyTimeout ?? 10000;
    this._seen = new SeenIds(options.dedupSize ?? 1024);
    this._listeners = new Map(EVENTS.map((e) => [e, new Set()]));
    this._links = new Map(this._transports.map((t) => [t, new Link(t)]));
    this._sessionId = options.sessionId ?? null;
    this._playerId = typeof options.token === "string" ? tokenSubject(options.token) : null;
    this._lastEventId = null;
    this._running = false;
    this._leader = !this._share;
    /** A `newSession()` in flight: our own connections' `session_replaced` is expected. */
    this._switching = 0;
    /** `send()`s over the WebSocket awaiting their reply, by message id. */
    this._pending = new Map();
    this._counter = 0;
    this._tab = `${Date.now().toString(36)}-${Math.floor(this._env.random() * 1e9).toString(36)}`;
    this._calls = new Map();
    this._onOnline = () => this._online();
    this._onOffline = () => this._offline();
  }

  // ----- the public surface -----

  /** Subscribes `listener` to `event`; returns the function that unsubscribes. */
  on(event, listener) {
    const set = this._listeners.get(event);
    if (!set) throw new TypeError(`no such event: ${event}`);
    set.add(listener);
    return () => set.delete(listener);
  }

  /** Unsubscribes `listener` from `event`. */
  off(event, listener) {
    this._listeners.get(event)?.delete(listener);
  }

  /** Opens the transports (or, with tab sharing, joins the tab that holds them). Idempotent. */
  connect() {
    if (this._running) return;
    this._running = true;
    this._env.events?.addEventListener("online", this._onOnline);
    this._env.events?.addEventListener("offline", this._onOffline);
    if (this._share) {
      this._joinTabs();
    } else {
      for (const link of this._links.values()) this._open(link);
    }
  }

  /** Closes every transport and stops reconnecting. */
  close() {
    if (!this._running) return;
    this._stop("client_closed", 1000);
  }

  /**
   * Sends a client message: over the WebSocket when it is open, else `POST /api/messages`.
   * Resolves with the reply envelope (null when none came within `replyTimeout`); rejects
   * with a `DualcastError` when the server refused it.
   */
  async send(type, data) {
    if (typeof type !== "string" || type === "") throw new TypeError("send() needs a message type");
    if (this._share && !this._leader) return this._forward("send", [type, data]);
    const id = `c-${this._tab}-${++this._counter}`;
    const ws = this._links.get("websocket");
    if (ws && ws.state === "open" && ws.socket) {
      const message = { type, id };
      if (data !== undefined) message.data = data;
      const reply = this._awaitReply(id);
      ws.socket.send(JSON.stringify(message));
      return reply;
    }
    const body = { type, id };
    if (data !== undefined) body.data = data;
    const answer = await this._http("POST", "/api/messages", body);
    const reply = answer ? answer.reply ?? null : null;
    if (reply && reply.type === "error") throw DualcastError.fromEnvelope(reply.data ?? {});
    return reply;
  }

  /**
   * Begins a new session (`POST /api/connections/{player}/session`, minted when no id is
   * given) and moves the transports to it. Resolves with the new session's id.
   */
  async newSession(sessionId) {
    if (this._share && !this._leader) return this._forward("newSession", [sessionId]);
    const player = await this._player();
    this._switching++;
    try {
      const answer = await this._http(
        "POST",
        `/api/connections/${encodeURIComponent(player)}/session`,
        sessionId === undefined ? {} : { session_id: sessionId },
      );
      this._moveTo(answer.session_id);
      return answer.session_id;
    } catch (error) {
      // The server may have ended our connections before refusing: they wait on nothing.
      for (const link of this._links.values()) {
        if (this._running && link.state === "reconnecting" && !link.socket && link.retry === null && !link.waitingOnline) {
          this._schedule(link, null);
        }
      }
      throw error;
    } finally {
      this._switching--;
    }
  }

  /** Reconnects the transports naming `sessionId` (which takes over the player's session). */
  switchSession(sessionId) {
    if (typeof sessionId !== "string" || sessionId === "") {
      throw new TypeError("switchSession() needs a session id");
    }
    if (this._share && !this._leader) {
      this._forward("switchSession", [sessionId]).catch((error) => this._emit("error", error));
      return;
    }
    this._moveTo(sessionId);
  }

  /** Each transport's state. */
  get state() {
    const state = { websocket: "closed", sse: "closed" };
    for (const [kind, link] of this._links) state[kind] = link.state;
    return state;
  }

  /** The player (the token's `sub`), once a token has been read. */
  get playerId() {
    return this._playerId;
  }

  /** The session the transports join, when known. */
  get sessionId() {
    return this._sessionId;
  }

  /** The id a reconnect resumes from: the last message seen on either transport. */
  get lastEventId() {
    return this._lastEventId;
  }

  /** With tab sharing: is this tab the one holding the connections? (Always true without.) */
  get isLeader() {
    return this._leader;
  }

  // ----- events -----

  _emit(event, detail) {
    for (const listener of [...this._listeners.get(event)]) {
      try {
        listener(detail);
      } catch (error) {
        // A listener's bug must not break delivery to the others.
        globalThis.console?.error?.("dualcast: a listener threw", error);
      }
    }
    if (this._share && this._leader && this._running && this._channel && SHARED_EVENTS.has(event)) {
      this._post({ kind: "event", event, detail, lastEventId: this._lastEventId, sessionId: this._sessionId });
    }
  }

  _setState(link, state) {
    if (link.state === state) return;
    link.state = state;
    this._emit("state", { transport: link.kind, state });
  }

  // ----- tokens and HTTP -----

  async _token() {
    const source = this._tokenSource;
    const token = typeof source === "function" ? await source() : source;
    if (typeof token !== "string" || token === "") {
      throw new DualcastError("the token function gave no token", { errorType: "authentication_error" });
    }
    const sub = tokenSubject(token);
    if (sub) this._playerId = sub;
    return token;
  }

  async _player() {
    if (this._playerId) return this._playerId;
    await this._token();
    if (!this._playerId) throw new DualcastError("the token names no player (no `sub` claim)", { errorType: "authentication_error" });
    return this._playerId;
  }

  /** A JSON request with the token; resolves with the parsed body, rejects with a DualcastError. */
  async _http(method, path, body) {
    const token = await this._token();
    let response;
    try {
      response = await this._env.fetch(this._base + path, {
        method,
        headers: {
          authorization: `Bearer ${token}`,
          ...(body === undefined ? {} : { "content-type": "application/json" }),
        },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (error) {
      throw new DualcastError(`cannot reach ${this._base}: ${error && error.message}`);
    }
    let parsed = null;
    try {
      parsed = await response.json();
    } catch {
      parsed = null;
    }
    if (!response.ok) throw DualcastError.fromBody(parsed, response.status);
    return parsed;
  }

  // ----- transports -----

  /** Opens `link`'s transport (after fetching a token). */
  async _open(link) {
    if (!this._running || !this._leader) return;
    this._clearTimers(link);
    const generation = ++link.generation;
    this._setState(link, link.opened || link.attempt > 0 ? "reconnecting" : "connecting");
    let token;
    try {
      token = await this._token();
    } catch (error) {
      if (generation !== link.generation) return;
      const why = error instanceof DualcastError ? error : new DualcastError(`no token: ${(error && error.message) || error}`, { errorType: "authentication_error" });
      this._emit("error", why);
      this._ended(link, { reason: "refused", code: 0 });
      return;
    }
    if (generation !== link.generation || !this._running || !this._leader) return;
    link.session = this._sessionId;
    link.opened = false;
    const query = new URLSearchParams();
    if (this._sessionId) query.set("session_id", this._sessionId);
    if (this._lastEventId) query.set("last_event_id", this._lastEventId);
    try {
      if (link.kind === "websocket") {
        this._openWebSocket(link, generation, token, query);
      } else {
        this._openEventSource(link, generation, token, query);
      }
    } catch (error) {
      // A bad base URL, say: no use retrying the same.
      this._emit("error", new DualcastError(`cannot open the ${link.kind}: ${error && error.message}`));
      this._ended(link, { reason: "refused", code: 0 });
    }
  }

  _openWebSocket(link, generation, token, query) {
    const search = query.toString();
    const url = `${this._base.replace(/^http/, "ws")}/api/ws${search ? `?${search}` : ""}`;
    const socket = new this._env.WebSocket(url, ["bearer", token]);
    link.socket = socket;
    const current = () => generation === link.generation;
    socket.onopen = () => current() && this._opened(link);
    socket.onmessage = (event) => {
      if (!current()) return;
      this._feed(link);
      let envelope;
      try {
        envelope = JSON.parse(event.data);
      } catch {
        this._emit("error", new DualcastError("the server sent a frame that is not JSON", { errorType: "protocol_error" }));
        return;
      }
      this._envelope(link, envelope);
    };
    socket.onerror = () => {};
    socket.onclose = (event) => {
      if (!current()) return;
      const reason = event.reason || CLOSE_REASONS[event.code];
      if (!link.opened && !reason) {
        this._failedOpen(link);
      } else {
        this._ended(link, { reason: reason || "network", code: event.code || 0 });
      }
    };
  }

  _openEventSource(link, generation, token, query) {
    query.set("access_token", token);
    query.set("keepalive", "event");
    const source = new this._env.EventSource(`${this._base}/api/sse?${query}`);
    link.socket = source;
    const current = () => generation === link.generation;
    const parse = (event) => {
      try {
        return JSON.parse(event.data);
      } catch {
        this._emit("error", new DualcastError("the server sent an event that is not JSON", { errorType: "protocol_error" }));
        return null;
      }
    };
    source.addEventListener("open", () => current() && this._opened(link));
    source.addEventListener("ping", () => current() && this._feed(link));
    const onEnvelope = (event) => {
      if (!current()) return;
      this._feed(link);
      const envelope = parse(event);
      if (envelope) this._envelope(link, envelope);
    };
    // A message record, and the `recovery` record (an envelope too, without an `id:` line).
    source.addEventListener("message", onEnvelope);
    source.addEventListener("recovery", onEnvelope);
    source.addEventListener("disconnect", (event) => {
      if (!current()) return;
      const data = parse(event) || {};
      this._ended(link, { reason: data.reason || "network", code: data.code || 0 });
    });
    // The EventSource's own reconnect is replaced by ours (fresh token, our resume id).
    source.addEventListener("error", () => {
      if (!current()) return;
      if (link.opened) this._ended(link, { reason: "network", code: 0 });
      else this._failedOpen(link);
    });
  }

  _opened(link) {
    link.opened = true;
    link.attempt = 0;
    link.unauthorized = 0;
    this._setState(link, "open");
    this._feed(link);
    if (link.kind === "websocket") this._ping(link);
    if (this._sessionId === null) this._learnSession();
  }

  /** The watchdog: nothing heard within the heartbeat window means the transport is dead. */
  _feed(link) {
    if (link.watchdog !== null) this._env.clearTimeout(link.watchdog);
    const generation = link.generation;
    link.watchdog = this._env.setTimeout(() => {
      link.watchdog = null;
      if (generation === link.generation) this._ended(link, { reason: "watchdog", code: 0 });
    }, this._heartbeat);
  }

  /** Sends a `ping` every `pingInterval`; its `pong` feeds the watchdog. */
  _ping(link) {
    const generation = link.generation;
    link.pinger = this._env.setTimeout(() => {
      link.pinger = null;
      if (generation !== link.generation || !link.socket) return;
      try {
        link.socket.send(JSON.stringify({ type: "ping", id: `hb-${++this._counter}` }));
      } catch {
        // A socket closing now: its close event follows.
      }
      this._ping(link);
    }, this._pingInterval);
  }

  /** The session the server put the transports in, when none was named. */
  async _learnSession() {
    try {
      const player = await this._player();
      const answer = await this._http("GET", `/api/connections/${encodeURIComponent(player)}/session`);
      if (this._sessionId === null && answer && typeof answer.session_id === "string") {
        this._sessionId = answer.session_id;
        for (const link of this._links.values()) if (link.socket && link.session === null) link.session = answer.session_id;
        this._emit("session", { sessionId: answer.session_id, previous: null });
      }
    } catch (error) {
      this._emit("error", error);
    }
  }

  /** An envelope from `link`'s transport. */
  _envelope(link, envelope) {
    if (!envelope || typeof envelope !== "object" || typeof envelope.id !== "string") {
      this._emit("error", new DualcastError("the server sent a frame that is not an envelope", { errorType: "protocol_error" }));
      return;
    }
    if (envelope.ack === true) this._ack(envelope.id);
    if (envelope.type === "recovery" && envelope.reply !== true) {
      const data = envelope.data || {};
      this._emit("recovery", { transport: link.kind, complete: data.complete === true, replayed: Number(data.replayed) || 0 });
      return;
    }
    if (envelope.reply === true) {
      this._reply(envelope);
      return;
    }
    this._deliver(envelope);
  }

  /** A message, once per id: remembered as the resume point and emitted. */
  _deliver(envelope) {
    if (!this._seen.add(envelope.id)) return;
    this._lastEventId = envelope.id;
    this._emit("message", envelope);
  }

  /** Acknowledges every copy: over the WebSocket if open, else over HTTP. */
  _ack(id) {
    const frame = { type: "ack", data: { id } };
    const ws = this._links.get("websocket");
    if (ws && ws.state === "open" && ws.socket) {
      try {
        ws.socket.send(JSON.stringify(frame));
        return;
      } catch {
        // Falls back to HTTP.
      }
    }
    this._http("POST", "/api/messages", frame).catch((error) => this._emit("error", error));
  }

  _awaitReply(id) {
    return new Promise((resolve, reject) => {
      const timer = this._env.setTimeout(() => {
        this._pending.delete(id);
        resolve(null);
      }, this._replyTimeout);
      this._pending.set(id, { resolve, reject, timer });
    });
  }

  /** A reply to this connection: settles the `send()` it answers (by `data.id`). */
  _reply(envelope) {
    const data = envelope.data || {};
    const waiting = typeof data.id === "string" ? this._pending.get(data.id) : undefined;
    if (!waiting) {
      // Our own heartbeat's pong, or a reply to a send() that timed out.
      if (envelope.type === "error") this._emit("error", DualcastError.fromEnvelope(data));
      return;
    }
    this._pending.delete(data.id);
    this._env.clearTimeout(waiting.timer);
    if (envelope.type === "error") waiting.reject(DualcastError.fromEnvelope(data));
    else waiting.resolve(envelope);
  }

  /** A transport that never opened: asks the server why, since a browser is not told. */
  async _failedOpen(link) {
    this._drop(link);
    const generationNow = link.generation;
    let reason = "refused";
    try {
      const player = await this._player();
      const token = await this._token();
      const response = await this._env.fetch(`${this._base}/api/connections/${encodeURIComponent(player)}/session`, {
        headers: { authorization: `Bearer ${token}` },
      });
      if (response.status === 401) {
        link.unauthorized++;
        const refreshable = typeof this._tokenSource === "function";
        reason = refreshable && link.unauthorized < 2 ? "auth_expired" : "unauthorized";
      } else if (response.ok) {
        const answer = await response.json().catch(() => null);
        const current = answer && answer.session_id;
        // A session that was replaced is refused for good (SPEC §3 rule 3).
        if (this._sessionId && typeof current === "string" && current !== this._sessionId) reason = "session_replaced";
      }
    } catch {
      reason = "network";
    }
    if (generationNow !== link.generation || !this._running) return;
    this._ended(link, { reason, code: 0 });
  }

  /** Forgets `link`'s socket (closing it) and its timers; its late callbacks are ignored. */
  _drop(link, code = 1000, reason = "client_closed") {
    link.generation++;
    this._clearTimers(link);
    const socket = link.socket;
    link.socket = null;
    if (!socket) return;
    try {
      if (link.kind === "websocket") {
        socket.onopen = socket.onmessage = socket.onclose = socket.onerror = null;
        socket.close(code, reason);
      } else {
        socket.close();
      }
    } catch {
      // Already closed.
    }
  }

  _clearTimers(link) {
    for (const name of ["retry", "watchdog", "pinger"]) {
      if (link[name] !== null) this._env.clearTimeout(link[name]);
      link[name] = null;
    }
    link.waitingOnline = false;
  }

  /** `link`'s transport ended: says why, and reconnects unless the reason is terminal. */
  _ended(link, { reason, code }) {
    const wasSession = link.session;
    this._drop(link);
    if (link.kind === "websocket") this._failPending(new DualcastError("the WebSocket closed before the reply came"));
    // Our own newSession()/switchSession() replaced the session this socket was in.
    const ownSwitch = reason === "session_replaced" && (this._switching > 0 || (wasSession !== null && wasSession !== this._sessionId));
    const terminal = TERMINAL_REASONS.has(reason) && !ownSwitch;
    this._emit("disconnect", { transport: link.kind, reason, code, reconnect: !terminal });
    if (terminal) {
      this._stop(reason, code);
      return;
    }
    this._setState(link, "reconnecting");
    if (ownSwitch && this._switching > 0) return; // newSession() reopens it.
    this._schedule(link, reason === "auth_expired" || ownSwitch ? 0 : null);
  }

  /** The next attempt after the backoff (or `delay`), paused while the browser is offline. */
  _schedule(link, delay) {
    if (!this._running || !this._leader) return;
    if (!this._env.onLine()) {
      link.waitingOnline = true;
      return;
    }
    const wait = delay ?? backoffDelay(link.attempt, this._backoff.base, this._backoff.cap, this._env.random);
    link.attempt++;
    link.retry = this._env.setTimeout(() => {
      link.retry = null;
      this._open(link);
    }, wait);
  }

  _online() {
    if (!this._running || !this._leader) return;
    for (const link of this._links.values()) {
      if (link.waitingOnline || link.retry !== null) {
        link.attempt = 0;
        this._open(link);
      }
    }
  }

  _offline() {
    for (const link of this._links.values()) {
      if (link.retry !== null) {
        this._env.clearTimeout(link.retry);
        link.retry = null;
        link.waitingOnline = true;
      }
    }
  }

  /** Moves the transports to `sessionId`, reopening those that run. */
  _moveTo(sessionId) {
    const previous = this._sessionId;
    this._sessionId = sessionId;
    if (previous !== sessionId) this._emit("session", { sessionId, previous });
    if (!this._running || !this._leader) return;
    for (const link of this._links.values()) {
      this._drop(link);
      link.attempt = 0;
      this._open(link);
    }
  }

  _failPending(error) {
    for (const [id, waiting] of this._pending) {
      this._env.clearTimeout(waiting.timer);
      waiting.reject(error);
      this._pending.delete(id);
    }
  }

  /** Ends everything: `close()`, or a terminal reason on one transport. */
  _stop(reason, code) {
    this._running = false;
    this._env.events?.removeEventListener("online", this._onOnline);
    this._env.events?.removeEventListener("offline", this._onOffline);
    for (const link of this._links.values()) {
      const live = link.state !== "closed";
      const hadSocket = link.socket !== null || link.retry !== null || link.waitingOnline;
      this._drop(link);
      link.attempt = 0;
      link.opened = false;
      if (live && hadSocket) this._emit("disconnect", { transport: link.kind, reason, code, reconnect: false });
      this._setState(link, "closed");
    }
    this._failPending(new DualcastError(`the client closed (${reason})`));
    if (this._share) this._leaveTabs(TERMINAL_REASONS.has(reason) ? reason : null);
  }

  // ----- tab sharing -----

  async _joinTabs() {
    const { locks, BroadcastChannel } = this._env;
    if (!locks || !BroadcastChannel) {
      // No Web Locks or BroadcastChannel here: this tab holds its own connections.
      this._share = false;
      this._leader = true;
      for (const link of this._links.values()) this._open(link);
      return;
    }
    let player;
    try {
      player = await this._player();
    } catch (error) {
      this._emit("error", error);
      this._stop("unauthorized", 0);
      return;
    }
    if (!this._running) return;
    const name = `dualcast:${this._base}:${player}`;
    this._channel = new BroadcastChannel(name);
    this._channel.onmessage = (event) => this._fromTab(event.data);
    this._abort = new AbortController();
    for (const link of this._links.values()) this._setState(link, "connecting");
    locks
      .request(name, { signal: this._abort.signal }, () => new Promise((release) => {
        this._release = release;
        this._lead();
      }))
      .catch(() => {
        // Aborted: this tab closed before it led.
      });
    this._post({ kind: "hello" });
  }

  /** This tab holds the lock: it opens the transports, resuming where the last leader was. */
  _lead() {
    if (!this._running) {
      this._release?.();
      return;
    }
    this._leader = true;
    this._emit("leader", { leader: true });
    for (const link of this._links.values()) {
      link.attempt = 0;
      this._open(link);
    }
    this._post({ kind: "snapshot", ...this._snapshot() });
  }

  _snapshot() {
    return { state: this.state, sessionId: this._sessionId, lastEventId: this._lastEventId };
  }

  _post(message) {
    try {
      this._channel?.postMessage({ ...message, from: this._tab });
    } catch {
      // The channel closed.
    }
  }

  /** What another tab of this player said. */
  _fromTab(message) {
    if (!message || message.from === this._tab || !this._running) return;
    if (this._leader) {
      if (message.kind === "hello") this._post({ kind: "snapshot", ...this._snapshot() });
      else if (message.kind === "call") this._answer(message);
      return;
    }
    switch (message.kind) {
      case "snapshot":
        for (const [kind, state] of Object.entries(message.state || {})) {
          const link = this._links.get(kind);
          if (link) this._setState(link, state);
        }
        this._follow(message);
        break;
      case "event":
        this._follow(message);
        this._followEvent(message.event, message.detail);
        break;
      case "result":
        this._settle(message);
        break;
      case "terminal":
        this._stop(message.reason, 0);
        break;
      default:
    }
  }

  _follow({ sessionId, lastEventId }) {
    if (sessionId !== undefined && sessionId !== this._sessionId) {
      const previous = this._sessionId;
      this._sessionId = sessionId;
      this._emit("session", { sessionId, previous });
    }
    if (lastEventId && this._lastEventId === null) this._lastEventId = lastEventId;
  }

  _followEvent(event, detail) {
    switch (event) {
      case "message":
        this._deliver(detail);
        break;
      case "state": {
        const link = this._links.get(detail.transport);
        if (link) this._setState(link, detail.state);
        break;
      }
      case "session":
        break; // _follow did it.
      default:
        this._emit(event, detail);
    }
  }

  /** A follower's call, forwarded to the leader. */
  _forward(method, args) {
    const id = `${this._tab}-${++this._counter}`;
    return new Promise((resolve, reject) => {
      const timer = this._env.setTimeout(() => {
        this._calls.delete(id);
        reject(new DualcastError(`no leader tab answered ${method}() in time`));
      }, this._replyTimeout + 5000); // past the leader's own wait for the reply
      this._calls.set(id, { resolve, reject, timer });
      this._post({ kind: "call", id, method, args });
    });
  }

  async _answer({ id, from, method, args }) {
    const reply = { kind: "result", id, to: from };
    try {
      let value = null;
      if (method === "send") value = await this.send(...args);
      else if (method === "newSession") value = await this.newSession(...args);
      else if (method === "switchSession") this.switchSession(...args);
      else throw new DualcastError(`no such call: ${method}`, { errorType: "validation_error" });
      this._post({ ...reply, ok: true, value });
    } catch (error) {
      const e = error instanceof DualcastError ? error : new DualcastError(String(error && error.message));
      this._post({ ...reply, ok: false, error: { message: e.message, errorType: e.errorType, errorCode: e.errorCode, status: e.status, details: e.details } });
    }
  }

  _settle({ id, to, ok, value, error }) {
    if (to !== this._tab) return;
    const call = this._calls.get(id);
    if (!call) return;
    this._calls.delete(id);
    this._env.clearTimeout(call.timer);
    if (ok) call.resolve(value);
    else call.reject(new DualcastError(error.message, error));
  }

  /** Leaves the other tabs: a terminal reason ends theirs too; else the next tab leads. */
  _leaveTabs(terminal) {
    if (terminal && this._leader) this._post({ kind: "terminal", reason: terminal });
    for (const [id, call] of this._calls) {
      this._env.clearTimeout(call.timer);
      call.reject(new DualcastError("the client closed"));
      this._calls.delete(id);
    }
    this._abort?.abort();
    this._release?.();
    this._release = null;
    this._channel?.close();
    this._channel = null;
    if (this._leader) {
      this._leader = false;
      this._emit("leader", { leader: false });
    }
    // A closed client that connects again starts as a follower.
  }
}
