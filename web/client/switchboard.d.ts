// TypeScript declarations of Switchboard's JavaScript client (wire protocol v1),
// served beside it at /client/v1/switchboard.d.ts.

/** Any JSON value: what `data` may be. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** A message's place in its channel: offsets count the publishes of one epoch. */
export interface Position {
  offset: number;
  epoch: string;
}

export type State = "disconnected" | "connecting" | "connected" | "closed";

export interface Options {
  /** User name for a node that allows anonymous access (`?user=`). */
  user?: string;
  /** A JWT (`?token=`). */
  token?: string;
  /** Called for a token before connecting without one, after a close or a refusal for an
   * expired token, and before the token expires (then sent with `refresh`). */
  getToken?: () => string | Promise<string>;
  /** Milliseconds a request waits for its reply (default 10000). */
  timeout?: number;
  /** Reconnect backoff: the first delay and the cap, in ms (defaults 500 and 20000); each
   * delay is between half and all of min × 2^attempt. */
  minReconnectDelay?: number;
  maxReconnectDelay?: number;
  /** Refresh the token this long before it expires, in ms (default 30000). */
  tokenRefreshMargin?: number;
  /** A WebSocket class, where there is no global one. */
  WebSocket?: unknown;
}

/** An error from the gateway (`code` as in docs/protocol.md, e.g. `forbidden`,
 * `unknown_channel`, `at_capacity`) or from the client: `timeout`, `disconnected`
 * (a `send` or `refresh` in flight when the connection dropped), `closed`. */
export declare class SwitchboardError extends Error {
  code: string;
  /** HTTP status of a refused connection. */
  status?: number;
  /** The channel a failed resubscribe or presence read was for. */
  channel?: string;
  constructor(code: string, message?: string, extra?: object);
}

export interface MessageEvent extends Position {
  channel: string;
  from: string;
  data: Json;
}

export interface DirectEvent {
  from: string;
  data: Json;
}

export interface Member {
  conn: string;
  user: string;
  node?: string;
  info?: Json;
}

export interface MembershipEvent {
  channel: string;
  user: string;
  conn: string;
}

export interface SubscribedEvent {
  channel: string;
  /** Present when subscribed with a position: whether every message after it follows. */
  recovered?: boolean;
  offset?: number;
  epoch?: string;
  /** False the first time, true after a reconnect. */
  resubscribed: boolean;
}

export interface ResyncEvent {
  channel: string;
  /** `not_recovered` (a resubscribe could not recover), or the server's `epoch_changed`,
   * `history_gap`, `history_unavailable`, `rewound`. Reload what you show for the channel. */
  reason: string;
}

export interface ConnectedEvent {
  node: string;
  conn: string;
  user: string;
}

export interface DisconnectedEvent {
  /** WebSocket close code (1006 when refused or unreachable; 4000: no pong). */
  code?: number;
  reason?: string;
  /** False when the client stopped for good (state `closed`). */
  reconnect: boolean;
  /** Milliseconds until the next attempt. */
  delay?: number;
  /** Why a connection was refused, when the node said (status, code). */
  error?: SwitchboardError | null;
  wasConnected?: boolean;
}

export interface StateEvent {
  state: State;
  previous: State;
  [detail: string]: unknown;
}

export interface Events {
  state: StateEvent;
  connected: ConnectedEvent;
  disconnected: DisconnectedEvent;
  message: MessageEvent;
  direct: DirectEvent;
  join: MembershipEvent;
  leave: MembershipEvent;
  presence: { channel: string; members: Member[] };
  subscribed: SubscribedEvent;
  resync: ResyncEvent;
  error: SwitchboardError;
}

export declare class Switchboard {
  /** @param urls WebSocket URLs of one or more nodes (`ws://host:6789/ws`), tried in turn. */
  constructor(urls: string | string[], options?: Options);
  readonly state: State;
  /** The node, connection id and user of the current connection (from `welcome`). */
  readonly node: string | null;
  readonly conn: string | null;
  readonly user: string | null;

  on<K extends keyof Events>(event: K, listener: (event: Events[K]) => void): () => void;
  off<K extends keyof Events>(event: K, listener: (event: Events[K]) => void): void;

  /** Connect, and reconnect until close() or a close that says not to. */
  connect(): void;
  close(): void;

  /** Subscribe now and after every reconnect (resuming from the last message's position).
   * Resolves when the node first confirmed it. */
  subscribe(channel: string, options?: { since?: Position; presence?: boolean }): Promise<SubscribedEvent>;
  unsubscribe(channel: string): Promise<void>;
  subscriptions(): string[];
  position(channel: string): Position | null;
  /** Members of a channel subscribed with `{presence: true}`. */
  members(channel: string): Member[];

  /** Publish at most once (an idempotency key, retried until the timeout). */
  publish(channel: string, data: Json, options?: { idempotencyKey?: string; timeout?: number }): Promise<Position>;
  send(user: string, data: Json, options?: { timeout?: number }): Promise<void>;
  presence(channel: string, options?: { timeout?: number }): Promise<Member[]>;
  history(
    channel: string,
    options?: { since?: Position; limit?: number; reverse?: boolean; timeout?: number },
  ): Promise<Position & { messages: MessageEvent[] }>;
  ping(options?: { timeout?: number }): Promise<void>;
  /** Get a token from getToken() and send it with `refresh`. */
  refresh(): Promise<void>;
}

/** What a close code asks for: reconnect, stop, or reconnect with a new token (3006). */
export declare function closeAction(code: number): "reconnect" | "stop" | "token";
export declare function backoff(attempt: number, min: number, max: number, random?: () => number): number;
/** A JWT's `exp` in milliseconds, or null. */
export declare function tokenExpiry(token: string): number | null;
