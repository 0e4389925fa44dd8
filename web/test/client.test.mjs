// The JavaScript client against real nodes, with Node's test runner:
//
//   node --experimental-websocket --test web/test/
//
// The nodes are started by the Rust test `js_client` (tests/it/js_client.rs),
// which runs this file and passes their addresses:
//   SB_URL       a node with the built-in namespaces and the API key SB_API_KEY
//   SB_FULL_URL  a node that already holds all the connections it may
//   SB_JWT_URL   a node that takes HS256 tokens signed with SB_JWT_SECRET
// Every wait has a deadline; nothing waits for silence.

import { test } from "node:test";
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";

import { Switchboard, SwitchboardError, closeAction, backoff, tokenExpiry } from "../client/switchboard.js";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run this through \`cargo test --test it js_client\``);
  return value;
};
const URL = env("SB_URL");
const FULL_URL = env("SB_FULL_URL");
const JWT_URL = env("SB_JWT_URL");
const API_KEY = env("SB_API_KEY");
const JWT_SECRET = env("SB_JWT_SECRET");
const HTTP = URL.replace(/^ws/, "http").replace(/\/ws$/, "");
const DEADLINE = 20_000;

let unique = 0;
const name = (prefix) => `${prefix}-${process.pid}-${++unique}`;

/** The next `event` of `client` for which `match` holds, within the deadline. */
function next(client, event, match = () => true, ms = DEADLINE) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      stop();
      reject(new Error(`no ${event} event within ${ms} ms`));
    }, ms);
    const stop = client.on(event, (e) => {
      if (!match(e)) return;
      clearTimeout(timer);
      stop();
      resolve(e);
    });
  });
}

/** Resolves once `holds()` is true, checked now and after each `event`. */
function until(client, event, holds, ms = DEADLINE) {
  if (holds()) return Promise.resolve();
  return next(client, event, () => holds(), ms);
}

/** Everything `client` emits as `event`, in order. */
function record(client, event) {
  const seen = [];
  client.on(event, (e) => seen.push(e));
  return seen;
}

async function connected(client) {
  const welcome = next(client, "connected");
  client.connect();
  return welcome;
}

async function api(path, body) {
  const response = await fetch(`${HTTP}/api/${path}`, {
    method: "POST",
    headers: { authorization: `apikey ${API_KEY}`, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  const text = await response.text();
  assert.ok(response.ok, `${path}: ${response.status} ${text}`);
  return JSON.parse(text);
}

function jwt(claims) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");
  const unsigned = `${b64({ alg: "HS256", typ: "JWT" })}.${b64(claims)}`;
  const signature = createHmac("sha256", JWT_SECRET).update(unsigned).digest("base64url");
  return `${unsigned}.${signature}`;
}

test("close codes, backoff and token expiry", () => {
  assert.equal(closeAction(3001), "reconnect");
  assert.equal(closeAction(3002), "reconnect");
  assert.equal(closeAction(3006), "token");
  assert.equal(closeAction(3501), "stop");
  assert.equal(closeAction(3502), "stop");
  assert.equal(closeAction(1009), "stop");
  assert.equal(closeAction(1006), "reconnect");
  assert.equal(backoff(0, 500, 20_000, () => 0), 250);
  assert.equal(backoff(0, 500, 20_000, () => 1), 500);
  assert.equal(backoff(3, 500, 20_000, () => 1), 4000);
  assert.equal(backoff(20, 500, 20_000, () => 1), 20_000);
  assert.equal(tokenExpiry(jwt({ sub: "a", exp: 1234 })), 1_234_000);
  assert.equal(tokenExpiry("not a token"), null);
});

test("connects, subscribes, publishes and receives, replies matched by id", async (t) => {
  const ann = new Switchboard(URL, { user: "ann" });
  t.after(() => ann.close());
  const welcome = await connected(ann);
  assert.equal(welcome.user, "ann");
  assert.ok(welcome.node && welcome.conn);
  assert.equal(ann.node, welcome.node);
  const room = `chat:${name("room")}`;
  const sub = await ann.subscribe(room);
  assert.equal(sub.channel, room);
  const messages = record(ann, "message");
  // Many requests in flight at once: each gets its own reply.
  const positions = await Promise.all(Array.from({ length: 20 }, (_, i) => ann.publish(room, { i })));
  assert.deepEqual(
    positions.map((p) => p.offset).sort((a, b) => a - b),
    Array.from({ length: 20 }, (_, i) => i + 1),
  );
  const [history, members] = await Promise.all([ann.history(room, { limit: 5 }), ann.presence(room)]);
  assert.equal(history.messages.length, 5);
  assert.deepEqual(members.map((m) => m.user), ["ann"]);
  await ann.ping();
  // The ping's reply was written after every delivery queued before it.
  assert.equal(messages.length, 20);
  assert.deepEqual(
    messages.map((m) => m.offset),
    Array.from({ length: 20 }, (_, i) => i + 1),
  );
  assert.equal(messages[0].from, "ann");
  assert.deepEqual(ann.position(room), { offset: 20, epoch: positions[0].epoch });
});

test("refusals are errors with the gateway's code; requests time out", async (t) => {
  const ann = new Switchboard(URL, { user: "ann" });
  t.after(() => ann.close());
  await connected(ann);
  await assert.rejects(ann.subscribe("nope:1"), (e) => e instanceof SwitchboardError && e.code === "unknown_channel");
  await assert.rejects(ann.publish("tasks:1", { x: 1 }), { code: "forbidden" });
  await assert.rejects(ann.publish(`chat:${name("r")}`, 1), { code: "forbidden" }); // not subscribed
  await assert.rejects(ann.history("news"), { code: "not_enabled" });
  assert.equal(ann.state, "connected");
  // A request that gets no reply in time fails with `timeout`: here one
  // waiting for a connection that never comes.
  const offline = new Switchboard(URL, { user: "ann" });
  await assert.rejects(offline.ping({ timeout: 50 }), { code: "timeout" });
  offline.close();
});

test("requests made before the connection are sent once it is up", async (t) => {
  const ann = new Switchboard(URL, { user: "ann" });
  t.after(() => ann.close());
  const channel = name("early");
  const subscribed = ann.subscribe(channel);
  const published = ann.publish(channel, "first");
  const message = next(ann, "message");
  ann.connect();
  await subscribed;
  assert.equal((await published).offset, 1);
  assert.equal((await message).data, "first");
});

test("direct messages, presence and join/leave", async (t) => {
  const [ann, bob] = [new Switchboard(URL, { user: name("ann") }), new Switchboard(URL, { user: name("bob") })];
  t.after(() => (ann.close(), bob.close()));
  await Promise.all([connected(ann), connected(bob)]);
  const room = `chat:${name("team")}`;
  const annAlone = next(ann, "presence", (e) => e.members.length === 1);
  await ann.subscribe(room, { presence: true });
  await annAlone;
  const bobJoins = next(ann, "join", (e) => e.user === bob.user);
  const annSeesTwo = next(ann, "presence", (e) => e.members.length === 2);
  const bobSeesTwo = next(bob, "presence", (e) => e.members.length === 2);
  await bob.subscribe(room, { presence: true });
  assert.equal((await bobJoins).conn, bob.conn);
  await Promise.all([annSeesTwo, bobSeesTwo]);
  assert.deepEqual(bob.members(room).map((m) => m.user).sort(), [ann.user, bob.user].sort());

  const direct = next(bob, "direct");
  await ann.send(bob.user, { text: "psst" });
  assert.deepEqual(await direct, { from: ann.user, data: { text: "psst" } });

  const bobLeaves = next(ann, "leave", (e) => e.user === bob.user);
  await bob.unsubscribe(room);
  await bobLeaves;
  assert.deepEqual(ann.members(room).map((m) => m.user), [ann.user]);
});

/** ann, whose client waits at least 500 ms before reconnecting, and bob,
 * both connected and subscribed to `channel`. */
async function reconnectingPair(t, channel) {
  const user = name("ann");
  const ann = new Switchboard(URL, { user, minReconnectDelay: 1000 });
  const bob = new Switchboard(URL, { user: name("bob") });
  t.after(() => (ann.close(), bob.close()));
  await Promise.all([connected(ann), connected(bob)]);
  await Promise.all([ann.subscribe(channel), bob.subscribe(channel)]);
  return { user, ann, bob };
}

test("after a reconnect it resubscribes from its position and gets what it missed, once, in order", async (t) => {
  const room = `chat:${name("room")}`;
  const { user, ann, bob } = await reconnectingPair(t, room);
  const got = record(ann, "message");
  for (let i = 1; i <= 5; i++) await bob.publish(room, i);
  await until(ann, "message", () => got.length === 5);

  // The server closes ann's connection with 3005 force_reconnect; bob
  // publishes while ann waits to reconnect (at least 500 ms).
  const dropped = next(ann, "disconnected");
  await api("disconnect", { user, reconnect: true });
  const closed = await dropped;
  assert.equal(closed.code, 3005);
  assert.equal(closed.reconnect, true);
  assert.ok(closed.delay >= 500, `delay ${closed.delay}`);
  for (let i = 6; i <= 10; i++) await bob.publish(room, i);
  assert.notEqual(ann.state, "connected", "ann reconnected before the publishes: nothing was missed");

  const resubscribed = await next(ann, "subscribed", (e) => e.resubscribed);
  assert.equal(resubscribed.recovered, true);
  await until(ann, "message", () => got.length >= 10);
  assert.deepEqual(
    got.map((m) => m.data),
    [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
  );
});

test("a resubscribe that cannot recover is reported as a resync", async (t) => {
  // The default namespace keeps no history: what is missed is gone.
  const channel = name("news");
  const { user, ann, bob } = await reconnectingPair(t, channel);
  const before = next(ann, "message");
  await bob.publish(channel, "before");
  await before;
  const dropped = next(ann, "disconnected");
  await api("disconnect", { user, reconnect: true });
  await dropped;
  await bob.publish(channel, "missed");
  assert.notEqual(ann.state, "connected");
  const resync = await next(ann, "resync");
  assert.deepEqual(resync, { channel, reason: "not_recovered" });
  const after = next(ann, "message");
  await bob.publish(channel, "after");
  assert.equal((await after).data, "after");
});

test("a kick (3501) stops it for good", async (t) => {
  const user = name("mallory");
  const mallory = new Switchboard(URL, { user });
  t.after(() => mallory.close());
  await connected(mallory);
  const closed = next(mallory, "state", (e) => e.state === "closed");
  await api("disconnect", { user });
  const state = await closed;
  assert.equal(state.code, 3501);
  assert.equal(mallory.state, "closed");
  await assert.rejects(mallory.ping(), { code: "closed" });
});

test("a node at capacity is told apart from a dead one: Retry-After, then the next node", async (t) => {
  const ann = new Switchboard([FULL_URL, URL], { user: "ann" });
  t.after(() => ann.close());
  const refused = next(ann, "disconnected");
  ann.connect();
  const first = await refused;
  assert.equal(first.error.code, "at_capacity");
  assert.equal(first.error.status, 503);
  assert.ok(first.delay >= 1000, `waits for Retry-After: ${first.delay}`);
  const welcome = await next(ann, "connected");
  assert.equal(welcome.user, "ann");
  assert.equal(ann.urls[1], URL);
});

test("a bad user name is not retried", async (t) => {
  const bad = new Switchboard(URL, { user: "{braces}" });
  t.after(() => bad.close());
  const closed = next(bad, "state", (e) => e.state === "closed");
  bad.connect();
  const state = await closed;
  assert.equal(state.error.code, "bad_request");
  assert.equal(state.reconnect, false);
});

test("tokens: an expired one is replaced, and each is refreshed before it expires", async (t) => {
  const now = () => Math.floor(Date.now() / 1000);
  const issued = [];
  const waiting = [];
  const tokens = (n) => new Promise((resolve) => waiting.push({ n, resolve }));
  const getToken = () => {
    // The first token has expired already: the node refuses it (401
    // expired_token), the client asks for another.
    const exp = issued.length === 0 ? now() - 10 : now() + 4;
    issued.push(exp);
    for (const w of waiting) if (issued.length >= w.n) w.resolve();
    return jwt({ sub: "tara", exp });
  };
  const tara = new Switchboard(JWT_URL, { getToken, tokenRefreshMargin: 2000 });
  t.after(() => tara.close());
  const refused = next(tara, "disconnected");
  tara.connect();
  assert.equal((await refused).error.code, "expired_token");
  await next(tara, "connected");
  const drops = record(tara, "disconnected");
  // Three refreshes, each ~2 s before its token's expiry: the connection
  // outlives the token it opened with (the node would close it with 3006
  // at that token's expiry without a refresh).
  const opened = issued.length;
  let timer;
  await Promise.race([
    tokens(opened + 3),
    new Promise((_, reject) => (timer = setTimeout(() => reject(new Error("no refresh")), DEADLINE))),
  ]);
  clearTimeout(timer);
  await tara.ping();
  assert.equal(tara.state, "connected");
  assert.deepEqual(drops, []);
  assert.ok(now() > issued[1], "still connected after the first token's expiry");
});
