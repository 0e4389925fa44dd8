// Switchboard's JavaScript client, wire protocol v1 (docs/protocol.md).
//
// An ES module with no dependencies, for browsers and for Node.js 22+ (or
// 20 with --experimental-websocket). Every node serves it at
// /client/v1/switchboard.js, with TypeScript declarations beside it
// (switchboard.d.ts). What it does for the page:
//
// * keeps one connection, reconnecting with exponential backoff and jitter,
//   across the nodes it was given; close codes 3000-3499 reconnect,
//   3500-3999 and the protocol's own 1002/1007/1009 stop (docs/protocol.md,
//   Close codes). A connection refused before it opened is looked into with
//   a plain GET on the same URL, which answers what the upgrade got
//   (browsers see only 1006): 503 waits for Retry-After, 401 asks
//   getToken() for a new token, other 4xx stop;
// * resubscribes after a reconnect with the position of the last message
//   of each channel (`since`), drops duplicates, and reports a subscription
//   that could not be recovered (`recovered: false`) with a `resync` event,
//   as it does the server's `resync` frames;
// * matches replies to requests by id, with a timeout; publishes carry an
//   idempotency key and are retried with it after a reconnect or a
//   `broker_unavailable`, so a publish is done at most once;
// * refreshes a token before it expires (getToken, `refresh`);
// * keeps the member list of channels subscribed with {presence: true}
//   from `presence` and `join` / `leave`;
// * notices a dead connection with application pings.

const DEFAULTS = {
  timeout: 10_000,
  minReconnectDelay: 500,
  maxReconnectDelay: 20_000,
  tokenRefreshMargin: 30_000,
};

// Commands that may be sent again after a reconnect: reads, and publishes
// (they carry an idempotency key). A `send` or `refresh` in flight when the
// connection drops fails with `disconnected`: it may or may not have been done.
const RESENDABLE = new Set(["publish", "presence", "history", "ping"]);

/** An error from the gateway (its `code`, see docs/protocol.md) or from the client:
 * `timeout`, `disconnected`, `closed`. */
export class SwitchboardError extends Error {
  constructor(code, message, extra = {}) {
    super(message || code);
    this.name = "SwitchboardError";
    this.code = code;
    Object.assign(this, extra);
  }
}

/** What to do after a close with this code: "reconnect", "stop", or
 * "token" (reconnect with a new token). */
export function closeAction(code) {
  if (code === 3006) return "token";
  if (code >= 3500 && code <= 3999) return "stop";
  if (code >= 3000 && code <= 3499) return "reconnect";
  if ([1002, 1003, 1007, 1008, 1009, 1010].includes(code)) return "stop";
  return "reconnect";
}

/** The delay before reconnect attempt `attempt` (0-based): exponential,
 * capped, with "equal jitter" (between half and all of it). */
export function backoff(attempt, min, max, random = Math.random) {
  const base = Math.min(max, min * 2 ** Math.min(attempt, 30));
  return Math.round(base / 2 + (random() * base) / 2);
}

/** The `exp` of a JWT in milliseconds, or null. */
export function tokenExpiry(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(part + "=".repeat((4 - (part.length % 4)) % 4)));
    return typeof claims.exp === "number" ? claims.exp * 1000 : null;
  } catch {
    return null;
  }
}

function idempotencyKey() {
  if (globalThis.crypto?.randomUUID) return globalThis.crypto.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

export class Switchboard {
  /**
   * @param {string | string[]} urls WebSocket URLs of nodes (ws://host/ws); tried in turn.
   * @param {object} [options] see switchboard.d.ts
   */
  constructor(urls, options = {}) {
    this.urls = (Array.isArray(urls) ? urls : [urls]).map(String);
    if (this.urls.length === 0) throw new TypeError("at least one URL is needed");
    this.options = { ...DEFAULTS, ...options };
    this.WebSocket = options.WebSocket || globalThis.WebSocket;
    if (!this.WebSocket) throw new TypeError("no WebSocket implementation: pass options.WebSocket");
    this.token = options.token ?? null;
    this.state = "disconnected";
    this.node = null;
    this.conn = null;
    this.user = null;
    this.heartbeatMs = null;
    this._listeners = new Map();
    this._subs = new Map();
    this._pending = new Map();
    this._nextId = 1;
    this._ws = null;
    this._urlIndex = 0;
    this._attempt = 0;
    this._reconnectTimer = null;
    this._refreshTimer = null;
    this._pingTimer = null;
    this._lastReceived = 0;
    this._onOnline = () => {
      if (this.state === "disconnected" && this._reconnectTimer) this._reconnectNow();
    };
    globalThis.addEventListener?.("online", this._onOnline);
  }

  // ---- events ---------------------------------------------------------

  /** Listen to an event; returns a function that stops listening. */
  on(event, listener) {
    if (!this._listeners.has(event)) this._listeners.set(event, new Set());
    this._listeners.get(event).add(listener);
    return () => this.off(event, listener);
  }

  off(event, listener) {
    this._listeners.get(event)?.delete(listener);
  }

  _emit(event, payload) {
    for (const listener of [...(this._listeners.get(event) || [])]) {
      try {
        listener(payload);
      } catch (e) {
        // A listener's bug must not break the connection's bookkeeping.
        setTimeout(() => {
          throw e;
        });
      }
    }
  }

  _setState(state, detail = {}) {
    if (this.state === state) return;
    const previous = this.state;
    this.state = state;
    this._emit("state", { state, previous, ...detail });
  }

  // ---- connection -----------------------------------------------------

  /** Open the connection (and keep it open until close()). */
  connect() {
    if (this.state === "closed") throw new SwitchboardError("closed", "this client was closed");
    if (this._ws || this._reconnectTimer) return;
    this._open();
  }

  /** Close for good: no reconnect; pending requests fail with `closed`. */
  close() {
    if (this.state === "closed") return;
    clearTimeout(this._reconnectTimer);
    this._reconnectTimer = null;
    this._dropSocket(1000);
    this._stopTimers();
    this._failPending(() => true, "closed", "the client was closed");
    for (const sub of this._subs.values()) sub.reject?.(new SwitchboardError("closed", "the client was closed"));
    this._subs.clear();
    globalThis.removeEventListener?.("online", this._onOnline);
    this._setState("closed", { code: 1000, reason: "closed by the client" });
  }

  async _url() {
    if (!this.token && this.options.getToken) this.token = await this.options.getToken();
    const url = new URL(this.urls[this._urlIndex % this.urls.length]);
    if (this.token) url.searchParams.set("token", this.token);
    else if (this.options.user) url.searchParams.set("user", this.options.user);
    return url.toString();
  }

  async _open() {
    this._setState("connecting", { url: this.urls[this._urlIndex % this.urls.length] });
    let url;
    try {
      url = await this._url();
    } catch (e) {
      const error = new SwitchboardError("token_unavailable", `getToken failed: ${e?.message ?? e}`);
      this._emit("error", error);
      return this._scheduleReconnect(null, { error });
    }
    if (this.state !== "connecting") return; // closed meanwhile
    const ws = new this.WebSocket(url);
    this._ws = ws;
    let opened = false;
    ws.onopen = () => {
      opened = true;
    };
    ws.onmessage = (event) => {
      if (this._ws !== ws) return;
      this._lastReceived = Date.now();
      if (typeof event.data !== "string") return;
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      this._onFrame(frame);
    };
    const ended = (code, reason) => {
      if (this._ws !== ws) return;
      this._ws = null;
      this._onClose(code, reason, opened, url);
    };
    ws.onclose = (event) => ended(event.code, event.reason);
    // Browsers follow an error with a close event; Node's WebSocket does
    // not after a refused handshake.
    ws.onerror = () => {
      if (!opened) ended(1006, "");
    };
  }

  _dropSocket(code, reason) {
    const ws = this._ws;
    if (!ws) return;
    this._ws = null;
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    try {
      ws.close(code, reason);
    } catch {
      // already closing
    }
  }

  _stopTimers() {
    clearTimeout(this._refreshTimer);
    clearInterval(this._pingTimer);
    this._refreshTimer = this._pingTimer = null;
  }

  async _onClose(code, reason, opened, url) {
    this._stopTimers();
    const wasConnected = this.state === "connected";
    this._connectionLost();
    if (this.state === "closed") return;
    this._setState("disconnected", { code, reason });
    let action = closeAction(code);
    let delay = null;
    let error = null;
    if (!opened) {
      // Refused or unreachable: ask the node why, as browsers cannot tell.
      const verdict = await this._probe(url);
      if (this.state === "closed") return;
      if (verdict) {
        error = new SwitchboardError(verdict.code, verdict.message, { status: verdict.status });
        if (verdict.status === 503) {
          delay = verdict.retryAfter * 1000 * (1 + Math.random() * 0.5);
          this._urlIndex++; // at capacity, draining: another node
        } else if (verdict.status === 401 && this.options.getToken) {
          action = "token";
        } else if (verdict.status >= 400 && verdict.status < 500 && verdict.status !== 429) {
          action = "stop";
        }
      } else {
        this._urlIndex++; // unreachable: try the next node
      }
    } else if (code === 3001 || code === 1006) {
      this._urlIndex++; // the node is draining, or gone without a word: the next one
    }
    if (action === "token" && !this.options.getToken) action = "stop";
    const detail = { code, reason, reconnect: action !== "stop", error, wasConnected };
    if (action === "stop") {
      this._failPending(() => true, "closed", `connection closed (${code} ${reason || error?.code || ""})`);
      for (const sub of this._subs.values()) sub.reject?.(error || new SwitchboardError("closed", reason));
      this._emit("disconnected", detail);
      this._setState("closed", detail);
      return;
    }
    if (action === "token") this.token = null; // getToken() before the next attempt
    this._scheduleReconnect(delay, detail);
  }

  /** A plain GET on the WebSocket URL: the refusal an upgrade got, or null. */
  async _probe(url) {
    if (typeof fetch !== "function") return null;
    try {
      const http = url.replace(/^ws/, "http");
      const response = await fetch(http, { cache: "no-store" });
      if (response.status === 426) return null; // would be accepted now
      let body = {};
      try {
        body = await response.json();
      } catch {
        // not our JSON: a proxy's page
      }
      return {
        status: response.status,
        code: body?.error?.code || `http_${response.status}`,
        message: body?.error?.message || response.statusText,
        retryAfter: Number(response.headers.get("retry-after")) || 1,
      };
    } catch {
      return null;
    }
  }

  /** Emits `disconnected` with the delay, then reconnects after it. */
  _scheduleReconnect(delay = null, detail = {}) {
    if (this.state === "closed") return;
    const o = this.options;
    const wait = delay ?? backoff(this._attempt, o.minReconnectDelay, o.maxReconnectDelay);
    this._attempt++;
    this._setState("disconnected", { ...detail, delay: wait });
    this._emit("disconnected", { reconnect: true, ...detail, delay: wait });
    clearTimeout(this._reconnectTimer);
    this._reconnectTimer = setTimeout(() => {
      this._reconnectTimer = null;
      this._open();
    }, wait);
  }

  _reconnectNow() {
    clearTimeout(this._reconnectTimer);
    this._reconnectTimer = null;
    this._open();
  }

  /** The connection is gone: in-flight requests are re-queued or failed. */
  _connectionLost() {
    this.conn = null;
    for (const [id, p] of this._pending) {
      if (!p.sent) continue;
      if (RESENDABLE.has(p.frame.type)) p.sent = false;
      else {
        this._pending.delete(id);
        clearTimeout(p.timer);
        p.reject(new SwitchboardError("disconnected", "the connection dropped before the reply"));
      }
    }
    for (const sub of this._subs.values()) {
      sub.live = false;
      sub.presenceBuffer = null;
    }
  }

  _onWelcome(frame) {
    this.conn = frame.conn;
    this.node = frame.node;
    this.user = frame.user;
    this.heartbeatMs = frame.heartbeat_ms;
    this._attempt = 0;
    this._setState("connected", { node: frame.node, conn: frame.conn, user: frame.user });
    this._emit("connected", { node: frame.node, conn: frame.conn, user: frame.user });
    // Subscriptions first: a publish queued meanwhile may need one.
    for (const sub of this._subs.values()) this._subscribeOnServer(sub);
    for (const [id, p] of this._pending) if (!p.sent) this._transmit(id, p);
    this._scheduleRefresh();
    this._startPings();
  }

  // ---- liveness and tokens ----------------------------------------------

  _startPings() {
    const every = this.heartbeatMs || 25_000;
    this._lastReceived = Date.now();
    this._pingTimer = setInterval(() => {
      if (this.state !== "connected" || Date.now() - this._lastReceived < every) return;
      this.ping().catch((e) => {
        if (e.code === "timeout" && this.state === "connected") {
          // Nothing came back: the connection is dead without a close.
          this._dropSocket(4000, "no pong");
          this._stopTimers();
          this._connectionLost();
          this._scheduleReconnect(null, { code: 4000, reason: "no pong", wasConnected: true });
        }
      });
    }, every);
  }

  _scheduleRefresh() {
    clearTimeout(this._refreshTimer);
    if (!this.token || !this.options.getToken) return;
    const exp = tokenExpiry(this.token);
    if (!exp) return;
    const lifetime = exp - Date.now();
    const margin = Math.min(this.options.tokenRefreshMargin, lifetime / 2);
    this._refreshTimer = setTimeout(() => this.refresh().catch((e) => this._emit("error", e)), Math.max(0, lifetime - margin));
  }

  /** Get a new token from getToken() and hand it to the node (`refresh`). */
  async refresh() {
    if (!this.options.getToken) throw new SwitchboardError("no_token_source", "refresh needs options.getToken");
    const token = await this.options.getToken();
    await this._request({ type: "refresh", token });
    this.token = token;
    this._scheduleRefresh();
  }

  // ---- requests -----------------------------------------------------------

  _request(frame, timeout = this.options.timeout) {
    if (this.state === "closed") return Promise.reject(new SwitchboardError("closed", "this client was closed"));
    return new Promise((resolve, reject) => {
      const id = this._nextId++;
      const p = { frame, resolve, reject, sent: false };
      p.timer = setTimeout(() => {
        this._pending.delete(id);
        reject(new SwitchboardError("timeout", `no reply to ${frame.type} within ${timeout} ms`));
      }, timeout);
      this._pending.set(id, p);
      if (this.state === "connected") this._transmit(id, p);
    });
  }

  _transmit(id, p) {
    if (!this._ws) return; // sent after the next welcome
    p.sent = true;
    this._ws.send(JSON.stringify({ ...p.frame, id }));
  }

  _onReply(frame) {
    const p = this._pending.get(frame.id);
    if (!p) return; // timed out, or an answer to a frame of an older connection
    if (frame.error && frame.error.code === "broker_unavailable" && p.frame.type === "publish") {
      // Not published: retried with the same key after a pause, until the timeout.
      p.sent = false;
      p.retries = (p.retries || 0) + 1;
      setTimeout(() => {
        if (this._pending.get(frame.id) === p && !p.sent && this.state === "connected") this._transmit(frame.id, p);
      }, backoff(p.retries, 100, 2000));
      return;
    }
    this._pending.delete(frame.id);
    clearTimeout(p.timer);
    if (frame.error) p.reject(new SwitchboardError(frame.error.code, frame.error.message));
    else p.resolve(frame);
  }

  _failPending(which, code, message) {
    for (const [id, p] of this._pending) {
      if (!which(p)) continue;
      this._pending.delete(id);
      clearTimeout(p.timer);
      p.reject(new SwitchboardError(code, message));
    }
  }

  /** Publish; resolves with the message's {offset, epoch}. Retried with the same
   * idempotency key until `timeout`, so it is published at most once. */
  async publish(channel, data, { idempotencyKey: key = idempotencyKey(), timeout } = {}) {
    const reply = await this._request({ type: "publish", channel, data, idempotency_key: key }, timeout);
    return { offset: reply.offset, epoch: reply.epoch };
  }

  /** Send `data` to every connection of `user` (a `direct` event there). */
  async send(user, data, { timeout } = {}) {
    await this._request({ type: "send", user, data }, timeout);
  }

  /** The members of a channel whose namespace has presence. */
  async presence(channel, { timeout } = {}) {
    return (await this._request({ type: "presence", channel }, timeout)).members;
  }

  /** A channel's kept messages and its position. */
  async history(channel, { since, limit, reverse, timeout } = {}) {
    const frame = { type: "history", channel };
    if (since) frame.since = since;
    if (limit !== undefined) frame.limit = limit;
    if (reverse) frame.reverse = true;
    const reply = await this._request(frame, timeout);
    return { offset: reply.offset, epoch: reply.epoch, messages: reply.messages };
  }

  /** Round trip to the node. */
  async ping({ timeout } = {}) {
    await this._request({ type: "ping" }, timeout);
  }

  // ---- subscriptions --------------------------------------------------------

  /**
   * Subscribe, now and after every reconnect (with the position of the last
   * message, so nothing is missed). Resolves once the node confirmed it the
   * first time; rejects if the node refuses it.
   */
  subscribe(channel, { since = null, presence = false } = {}) {
    if (this.state === "closed") return Promise.reject(new SwitchboardError("closed", "this client was closed"));
    if (this._subs.has(channel)) {
      return Promise.reject(new SwitchboardError("already_subscribed", `already subscribed to ${channel}`));
    }
    return new Promise((resolve, reject) => {
      const sub = { channel, position: since, wantPresence: presence, members: new Map(), live: false, resolve, reject };
      this._subs.set(channel, sub);
      if (this.state === "connected") this._subscribeOnServer(sub);
    });
  }

  /** Stop receiving a channel. */
  async unsubscribe(channel) {
    const sub = this._subs.get(channel);
    if (!sub) return;
    this._subs.delete(channel);
    sub.reject?.(new SwitchboardError("unsubscribed", `unsubscribed from ${channel}`));
    if (this.state !== "connected") return;
    try {
      await this._request({ type: "unsubscribe", channel });
    } catch (e) {
      if (e.code !== "not_subscribed" && e.code !== "disconnected") throw e;
    }
  }

  /** The channels subscribed to (or to be, once connected). */
  subscriptions() {
    return [...this._subs.keys()];
  }

  /** The position of the last message of `channel`: {offset, epoch}, or null. */
  position(channel) {
    return this._subs.get(channel)?.position ?? null;
  }

  /** The members of a channel subscribed with {presence: true}. */
  members(channel) {
    return [...(this._subs.get(channel)?.members.values() ?? [])];
  }

  async _subscribeOnServer(sub) {
    const frame = { type: "subscribe", channel: sub.channel };
    const since = sub.position;
    if (since) frame.since = { offset: since.offset, epoch: since.epoch };
    let reply;
    try {
      reply = await this._request(frame);
    } catch (e) {
      if (this._subs.get(sub.channel) !== sub) return;
      if (e.code === "timeout" || e.code === "disconnected" || e.code === "closed" || e.code === "broker_unavailable") {
        // Tried again on the next connection; a broker outage, after a pause.
        if (e.code === "broker_unavailable" && this.state === "connected") setTimeout(() => this._retrySubscribe(sub), 1000);
        return;
      }
      this._subs.delete(sub.channel);
      if (sub.reject) sub.reject(e);
      else this._emit("error", Object.assign(e, { channel: sub.channel }));
      return;
    }
    if (this._subs.get(sub.channel) !== sub || !this.conn) return;
    sub.live = true;
    // Recovered: the missed messages follow the reply, so the position
    // stays. Otherwise the reply's position is the new one, unless a
    // message that arrived ahead of the reply is already past it.
    if (reply.recovered !== true && reply.offset !== undefined) {
      const p = sub.position;
      const ahead = p && p.epoch === reply.epoch && p.offset > reply.offset;
      if (!ahead) sub.position = { offset: reply.offset, epoch: reply.epoch };
    }
    const first = !!sub.resolve;
    const info = { channel: sub.channel, recovered: reply.recovered, offset: reply.offset, epoch: reply.epoch, resubscribed: !first };
    if (first) {
      sub.resolve(info);
      sub.resolve = sub.reject = null;
    }
    this._emit("subscribed", info);
    if (reply.recovered === false) this._emit("resync", { channel: sub.channel, reason: "not_recovered" });
    if (sub.wantPresence) this._loadPresence(sub);
  }

  _retrySubscribe(sub) {
    if (this._subs.get(sub.channel) === sub && !sub.live && this.state === "connected") this._subscribeOnServer(sub);
  }

  async _loadPresence(sub) {
    // join/leave frames that arrive while the snapshot is read are applied after it.
    sub.presenceBuffer = [];
    let members;
    try {
      members = await this.presence(sub.channel);
    } catch (e) {
      sub.presenceBuffer = null;
      this._emit("error", Object.assign(e, { channel: sub.channel }));
      return;
    }
    if (this._subs.get(sub.channel) !== sub || !sub.presenceBuffer) return;
    sub.members = new Map(members.map((m) => [m.conn, m]));
    const buffered = sub.presenceBuffer;
    sub.presenceBuffer = null;
    for (const frame of buffered) this._applyMembership(sub, frame);
    this._emit("presence", { channel: sub.channel, members: this.members(sub.channel) });
  }

  _applyMembership(sub, frame) {
    if (frame.type === "join") sub.members.set(frame.conn, { conn: frame.conn, user: frame.user });
    else sub.members.delete(frame.conn);
  }

  // ---- frames from the node -------------------------------------------------

  _onFrame(frame) {
    switch (frame.type) {
      case "welcome":
        return this._onWelcome(frame);
      case "reply":
      case "pong":
        if (frame.id !== undefined) this._onReply(frame);
        return;
      case "message":
        return this._onMessage(frame);
      case "direct":
        return this._emit("direct", { from: frame.from, data: frame.data });
      case "join":
      case "leave": {
        const sub = this._subs.get(frame.channel);
        const event = { channel: frame.channel, user: frame.user, conn: frame.conn };
        if (sub?.wantPresence) {
          if (sub.presenceBuffer) sub.presenceBuffer.push(frame);
          else {
            this._applyMembership(sub, frame);
            this._emit(frame.type, event);
            this._emit("presence", { channel: frame.channel, members: this.members(frame.channel) });
            return;
          }
        }
        return this._emit(frame.type, event);
      }
      case "resync": {
        const sub = this._subs.get(frame.channel);
        if (sub) sub.position = null;
        return this._emit("resync", { channel: frame.channel, reason: frame.reason });
      }
      case "error":
        return this._emit("error", new SwitchboardError(frame.error.code, frame.error.message));
      default:
        return undefined; // a frame type of a later protocol version
    }
  }

  _onMessage(frame) {
    const sub = this._subs.get(frame.channel);
    if (!sub) return; // unsubscribed meanwhile
    const p = sub.position;
    // Recovery and gap repair may hand over a message twice; the offset tells.
    if (p && p.epoch === frame.epoch && frame.offset <= p.offset) return;
    sub.position = { offset: frame.offset, epoch: frame.epoch };
    this._emit("message", {
      channel: frame.channel,
      offset: frame.offset,
      epoch: frame.epoch,
      from: frame.from,
      data: frame.data,
    });
  }
}
