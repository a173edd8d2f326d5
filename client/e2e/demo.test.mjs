// The browser client and the demo page in headless Chromium, against the example server
// (its own generated secret, so the page gets demo tokens from it). Each test uses its own
// player and browser context; waits are Playwright's or `until`, never sleeps.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

import { ROOT, WAIT_MS, api, launchBrowser, startServer, token, until } from "./harness.mjs";

let server;
let browser;
let service;

before(async () => {
  // No leeway on `exp`, so a 3-second token ends its WebSocket 3 seconds on.
  server = await startServer({ DUALCAST_JWT_LEEWAY_SECS: "0" });
  browser = await launchBrowser();
  const answer = await fetch(`${server.url}/demo/token?player=e2e-service&role=service`);
  assert.equal(answer.status, 200, "the example server with a generated secret gives demo tokens");
  service = (await answer.json()).token;
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/**
 * Records every frame each transport carried (`window.__raw.websocket` / `.sse`: envelope
 * ids), before the page's own scripts run: what the client then emits can be compared
 * with what it received.
 */
const RAW_FRAMES = () => {
  const raw = { websocket: [], sse: [] };
  window.__raw = raw;
  const NativeWebSocket = window.WebSocket;
  window.WebSocket = class extends NativeWebSocket {
    constructor(...args) {
      super(...args);
      this.addEventListener("message", (event) => {
        try {
          raw.websocket.push(JSON.parse(event.data).id);
        } catch {
          raw.websocket.push(null);
        }
      });
    }
  };
  const NativeEventSource = window.EventSource;
  window.EventSource = class extends NativeEventSource {
    constructor(...args) {
      super(...args);
      this.addEventListener("message", (event) => raw.sse.push(event.lastEventId));
    }
  };
};

/** A page of `context` showing the demo with `query`, connected; page errors fail the test. */
async function openDemo(context, query) {
  const page = await context.newPage();
  page.errors = [];
  page.on("pageerror", (error) => page.errors.push(error));
  await page.addInitScript(RAW_FRAMES);
  await page.goto(`${server.url}/?${new URLSearchParams({ autoconnect: "1", ...query })}`);
  return page;
}

/** Waits until `selector`'s text is `text` (or contains it, with `contains`). */
async function textIs(page, selector, text, { contains = false } = {}) {
  await page.waitForFunction(
    ([selector, text, contains]) => {
      const element = document.querySelector(selector);
      if (!element) return false;
      const value = element.textContent.trim();
      return contains ? value.includes(text) : value === text;
    },
    [selector, text, contains],
    { timeout: WAIT_MS },
  );
}

/** The message list: `[{id, type, text}]`. */
function messages(page) {
  return page.$$eval("#messages li", (items) =>
    items.map((li) => ({ id: li.dataset.id, type: li.dataset.type, text: li.textContent })),
  );
}

/** Waits until the page lists a message with `id`. */
async function shows(page, id) {
  await page.waitForSelector(`#messages li[data-id="${id}"]`, { timeout: WAIT_MS, state: "attached" });
}

/** Publishes to `player`; resolves with the delivery report and the envelope id. */
async function publish(player, type, data) {
  const answer = await api(server.url, service, "POST", `/api/players/${player}/messages`, { type, data });
  assert.equal(answer.status, 200, JSON.stringify(answer.body));
  return answer.body;
}

/** The id of the message of `type` with `data.n === n` the page shows, once it does. */
async function idOf(page, type, n) {
  const handle = await page.waitForFunction(
    ([type, n]) => {
      const events = window.dualcastEvents || [];
      const found = events.find((e) => e.event === "message" && e.detail.type === type && e.detail.data && e.detail.data.n === n);
      return found ? found.detail.id : null;
    },
    [type, n],
    { timeout: WAIT_MS },
  );
  return handle.jsonValue();
}

/** The server's count of `player`'s connections by kind. */
async function connectionsOf(player) {
  const answer = await api(server.url, service, "GET", `/api/connections/${player}`);
  assert.equal(answer.status, 200, JSON.stringify(answer.body));
  return { websocket: answer.body.connections.websocket.count, sse: answer.body.connections.sse.count };
}

/** Every id appears once in the page's list. */
async function assertOnce(page, ids, what) {
  const listed = (await messages(page)).map((m) => m.id);
  for (const id of ids) {
    assert.equal(listed.filter((x) => x === id).length, 1, `${what}: ${id} once in ${JSON.stringify(listed)}`);
  }
}

test("a message published once appears once although both transports carried it", async () => {
  const context = await browser.newContext();
  try {
    const page = await openDemo(context, { player: "e2e-once" });
    await textIs(page, "#ws-state", "open");
    await textIs(page, "#sse-state", "open");
    await until("both connections registered", async () => {
      const c = await connectionsOf("e2e-once");
      return c.websocket === 1 && c.sse === 1;
    });
    const report = await publish("e2e-once", "note", { n: 1 });
    assert.equal(report.websocket, 1, JSON.stringify(report));
    assert.equal(report.sse, 1, JSON.stringify(report));
    const id = await idOf(page, "note", 1);
    // Both transports carried it...
    await page.waitForFunction((id) => window.__raw.websocket.includes(id) && window.__raw.sse.includes(id), id, {
      timeout: WAIT_MS,
    });
    // ...and the page shows it once, and the client emitted it once.
    await assertOnce(page, [id], "the page");
    const emitted = await page.evaluate(
      (id) => window.dualcastEvents.filter((e) => e.event === "message" && e.detail.id === id).length,
      id,
    );
    assert.equal(emitted, 1);
    assert.deepEqual(page.errors, []);
  } finally {
    await context.close();
  }
});

test("a WebSocket the server ends reconnects and resumes: nothing lost, recovery complete", async () => {
  const context = await browser.newContext();
  try {
    // The page's tokens live 3 s: the server ends the WebSocket with auth_expired, and the
    // client asks the page's token function for a new one. That request is held here while
    // a message is published, so the message can only come by the resume.
    let armed = false;
    const held = [];
    let release;
    const released = new Promise((resolve) => (release = resolve));
    await context.route("**/demo/token?*", async (route) => {
      const url = new URL(route.request().url());
      if (!armed || url.searchParams.get("role") !== "player") return route.continue();
      held.push(url);
      await released;
      url.searchParams.set("ttl", "3600");
      return route.continue({ url: url.toString() });
    });
    const page = await openDemo(context, { player: "e2e-resume", transports: "websocket", ttl: "3" });
    await textIs(page, "#ws-state", "open");
    await page.waitForFunction(() => document.querySelector("#session-id").textContent.trim() !== "", null, {
      timeout: WAIT_MS,
    });
    await publish("e2e-resume", "note", { n: 1 });
    const first = await idOf(page, "note", 1);
    armed = true;

    await page.waitForFunction(
      () => window.dualcastEvents.some((e) => e.event === "disconnect" && e.detail.reason === "auth_expired"),
      null,
      { timeout: WAIT_MS },
    );
    await until("the client asking for a fresh token", () => held.length > 0);
    await until("the WebSocket gone from the server", async () => (await connectionsOf("e2e-resume")).websocket === 0);
    const missed = await publish("e2e-resume", "note", { n: 2 });
    assert.equal(missed.websocket, 0, `published while no WebSocket is up: ${JSON.stringify(missed)}`);
    release();

    await textIs(page, "#ws-state", "open");
    await page.waitForSelector('#recovery[data-complete="true"]', { timeout: WAIT_MS, state: "attached" });
    const second = await idOf(page, "note", 2);
    const recovery = await page.evaluate(() => window.dualcastEvents.filter((e) => e.event === "recovery").map((e) => e.detail));
    assert.ok(recovery.some((r) => r.complete && r.replayed >= 1), JSON.stringify(recovery));
    await assertOnce(page, [first, second], "after the resume");
    assert.deepEqual(page.errors, []);
  } finally {
    await context.close();
  }
});

test("a second page's new session shows the first 'replaced', and the first stops reconnecting", async () => {
  const context = await browser.newContext();
  try {
    const first = await openDemo(context, { player: "e2e-replaced" });
    await textIs(first, "#ws-state", "open");
    await textIs(first, "#sse-state", "open");
    const second = await openDemo(context, { player: "e2e-replaced" });
    await textIs(second, "#ws-state", "open");
    await textIs(second, "#sse-state", "open");
    const before = (await second.textContent("#session-id")).trim();

    await second.click("#new-session");
    await textIs(first, "#status", "replaced", { contains: true });
    await textIs(first, "#ws-state", "closed");
    await textIs(first, "#sse-state", "closed");
    // The second page moved to its new session and holds the player's only connections.
    await second.waitForFunction(
      (before) => {
        const now = document.querySelector("#session-id").textContent.trim();
        return now !== "" && now !== before;
      },
      before,
      { timeout: WAIT_MS },
    );
    await textIs(second, "#ws-state", "open");
    await textIs(second, "#sse-state", "open");
    await until("only the second page's connections", async () => {
      const c = await connectionsOf("e2e-replaced");
      return c.websocket === 1 && c.sse === 1;
    });
    await publish("e2e-replaced", "note", { n: 1 });
    const id = await idOf(second, "note", 1);
    const disconnects = await first.evaluate(() =>
      window.dualcastEvents.filter((e) => e.event === "disconnect").map((e) => e.detail),
    );
    assert.ok(disconnects.length > 0 && disconnects.every((d) => d.reconnect === false), JSON.stringify(disconnects));
    assert.ok(disconnects.some((d) => d.reason === "session_replaced"), JSON.stringify(disconnects));
    assert.equal((await first.textContent("#ws-state")).trim(), "closed");
    assert.equal((await first.textContent("#sse-state")).trim(), "closed");
    assert.equal(await first.locator(`#messages li[data-id="${id}"]`).count(), 0);
    assert.deepEqual([...first.errors, ...second.errors], []);
  } finally {
    await context.close();
  }
});

test("an SSE-only client's say reaches a WebSocket-only client in the room", async () => {
  const context = await browser.newContext();
  try {
    const listener = await openDemo(context, { player: "e2e-ws-only", transports: "websocket" });
    const speaker = await openDemo(context, { player: "e2e-sse-only", transports: "sse" });
    await textIs(listener, "#ws-state", "open");
    await textIs(speaker, "#sse-state", "open");
    assert.equal((await speaker.textContent("#ws-state")).trim(), "closed");
    // Both are members of the lobby once the page says so.
    await until("both in the lobby", async () => {
      const answer = await api(server.url, service, "GET", "/api/connections/e2e-sse-only");
      return answer.status === 200 && answer.body.connections.sse.count === 1;
    });
    const text = `hello from SSE ${Date.now()}`;
    await speaker.fill("#say-text", text);
    const [request] = await Promise.all([
      speaker.waitForRequest((r) => r.url().endsWith("/api/messages") && r.method() === "POST", { timeout: WAIT_MS }),
      speaker.click("#say-send"),
    ]);
    assert.ok(request, "the SSE-only page sent its say over HTTP");
    await listener.waitForFunction(
      (text) => window.dualcastEvents.some((e) => e.event === "message" && e.detail.type === "say" && e.detail.data.text === text && e.detail.data.from === "e2e-sse-only"),
      text,
      { timeout: WAIT_MS },
    );
    await textIs(listener, "#messages", text, { contains: true });
    assert.deepEqual([...listener.errors, ...speaker.errors], []);
  } finally {
    await context.close();
  }
});

test("the monitoring panel counts the open pages' connections (and the README's screenshot)", async () => {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  try {
    // Earlier tests' pages are closed; wait until the server let go of them.
    const total = async () => {
      const answer = await api(server.url, service, "GET", "/api/connections/stats");
      assert.equal(answer.status, 200, JSON.stringify(answer.body));
      return answer.body.total_connections;
    };
    await until("no connections left from earlier tests", async () => (await total()) === 0);
    const both = await openDemo(context, { player: "e2e-monitor-a" });
    const sseOnly = await openDemo(context, { player: "e2e-monitor-b", transports: "sse" });
    await textIs(both, "#ws-state", "open");
    await textIs(both, "#sse-state", "open");
    await textIs(sseOnly, "#sse-state", "open");
    await until("the server counting the three connections", async () => (await total()) === 3);
    // Both pages' panels show one WebSocket and two SSE streams, and both players.
    for (const page of [both, sseOnly]) {
      await textIs(page, "#monitor-ws", "1");
      await textIs(page, "#monitor-sse", "2");
      await page.waitForSelector('#presence li[data-player="e2e-monitor-a"]', { timeout: WAIT_MS, state: "attached" });
      await page.waitForSelector('#presence li[data-player="e2e-monitor-b"]', { timeout: WAIT_MS, state: "attached" });
    }

    // A little chat and a few messages, so the screenshot shows the page at work.
    for (let n = 1; n <= 3; n++) await publish("e2e-monitor-a", "score", { n, points: 10 * n });
    await idOf(both, "score", 3);
    await both.fill("#say-text", "good game!");
    await both.click("#say-send");
    await both.waitForFunction(() => window.dualcastEvents.some((e) => e.event === "message" && e.detail.type === "say"), null, {
      timeout: WAIT_MS,
    });
    await both.waitForFunction(() => Number(document.querySelector("#monitor-rate").textContent) > 0, null, { timeout: WAIT_MS });
    const dir = join(ROOT, "target", "e2e");
    mkdirSync(dir, { recursive: true });
    await both.screenshot({ path: join(dir, "demo.png") });
    assert.deepEqual([...both.errors, ...sseOnly.errors], []);
  } finally {
    await context.close();
  }
});

test("eight tabs sharing one player hold one set of connections; closing the leader loses nothing", async () => {
  const context = await browser.newContext();
  try {
    const player = "e2e-tabs";
    const tabs = [];
    for (let i = 0; i < 8; i++) tabs.push(await openDemo(context, { player, share: "1" }));
    const leaders = async () => {
      const roles = await Promise.all(tabs.map((t) => t.textContent("#leader").then((s) => s.trim())));
      return tabs.filter((_, i) => roles[i] === "leader");
    };
    await until("one leader tab", async () => (await leaders()).length === 1);
    for (const tab of tabs) {
      await textIs(tab, "#ws-state", "open");
      await textIs(tab, "#sse-state", "open");
    }
    await until("one WebSocket and one SSE stream for eight tabs", async () => {
      const c = await connectionsOf(player);
      return c.websocket === 1 && c.sse === 1;
    });
    assert.deepEqual(await connectionsOf(player), { websocket: 1, sse: 1 });

    await publish(player, "note", { n: 1 });
    const ids = [await idOf(tabs[0], "note", 1)];
    for (const tab of tabs) await shows(tab, ids[0]);

    // The leader tab closes; a message is published at once, while no tab may hold a
    // connection, and another once a new leader is up.
    const [leader] = await leaders();
    await leader.close();
    const rest = tabs.filter((t) => t !== leader);
    await publish(player, "note", { n: 2 });
    await until("a new leader", async () => {
      const roles = await Promise.all(rest.map((t) => t.textContent("#leader").then((s) => s.trim())));
      return roles.filter((r) => r === "leader").length === 1;
    });
    for (const tab of rest) await textIs(tab, "#ws-state", "open");
    await until("one set of connections again", async () => {
      const c = await connectionsOf(player);
      return c.websocket === 1 && c.sse === 1;
    });
    await publish(player, "note", { n: 3 });
    ids.push(await idOf(rest[0], "note", 2), await idOf(rest[0], "note", 3));
    for (const tab of rest) {
      for (const id of ids) await shows(tab, id);
      await assertOnce(tab, ids, "a tab after the leader left");
      const emitted = await tab.evaluate(() => window.dualcastEvents.filter((e) => e.event === "message" && e.detail.type === "note").length);
      assert.equal(emitted, 3, "each note emitted once in every tab");
    }
    assert.deepEqual(rest.flatMap((t) => t.errors), []);
  } finally {
    await context.close();
  }
});

test("with a configured secret the page asks for tokens, and connects with the ones it is given", async () => {
  const secret = "e2e-configured-secret-of-at-least-32-bytes";
  const configured = await startServer({ DUALCAST_JWT_SECRET: secret });
  const context = await browser.newContext();
  try {
    const page = await context.newPage();
    const errors = [];
    page.on("pageerror", (error) => errors.push(error));
    await page.goto(`${configured.url}/?player=e2e-configured&autoconnect=1`);
    await page.waitForSelector("#token-input", { state: "visible", timeout: WAIT_MS });
    await textIs(page, "#status", "paste a player token", { contains: true });

    const query = new URLSearchParams({
      player: "e2e-configured",
      autoconnect: "1",
      token: token(secret, "e2e-configured"),
      service_token: token(secret, "e2e-backend", "service"),
    });
    await page.goto(`${configured.url}/?${query}`);
    await textIs(page, "#ws-state", "open");
    await textIs(page, "#sse-state", "open");
    await textIs(page, "#monitor-ws", "1");
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
    await configured.stop();
  }
});
