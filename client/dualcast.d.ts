// Type declarations of `dualcast.js`, the dualcast browser client.
//
// One player's WebSocket and EventSource (either or both) to a dualcast server, every
// message emitted once, resumed after a reconnect, optionally shared by all of a browser's
// tabs. The wire protocol is the server's (SPEC §2–§6, §11).

/** The two transports. */
export type Transport = "websocket" | "sse";

/** A transport's state: `closed` before `connect()`, after `close()` and after a terminal reason. */
export type TransportState = "connecting" | "open" | "reconnecting" | "closed";

/** A server-to-client message (SPEC §4). */
export interface Envelope<T = unknown> {
  /** Unique in the server's epoch (`<epoch>-<sequence>`): the dedup and resume key. */
  id: string;
  type: string;
  v: number;
  /** Milliseconds since the Unix epoch. */
  ts: number;
  /** The room the message was published to, if any. */
  room?: string;
  data: T;
  /** The server resends it until the client acks it (the client does so by itself). */
  ack?: true;
  /** A reply to what this connection sent (`pong`, `error`, a handler's reply): not resumable. */
  reply?: true;
}

/** Why a transport ended, as the server said (close frame / SSE `disconnect` event) or as the client saw it. */
export interface DisconnectEvent {
  transport: Transport;
  /**
   * The server's reason (`client_closed`, `logout`, `session_replaced`, `auth_expired`,
   * `unauthorized`, `protocol_error`, `heartbeat_timeout`, `slow_consumer`,
   * `server_shutdown`), or the client's own: `network` (dropped without a reason),
   * `watchdog` (nothing heard within the heartbeat window), `refused` (the server
   * would not open it).
   */
  reason: string;
  /** The WebSocket close code (SSE: the code the server's `disconnect` event gives; 0 when none). */
  code: number;
  /** Will the client try again? Never after `session_replaced`, `logout` or `unauthorized`. */
  reconnect: boolean;
}

/** A resume's outcome: `complete: false` means messages may be missing and state should be reloaded. */
export interface RecoveryEvent {
  transport: Transport;
  complete: boolean;
  replayed: number;
}

export interface StateEvent {
  transport: Transport;
  state: TransportState;
}

/** A session change: `newSession()`, `switchSession()`, or the first session the server confirmed. */
export interface SessionEvent {
  sessionId: string | null;
  previous: string | null;
}

export interface ClientEvents {
  /** Once per envelope id, whichever transport carried it first. */
  message: Envelope;
  state: StateEvent;
  disconnect: DisconnectEvent;
  recovery: RecoveryEvent;
  session: SessionEvent;
  /** Tab sharing: this tab became (or stopped being) the one holding the connections. */
  leader: { leader: boolean };
  /** Something went wrong that is not a disconnect (a refused ack, a bad frame). */
  error: DualcastError;
}

export type TokenSource = string | (() => string | Promise<string>);

export interface DualcastOptions {
  /** The server's origin, e.g. `http://127.0.0.1:8000`. Default: the page's origin. */
  baseUrl?: string;
  /** A JWT, or a function giving one (called before every connection attempt, so it can refresh). */
  token: TokenSource;
  /** Default `["websocket", "sse"]`. */
  transports?: Transport[];
  /** The game session to join (`session_id`); default: the player's current one. */
  sessionId?: string;
  /** One set of connections per browser and player, held by a leader tab (Web Locks + BroadcastChannel). Default false. */
  shareAcrossTabs?: boolean;
  /** Milliseconds without any frame (message, pong, SSE `ping`) before a transport is dead. Default 45000. */
  heartbeatTimeout?: number;
  /** Milliseconds between the WebSocket's `ping` messages. Default 20000. */
  pingInterval?: number;
  /** Full-jitter exponential backoff: first delay up to `base`, doubling up to `cap`. Default 1000 / 30000 ms. */
  backoff?: { base?: number; cap?: number };
  /** Envelope ids remembered for dedup. Default 1024. */
  dedupSize?: number;
  /** Milliseconds `send()` waits for a WebSocket reply before resolving `null`. Default 10000. */
  replyTimeout?: number;
  /** Replaces what the client takes from the page (tests run it in node with fakes). */
  env?: Partial<DualcastEnvironment>;
}

/** What the client takes from its surroundings; each defaults to the page's own. */
export interface DualcastEnvironment {
  WebSocket: typeof WebSocket;
  EventSource: typeof EventSource;
  fetch: typeof fetch;
  setTimeout(callback: () => void, ms: number): unknown;
  clearTimeout(id: unknown): void;
  random(): number;
  locks: LockManager | undefined;
  BroadcastChannel: typeof BroadcastChannel | undefined;
  /** Where `online` and `offline` are dispatched (the window). */
  events: EventTarget | null;
  onLine(): boolean;
  /** The default `baseUrl`. */
  origin: string | undefined;
}

/** A refusal from the server (SPEC error body or an `error` envelope). */
export declare class DualcastError extends Error {
  /** `validation_error`, `session_error`, `rate_limited`, …, or `network`. */
  errorType: string;
  /** `INVALID_SAY`, `NOT_CONNECTED`, … when the server gave one. */
  errorCode: string | null;
  /** The HTTP status, when it came over HTTP. */
  status: number | null;
  details: Record<string, unknown>;
}

export declare class DualcastClient {
  constructor(options: DualcastOptions);
  /** Subscribes; returns the function that unsubscribes. */
  on<K extends keyof ClientEvents>(event: K, listener: (event: ClientEvents[K]) => void): () => void;
  off<K extends keyof ClientEvents>(event: K, listener: (event: ClientEvents[K]) => void): void;
  /** Opens the transports (or joins the tab that holds them). Idempotent. */
  connect(): void;
  /** Closes every transport and stops reconnecting. */
  close(): void;
  /**
   * Sends a client message: over the WebSocket when it is open, else `POST /api/messages`.
   * Resolves with the server's reply envelope (`null` when none came within `replyTimeout`);
   * rejects with a `DualcastError` when the server refused it.
   */
  send<T = unknown>(type: string, data?: unknown): Promise<Envelope<T> | null>;
  /** Begins a new session (`POST /api/connections/{player}/session`; minted when no id) and moves the transports to it. */
  newSession(sessionId?: string): Promise<string>;
  /** Reconnects the transports naming `sessionId`. */
  switchSession(sessionId: string): void;
  /** Each transport's state. */
  readonly state: Record<Transport, TransportState>;
  /** The player (the token's `sub`), once a token has been read. */
  readonly playerId: string | null;
  /** The session the transports join, when known. */
  readonly sessionId: string | null;
  /** The id a reconnect resumes from: the last message seen on either transport. */
  readonly lastEventId: string | null;
  /** With tab sharing: is this tab the one holding the connections? (Always true without.) */
  readonly isLeader: boolean;
}

/** `random() * min(cap, base * 2 ** attempt)`: the delay before reconnect attempt `attempt` (0-based). */
export declare function backoffDelay(attempt: number, base?: number, cap?: number, random?: () => number): number;

/** Reasons after which the client never reconnects. */
export declare const TERMINAL_REASONS: ReadonlySet<string>;

/** The last `size` ids seen (the dedup window). */
export declare class SeenIds {
  constructor(size?: number);
  /** Remembers `id`; false when it was already remembered. */
  add(id: string): boolean;
}

/** The `sub` claim of a JWT (not verified: the server decides), or null. */
export declare function tokenSubject(token: string): string | null;
