// Type declarations of `react.js`, the dualcast React hook (`dualcast-client/react`).

import type {
  DisconnectEvent,
  DualcastClient,
  DualcastError,
  DualcastOptions,
  Envelope,
  RecoveryEvent,
  TokenSource,
  Transport,
  TransportState,
} from "./dualcast.js";

/** What the hook uses of a client: a `DualcastClient`, or a stand-in with the same members (tests). */
export type DualcastClientLike = Pick<
  DualcastClient,
  | "on" | "off" | "connect" | "close" | "send" | "newSession" | "switchSession"
  | "state" | "playerId" | "sessionId" | "lastEventId" | "isLeader"
>;

/** A `DisconnectEvent` with when the hook saw it (milliseconds since the Unix epoch). */
export type SeenDisconnect = DisconnectEvent & { at: number };
/** A `RecoveryEvent` with when the hook saw it (milliseconds since the Unix epoch). */
export type SeenRecovery = RecoveryEvent & { at: number };

export interface ConnectionHealth {
  websocket: TransportState;
  sse: TransportState;
  /** Every configured transport (`transports`, default both) is open. */
  healthy: boolean;
  /** The last transport that ended, for whatever reason (`null` until one has). */
  lastDisconnect: SeenDisconnect | null;
  /** The last resume's outcome: `complete: false` means state should be reloaded. */
  lastRecovery: SeenRecovery | null;
}

export interface ConnectionInfo {
  /** The client's player (the token's `sub`), else the `playerId` option, else null. */
  playerId: string | null;
  sessionId: string | null;
  state: Record<Transport, TransportState>;
  lastEventId: string | null;
  isLeader: boolean;
  lastDisconnect: SeenDisconnect | null;
  lastRecovery: SeenRecovery | null;
}

interface UseDualcastBaseOptions extends Omit<DualcastOptions, "token"> {
  /** Informational (the client takes the player from the token): `getConnectionInfo().playerId` before the token is read. */
  playerId?: string;
  /** Connect on mount. Default true; when false, nothing connects until `connect()`. */
  autoConnect?: boolean;
  /** Each envelope, once (the client deduplicates across transports). */
  onMessage?: (envelope: Envelope) => void;
  /** The session changed: `newSession()`, `switchSession()`, or the first one the server confirmed. */
  onSessionChange?: (newSessionId: string | null) => void;
  /** `connectionHealth` changed. */
  onConnectionHealthUpdate?: (health: ConnectionHealth) => void;
  /** A transport ended (also reflected in `connectionHealth.lastDisconnect`). */
  onDisconnect?: (event: DisconnectEvent) => void;
  /** A resume finished (also reflected in `connectionHealth.lastRecovery`). */
  onRecovery?: (event: RecoveryEvent) => void;
  /** The client's `error` event (a refused ack, a bad frame). */
  onError?: (error: DualcastError) => void;
}

/** The client to use instead of `new DualcastClient(options)`: an instance, or a factory given the client options. */
export type ClientSource = DualcastClientLike | ((options: DualcastOptions) => DualcastClientLike);

export type UseDualcastOptions = UseDualcastBaseOptions &
  (
    | { token: TokenSource; client?: ClientSource }
    | { token?: TokenSource; client: ClientSource }
  );

export interface UseDualcastResult {
  /** Any transport is open. */
  isConnected: boolean;
  /** None is open and a configured one is connecting or reconnecting. */
  isConnecting: boolean;
  sessionId: string | null;
  connectionHealth: ConnectionHealth;
  /** Connects the client (and any client the hook re-creates later). */
  connect(): void;
  /** Closes the client; it stays closed until `connect()`. */
  disconnect(): void;
  /** `client.send(type, data)`. */
  sendCommand<T = unknown>(type: string, data?: unknown): Promise<Envelope<T> | null>;
  /** `client.newSession(sessionId)`: resolves with the new session's id. */
  createNewSession(sessionId?: string): Promise<string>;
  /** `client.switchSession(sessionId)`. */
  switchToSession(sessionId: string): void;
  /** A snapshot of the client, read now. */
  getConnectionInfo(): ConnectionInfo;
  /** The last envelope received (`null` until one has). */
  lastMessage: Envelope | null;
  /** The client; `null` during the first render, before the component has mounted. */
  client: DualcastClient | DualcastClientLike | null;
}

/**
 * One dualcast client per mounted component, its state as React state.
 *
 * @example
 * const { isConnected, sessionId, connectionHealth, sendCommand } = useDualcast({
 *   baseUrl: "http://127.0.0.1:8000",
 *   token: () => getAccessToken(),
 *   onMessage: (envelope) => dispatch(envelope),
 * });
 */
export declare function useDualcast(options: UseDualcastOptions): UseDualcastResult;

/** Alias with the name of MythosMUD's hook, so a game built on it changes only its import. */
export declare const useGameConnection: typeof useDualcast;
