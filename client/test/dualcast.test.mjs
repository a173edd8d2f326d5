// Unit tests of client/dualcast.js with fake surroundings: `node --test test/`.
import { test } from "node:test";
import assert from "node:assert/strict";
import { DualcastClient, DualcastError, SeenIds, backoffDelay, TERMINAL_REASONS } from "../dualcast.js";

// ----- fakes -----
const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
const jwt = (sub = "alice", n = 0) => `${b64({ alg: "none" })}.${b64({ sub, n })}.sig`;
const TOKEN = jwt();
const flush = async (n = 6) => { for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r)); };

function clock() {
  let now = 0, seq = 0;
  const timers = new Map();
  return {
    get now() { return now; }, timers,
    setTimeout: (fn, ms = 0) => { const id = ++seq; timers.set(id, { fn, at: now + ms, id }); return id; },
    clearTimeout: (id) => { timers.delete(id); },
    async advance(ms) {
      const end = now + ms;
      for (;;) {
        const due = [...timers.values()].filter((t) => t.at <= end).sort((a, b) => a.at - b.at || a.id - b.id)[0];
        if (!due) break;
        timers.delete(due.id); now = due.at; due.fn(); await flush();
      }
      now = end; await flush();
    },
  };
}

function makeEnv({ routes = {}, online = true } = {}) {
  const c = clock();
  const sockets = [], sources = [], requests = [];
  class FakeWebSocket {
    constructor(url, protocols) { this.url = url; this.protocols = protocols; this.sent = []; this.closed = null; sockets.push(this); }
    send(f) { this.sent.push(f); }
    close(code, reason) { this.closed = { code, reason }; }
    frames() { return this.sent.map((f) => JSON.parse(f)); }
  }
  class FakeEventSource {
    constructor(url) { this.url = url; this.listeners = {}; this.closed = false; sources.push(this); }
    addEventListener(t, fn) { (this.listeners[t] ??= []).push(fn); }
    emit(t, data) { for (const fn of this.listeners[t] ?? []) fn(data === undefined ? {} : { data: typeof data === "string" ? data : JSON.stringify(data) }); }
    close() { this.closed = true; }
  }
  const env = {
    WebSocket: FakeWebSocket, EventSource: FakeEventSource,
    setTimeout: c.setTimeout, clearTimeout: c.clearTimeout, random: () => 0.5,
    events: new EventTarget(), onLine: () => env.isOnline, isOnline: online,
    fetch: async (url, init = {}) => {
      const path = new URL(url).pathname; const method = init.method ?? "GET";
      const req = { url, path, method, headers: init.headers ?? {}, body: init.body ? JSON.parse(init.body) : undefined };
      requests.push(req);
      const h = routes[`${method} ${path}`];
      const r = typeof h === "function" ? await h(req) : h ?? { status: 404, body: {} };
      if (r instanceof Error) throw r;
      return { status: r.status, ok: r.status >= 200 && r.status < 300, json: async () => r.body };
    },
  };
  return { env, clock: c, sockets, sources, requests, routes };
}
const SESSION = "/api/connections/alice/session";
const env0 = (o) => { const e = makeEnv(o); e.routes[`GET ${SESSION}`] ??= { status: 200, body: { session_id: "s1" } }; return e; };
const client = (e, opts = {}) => new DualcastClient({ baseUrl: "http://h", token: TOKEN, sessionId: "s1", env: e.env, ...opts });
const env = (id, extra = {}) => ({ id, type: "chat", v: 1, ts: 1, data: {}, ...extra });
const record = (c) => { const log = { message: [], disconnect: [], state: [], session: [], recovery: [], leader: [], error: [] }; for (const k of Object.keys(log)) c.on(k, (d) => log[k].push(d)); return log; };
const q = (url) => new URL(url.replace(/^ws/, "http")).searchParams;
async function openBoth(e, opts) { const c = client(e, opts); const log = record(c); c.connect(); await flush(); e.sockets.at(-1)?.onopen?.(); e.sources.at(-1)?.emit("open"); await flush(); return { c, log }; }

// ----- 1, 2 -----
test("backoffDelay: full jitter bounds, cap, custom base/cap", () => {
  assert.equal(backoffDelay(0, 1000, 30000, () => 0), 0);
  assert.equal(backoffDelay(3, 1000, 30000, () => 0), 0);
  const d0 = backoffDelay(0, 1000, 30000, () => 0.999);
  assert.ok(d0 < 1000 && d0 >= 990);
  assert.ok(backoffDelay(0) <= 1000);
  assert.ok(backoffDelay(2, 1000, 30000, () => 0.999) < 4000 && backoffDelay(2, 1000, 30000, () => 0.999) >= 3990);
  assert.ok(backoffDelay(50, 1000, 30000, () => 0.999) < 30000 && backoffDelay(50, 1000, 30000, () => 0.999) >= 29900);
  assert.ok(backoffDelay(1000, undefined, undefined, () => 0.999) < 30000);
  assert.equal(backoffDelay(3, 100, 500, () => 0.5), 250);
  assert.equal(backoffDelay(1, 100, 500, () => 0.5), 100);
});

test("SeenIds: bounded window forgets the oldest, duplicates inside return false", () => {
  const s = new SeenIds(3);
  for (const id of ["a", "b", "c"]) assert.equal(s.add(id), true);
  assert.equal(s.add("b"), false);
  assert.equal(s.add("d"), true);
  assert.equal(s.ids.size, 3);
  assert.equal(s.add("a"), true, "the oldest was forgotten");
  assert.equal(s.ids.size, 3);
  assert.equal(s.add("d"), false);
});

test("TERMINAL_REASONS holds exactly session_replaced, logout, unauthorized", () => {
  assert.deepEqual([...TERMINAL_REASONS].sort(), ["logout", "session_replaced", "unauthorized"]);
});

// ----- 3, 4 -----
test("client dedup: one message for the same id over WS and SSE; dedupSize window", async () => {
  const e = env0(); const { log } = await openBoth(e);
  e.sockets[0].onmessage({ data: JSON.stringify(env("x-1")) });
  e.sources[0].emit("message", env("x-1"));
  assert.equal(log.message.length, 1);
  const e2 = env0(); const { log: log2 } = await openBoth(e2, { dedupSize: 2 });
  for (const id of ["a", "b", "c"]) e2.sockets[0].onmessage({ data: JSON.stringify(env(id)) });
  e2.sources[0].emit("message", env("a")); // older than the 2-id window: emitted again (documented bound)
  e2.sources[0].emit("message", env("c")); // inside the window: not
  assert.deepEqual(log2.message.map((m) => m.id), ["a", "b", "c", "a"]);
});

test("resume id: last new message id; recovery and reply envelopes never; reconnect URLs", async () => {
  const e = env0(); const { c } = await openBoth(e);
  e.sockets[0].onmessage({ data: JSON.stringify(env("e-1")) });
  e.sources[0].emit("message", env("e-2"));
  e.sources[0].emit("message", env("e-1"));
  e.sources[0].emit("recovery", env("e-r", { type: "recovery", data: { complete: true, replayed: 1 } }));
  e.sockets[0].onmessage({ data: JSON.stringify(env("e-p", { type: "pong", reply: true, data: { id: "hb-1" } })) });
  assert.equal(c.lastEventId, "e-2");
  assert.deepEqual(e.sockets[0].protocols, ["bearer", TOKEN]);
  e.sockets[0].onclose({ code: 1006, reason: "" });
  e.sources[0].emit("error");
  await e.clock.advance(2000);
  const ws = q(e.sockets[1].url), sse = q(e.sources[1].url);
  assert.equal(new URL(e.sockets[1].url).pathname, "/api/ws");
  assert.equal(new URL(e.sources[1].url).pathname, "/api/sse");
  assert.equal(ws.get("last_event_id"), "e-2"); assert.equal(sse.get("last_event_id"), "e-2");
  assert.equal(sse.get("access_token"), TOKEN); assert.equal(sse.get("keepalive"), "event");
  assert.deepEqual(e.sockets[1].protocols, ["bearer", TOKEN]);
  c.close();
});

// ----- 5, 6 -----
for (const [code, reason] of [[4001, "session_replaced"], [4000, "logout"], [4003, "unauthorized"]]) {
  test(`terminal reason over WS: ${reason} (${code}) stops both transports for good`, async () => {
    const e = env0(); const { c, log } = await openBoth(e);
    e.sockets[0].onclose({ code, reason });
    assert.ok(log.disconnect.length >= 1 && log.disconnect.every((d) => d.reconnect === false));
    assert.equal(log.disconnect[0].reason, reason);
    assert.deepEqual(c.state, { websocket: "closed", sse: "closed" });
    await e.clock.advance(10 * 60000);
    assert.equal(e.sockets.length, 1); assert.equal(e.sources.length, 1);
  });
}
test("terminal reason over SSE disconnect event: session_replaced", async () => {
  const e = env0(); const { c, log } = await openBoth(e);
  e.sources[0].emit("disconnect", { reason: "session_replaced", code: 4001 });
  assert.deepEqual(log.disconnect[0], { transport: "sse", reason: "session_replaced", code: 4001, reconnect: false });
  assert.deepEqual(c.state, { websocket: "closed", sse: "closed" });
  await e.clock.advance(600000);
  assert.equal(e.sockets.length + e.sources.length, 2);
});

for (const [code, reason] of [[4004, "heartbeat_timeout"], [1001, "server_shutdown"], [1006, ""]]) {
  test(`non-terminal close ${code} ${reason || "network"}: reconnects after the backoff, attempt resets`, async () => {
    const e = env0(); const { c, log } = await openBoth(e, { transports: ["websocket"] });
    e.sockets[0].onclose({ code, reason });
    assert.deepEqual(log.disconnect[0], { transport: "websocket", reason: reason || "network", code, reconnect: true });
    assert.equal(c.state.websocket, "reconnecting");
    await e.clock.advance(499); assert.equal(e.sockets.length, 1);
    await e.clock.advance(1); assert.equal(e.sockets.length, 2);
    e.sockets[1].onopen(); e.sockets[1].onclose({ code, reason });
    await e.clock.advance(499); assert.equal(e.sockets.length, 2);
    await e.clock.advance(1); assert.equal(e.sockets.length, 3, "attempt reset after open: 500 ms again");
    c.close();
  });
}

// ----- 7, 8 -----
test("auth_expired (4002) with a token function: reconnects at once with a fresh token", async () => {
  const e = env0(); let calls = 0; const token = () => jwt("alice", ++calls);
  const { c } = await openBoth(e, { transports: ["websocket"], token });
  const before = calls;
  e.sockets[0].onclose({ code: 4002, reason: "auth_expired" });
  await e.clock.advance(0);
  assert.equal(e.sockets.length, 2);
  assert.ok(calls > before);
  assert.deepEqual(e.sockets[1].protocols, ["bearer", jwt("alice", calls)]);
  c.close();
});

async function failedOpen(routeAnswer, opts = {}) {
  const e = env0(); e.routes[`GET ${SESSION}`] = routeAnswer;
  const c = client(e, { transports: ["websocket"], ...opts }); const log = record(c); c.connect(); await flush();
  e.sockets[0].onclose({ code: 1006, reason: "" }); await flush();
  return { e, c, log };
}
test("failed open + 401 with a string token: terminal unauthorized", async () => {
  const { e, c, log } = await failedOpen({ status: 401, body: {} });
  assert.equal(log.disconnect[0].reason, "unauthorized"); assert.equal(log.disconnect[0].reconnect, false);
  assert.equal(c.state.websocket, "closed"); await e.clock.advance(600000); assert.equal(e.sockets.length, 1);
});
test("failed open + 401 with a token function: auth_expired, then unauthorized on a second 401", async () => {
  const { e, log } = await failedOpen({ status: 401, body: {} }, { token: () => TOKEN });
  assert.deepEqual([log.disconnect[0].reason, log.disconnect[0].reconnect], ["auth_expired", true]);
  await e.clock.advance(0); assert.equal(e.sockets.length, 2);
  e.sockets[1].onclose({ code: 1006, reason: "" }); await flush();
  assert.deepEqual([log.disconnect[1].reason, log.disconnect[1].reconnect], ["unauthorized", false]);
});
test("failed open + 200 naming another session: terminal session_replaced", async () => {
  const { e, log } = await failedOpen({ status: 200, body: { session_id: "other" } });
  assert.deepEqual([log.disconnect[0].reason, log.disconnect[0].reconnect], ["session_replaced", false]);
  await e.clock.advance(600000); assert.equal(e.sockets.length, 1);
});
test("failed open + fetch rejecting: network, retried", async () => {
  const { e, c, log } = await failedOpen(() => new Error("offline"));
  assert.deepEqual([log.disconnect[0].reason, log.disconnect[0].reconnect], ["network", true]);
  await e.clock.advance(500); assert.equal(e.sockets.length, 2); c.close();
});

// ----- 9, 10, 11 -----
test("watchdog: silence for heartbeatTimeout ends a transport; messages and SSE pings reset it", async () => {
  const e = env0(); const { c, log } = await openBoth(e, { heartbeatTimeout: 1000, pingInterval: 100000 });
  await e.clock.advance(900); e.sources[0].emit("ping", ""); e.sockets[0].onmessage({ data: JSON.stringify(env("m1")) });
  await e.clock.advance(900); assert.equal(log.disconnect.length, 0);
  await e.clock.advance(100);
  assert.deepEqual(log.disconnect.map((d) => [d.reason, d.reconnect]).sort(), [["watchdog", true], ["watchdog", true]]);
  c.close();
});
test("WebSocket ping frame every pingInterval", async () => {
  const e = env0(); const { c } = await openBoth(e, { transports: ["websocket"], pingInterval: 1000 });
  await e.clock.advance(3000);
  const pings = e.sockets[0].frames().filter((f) => f.type === "ping");
  assert.equal(pings.length, 3); assert.ok(pings.every((p) => typeof p.id === "string")); c.close();
});
test("acks: over the WebSocket; duplicates acked but not re-emitted", async () => {
  const e = env0(); const { c, log } = await openBoth(e);
  e.sockets[0].onmessage({ data: JSON.stringify(env("a-1", { ack: true })) });
  e.sources[0].emit("message", env("a-1", { ack: true }));
  const acks = e.sockets[0].frames().filter((f) => f.type === "ack");
  assert.deepEqual(acks, [{ type: "ack", data: { id: "a-1" } }, { type: "ack", data: { id: "a-1" } }]);
  assert.equal(log.message.length, 1); c.close();
});
test("acks: SSE-only client POSTs /api/messages with the bearer token", async () => {
  const e = env0(); e.routes["POST /api/messages"] = { status: 200, body: {} };
  const { c } = await openBoth(e, { transports: ["sse"] });
  e.sources[0].emit("message", env("a-2", { ack: true })); await flush();
  const r = e.requests.find((x) => x.path === "/api/messages");
  assert.deepEqual(r.body, { type: "ack", data: { id: "a-2" } });
  assert.equal(r.headers.authorization, `Bearer ${TOKEN}`); c.close();
});

// ----- 12 -----
test("send() over the WebSocket resolves with the matching reply", async () => {
  const e = env0(); const { c } = await openBoth(e, { transports: ["websocket"] });
  const p = c.send("say", { text: "hi" });
  const f = e.sockets[0].frames().at(-1);
  assert.deepEqual([f.type, f.data], ["say", { text: "hi" }]);
  const reply = env("r-1", { type: "said", reply: true, data: { id: f.id } });
  e.sockets[0].onmessage({ data: JSON.stringify(env("r-0", { type: "said", reply: true, data: { id: "other" } })) });
  e.sockets[0].onmessage({ data: JSON.stringify(reply) });
  assert.deepEqual(await p, reply); c.close();
});
test("send() over the WebSocket: an error reply rejects with DualcastError", async () => {
  const e = env0(); const { c } = await openBoth(e, { transports: ["websocket"] });
  const p = c.send("say", {}); const f = e.sockets[0].frames().at(-1);
  e.sockets[0].onmessage({ data: JSON.stringify(env("r-2", { type: "error", reply: true, data: { id: f.id, error_type: "validation_error", error_code: "INVALID_SAY", message: "bad" } })) });
  await assert.rejects(p, (err) => err instanceof DualcastError && err.errorType === "validation_error" && err.errorCode === "INVALID_SAY");
  c.close();
});
test("send() over the WebSocket: no reply within replyTimeout resolves null", async () => {
  const e = env0(); const { c } = await openBoth(e, { transports: ["websocket"], replyTimeout: 500, pingInterval: 1e9 });
  const p = c.send("say", {}); await e.clock.advance(500); assert.equal(await p, null); c.close();
});
test("send() SSE-only POSTs /api/messages and resolves body.reply; HTTP error rejects", async () => {
  const e = env0(); const reply = env("r-3", { type: "said", reply: true });
  e.routes["POST /api/messages"] = { status: 200, body: { reply } };
  const { c } = await openBoth(e, { transports: ["sse"] });
  assert.deepEqual(await c.send("say", { text: "x" }), reply);
  const r = e.requests.find((x) => x.path === "/api/messages");
  assert.equal(r.body.type, "say"); assert.deepEqual(r.body.data, { text: "x" }); assert.equal(typeof r.body.id, "string");
  e.routes["POST /api/messages"] = { status: 409, body: { error: true, error_type: "session_error", message: "not connected", details: { error_code: "NOT_CONNECTED" } } };
  await assert.rejects(c.send("say", {}), (err) => err instanceof DualcastError && err.errorCode === "NOT_CONNECTED" && err.status === 409 && err.errorType === "session_error");
  c.close();
});

// ----- 13, 14 -----
test("newSession(): own session_replaced while in flight is not terminal; transports reopen on the new id", async () => {
  const e = env0(); let answer; e.routes[`POST ${SESSION}`] = () => new Promise((r) => { answer = r; });
  const { c, log } = await openBoth(e);
  const p = c.newSession(); await flush();
  assert.equal(e.requests.at(-1).method, "POST"); assert.equal(e.requests.at(-1).path, SESSION);
  e.sockets[0].onclose({ code: 4001, reason: "session_replaced" });
  e.sources[0].emit("disconnect", { reason: "session_replaced", code: 4001 });
  assert.ok(log.disconnect.every((d) => d.reconnect === true));
  answer({ status: 200, body: { session_id: "s2" } });
  assert.equal(await p, "s2"); await flush();
  assert.equal(c.sessionId, "s2");
  assert.deepEqual(log.session.at(-1), { sessionId: "s2", previous: "s1" });
  assert.equal(q(e.sockets.at(-1).url).get("session_id"), "s2");
  assert.equal(q(e.sources.at(-1).url).get("session_id"), "s2");
  c.close();
});
test("session learning: no sessionId option -> GET session, session event, later URLs carry it", async () => {
  const e = env0(); e.routes[`GET ${SESSION}`] = { status: 200, body: { session_id: "learned" } };
  const { c, log } = await openBoth(e, { sessionId: undefined, transports: ["websocket"] });
  assert.equal(q(e.sockets[0].url).get("session_id"), null);
  assert.deepEqual(log.session, [{ sessionId: "learned", previous: null }]);
  e.sockets[0].onclose({ code: 1006, reason: "" }); await e.clock.advance(1000);
  assert.equal(q(e.sockets[1].url).get("session_id"), "learned"); c.close();
});

// ----- 15, 16, 18 -----
test("offline: no retry while offline; online reconnects at once; offline cancels a scheduled retry", async () => {
  const e = env0(); const { c } = await openBoth(e, { transports: ["websocket"] });
  e.env.isOnline = false; e.sockets[0].onclose({ code: 1006, reason: "" });
  await e.clock.advance(600000); assert.equal(e.sockets.length, 1);
  e.env.isOnline = true; e.env.events.dispatchEvent(new Event("online")); await flush();
  assert.equal(e.sockets.length, 2);
  e.sockets[1].onopen(); e.sockets[1].onclose({ code: 1006, reason: "" });
  e.env.events.dispatchEvent(new Event("offline"));
  await e.clock.advance(600000); assert.equal(e.sockets.length, 2); c.close();
});
test("close(): client_closed disconnects, closed states, no timers, pending sends rejected; connect() idempotent", async () => {
  const e = env0(); const c = client(e); const log = record(c);
  c.connect(); c.connect(); await flush();
  assert.equal(e.sockets.length, 1); assert.equal(e.sources.length, 1);
  e.sockets[0].onopen(); e.sources[0].emit("open");
  const p = c.send("say", {});
  c.close();
  assert.deepEqual(log.disconnect.map((d) => [d.transport, d.reason, d.reconnect]).sort(), [["sse", "client_closed", false], ["websocket", "client_closed", false]]);
  assert.deepEqual(c.state, { websocket: "closed", sse: "closed" });
  await assert.rejects(p, DualcastError);
  assert.equal(e.clock.timers.size, 0);
  await e.clock.advance(600000); assert.equal(e.sockets.length, 1);
  assert.deepEqual(e.sockets[0].closed.code, 1000); assert.equal(e.sources[0].closed, true);
});
test("constructor validation: TypeError on missing token, empty or unknown transports", () => {
  assert.throws(() => new DualcastClient({ baseUrl: "http://h" }), TypeError);
  assert.throws(() => new DualcastClient(), TypeError);
  assert.throws(() => new DualcastClient({ baseUrl: "http://h", token: TOKEN, transports: [] }), TypeError);
  assert.throws(() => new DualcastClient({ baseUrl: "http://h", token: TOKEN, transports: ["longpoll"] }), TypeError);
});

// ----- 17: tab sharing -----
function shareEnv() {
  const e = env0(); const buses = new Map(); let held = false; const queue = [];
  const grant = () => { if (held) return; const w = queue.shift(); if (!w) return; held = true;
    setImmediate(() => Promise.resolve(w.cb()).then(w.resolve, w.reject).finally(() => { held = false; setImmediate(grant); })); };
  e.env.locks = { request: (name, { signal }, cb) => new Promise((resolve, reject) => {
    const w = { cb, resolve, reject }; queue.push(w);
    signal?.addEventListener("abort", () => { const i = queue.indexOf(w); if (i >= 0) { queue.splice(i, 1); reject(new Error("AbortError")); } });
    grant(); }) };
  e.env.BroadcastChannel = class { constructor(n) { this.n = n; (buses.get(n) ?? buses.set(n, new Set()).get(n)).add(this); }
    postMessage(m) { const d = structuredClone(m); for (const o of buses.get(this.n)) if (o !== this) setImmediate(() => !o.closed && o.onmessage?.({ data: d })); }
    close() { this.closed = true; buses.get(this.n).delete(this); } };
  let r = 0; e.env.random = () => ((r = (r + 0.173) % 1)); // distinct tab ids
  return e;
}
test("tab sharing: one leader holds the sockets, followers mirror, take over and stop on terminal", async () => {
  const e = shareEnv();
  const cs = [0, 1, 2].map(() => client(e, { shareAcrossTabs: true, transports: ["websocket"] }));
  const logs = cs.map(record);
  for (const c of cs) { c.connect(); await flush(); }
  await flush();
  assert.deepEqual(cs.map((c) => c.isLeader), [true, false, false]);
  assert.deepEqual(logs[0].leader, [{ leader: true }]);
  assert.equal(e.sockets.length, 1);
  e.sockets[0].onopen(); await flush();
  assert.deepEqual(cs.map((c) => c.state.websocket), ["open", "open", "open"]);
  for (const id of ["t-1", "t-2"]) e.sockets[0].onmessage({ data: JSON.stringify(env(id)) });
  await flush();
  assert.deepEqual(logs.map((l) => l.message.map((m) => m.id)), [["t-1", "t-2"], ["t-1", "t-2"], ["t-1", "t-2"]]);
  const p = cs[1].send("say", { x: 1 }); await flush();
  const f = e.sockets[0].frames().find((x) => x.type === "say");
  e.sockets[0].onmessage({ data: JSON.stringify(env("r-9", { type: "said", reply: true, data: { id: f.id } })) });
  assert.equal((await p).id, "r-9");
  cs[0].close(); await flush(10);
  assert.equal(cs[1].isLeader, true); assert.equal(e.sockets.length, 2);
  assert.equal(q(e.sockets[1].url).get("last_event_id"), "t-2");
  e.sockets[1].onopen();
  for (const id of ["t-2", "t-3"]) e.sockets[1].onmessage({ data: JSON.stringify(env(id)) });
  await flush();
  assert.deepEqual(logs[1].message.map((m) => m.id), ["t-1", "t-2", "t-3"]);
  assert.deepEqual(logs[2].message.map((m) => m.id), ["t-1", "t-2", "t-3"]);
  e.sockets[1].onclose({ code: 4001, reason: "session_replaced" }); await flush(10);
  await e.clock.advance(600000); await flush(10);
  assert.equal(e.sockets.length, 2, "no tab takes over after a terminal reason");
  assert.deepEqual(cs.map((c) => c.state.websocket), ["closed", "closed", "closed"]);
  assert.equal(cs[2].isLeader, false);
});

test("tab sharing: a follower's send() with no reply resolves null, like the leader's (d.ts)", async () => {
  const e = shareEnv();
  const cs = [0, 1].map(() => client(e, { shareAcrossTabs: true, transports: ["websocket"], replyTimeout: 1000, pingInterval: 1e9 }));
  for (const c of cs) { c.connect(); await flush(); }
  await flush(); e.sockets[0].onopen(); await flush();
  const p = cs[1].send("say", {}); p.catch(() => {}); await flush();
  await e.clock.advance(1000); await flush(10);
  assert.equal(await p, null);
  for (const c of cs) c.close();
});
