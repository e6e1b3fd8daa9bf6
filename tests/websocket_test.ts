/**
 * MQTT over WebSocket: the transport against a fake `WebSocket` (framing,
 * back-pressure, close and error handling, dial failures) and against a
 * WebSocket server that stops reading, then the client against a real
 * mosquitto through the WebSocket-to-TCP bridge (round trips, packets split
 * across and merged into messages, a cut mid-stream, dial failures).
 */

import assert from "node:assert/strict";
import { MQTTClient } from "../client.ts";
import { ConnectionLostError } from "../errors.ts";
import type { MQTTClientOptions } from "../options.ts";
import type { Connection, Endpoint } from "../transport/connection.ts";
import {
  MQTT_SUBPROTOCOL,
  webSocketDialer,
  type WebSocketDialerOptions,
  webSocketUrl,
} from "../transport/websocket.ts";
import { brokerTest } from "./mosquitto.ts";
import {
  captureLogger,
  closeAll,
  deadPort,
  deferred,
  Links,
  type TestClient,
  text,
  Watch,
  within,
} from "./helpers.ts";
import { WsBridge } from "./ws_bridge.ts";

// ---------------------------------------------------------------------------
// A fake WebSocket the tests drive by hand.

/** Every FakeSocket made, newest last; reset by each test. */
let sockets: FakeSocket[] = [];
const socketsMade = new Watch();

class FakeSocket extends EventTarget {
  static readonly CONNECTING = 0;
  static readonly OPEN = 1;
  static readonly CLOSING = 2;
  static readonly CLOSED = 3;
  readonly url: string;
  readonly protocols: string[];
  binaryType: BinaryType = "blob";
  protocol = "";
  readyState = 0;
  readonly sent: Uint8Array[] = [];
  readonly closeCalls: (number | undefined)[] = [];
  /** Times `bufferedAmount` was read: each poll of a waiting write reads it. */
  bufferedReads = 0;
  buffered = 0;
  /** Grows `buffered` by what is sent (a peer that does not read). */
  holdSent = false;
  readonly watch = new Watch();

  constructor(url: string, protocols?: string | string[]) {
    super();
    this.url = url;
    this.protocols = protocols === undefined ? [] : [protocols].flat();
    sockets.push(this);
    socketsMade.changed();
  }

  get bufferedAmount(): number {
    this.bufferedReads++;
    this.watch.changed();
    return this.buffered;
  }

  send(data: Uint8Array): void {
    if (this.readyState !== 1) throw new DOMException("not open", "InvalidStateError");
    this.sent.push(data.slice());
    if (this.holdSent) this.buffered += data.length;
  }

  close(code?: number): void {
    this.closeCalls.push(code);
    if (this.readyState < 2) this.readyState = 2;
    this.watch.changed();
  }

  // What the "server" does.
  open(protocol = MQTT_SUBPROTOCOL): void {
    this.readyState = 1;
    this.protocol = protocol;
    this.dispatchEvent(new Event("open"));
  }

  message(data: ArrayBuffer | string): void {
    this.dispatchEvent(new MessageEvent("message", { data }));
  }

  error(message: string): void {
    this.dispatchEvent(new ErrorEvent("error", { message }));
  }

  closed(code: number, wasClean: boolean, reason = ""): void {
    this.readyState = 3;
    this.dispatchEvent(new CloseEvent("close", { code, wasClean, reason }));
  }
}

const ENDPOINT: Endpoint = { scheme: "ws", host: "127.0.0.1", port: 8080, path: "/mqtt" };
const URL_TEXT = "ws://127.0.0.1:8080/mqtt";

function bytes(...values: number[]): ArrayBuffer {
  return new Uint8Array(values).buffer;
}

/** Dials through a FakeSocket; returns the socket and the pending dial. */
async function fakeDial(
  options: Omit<WebSocketDialerOptions, "WebSocket"> = {},
  signal = new AbortController().signal,
): Promise<{ socket: FakeSocket; dialing: Promise<Connection> }> {
  sockets = [];
  const dial = webSocketDialer({ ...options, WebSocket: FakeSocket as never });
  const dialing = dial(ENDPOINT, { signal });
  await socketsMade.until(() => sockets.length > 0, 1000, () => "the WebSocket to be made");
  return { socket: sockets[0], dialing };
}

async function fakeOpen(
  options: Omit<WebSocketDialerOptions, "WebSocket"> = {},
): Promise<{ socket: FakeSocket; conn: Connection }> {
  const { socket, dialing } = await fakeDial(options);
  socket.open();
  const conn = await within(dialing, 1000, "the dial");
  return { socket, conn };
}

/** Whether `promise` has settled (checked after the microtasks queued so far). */
function settledFlag(promise: Promise<unknown>): { settled: boolean } {
  const flag = { settled: false };
  promise.then(() => flag.settled = true, () => flag.settled = true);
  return flag;
}

Deno.test("ws transport: URL, subprotocol, binary type; a refused subprotocol fails the dial", async () => {
  assertUrl({ ...ENDPOINT }, URL_TEXT);
  assertUrl(
    { scheme: "wss", host: "::1", port: 443, path: "/mqtt?x=1" },
    "wss://[::1]:443/mqtt?x=1",
  );

  const { socket, conn } = await fakeOpen();
  assert.equal(socket.url, URL_TEXT);
  assert.deepEqual(socket.protocols, ["mqtt"]);
  assert.equal(socket.binaryType, "arraybuffer");
  conn.close();
  conn.close(); // idempotent
  assert.deepEqual(socket.closeCalls, [1000]);

  const refused = await fakeDial();
  refused.socket.open(""); // the server picked no subprotocol
  const error = await rejection(refused.dialing, ConnectionLostError);
  assertMessage(error, /ws:\/\/127\.0\.0\.1:8080\/mqtt.*did not accept the "mqtt".*none/);
  assert.equal(refused.socket.closeCalls.length, 1, "the socket is closed");

  const other = await fakeDial();
  other.socket.open("mqttv3.1");
  assertMessage(await rejection(other.dialing, ConnectionLostError), /chose "mqttv3\.1"/);
});

/** The error `promise` rejects with, checked to be a `type`. */
async function rejection<E extends Error>(
  promise: Promise<unknown>,
  type: abstract new (...args: never[]) => E = Error as never,
): Promise<E> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof type, `expected a ${type.name}, got ${String(error)}`);
    return error;
  }
  throw new assert.AssertionError({ message: `expected a rejection with a ${type.name}` });
}

function assertUrl(endpoint: Endpoint, expected: string): void {
  assert.equal(webSocketUrl(endpoint), expected);
}

function assertMessage(error: unknown, pattern: RegExp): void {
  assert.ok(error instanceof Error, `an Error, got ${String(error)}`);
  assert.match(error.message, pattern);
}

Deno.test("ws transport: dial failures name the URL; abort closes the socket", async () => {
  // Closed before opening (refused, unreachable, bad certificate: browsers do not tell).
  const failed = await fakeDial();
  failed.socket.error("connection refused");
  failed.socket.closed(1006, false);
  assertMessage(
    await rejection(failed.dialing, ConnectionLostError),
    /^cannot connect to ws:\/\/127\.0\.0\.1:8080\/mqtt: WebSocket did not open: connection refused$/,
  );

  // A browser tells nothing more than "it closed": the message lists the likely causes.
  const silent = await fakeDial();
  silent.socket.dispatchEvent(new Event("error"));
  silent.socket.closed(1006, false);
  assertMessage(
    await rejection(silent.dialing, ConnectionLostError),
    /^cannot connect to ws:\/\/127\.0\.0\.1:8080\/mqtt: WebSocket did not open \(the server may be down.*"mqtt" subprotocol.*TLS certificate/,
  );

  // Aborted while connecting.
  const controller = new AbortController();
  const aborted = await fakeDial({}, controller.signal);
  controller.abort(new Error("client disconnecting"));
  assertMessage(
    await rejection(aborted.dialing, ConnectionLostError),
    /connecting to ws:\/\/127\.0\.0\.1:8080\/mqtt was aborted: client disconnecting/,
  );
  assert.equal(aborted.socket.closeCalls.length, 1, "abort closes the socket");
  aborted.socket.closed(1006, false); // the close that follows changes nothing
  aborted.socket.open(); // nor a late open

  // Already aborted: no socket at all.
  sockets = [];
  const dial = webSocketDialer({ WebSocket: FakeSocket as never });
  await rejection(dial(ENDPOINT, { signal: AbortSignal.abort() }), ConnectionLostError);
  assert.equal(sockets.length, 0);

  // A constructor that throws (a bad URL) becomes a ConnectionLostError.
  const throwing = webSocketDialer({
    WebSocket: class {
      constructor() {
        throw new SyntaxError("bad URL");
      }
    } as never,
  });
  assertMessage(
    await rejection(throwing(ENDPOINT, { signal: new AbortController().signal })),
    /cannot connect to ws:\/\/127\.0\.0\.1:8080\/mqtt: bad URL/,
  );
});

Deno.test("ws transport: the default WebSocket is globalThis.WebSocket, looked up at each dial", async () => {
  const dial = webSocketDialer(); // made before the stub: the lookup is per dial
  const original = globalThis.WebSocket;
  sockets = [];
  globalThis.WebSocket = FakeSocket as never;
  try {
    const dialing = dial(ENDPOINT, { signal: new AbortController().signal });
    assert.equal(sockets.length, 1);
    sockets[0].open();
    (await dialing).close();
  } finally {
    globalThis.WebSocket = original;
  }
});

Deno.test("ws transport: reads hand over bytes in order, joined when several wait", async () => {
  const { socket, conn } = await fakeOpen();
  const first = conn.read();
  socket.message(bytes(0x20, 0x02)); // part of a CONNACK
  assert.deepEqual(await first, new Uint8Array([0x20, 0x02]));
  socket.message(bytes(0x00, 0x00));
  socket.message(bytes()); // empty messages are skipped
  socket.message(bytes(0xd0, 0x00, 0xd0));
  assert.deepEqual(await conn.read(), new Uint8Array([0x00, 0x00, 0xd0, 0x00, 0xd0]));
  // A normal close: queued bytes first, then the end.
  socket.message(bytes(0x00));
  socket.closed(1000, true);
  assert.deepEqual(await conn.read(), new Uint8Array([0x00]));
  assert.equal(await conn.read(), null);
  assert.equal(await conn.read(), null);
  await rejection(conn.write(new Uint8Array([0xc0, 0])), ConnectionLostError);
  conn.close();
});

Deno.test("ws transport: an abnormal close, an odd close code or a text message reject reads", async () => {
  const lost = await fakeOpen();
  const pending = lost.conn.read();
  lost.socket.message(bytes(1));
  assert.deepEqual(await pending, new Uint8Array([1]));
  lost.socket.message(bytes(2));
  lost.socket.error("connection reset");
  lost.socket.closed(1006, false);
  assert.deepEqual(await lost.conn.read(), new Uint8Array([2]), "bytes before the error first");
  assertMessage(
    await rejection(lost.conn.read(), ConnectionLostError),
    /WebSocket ws:\/\/127\.0\.0\.1:8080\/mqtt closed abnormally \(code 1006\) \(connection reset\)/,
  );
  await rejection(lost.conn.write(new Uint8Array(2)), ConnectionLostError);
  lost.conn.close();

  const odd = await fakeOpen();
  const waiting = odd.conn.read();
  odd.socket.closed(4000, true, "cut by the bridge");
  assertMessage(
    await rejection(waiting, ConnectionLostError),
    /closed by the server with code 4000: cut by the bridge/,
  );

  const textual = await fakeOpen();
  textual.socket.message("CONNACK?");
  assertMessage(
    await rejection(textual.conn.read(), ConnectionLostError),
    /non-binary message.*MQTT-6\.0\.0-1/,
  );
  assert.equal(textual.socket.closeCalls.length, 1, "a text message closes the socket");
  textual.conn.close();
});

Deno.test("ws transport: close() ends a pending read with null", async () => {
  const { conn } = await fakeOpen();
  const pending = conn.read();
  conn.close();
  assert.equal(await pending, null);
  await rejection(conn.write(new Uint8Array(2)), ConnectionLostError);
});

Deno.test("ws transport: write() waits while bufferedAmount is above the mark", async () => {
  const { socket, conn } = await fakeOpen({ highWaterMark: 1000, pollIntervalMs: 1 });
  socket.holdSent = true;
  await within(conn.write(new Uint8Array(1000)), 1000, "a write up to the mark");
  assert.equal(socket.buffered, 1000);

  const over = conn.write(new Uint8Array(10).fill(7));
  const flag = settledFlag(over);
  const reads = socket.bufferedReads;
  // Several polls later the write still waits.
  await socket.watch.until(() => socket.bufferedReads >= reads + 5, 2000, () => "polls");
  assert.equal(flag.settled, false, "write() resolved while bufferedAmount was above the mark");
  assert.equal(socket.sent.length, 2, "the bytes were handed to the socket at once");
  socket.buffered = 1000; // the peer read a little: back to the mark
  await within(over, 1000, "the write once drained");

  // Closing while a write waits rejects it and stops the polling.
  socket.buffered = 5000;
  const stuck = conn.write(new Uint8Array(1));
  conn.close();
  await rejection(stuck, ConnectionLostError);
  // And a failure while waiting rejects it as well.
  const again = await fakeOpen({ highWaterMark: 10, pollIntervalMs: 1 });
  again.socket.holdSent = true;
  const waiting = again.conn.write(new Uint8Array(100));
  again.socket.closed(1006, false);
  await rejection(waiting, ConnectionLostError);
  again.conn.close();
});

// ---------------------------------------------------------------------------
// A real WebSocket peer that stops reading: Deno.serve cannot stop reading, so
// this is a hand-made WebSocket server on a plain TCP listener.

const WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

async function acceptKey(key: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-1", new TextEncoder().encode(key + WS_GUID));
  return btoa(String.fromCharCode(...new Uint8Array(digest)));
}

/** Reads from `conn` until `buffer` holds `n` bytes, or the stream ends. */
class ConnReader {
  buffer = new Uint8Array(0);
  constructor(readonly conn: Deno.Conn) {}

  async fill(n: number): Promise<boolean> {
    const chunk = new Uint8Array(64 * 1024);
    while (this.buffer.length < n) {
      const got = await this.conn.read(chunk);
      if (got === null) return false;
      const joined = new Uint8Array(this.buffer.length + got);
      joined.set(this.buffer);
      joined.set(chunk.subarray(0, got), this.buffer.length);
      this.buffer = joined;
    }
    return true;
  }

  take(n: number): Uint8Array {
    const out = this.buffer.slice(0, n);
    this.buffer = this.buffer.slice(n);
    return out;
  }

  /** One client frame's opcode and unmasked payload; null at end of stream. */
  async frame(): Promise<{ opcode: number; payload: Uint8Array } | null> {
    if (!await this.fill(2)) return null;
    const opcode = this.buffer[0] & 0x0f;
    let length = this.buffer[1] & 0x7f;
    let header = 2;
    if (length === 126) {
      if (!await this.fill(4)) return null;
      length = (this.buffer[2] << 8) | this.buffer[3];
      header = 4;
    } else if (length === 127) {
      if (!await this.fill(10)) return null;
      length = Number(new DataView(this.buffer.buffer, this.buffer.byteOffset).getBigUint64(2));
      header = 10;
    }
    if (!await this.fill(header + 4 + length)) return null;
    this.take(header);
    const mask = this.take(4);
    const payload = this.take(length);
    for (let i = 0; i < payload.length; i++) payload[i] ^= mask[i & 3];
    return { opcode, payload };
  }
}

Deno.test("ws transport: against a server that stops reading, write() stops resolving", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const served = (async () => {
    const conn = await listener.accept();
    const reader = new ConnReader(conn);
    while (!new TextDecoder().decode(reader.buffer).includes("\r\n\r\n")) {
      if (!await reader.fill(reader.buffer.length + 1)) throw new Error("no handshake");
    }
    const request = new TextDecoder().decode(reader.buffer);
    reader.take(request.indexOf("\r\n\r\n") + 4);
    const key = /sec-websocket-key:\s*(\S+)/i.exec(request)?.[1] ?? "";
    assert.match(request, /sec-websocket-protocol:\s*mqtt/i);
    await conn.write(
      new TextEncoder().encode(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
          `Sec-WebSocket-Accept: ${await acceptKey(key)}\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n`,
      ),
    );
    return { conn, reader };
  })();
  let server: { conn: Deno.Conn; reader: ConnReader } | undefined;
  let conn: Connection | undefined;
  try {
    const dial = webSocketDialer({ highWaterMark: 64 * 1024, pollIntervalMs: 2 });
    conn = await within(
      dial({ ...ENDPOINT, port: listener.addr.port }, { signal: new AbortController().signal }),
      5000,
      "the dial",
    );
    server = await within(served, 5000, "the handshake");

    // Write 1 MiB chunks (a running counter) until one stays pending: the
    // server reads nothing, so the socket buffers fill and bufferedAmount grows.
    const CHUNK = 1024 * 1024;
    const LIMIT = 64; // 64 MiB: far beyond the socket buffers (a few MiB on loopback)
    let next = 0;
    let written = 0;
    let stuck: Promise<void> | undefined;
    for (let i = 0; i < LIMIT && stuck === undefined; i++) {
      const chunk = new Uint8Array(CHUNK);
      for (let j = 0; j < CHUNK; j++) chunk[j] = next++ & 0xff;
      const write = conn.write(chunk);
      const outcome = await Promise.race([
        write.then(() => "written" as const),
        new Promise<"waiting">((resolve) => setTimeout(() => resolve("waiting"), 500)),
      ]);
      if (outcome === "waiting") stuck = write;
      else written++;
    }
    assert.ok(stuck, `all ${LIMIT} MiB were accepted although the server read nothing`);
    assert.ok(written >= 1, "at least the first chunk went out");

    // The server reads again: the stuck write resolves and every byte arrives, in order.
    const total = next;
    let received = 0;
    let ok = true;
    const reading = (async () => {
      while (received < total) {
        const frame = await server!.reader.frame();
        if (frame === null) break;
        assert.equal(frame.opcode, 2, "binary frames");
        for (const b of frame.payload) if (b !== (received++ & 0xff)) ok = false;
      }
    })();
    await within(stuck, 20_000, "the stuck write, once the server reads");
    await within(reading, 20_000, "every byte at the server");
    assert.equal(received, total);
    assert.ok(ok, "bytes arrived in order");
  } finally {
    conn?.close();
    server?.conn.close();
    listener.close();
    await served.catch(() => {});
  }
});

// ---------------------------------------------------------------------------
// The client, through the bridge, against a real mosquitto.

/** A client on `url` with quick timings and a captured log, added to `clients`. */
function wsClient(
  url: string,
  clients: TestClient[],
  options: Partial<MQTTClientOptions> = {},
): TestClient {
  const logger = captureLogger();
  const client = Object.assign(
    new MQTTClient({
      server: url,
      clean: false,
      responseTime: 2,
      reconnect: { initialDelay: 0.02, maxDelay: 0.2 },
      logger,
      ...options,
    }),
    { log: logger.lines },
  );
  clients.push(client);
  return client;
}

/** Received payloads, with event-driven waits on their count. */
function inbox(): { got: string[]; watch: Watch; wait(n: number, ms: number): Promise<void> } {
  const got: string[] = [];
  const watch = new Watch();
  return {
    got,
    watch,
    wait: (n, ms) => watch.until(() => got.length >= n, ms, () => `${n} messages (${got.length})`),
  };
}

function payloadOf(i: number): string {
  // Sizes from a few bytes to ~5 KB, so that packets span many small messages.
  return `#${i}:` + "x".repeat((i * 997) % 5000);
}

brokerTest("ws: connect through the bridge; QoS 0 and 1 round trips", async (broker) => {
  const bridge = await WsBridge.start({ broker });
  const clients: TestClient[] = [];
  try {
    const box = inbox();
    const sub = wsClient(bridge.url(), clients, {
      clientId: "ws-sub",
      onMessage: (topic, payload, _retained, qos) => {
        box.got.push(`${topic} ${qos} ${text(payload)}`);
        box.watch.changed();
      },
    });
    await within(sub.connect(), 5000, "connect() over ws");
    assert.ok(sub.isConnected());
    assert.ok(
      sub.log.some((line) => line.includes(`connected to ${bridge.url()}`)),
      sub.log.join("\n"),
    );
    await sub.subscribe("ws/rt/#", 1);
    const pub = wsClient(bridge.url(), clients, { clientId: "ws-pub" });
    await within(pub.connect(), 5000, "connect() of the publisher");
    await pub.publish("ws/rt/a", "zero", { qos: 0 });
    await pub.publish("ws/rt/b", "one", { qos: 1 });
    await pub.publish("ws/rt/c", new Uint8Array(70_000).fill(0x41), { qos: 1 });
    await box.wait(3, 5000);
    assert.deepEqual(box.got.slice(0, 2), ["ws/rt/a 0 zero", "ws/rt/b 1 one"]);
    assert.equal(box.got[2], `ws/rt/c 1 ${"A".repeat(70_000)}`);
    assert.equal(bridge.stats.open, 2);
  } finally {
    await closeAll(clients);
    await bridge.until((s) => s.open === 0, 5000, "every session to end after disconnect()");
    await bridge.close();
  }
});

async function roundTrip(
  bridge: WsBridge,
  count: number,
  qos: 0 | 1,
  prefix: string,
): Promise<string[]> {
  const clients: TestClient[] = [];
  try {
    const box = inbox();
    const sub = wsClient(bridge.url(), clients, {
      clientId: `${prefix}-sub`,
      onMessage: (_topic, payload) => {
        box.got.push(text(payload));
        box.watch.changed();
      },
    });
    await within(sub.connect(), 5000, "connect() of the subscriber");
    await sub.subscribe(`ws/${prefix}/#`, qos);
    const pub = wsClient(bridge.url(), clients, { clientId: `${prefix}-pub` });
    await within(pub.connect(), 5000, "connect() of the publisher");
    for (let i = 0; i < count; i++) {
      await pub.publish(`ws/${prefix}/${i}`, payloadOf(i), { qos, sync: false });
    }
    await box.wait(count, 20_000);
    return box.got;
  } finally {
    await closeAll(clients);
    await bridge.until((s) => s.open === 0, 5000, "every session to end");
  }
}

brokerTest("ws: packets split across many small messages (1..7 bytes each)", async (broker) => {
  const bridge = await WsBridge.start({ broker, split: { seed: 1234, maxBytes: 7 } });
  try {
    const got = await roundTrip(bridge, 60, 1, "split");
    assert.deepEqual(got, Array.from({ length: 60 }, (_, i) => payloadOf(i)));
    const stats = bridge.stats;
    assert.ok(stats.messagesToClient > 10 * stats.readsFromBroker, JSON.stringify(stats));
  } finally {
    await bridge.close();
  }
});

brokerTest("ws: several reads merged into one message", async (broker) => {
  const bridge = await WsBridge.start({ broker, mergeMs: 20 });
  try {
    const got = await roundTrip(bridge, 200, 0, "merge");
    assert.deepEqual(got, Array.from({ length: 200 }, (_, i) => payloadOf(i)));
    const stats = bridge.stats;
    assert.ok(stats.messagesToClient < stats.readsFromBroker, JSON.stringify(stats));
  } finally {
    await bridge.close();
  }
});

brokerTest(
  "ws: merged and re-cut: messages hold several packets and end mid-packet",
  async (broker) => {
    const bridge = await WsBridge.start({
      broker,
      mergeMs: 5,
      split: { seed: 99, maxBytes: 3000 },
    });
    try {
      const got = await roundTrip(bridge, 300, 1, "mixed");
      assert.deepEqual(got, Array.from({ length: 300 }, (_, i) => payloadOf(i)));
    } finally {
      await bridge.close();
    }
  },
);

brokerTest("ws: a cut mid-stream of QoS 1 messages loses none; order kept", async (broker) => {
  const bridge = await WsBridge.start({ broker, split: { seed: 7, maxBytes: 500 } });
  const clients: TestClient[] = [];
  const N = 400;
  try {
    const box = inbox();
    const cutAt = deferred();
    const links = new Links();
    const sub = wsClient(bridge.url(), clients, {
      clientId: "ws-cut-sub",
      onConnectionChange: links.handler,
      onMessage: (_topic, payload) => {
        box.got.push(text(payload));
        if (box.got.length === 100) cutAt.resolve();
        box.watch.changed();
      },
    });
    await within(sub.connect(), 5000, "connect() of the subscriber");
    await sub.subscribe("ws/cut/#", 1);
    const pub = wsClient(bridge.url(), clients, { clientId: "ws-cut-pub", maxInflight: 20 });
    await within(pub.connect(), 5000, "connect() of the publisher");
    const cutDone = deferred();
    const publishing = (async () => {
      for (let i = 0; i < N; i++) {
        // The second half goes after the cut: the publisher's link is cut mid-stream too,
        // however fast the first half went.
        if (i === N / 2) await cutDone.promise;
        await pub.publish("ws/cut/x", `m${i}`, { qos: 1, sync: i === N - 1 });
      }
    })();
    await within(cutAt.promise, 10_000, "the first 100 messages");
    const sessionsBefore = bridge.stats.sessions;
    bridge.cutAll();
    cutDone.resolve();
    await within(publishing, 20_000, "every publish acknowledged");
    await box.watch.until(
      () => new Set(box.got).size >= N,
      20_000,
      () => `all ${N} distinct messages (have ${new Set(box.got).size})`,
    );
    await links.ups(2, 10_000);
    assert.ok(bridge.stats.sessions >= sessionsBefore + 2, JSON.stringify(bridge.stats));
    // In order, at least once: first sightings are 0..N-1 in sequence.
    const seen = new Set<string>();
    const firsts = box.got.filter((m) => !seen.has(m) && seen.add(m));
    assert.deepEqual(firsts, Array.from({ length: N }, (_, i) => `m${i}`));
    assert.ok(
      sub.log.some((line) => /connection lost: .*WebSocket ws:\/\/.* closed abnormally/.test(line)),
      `the subscriber saw an abnormal close:\n${sub.log.join("\n")}`,
    );
  } finally {
    await closeAll(clients);
    await bridge.close();
  }
});

brokerTest("ws: connect() rejects when the server refuses the mqtt subprotocol", async (broker) => {
  const bridge = await WsBridge.start({ broker, protocol: null });
  const clients: TestClient[] = [];
  try {
    const client = wsClient(bridge.url(), clients, { clientId: "ws-refused" });
    const error = await within(
      rejection(client.connect(), ConnectionLostError),
      5000,
      "connect() to reject",
    );
    assertMessage(
      error,
      new RegExp(`cannot connect to ${escape(bridge.url())}: .*did not accept the "mqtt"`),
    );
    assert.equal(client.isConnected(), false);
  } finally {
    await closeAll(clients);
    await bridge.until((s) => s.open === 0, 5000, "the refused session to end");
    await bridge.close();
  }
});

Deno.test("ws: connect() to a closed port or a wrong path rejects with a ConnectionLostError", async () => {
  const clients: TestClient[] = [];
  const url = `ws://127.0.0.1:${deadPort()}/mqtt`;
  // A wrong path: an HTTP server that answers 404 instead of upgrading.
  const http = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    () => new Response("no", { status: 404 }),
  );
  try {
    const closed = wsClient(url, clients, { clientId: "ws-closed-port" });
    assertMessage(
      await within(
        rejection(closed.connect(), ConnectionLostError),
        5000,
        "connect() to reject",
      ),
      new RegExp(`^cannot connect to ${escape(url)}: WebSocket did not open: .*connect`),
    );
    const wrongUrl = `ws://127.0.0.1:${http.addr.port}/nope`;
    const wrong = wsClient(wrongUrl, clients, { clientId: "ws-wrong-path" });
    assertMessage(
      await within(
        rejection(wrong.connect(), ConnectionLostError),
        5000,
        "connect() to reject",
      ),
      new RegExp(`^cannot connect to ${escape(wrongUrl)}: WebSocket did not open: .*404`),
    );
  } finally {
    await closeAll(clients);
    await http.shutdown();
  }
});

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
}
