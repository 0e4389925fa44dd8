// The demo chat in headless Chromium (Debian's `chromium`, driven by
// playwright-core), against two nodes sharing one Redis. Started by the
// Rust test `browser` (tests/it/browser.rs), which starts Redis and the
// nodes and passes:
//   SB_A, SB_B      http://127.0.0.1:PORT of node `node-a` and `node-b`
//   SB_B_SLOW       node-b behind a proxy that passes 8 KiB/s each way
//   SB_A_PID        node-a's pid: this test stops it (SIGKILL)
//   CHROMIUM        the browser binary (default /usr/bin/chromium)
//   ARTIFACTS       where screenshots go
//
//   cd web/e2e && npm ci && node --test chat.e2e.mjs   (with the variables above)
//
// The tests run in order and share the pages: ann on node-a (with node-b
// as her second node), bob on node-b, carol on node-b behind a slow network.
// The last one runs the README's snippet in a page of another origin.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const need = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run this through \`cargo test --test it browser\``);
  return value;
};
const A = need("SB_A");
const B = need("SB_B");
const B_SLOW = need("SB_B_SLOW");
const A_PID = Number(need("SB_A_PID"));
const ARTIFACTS = need("ARTIFACTS");
const ws = (http) => `${http.replace(/^http/, "ws")}/ws`;
const DEADLINE = 30_000;

let browser;
const pages = {};

before(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    // As root in a sandbox, without the background services Chromium
    // would call out to.
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
});

after(async () => {
  await browser?.close();
});

async function openPage(who, url) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 640 } });
  const page = await context.newPage();
  page.setDefaultTimeout(DEADLINE);
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  // Count the client's disconnects from the start.
  await page.addInitScript(() => {
    window.disconnects = 0;
  });
  await page.goto(url);
  await page.waitForSelector("#status.online");
  await page.evaluate(() => window.demo.sb.on("disconnected", () => window.disconnects++));
  pages[who] = { page, errors };
  return page;
}

const shot = (page, name) => page.screenshot({ path: join(ARTIFACTS, `${name}.png`) });

/** The texts shown in the open conversation, in order. */
const texts = (page) => page.$$eval("#messages li .text", (items) => items.map((i) => i.textContent));

async function say(page, text) {
  await page.fill("#text", text);
  await page.press("#text", "Enter");
}

test("two pages on different nodes chat, see each other in presence and send direct messages", async () => {
  const ann = await openPage("ann", `${A}/?user=ann&nodes=${ws(A)},${ws(B)}&reconnectDelay=2000`);
  const bob = await openPage("bob", `${B}/?user=bob`);
  assert.equal(await ann.getAttribute("#whoami", "data-node"), "node-a");
  assert.equal(await bob.getAttribute("#whoami", "data-node"), "node-b");
  // Presence across nodes: each sees the other in #general.
  await ann.waitForSelector('#members li[data-user="bob"]');
  await bob.waitForSelector('#members li[data-user="ann"]');

  await say(ann, "hi bob, I am on node-a");
  await bob.waitForSelector('#messages li[data-from="ann"] >> text=hi bob, I am on node-a');
  await say(bob, "hi ann, node-b here");
  await ann.waitForSelector('#messages li[data-from="bob"] >> text=hi ann, node-b here');
  assert.deepEqual(await texts(ann), await texts(bob));

  // A direct message: ann clicks bob in the member list.
  await ann.click('#members li[data-user="bob"]');
  await say(ann, "psst, a direct message");
  await bob.waitForSelector('#dms li[data-peer="ann"] .badge');
  await bob.click('#dms li[data-peer="ann"]');
  await bob.waitForSelector("#messages li >> text=psst, a direct message");
  await ann.click('#rooms li[data-room="general"]');
  await bob.click('#rooms li[data-room="general"]');
  await shot(ann, "1-chat-ann-on-node-a");
  await shot(bob, "1-chat-bob-on-node-b");
});

test("node-a stops; ann's page reconnects to node-b and catches up with what it missed", async () => {
  const ann = pages.ann.page;
  const bob = pages.bob.page;
  process.kill(A_PID, "SIGKILL");
  await ann.waitForSelector("#banner:not([hidden])");
  await ann.waitForSelector('#status:not([data-state="connected"])');
  await shot(ann, "2-reconnecting");
  // bob posts while ann is away (her client waits 1-2 s, then tries
  // node-a again, then node-b).
  const missed = ["missed 1", "missed 2", "missed 3", "missed 4", "missed 5"];
  const annState = await bob.evaluate(async (missed) => {
    for (const text of missed) await window.demo.sb.publish("chat:general", { text });
    return null;
  }, missed);
  assert.equal(annState, null);
  assert.notEqual(
    await ann.evaluate(() => window.demo.sb.state),
    "connected",
    "ann was back before the messages were published: nothing was missed",
  );
  await ann.waitForSelector('#whoami[data-node="node-b"]');
  await ann.waitForSelector("#messages li >> text=missed 5");
  const shown = await texts(ann);
  assert.deepEqual(shown.slice(-missed.length), missed);
  assert.equal(new Set(shown).size, shown.length, `a message shown twice: ${shown}`);
  assert.deepEqual(shown, await texts(bob));
  await ann.waitForSelector("#banner[hidden]", { state: "attached" });
  await shot(ann, "3-caught-up-on-node-b");
});

test("a page on a slow network still receives everything, in order", async () => {
  // Everything carol's page loads and sends, its WebSocket included, goes
  // through a proxy that passes 8 KiB/s each way. (Chrome's own network
  // emulation would slow the page's HTTP but not its WebSocket frames.)
  const carol = await openPage("carol", `${B_SLOW}/?user=carol&room=random`);
  const bob = pages.bob.page;
  // carol is subscribed (over the slow network) before bob publishes.
  await carol.waitForSelector('#rooms li[data-room="random"][data-joined]');
  await bob.click('#rooms li[data-room="random"]');
  const sent = Array.from({ length: 100 }, (_, i) => `slow ${String(i + 1).padStart(3, "0")} ${"·".repeat(200)}`);
  // 100 frames of ~560 bytes (the dots are 2 bytes each): ~7 s of carol's link.
  const started = Date.now();
  await bob.evaluate(async (sent) => {
    await Promise.all(sent.map((text) => window.demo.sb.publish("chat:random", { text })));
  }, sent);
  await carol.waitForSelector(`#messages li >> text=${sent.at(-1)}`, { timeout: 120_000 });
  const took = Date.now() - started;
  const shown = (await texts(carol)).filter((t) => t.startsWith("slow "));
  assert.deepEqual(shown.slice().sort(), sent);
  // In the channel's order: offsets shown strictly increase.
  const offsets = await carol.$$eval("#messages li[data-offset]", (items) => items.map((i) => Number(i.dataset.offset)));
  assert.ok(offsets.every((o, i) => i === 0 || o > offsets[i - 1]), `out of order: ${offsets}`);
  assert.equal(await carol.evaluate(() => window.disconnects), 0);
  assert.ok(took > 4000, `the network was not slow: everything arrived in ${took} ms`);
  // And what carol writes from behind it arrives.
  await say(carol, "written on a slow network");
  await bob.waitForSelector('#messages li[data-from="carol"] >> text=written on a slow network');
  await shot(carol, "4-slow-network");
  for (const [who, { errors }] of Object.entries(pages)) assert.deepEqual(errors, [], `${who}'s page threw`);
});

test("the README's snippet works in a page of another origin", async () => {
  const readme = readFileSync(new URL("../../README.md", import.meta.url), "utf8");
  const snippet = readme.match(/```html\n([\s\S]*?)```/)[1];
  assert.match(snippet, /127\.0\.0\.1:6789/);
  const html = snippet.replaceAll("127.0.0.1:6789", B.replace(/^http:\/\//, ""));
  const context = await browser.newContext();
  const page = await context.newPage();
  const logged = new Promise((resolve) =>
    page.on("console", (m) => m.text().startsWith("chat:general ann") && resolve(m.text())),
  );
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  // about:blank: the module comes from the node cross-origin (CORS), and
  // the WebSocket carries Origin "null".
  await page.setContent(`<!doctype html><html><body>${html}</body></html>`);
  const line = await Promise.race([
    logged,
    new Promise((_, reject) => setTimeout(() => reject(new Error(`no message logged; errors: ${errors}`)), DEADLINE).unref()),
  ]);
  assert.match(line, /hello/);
  await context.close();
});
