// The dualcast React hook: one DualcastClient per mounted component, its state as React state.
//
// React is a peer dependency (imported, never bundled); the client is `./dualcast.js`.

import { useEffect, useRef, useState, useCallback } from "react";
import { DualcastClient } from "./dualcast.js";

const ALL_TRANSPORTS = ["websocket", "sse"];

/** Options the hook consumes itself; everything else is passed to the client. */
const HOOK_OPTIONS = new Set([
  "playerId",
  "autoConnect",
  "onMessage",
  "onSessionChange",
  "onConnectionHealthUpdate",
  "onDisconnect",
  "onRecovery",
  "onError",
  "client",
]);

const EMPTY_STATE = Object.freeze({ websocket: "closed", sse: "closed" });

function configuredTransports(transports) {
  return Array.isArray(transports) ? transports : ALL_TRANSPORTS;
}

function computeHealth(state, transports, lastDisconnect, lastRecovery) {
  const websocket = (state && state.websocket) || "closed";
  const sse = (state && state.sse) || "closed";
  const byName = { websocket, sse };
  const configured = configuredTransports(transports);
  return {
    websocket,
    sse,
    healthy: configured.length > 0 && configured.every((t) => byName[t] === "open"),
    lastDisconnect,
    lastRecovery,
  };
}

function sameHealth(a, b) {
  return (
    a.websocket === b.websocket &&
    a.sse === b.sse &&
    a.healthy === b.healthy &&
    a.lastDisconnect === b.lastDisconnect &&
    a.lastRecovery === b.lastRecovery
  );
}

function noClient(what) {
  return new Error(`useDualcast: ${what} before the client was created (the component has not mounted yet)`);
}

/**
 * Connects a component to a dualcast server through a {@link DualcastClient} and keeps
 * its state (transport states, session, last disconnect and recovery, last message) as
 * React state.
 *
 * The client is created when the component mounts, connected at once unless
 * `autoConnect: false`, and closed when it unmounts. It is created again only when
 * `baseUrl`, `transports` (compared by value), `shareAcrossTabs` or `sessionId` change — and for `sessionId` only when the client is not
 * already on that session (so feeding `onSessionChange`'s id back into `sessionId` does
 * not reconnect). Other client options (`heartbeatTimeout`, `backoff`, …) are read at
 * creation. `token` is read afresh before every connection attempt, so a refreshed token
 * is used on the next (re)connect without reconnecting now. Callbacks are read through
 * refs: passing new functions on every render neither reconnects nor re-subscribes. So is
 * `client` (read at creation): a new instance or factory alone does not re-create.
 *
 * It has the surface of MythosMUD's `useGameConnection` (exported as an alias), so a game
 * built on that hook moves over by changing its import.
 *
 * @example
 * import { useDualcast } from "dualcast-client/react";
 *
 * function Game({ token }) {
 *   const [log, setLog] = useState([]);
 *   const {
 *     isConnected, isConnecting, sessionId, connectionHealth,
 *     sendCommand, createNewSession, switchToSession, getConnectionInfo,
 *   } = useDualcast({
 *     baseUrl: "http://127.0.0.1:8000",
 *     token,                                   // or () => fetchFreshToken()
 *     onMessage: (envelope) => setLog((l) => [...l, envelope]),
 *     onSessionChange: (id) => console.log("session", id),
 *     onConnectionHealthUpdate: (health) => {
 *       if (health.lastRecovery && !health.lastRecovery.complete) reloadGameState();
 *     },
 *   });
 *   return (
 *     <>
 *       <p>{isConnected ? "online" : isConnecting ? "connecting…" : "offline"}
 *          {connectionHealth.healthy ? "" : " (degraded)"} — session {sessionId}</p>
 *       <button onClick={() => sendCommand("say", { text: "hello" })}>Say hello</button>
 *       <button onClick={() => createNewSession()}>New game</button>
 *     </>
 *   );
 * }
 *
 * @param {import("./react.js").UseDualcastOptions} options
 * @returns {import("./react.js").UseDualcastResult}
 */
export function useDualcast(options = /** @type {any} */ ({})) {
  const {
    baseUrl,
    transports,
    sessionId: sessionIdOption,
    shareAcrossTabs,
    autoConnect = true,
  } = options;

  // The latest options, for callbacks, the token and the client's creation.
  const optionsRef = useRef(options);
  optionsRef.current = options;

  const clientRef = useRef(null);
  // The session the current client was created for (see the sessionId effect).
  const createdForSessionRef = useRef(undefined);
  // Should the client be connected? Survives re-creation: a re-created client connects
  // when the previous one was meant to be connected.
  const wantConnectedRef = useRef(autoConnect);
  const lastDisconnectRef = useRef(null);
  const lastRecoveryRef = useRef(null);
  const healthRef = useRef(null);
  if (healthRef.current === null) {
    healthRef.current = computeHealth(EMPTY_STATE, transports, null, null);
  }

  const [client, setClient] = useState(null);
  const [sessionId, setSessionId] = useState(sessionIdOption ?? null);
  const [connectionHealth, setConnectionHealth] = useState(healthRef.current);
  const [lastMessage, setLastMessage] = useState(null);
  // Bumped to re-create the client when `sessionId` changes (see below).
  const [generation, setGeneration] = useState(0);

  const transportsKey = Array.isArray(transports) ? transports.join(",") : "";

  /** Reads the client's state into React state; calls onConnectionHealthUpdate on a change. */
  const sync = useCallback(() => {
    const c = clientRef.current;
    const opts = optionsRef.current;
    const health = computeHealth(
      c ? c.state : EMPTY_STATE,
      opts.transports,
      lastDisconnectRef.current,
      lastRecoveryRef.current,
    );
    if (c) setSessionId(c.sessionId ?? opts.sessionId ?? null);
    if (!sameHealth(health, healthRef.current)) {
      healthRef.current = health;
      setConnectionHealth(health);
      const cb = optionsRef.current.onConnectionHealthUpdate;
      if (typeof cb === "function") cb(health);
    }
  }, []);

  // Creates, subscribes to, connects and (on cleanup) closes the client.
  useEffect(() => {
    const opts = optionsRef.current;
    const clientOpts = {};
    for (const [key, value] of Object.entries(opts)) {
      if (!HOOK_OPTIONS.has(key) && value !== undefined) clientOpts[key] = value;
    }
    if (opts.token !== undefined) {
      // Always the latest token prop, whether a string or a function.
      clientOpts.token = () => {
        const token = optionsRef.current.token;
        return typeof token === "function" ? token() : token;
      };
    }
    const injected = opts.client;
    const c =
      injected && typeof injected === "object"
        ? injected
        : typeof injected === "function"
          ? injected(clientOpts)
          : new DualcastClient(clientOpts);

    clientRef.current = c;
    createdForSessionRef.current = opts.sessionId;
    const call = (name, arg) => {
      const cb = optionsRef.current[name];
      if (typeof cb === "function") cb(arg);
    };
    const listeners = {
      message(envelope) {
        setLastMessage(envelope);
        call("onMessage", envelope);
      },
      state() {
        sync();
      },
      disconnect(event) {
        lastDisconnectRef.current = { ...event, at: Date.now() };
        sync();
        call("onDisconnect", event);
      },
      recovery(event) {
        lastRecoveryRef.current = { ...event, at: Date.now() };
        sync();
        call("onRecovery", event);
      },
      session(event) {
        setSessionId(event.sessionId ?? null);
        call("onSessionChange", event.sessionId ?? null);
      },
      error(error) {
        call("onError", error);
      },
    };
    const unsubscribers = Object.entries(listeners).map(([event, listener]) => {
      const off = c.on(event, listener);
      return typeof off === "function" ? off : () => c.off(event, listener);
    });

    setClient(c);
    if (wantConnectedRef.current) c.connect();
    sync();

    return () => {
      for (const off of unsubscribers) off();
      c.close();
      if (clientRef.current === c) clientRef.current = null;
    };
  }, [baseUrl, transportsKey, shareAcrossTabs, generation, sync]);

  // A new `sessionId` prop re-creates the client, unless the client is already on it
  // (it was created for it, or moved there by newSession/switchSession).
  useEffect(() => {
    const c = clientRef.current;
    if (sessionIdOption === createdForSessionRef.current) return;
    if (c && sessionIdOption != null && c.sessionId === sessionIdOption) {
      createdForSessionRef.current = sessionIdOption;
      return;
    }
    setGeneration((g) => g + 1);
  }, [sessionIdOption]);

  const connect = useCallback(() => {
    wantConnectedRef.current = true;
    const c = clientRef.current;
    if (c) {
      c.connect();
      sync();
    }
  }, [sync]);

  const disconnect = useCallback(() => {
    wantConnectedRef.current = false;
    const c = clientRef.current;
    if (c) {
      c.close();
      sync();
    }
  }, [sync]);

  const sendCommand = useCallback((type, data) => {
    const c = clientRef.current;
    if (!c) return Promise.reject(noClient("sendCommand()"));
    return c.send(type, data);
  }, []);

  const createNewSession = useCallback((id) => {
    const c = clientRef.current;
    if (!c) return Promise.reject(noClient("createNewSession()"));
    return c.newSession(id);
  }, []);

  const switchToSession = useCallback((id) => {
    const c = clientRef.current;
    if (!c) throw noClient("switchToSession()");
    return c.switchSession(id);
  }, []);

  const getConnectionInfo = useCallback(() => {
    const c = clientRef.current;
    const opts = optionsRef.current;
    return {
      playerId: (c && c.playerId) ?? opts.playerId ?? null,
      sessionId: (c && c.sessionId) ?? opts.sessionId ?? null,
      state: { ...(c ? c.state : EMPTY_STATE) },
      lastEventId: (c && c.lastEventId) ?? null,
      isLeader: c ? c.isLeader !== false : false,
      lastDisconnect: lastDisconnectRef.current,
      lastRecovery: lastRecoveryRef.current,
    };
  }, []);

  const isConnected = connectionHealth.websocket === "open" || connectionHealth.sse === "open";
  const isConnecting =
    !isConnected &&
    configuredTransports(transports).some((t) => {
      const s = connectionHealth[t];
      return s === "connecting" || s === "reconnecting";
    });

  return {
    isConnected,
    isConnecting,
    sessionId,
    connectionHealth,
    connect,
    disconnect,
    sendCommand,
    createNewSession,
    switchToSession,
    getConnectionInfo,
    lastMessage,
    client,
  };
}

/** The name MythosMUD's hook has: `import { useGameConnection } from "dualcast-client/react"`. */
export const useGameConnection = useDualcast;
