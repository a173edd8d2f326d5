// What the end-to-end tests share: the example server as a real process on a free
// loopback port, HS256 tokens, headless Chromium through playwright-core, and waits that
// fail with what they waited for (never a sleep).

import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";

const here = dirname(fileURLToPath(import.meta.url));
/** The repository's root. */
export const ROOT = join(here, "..", "..");
/** How long any one awaited event may take before the test fails. */
export const WAIT_MS = 15000;

/** The example server binary: `DUALCAST_SERVER_BIN`, else cargo's debug build. */
export function serverBinary() {
  const binary = process.env.DUALCAST_SERVER_BIN ?? join(ROOT, "target", "debug", "examples", "server");
  if (!existsSync(binary)) {
    throw new Error(`no example server at ${binary}: run \`cargo build --example server\` first`);
  }
  return binary;
}

/**
 * Starts the example server on `127.0.0.1:0` with `env` added to a clean environment
 * (no inherited DUALCAST_*); resolves once it logged its address.
 */
export async function startServer(env = {}) {
  const clean = Object.fromEntries(
    Object.entries(process.env).filter(([name]) => !name.startsWith("DUALCAST_") && name !== "RUST_LOG"),
  );
  const child = spawn(serverBinary(), [], {
    env: { ...clean, DUALCAST_ADDR: "127.0.0.1:0", RUST_LOG: "info", ...env },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const log = [];
  const lines = createInterface({ input: child.stdout });
  const exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  const url = await within("the example server's listening line", new Promise((resolve, reject) => {
    lines.on("line", (line) => {
      log.push(line);
      const match = /addr=(\S+)/.exec(line);
      if (match && line.includes("listening")) resolve(`http://${match[1]}`);
    });
    exited.then(({ code, signal }) => reject(new Error(`the server exited (${code ?? signal}) before listening:\n${log.join("\n")}`)));
  }));
  return {
    url,
    log,
    /** Stops it (SIGTERM, then SIGKILL after the wait) and resolves when it exited. */
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), WAIT_MS);
      await exited;
      clearTimeout(timer);
    },
  };
}

const base64url = (value) => Buffer.from(value).toString("base64url");

/** An HS256 JWT for `sub` with `role`, valid for `seconds`. */
export function token(secret, sub, role = "player", seconds = 3600) {
  const header = base64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const exp = Math.floor(Date.now() / 1000) + seconds;
  const payload = base64url(JSON.stringify({ sub, role, exp }));
  const signature = createHmac("sha256", secret).update(`${header}.${payload}`).digest("base64url");
  return `${header}.${payload}.${signature}`;
}

/** `fetch` as a service: JSON body in, `{status, body}` out. */
export async function api(url, serviceToken, method, path, body) {
  const response = await fetch(url + path, {
    method,
    headers: {
      authorization: `Bearer ${serviceToken}`,
      ...(body === undefined ? {} : { "content-type": "application/json" }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let parsed = text;
  try { parsed = JSON.parse(text); } catch { /* not JSON */ }
  return { status: response.status, body: parsed };
}

/** Headless Debian Chromium through playwright-core, with the flags a closed network needs. */
export async function launchBrowser() {
  const { chromium } = await import("playwright-core");
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

/** `promise`, or a failure naming `what` after `ms`. */
export async function within(what, promise, ms = WAIT_MS) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Polls `probe` (async, truthy when done) every 50 ms until it holds; its last value. */
export async function until(what, probe, ms = WAIT_MS) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    last = await probe();
    if (last) return last;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
