// The React hook (client/react.js) against a fake client: `node --test test/react.test.mjs`.

import { test } from "node:test";
import assert from "node:assert/strict";
import React, { StrictMode } from "react";
import TestRenderer from "react-test-renderer";
import { useDualcast, useGameConnection } from "../react.js";
import { DualcastClient } from "../dualcast.js";

const { create, act } = TestRenderer;
globalThis.IS_REACT_ACT_ENVIRONMENT = true;

/** The members of DualcastClient the hook uses, with a log of calls and an `emit` for the test. */
class FakeClient {
  constructor(options = {}) {
    this.options = options;
    this.listeners = new Map();
    this.calls = [];
    this.state = { websocket: "closed", sse: "closed" };
    this.sessionId = options.sessionId ?? null;
    this.playerId = "p1";
    this.lastEventId = null;
    this.isLeader = true;
  }
  on(event, listener) {
    if (!this.listeners.has(event)) this.listeners.set(event, new Set());
    this.listeners.get(event).add(listener);
    return () => this.off(event, listener);
  }
  off(event, listener) {
    this.listeners.get(event)?.delete(listener);
  }
  listenerCount() {
    let n = 0;
    for (const set of this.listeners.values()) n += set.size;
    return n;
  }
  emit(event, payload) {
    for (const listener of [...(this.listeners.get(event) ?? [])]) listener(payload);
  }
  setState(transport, state) {
    this.state = { ...this.state, [transport]: state };
    this.emit("state", { transport, state });
  }
  connect() {
    this.calls.push(["connect"]);
  }
  close() {
    this.calls.push(["close"]);
    this.state = { websocket: "closed", sse: "closed" };
  }
  send(type, data) {
    this.calls.push(["send", type, data]);
    return Promise.resolve({ id: "e-1", type: "reply", v: 1, ts: 0, data: { echo: type }, reply: true });
  }
  newSession(id) {
    this.calls.push(["newSession", id]);
    return Promise.resolve(id ?? "minted");
  }
  switchSession(id) {
    this.calls.push(["switchSession", id]);
  }
  count(name) {
    return this.calls.filter((c) => c[0] === name).length;
  }
}

/** Renders the hook; `result.current` is its latest return value. */
function renderHook(initialProps, { strict = false } = {}) {
  const result = { current: null, renders: 0 };
  function Probe(props) {
    result.current = useDualcast(props);
    result.renders += 1;
    return null;
  }
  const element = (props) => {
    const probe = React.createElement(Probe, props);
    return strict ? React.createElement(StrictMode, null, probe) : probe;
  };
  let renderer;
  act(() => {
    renderer = create(element(initialProps));
  });
  return {
    result,
    rerender(props) {
      act(() => renderer.update(element(props)));
    },
    unmount() {
      act(() => renderer.unmount());
    },
  };
}

test("useGameConnection is the same hook", () => {
  assert.equal(useGameConnection, useDualcast);
});

test("connects on mount and closes on unmount, unsubscribing", () => {
  const fake = new FakeClient();
  const { result, unmount } = renderHook({ client: fake });
  assert.equal(fake.count("connect"), 1);
  assert.equal(fake.count("close"), 0);
  assert.equal(result.current.client, fake);
  assert.ok(fake.listenerCount() > 0);
  unmount();
  assert.equal(fake.count("close"), 1);
  assert.equal(fake.listenerCount(), 0);
});

test("a factory is called once with the client options, not the hook's", () => {
  const made = [];
  const factory = (options) => {
    const c = new FakeClient(options);
    made.push(c);
    return c;
  };
  const onMessage = () => {};
  const { result, unmount } = renderHook({
    client: factory,
    baseUrl: "http://h:1",
    token: "t1",
    transports: ["websocket"],
    sessionId: "s1",
    heartbeatTimeout: 5000,
    playerId: "p1",
    onMessage,
  });
  assert.equal(made.length, 1);
  const opts = made[0].options;
  assert.equal(opts.baseUrl, "http://h:1");
  assert.deepEqual(opts.transports, ["websocket"]);
  assert.equal(opts.sessionId, "s1");
  assert.equal(opts.heartbeatTimeout, 5000);
  for (const key of ["playerId", "onMessage", "client", "autoConnect"]) assert.ok(!(key in opts), key);
  assert.equal(typeof opts.token, "function");
  assert.equal(opts.token(), "t1");
  assert.equal(result.current.client, made[0]);
  assert.equal(result.current.sessionId, "s1");
  unmount();
  assert.equal(made[0].count("close"), 1);
});

test("state events update isConnected, isConnecting, connectionHealth and call onConnectionHealthUpdate", () => {
  const fake = new FakeClient();
  const updates = [];
  const { result } = renderHook({ client: fake, onConnectionHealthUpdate: (h) => updates.push(h) });
  assert.equal(result.current.isConnected, false);
  assert.equal(result.current.isConnecting, false);
  assert.deepEqual(result.current.connectionHealth, {
    websocket: "closed",
    sse: "closed",
    healthy: false,
    lastDisconnect: null,
    lastRecovery: null,
  });
  assert.equal(updates.length, 0);

  act(() => fake.setState("websocket", "connecting"));
  assert.equal(result.current.isConnecting, true);
  assert.equal(result.current.isConnected, false);
  assert.equal(result.current.connectionHealth.websocket, "connecting");
  assert.equal(updates.length, 1);

  act(() => fake.setState("websocket", "open"));
  assert.equal(result.current.isConnected, true);
  assert.equal(result.current.isConnecting, false);
  assert.equal(result.current.connectionHealth.healthy, false, "sse is not open yet");

  act(() => fake.setState("sse", "open"));
  assert.equal(result.current.connectionHealth.healthy, true);
  assert.equal(updates.length, 3);
  assert.deepEqual(updates.at(-1), result.current.connectionHealth);

  // The same state again is no change.
  act(() => fake.emit("state", { transport: "sse", state: "open" }));
  assert.equal(updates.length, 3);

  const drop = { transport: "websocket", reason: "network", code: 1006, reconnect: true };
  act(() => {
    fake.state = { ...fake.state, websocket: "reconnecting" };
    fake.emit("disconnect", drop);
    fake.emit("state", { transport: "websocket", state: "reconnecting" });
  });
  const health = result.current.connectionHealth;
  assert.equal(result.current.isConnected, true, "sse is still open");
  assert.equal(health.healthy, false);
  assert.equal(health.websocket, "reconnecting");
  assert.equal(health.lastDisconnect.reason, "network");
  assert.equal(typeof health.lastDisconnect.at, "number");
  assert.equal(updates.length, 4);

  act(() => {
    fake.state = { ...fake.state, websocket: "open" };
    fake.emit("recovery", { transport: "websocket", complete: false, replayed: 3 });
  });
  assert.equal(result.current.connectionHealth.healthy, true);
  assert.equal(result.current.connectionHealth.lastRecovery.complete, false);
  assert.equal(result.current.connectionHealth.lastRecovery.replayed, 3);
  assert.equal(updates.length, 5);
  assert.deepEqual(result.current.getConnectionInfo().lastRecovery, result.current.connectionHealth.lastRecovery);

  act(() => {
    fake.state = { websocket: "reconnecting", sse: "reconnecting" };
    fake.emit("state", { transport: "sse", state: "reconnecting" });
  });
  assert.equal(result.current.isConnected, false);
  assert.equal(result.current.isConnecting, true);
});

test("healthy means every configured transport open", () => {
  const fake = new FakeClient();
  const { result } = renderHook({ client: fake, transports: ["sse"] });
  act(() => fake.setState("sse", "open"));
  assert.equal(result.current.connectionHealth.healthy, true);
  assert.equal(result.current.connectionHealth.websocket, "closed");
});

test("session events call onSessionChange and update sessionId", () => {
  const fake = new FakeClient();
  const seen = [];
  const { result } = renderHook({ client: fake, onSessionChange: (id) => seen.push(id) });
  assert.equal(result.current.sessionId, null);
  act(() => {
    fake.sessionId = "s-42";
    fake.emit("session", { sessionId: "s-42", previous: null });
  });
  assert.deepEqual(seen, ["s-42"]);
  assert.equal(result.current.sessionId, "s-42");
  assert.equal(result.current.getConnectionInfo().sessionId, "s-42");
});

test("messages call onMessage and set lastMessage", () => {
  const fake = new FakeClient();
  const got = [];
  const { result } = renderHook({ client: fake, onMessage: (e) => got.push(e.id) });
  assert.equal(result.current.lastMessage, null);
  const envelope = { id: "0-1", type: "say", v: 1, ts: 1, data: { text: "hi" } };
  act(() => fake.emit("message", envelope));
  assert.deepEqual(got, ["0-1"]);
  assert.equal(result.current.lastMessage, envelope);
});

test("sendCommand, createNewSession and switchToSession delegate to the client", async () => {
  const fake = new FakeClient();
  const { result } = renderHook({ client: fake });
  const reply = await result.current.sendCommand("say", { text: "hi" });
  assert.deepEqual(fake.calls.at(-1), ["send", "say", { text: "hi" }]);
  assert.equal(reply.data.echo, "say");
  assert.equal(await result.current.createNewSession("s-9"), "s-9");
  assert.deepEqual(fake.calls.at(-1), ["newSession", "s-9"]);
  assert.equal(await result.current.createNewSession(), "minted");
  assert.deepEqual(fake.calls.at(-1), ["newSession", undefined]);
  result.current.switchToSession("s-7");
  assert.deepEqual(fake.calls.at(-1), ["switchSession", "s-7"]);
});

test("getConnectionInfo reads the client now", () => {
  const fake = new FakeClient();
  const { result } = renderHook({ client: fake, playerId: "ignored-when-the-client-knows" });
  fake.state = { websocket: "open", sse: "connecting" };
  fake.sessionId = "s1";
  fake.lastEventId = "0-7";
  fake.isLeader = false;
  assert.deepEqual(result.current.getConnectionInfo(), {
    playerId: "p1",
    sessionId: "s1",
    state: { websocket: "open", sse: "connecting" },
    lastEventId: "0-7",
    isLeader: false,
    lastDisconnect: null,
    lastRecovery: null,
  });
  fake.playerId = null;
  assert.equal(result.current.getConnectionInfo().playerId, "ignored-when-the-client-knows");
});

test("changing a callback prop neither recreates the client nor reconnects, and the new one is called", () => {
  const made = [];
  const factory = (options) => {
    const c = new FakeClient(options);
    made.push(c);
    return c;
  };
  const first = [];
  const second = [];
  const { result, rerender } = renderHook({
    client: factory,
    token: "t1",
    transports: ["websocket", "sse"],
    onMessage: (e) => first.push(e.id),
  });
  const fns = ["connect", "disconnect", "sendCommand", "createNewSession", "switchToSession", "getConnectionInfo"].map(
    (k) => result.current[k],
  );
  // New callback, new (equal) transports array, new factory function, new token: none re-creates.
  rerender({
    client: (options) => factory(options),
    token: "t2",
    transports: ["websocket", "sse"],
    onMessage: (e) => second.push(e.id),
  });
  assert.equal(made.length, 1);
  assert.equal(made[0].count("connect"), 1);
  assert.equal(made[0].count("close"), 0);
  assert.equal(result.current.client, made[0]);
  act(() => made[0].emit("message", { id: "0-1", type: "t", v: 1, ts: 0, data: null }));
  assert.deepEqual(first, []);
  assert.deepEqual(second, ["0-1"]);
  // The client reads the token through the hook: the latest one.
  assert.equal(made[0].options.token(), "t2");
  // The returned functions are stable.
  const again = ["connect", "disconnect", "sendCommand", "createNewSession", "switchToSession", "getConnectionInfo"].map(
    (k) => result.current[k],
  );
  assert.deepEqual(again, fns);
});

test("changing baseUrl, transports or shareAcrossTabs re-creates the client and closes the old one", () => {
  const made = [];
  const factory = (options) => {
    const c = new FakeClient(options);
    made.push(c);
    return c;
  };
  const props = { client: factory, baseUrl: "http://a" };
  const { result, rerender } = renderHook(props);
  rerender({ ...props, baseUrl: "http://b" });
  assert.equal(made.length, 2);
  assert.equal(made[0].count("close"), 1);
  assert.equal(made[0].listenerCount(), 0);
  assert.equal(made[1].options.baseUrl, "http://b");
  assert.equal(made[1].count("connect"), 1);
  assert.equal(result.current.client, made[1]);
  rerender({ ...props, baseUrl: "http://b", transports: ["sse"] });
  assert.equal(made.length, 3);
  rerender({ ...props, baseUrl: "http://b", transports: ["sse"], shareAcrossTabs: true });
  assert.equal(made.length, 4);
  assert.equal(made[3].options.shareAcrossTabs, true);
  // Events from a closed client are ignored.
  act(() => made[0].setState("websocket", "open"));
  assert.equal(result.current.isConnected, false);
});

test("a new sessionId prop re-creates the client, unless the client is already on it", () => {
  const made = [];
  const factory = (options) => {
    const c = new FakeClient(options);
    made.push(c);
    return c;
  };
  const { result, rerender } = renderHook({ client: factory, sessionId: "s1" });
  assert.equal(made.length, 1);
  rerender({ client: factory, sessionId: "s2" });
  assert.equal(made.length, 2);
  assert.equal(made[0].count("close"), 1);
  assert.equal(made[1].options.sessionId, "s2");
  assert.equal(result.current.sessionId, "s2");
  // The client moved to s3 itself (newSession); the app feeds the id back: no re-creation.
  act(() => {
    made[1].sessionId = "s3";
    made[1].emit("session", { sessionId: "s3", previous: "s2" });
  });
  rerender({ client: factory, sessionId: "s3" });
  assert.equal(made.length, 2);
  assert.equal(result.current.sessionId, "s3");
});

test("autoConnect: false waits for connect(); disconnect() closes; a re-created client follows", () => {
  const made = [];
  const factory = (options) => {
    const c = new FakeClient(options);
    made.push(c);
    return c;
  };
  const { result, rerender } = renderHook({ client: factory, autoConnect: false, baseUrl: "http://a" });
  assert.equal(made.length, 1);
  assert.equal(made[0].count("connect"), 0);
  rerender({ client: factory, autoConnect: false, baseUrl: "http://b" });
  assert.equal(made[1].count("connect"), 0, "still not asked to connect");
  act(() => result.current.connect());
  assert.equal(made[1].count("connect"), 1);
  rerender({ client: factory, autoConnect: false, baseUrl: "http://c" });
  assert.equal(made[2].count("connect"), 1, "connected since connect() was called");
  act(() => result.current.disconnect());
  assert.equal(made[2].count("close"), 1);
  rerender({ client: factory, autoConnect: false, baseUrl: "http://d" });
  assert.equal(made[3].count("connect"), 0, "disconnect() stands");
});

test("connect() reflects a state the client changed synchronously", () => {
  const fake = new FakeClient();
  fake.connect = function () {
    this.calls.push(["connect"]);
    this.state = { websocket: "connecting", sse: "connecting" };
  };
  const { result } = renderHook({ client: fake, autoConnect: false });
  assert.equal(result.current.isConnecting, false);
  act(() => result.current.connect());
  assert.equal(result.current.isConnecting, true);
});

test("StrictMode's double effects leave one connected client", () => {
  const made = [];
  const factory = (options) => {
    const c = new FakeClient(options);
    made.push(c);
    return c;
  };
  const { result, unmount } = renderHook({ client: factory }, { strict: true });
  const live = made.filter((c) => c.count("close") === 0);
  assert.equal(live.length, 1);
  assert.equal(live[0].count("connect"), 1);
  assert.equal(result.current.client, live[0]);
  unmount();
  assert.ok(made.every((c) => c.count("close") === 1));
});

test("before mount, the commands reject", async () => {
  // The first render runs before the effect that creates the client.
  let firstResult;
  function Probe() {
    const r = useDualcast({ client: new FakeClient(), autoConnect: false });
    firstResult ??= r;
    return null;
  }
  let renderer;
  act(() => {
    renderer = create(React.createElement(Probe));
  });
  assert.equal(firstResult.client, null);
  act(() => renderer.unmount());
  await assert.rejects(firstResult.sendCommand("x"), /useDualcast/);
  await assert.rejects(firstResult.createNewSession(), /useDualcast/);
  assert.throws(() => firstResult.switchToSession("s"), /useDualcast/);
});

test("without a client option, it makes a DualcastClient", () => {
  const { result, unmount } = renderHook({ baseUrl: "http://127.0.0.1:9", token: "t", autoConnect: false });
  assert.ok(result.current.client instanceof DualcastClient);
  unmount();
});
