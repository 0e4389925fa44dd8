// The demo chat at `/`: rooms (`chat:` channels, whose built-in namespace
// keeps presence, join/leave and 100 messages of history), members from
// presence, direct messages (`send`), which node serves the page, and a
// banner while it reconnects. Everything goes through the client every
// node serves at /client/v1/switchboard.js.
//
// Query parameters: ?user=NAME (skip the form), ?room=NAME (open it),
// ?nodes=ws://a/ws,ws://b/ws (the nodes to use, in turn; default: this
// page's node), ?reconnectDelay=MS (the client's first backoff delay).

import { Switchboard } from "/client/v1/switchboard.js";

const params = new URLSearchParams(location.search);
const DEFAULT_ROOMS = ["general", "random", "support"];
const $ = (id) => document.getElementById(id);

const sameOrigin = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
const nodes = (params.get("nodes") || sameOrigin).split(",").filter(Boolean);

/** Conversations by key: `room:NAME` or `dm:USER`. */
const conversations = new Map();
let current = `room:${params.get("room") || DEFAULT_ROOMS[0]}`;
let sb = null;

function conversation(key) {
  if (!conversations.has(key)) {
    conversations.set(key, { key, messages: [], seen: new Set(), unread: 0 });
  }
  return conversations.get(key);
}

const roomKey = (room) => `room:${room}`;
const channelOf = (room) => `chat:${room}`;
const roomOf = (channel) => channel.slice("chat:".length);

// ---- startup --------------------------------------------------------------

const stored = sessionStorage.getItem("switchboard-demo-user");
const user = params.get("user") || stored;
if (user) start(user);
else {
  $("login").hidden = false;
  $("login-name").value = `guest-${Math.random().toString(36).slice(2, 6)}`;
  $("login").addEventListener("submit", (e) => {
    e.preventDefault();
    const name = $("login-name").value.trim();
    if (!name) return;
    sessionStorage.setItem("switchboard-demo-user", name);
    start(name);
  });
}

function start(name) {
  $("login").hidden = true;
  $("app").hidden = false;
  const options = { user: name };
  const delay = Number(params.get("reconnectDelay"));
  if (delay > 0) options.minReconnectDelay = delay;
  sb = new Switchboard(nodes, options);
  window.demo = { sb, conversations, messagesOf: (room) => conversation(roomKey(room)).messages };

  sb.on("state", showState);
  sb.on("disconnected", (e) => {
    if (!e.reconnect) return;
    const why = e.error ? `${e.error.code}` : `code ${e.code}`;
    banner(`Connection lost (${why}) — reconnecting in ${(e.delay / 1000).toFixed(1)} s…`, "warn");
  });
  sb.on("connected", (e) => {
    $("whoami").textContent = `${e.user} · node ${e.node}`;
    $("whoami").dataset.node = e.node;
    banner(null);
  });
  sb.on("message", (m) => {
    addMessage(roomKey(roomOf(m.channel)), { key: `${m.epoch}:${m.offset}`, offset: m.offset, from: m.from, text: textOf(m.data) });
  });
  sb.on("direct", (d) => {
    addMessage(`dm:${d.from}`, { from: d.from, text: textOf(d.data) });
  });
  sb.on("presence", (p) => {
    if (roomKey(roomOf(p.channel)) === current) renderMembers();
  });
  sb.on("resync", (r) => {
    banner(`Some messages of #${roomOf(r.channel)} could not be recovered; its history was reloaded.`, "info");
    loadHistory(roomOf(r.channel), true);
  });
  sb.on("error", (e) => console.warn("switchboard:", e.code, e.message));

  for (const room of DEFAULT_ROOMS) joinRoom(room);
  if (current.startsWith("room:")) joinRoom(current.slice(5));
  sb.connect();
  open(current);
}

// ---- rooms, messages, direct messages ------------------------------------

async function joinRoom(room) {
  const channel = channelOf(room);
  if (sb.subscriptions().includes(channel)) return;
  conversation(roomKey(room));
  renderLists();
  try {
    await sb.subscribe(channel, { presence: true });
    conversation(roomKey(room)).joined = true;
    renderLists();
    await loadHistory(room, false);
  } catch (e) {
    banner(`Could not join #${room}: ${e.code}`, "error");
    conversations.delete(roomKey(room));
    renderLists();
  }
}

/** The room's last 50 kept messages (the built-in `chat` namespace keeps 100). */
async function loadHistory(room, replace) {
  const c = conversation(roomKey(room));
  const { messages } = await sb.history(channelOf(room), { limit: 50, reverse: true });
  if (replace) {
    c.messages = [];
    c.seen.clear();
  }
  for (const m of messages) {
    addMessage(c.key, { key: `${m.epoch}:${m.offset}`, offset: m.offset, from: m.from, text: textOf(m.data) }, false);
  }
  c.messages.sort((a, b) => (a.offset ?? 0) - (b.offset ?? 0));
  if (c.key === current) renderMessages();
}

function textOf(data) {
  return typeof data === "object" && data && "text" in data ? String(data.text) : JSON.stringify(data);
}

function addMessage(key, message, count = true) {
  const c = conversation(key);
  if (message.key && c.seen.has(message.key)) return;
  if (message.key) c.seen.add(message.key);
  c.messages.push(message);
  if (key === current) renderMessages();
  else if (count && message.from !== sb.user) {
    c.unread++;
    renderLists();
  } else renderLists();
}

function open(key) {
  current = key;
  conversation(key).unread = 0;
  $("title").textContent = key.startsWith("room:") ? `# ${key.slice(5)}` : `@ ${key.slice(3)}`;
  $("text").placeholder = key.startsWith("room:") ? `Message #${key.slice(5)}` : `Message ${key.slice(3)}`;
  renderLists();
  renderMembers();
  renderMessages();
  $("text").focus();
}

$("composer").addEventListener("submit", async (e) => {
  e.preventDefault();
  const text = $("text").value.trim();
  if (!text || !sb) return;
  $("text").value = "";
  try {
    if (current.startsWith("room:")) {
      await sb.publish(channelOf(current.slice(5)), { text });
    } else {
      const peer = current.slice(3);
      await sb.send(peer, { text });
      addMessage(current, { from: sb.user, text });
    }
  } catch (err) {
    banner(`Not sent (${err.code}): ${text}`, "error");
  }
});

$("new-room").addEventListener("submit", (e) => {
  e.preventDefault();
  const room = $("new-room-name").value.trim();
  if (!room) return;
  $("new-room-name").value = "";
  joinRoom(room);
  open(roomKey(room));
});

// ---- rendering ------------------------------------------------------------

function li(text, { active, badge, onClick, data = {} } = {}) {
  const item = document.createElement("li");
  item.textContent = text;
  if (active) item.classList.add("active");
  if (badge) {
    const b = document.createElement("span");
    b.className = "badge";
    b.textContent = badge;
    item.append(b);
  }
  if (onClick) item.addEventListener("click", onClick);
  Object.assign(item.dataset, data);
  return item;
}

function renderLists() {
  const rooms = [...conversations.values()].filter((c) => c.key.startsWith("room:"));
  $("rooms").replaceChildren(
    ...rooms.map((c) => {
      const data = { room: c.key.slice(5) };
      if (c.joined) data.joined = "";
      return li(`# ${c.key.slice(5)}`, { active: c.key === current, badge: c.unread || null, onClick: () => open(c.key), data });
    }),
  );
  const dms = [...conversations.values()].filter((c) => c.key.startsWith("dm:"));
  $("dms").replaceChildren(
    ...dms.map((c) => li(`@ ${c.key.slice(3)}`, { active: c.key === current, badge: c.unread || null, onClick: () => open(c.key), data: { peer: c.key.slice(3) } })),
  );
}

function renderMembers() {
  const list = $("members");
  if (!sb || !current.startsWith("room:")) return list.replaceChildren();
  // A user may be connected more than once (two tabs): one line per user.
  const users = new Map();
  for (const m of sb.members(channelOf(current.slice(5)))) users.set(m.user, (users.get(m.user) || 0) + 1);
  const items = [...users.keys()].sort().map((u) => {
    const mine = u === sb.user;
    const item = li(mine ? `${u} (you)` : u, {
      onClick: mine ? null : () => open(`dm:${u}`),
      data: { user: u },
    });
    item.classList.add("online");
    if (!mine) item.title = `Send ${u} a direct message`;
    return item;
  });
  list.replaceChildren(...items);
}

function renderMessages() {
  const c = conversation(current);
  const list = $("messages");
  list.replaceChildren(
    ...c.messages.map((m) => {
      const item = document.createElement("li");
      if (m.from === sb?.user) item.classList.add("mine");
      const from = document.createElement("b");
      from.textContent = m.from;
      const text = document.createElement("span");
      text.className = "text";
      text.textContent = m.text;
      item.append(from, text);
      item.dataset.from = m.from;
      if (m.offset) item.dataset.offset = m.offset;
      return item;
    }),
  );
  list.scrollTop = list.scrollHeight;
}

function showState({ state }) {
  const status = $("status");
  status.dataset.state = state;
  status.className = `status ${state === "connected" ? "online" : state === "connecting" ? "connecting" : "offline"}`;
  $("status-text").textContent = state === "connected" ? "online" : state === "connecting" ? "connecting…" : "offline";
  if (state === "connecting" && !$("banner").hidden) banner("Reconnecting…", "warn");
  if (state === "closed") banner("Disconnected for good. Reload the page to try again.", "error");
}

function banner(text, kind = "info") {
  const b = $("banner");
  b.hidden = !text;
  b.textContent = text || "";
  b.className = `banner ${kind}`;
}
