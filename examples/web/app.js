/**
 * The web example's page logic: a live view of the messages on a topic
 * filter and a publish box, over MQTT over WebSocket to the page's own origin
 * (`ws(s)://<host>/mqtt`, bridged to a broker by `server.ts`). It uses the
 * library's browser bundle, `mqtt_async.js`.
 *
 * For automation, `window.mqttDemo` exposes the client and the functions the
 * forms call.
 *
 * @module
 */

// @ts-expect-error: the library bundle, served next to the page by server.ts, is not in the repository
import { MQTTClient } from "./mqtt_async.js";

const MAX_SHOWN = 200;
const decoder = new TextDecoder();

/** @param {string} id */
function element(id) {
  const found = document.getElementById(id);
  if (!found) throw new Error(`the page has no #${id}`);
  return found;
}

const status = element("status");
const messages = element("messages");
const logBox = element("log");
const filterInput = /** @type {HTMLInputElement} */ (element("filter"));
const topicInput = /** @type {HTMLInputElement} */ (element("topic"));
const payloadInput = /** @type {HTMLInputElement} */ (element("payload"));
const qosSelect = /** @type {HTMLSelectElement} */ (element("qos"));
const retainBox = /** @type {HTMLInputElement} */ (element("retain"));

const scheme = location.protocol === "https:" ? "wss" : "ws";
const server = `${scheme}://${location.host}/mqtt`;
element("server").textContent = server;

let filter = filterInput.value.trim() || "#";
element("watching").textContent = filter;
let connections = 0;

/**
 * @param {"connecting" | "connected" | "disconnected"} state
 * @param {string} text
 */
function setStatus(state, text) {
  status.dataset.state = state;
  status.dataset.connections = String(connections);
  status.textContent = text;
}

/** @param {string} line */
function log(line) {
  const time = new Date().toLocaleTimeString();
  logBox.textContent = `${time} ${line}\n${logBox.textContent}`.slice(0, 20_000);
}

/** The client's log lines go to the page; errors to the console as well. */
const logger = {
  /** @param {string} m */
  debug: (m) => log(m),
  /** @param {string} m */
  info: (m) => log(m),
  /** @param {string} m */
  warn: (m) => log(`warning: ${m}`),
  /** @param {string} m */
  error: (m) => {
    log(`error: ${m}`);
    console.error(m);
  },
};

/**
 * @param {string} topic
 * @param {Uint8Array} payload
 * @param {boolean} retained
 * @param {number} qos
 */
function show(topic, payload, retained, qos) {
  const item = document.createElement("li");
  const meta = document.createElement("span");
  meta.className = "meta";
  meta.textContent = `${new Date().toLocaleTimeString()} q${qos}${retained ? " retained" : ""} `;
  const name = document.createElement("span");
  name.className = "topic";
  name.textContent = topic;
  const body = document.createElement("span");
  body.className = "payload";
  body.textContent = ` ${decoder.decode(payload)}`;
  item.append(meta, name, body);
  messages.prepend(item);
  while (messages.childElementCount > MAX_SHOWN) messages.lastElementChild?.remove();
}

const client = new MQTTClient({
  server,
  keepalive: 30,
  reconnect: { initialDelay: 0.25, maxDelay: 10 },
  logger,
  onMessage: show,
  onConnectionChange: (up) => {
    if (!up) setStatus("disconnected", "disconnected: reconnecting…");
  },
  onConnect: async (c, sessionPresent) => {
    // The client starts clean, then the broker keeps the session (and its
    // subscription) across reconnects; subscribe whenever it did not.
    if (!sessionPresent) await c.subscribe(filter, 1);
    connections++;
    setStatus("connected", `connected (${connections === 1 ? "once" : `${connections} times`})`);
  },
});

/**
 * Watches `next` instead of the current filter.
 * @param {string} next
 */
async function watch(next) {
  const wanted = next.trim();
  if (wanted === "" || wanted === filter) return;
  const previous = filter;
  filter = wanted;
  element("watching").textContent = wanted;
  messages.replaceChildren();
  try {
    await client.unsubscribe(previous);
    await client.subscribe(wanted, 1);
    log(`watching ${wanted}`);
  } catch (error) {
    log(`error: cannot watch ${wanted}: ${error instanceof Error ? error.message : error}`);
  }
}

/** Publishes what the publish box holds; resolves once the broker has it (QoS 1). */
async function publishFromBox() {
  const topic = topicInput.value.trim();
  const qos = qosSelect.value === "1" ? 1 : 0;
  await client.publish(topic, payloadInput.value, { qos, retain: retainBox.checked });
  log(`published to ${topic}`);
}

element("subscribe-form").addEventListener("submit", (event) => {
  event.preventDefault();
  watch(filterInput.value);
});

element("publish-form").addEventListener("submit", (event) => {
  event.preventDefault();
  publishFromBox().catch((error) => {
    log(`error: publish failed: ${error instanceof Error ? error.message : error}`);
  });
});

// Keeps reconnecting in the background until the page goes away.
client.start();
addEventListener("pagehide", () => {
  client.disconnect().catch(() => {});
});

Object.assign(globalThis, { mqttDemo: { client, publishFromBox, watch } });
