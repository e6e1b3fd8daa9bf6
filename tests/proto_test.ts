/**
 * MQTTProto on a real loopback socket pair: the client side is wrapped in
 * MQTTProto, the server side is driven by hand with raw bytes. Pins framing
 * (split frames, many frames per read, every remaining-length width, exact
 * payloads both ways), malformed and oversized frames, coalesced writes,
 * end(), onClose/closed, pauseReading(), drained()/backedUp and dial().
 */
import assert from "node:assert/strict";
import { Buffer, generate, type IPublishPacket, type Packet, parser } from "./oracle.ts";
import { ConnectionLostError, ProtocolError } from "../errors.ts";
import { dial, MQTTProto, type ProtoOptions } from "../proto.ts";
import { fromByteConn } from "../transport/tcp.ts";
import type { PublishPacket } from "../codec/packets.ts";

const TIMEOUT = 2000;
const BIG_TIMEOUT = 10_000; // for multi-megabyte transfers on a slow machine

/** Rejects if `promise` has not settled within `ms`. */
function within<T>(promise: Promise<T>, what: string, ms = TIMEOUT): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Resolves after every queued microtask (and so every synchronous delivery) has run. */
function nextMacrotask(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

/** Bytes whose values are not periodic at 256, so an offset slip shows. */
function pattern(length: number, seed = 0): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = (i * 131 + (i >> 8) + seed) & 0xff;
  return out;
}

const ALL_BYTES = Uint8Array.from({ length: 256 }, (_, i) => i);

function concat(...chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}

/** MQTT variable-length encoding of a remaining length. */
function varint(n: number): number[] {
  const out: number[] = [];
  do {
    let digit = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) digit |= 0x80;
    out.push(digit);
  } while (n > 0);
  return out;
}

function publish(
  payload: Uint8Array,
  extra: Partial<IPublishPacket> = {},
): IPublishPacket & PublishPacket {
  return {
    cmd: "publish",
    topic: "t",
    payload: Buffer.from(payload),
    qos: 0,
    dup: false,
    retain: false,
    ...extra,
  } as IPublishPacket & PublishPacket;
}

/** A PUBLISH on topic "t", QoS 0, whose remaining length is exactly `remaining`. */
function publishWithRemaining(remaining: number): IPublishPacket & PublishPacket {
  return publish(pattern(remaining - 3, remaining)); // 2-byte topic length + "t"
}

function frame(packet: Packet): Uint8Array {
  return new Uint8Array(generate(packet));
}

const puback = (messageId: number) => frame({ cmd: "puback", messageId });
const CONNACK = new Uint8Array([0x20, 0x02, 0x00, 0x00]);

function payloadOf(packet: Packet | undefined): Uint8Array {
  assert.ok(packet, "no packet");
  assert.equal(packet.cmd, "publish");
  const payload = (packet as IPublishPacket).payload;
  assert.ok(typeof payload !== "string", "payload is a string");
  return new Uint8Array(payload.buffer, payload.byteOffset, payload.byteLength);
}

function assertBytes(actual: Uint8Array, expected: Uint8Array, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  if (Buffer.from(actual).equals(Buffer.from(expected))) return;
  let i = 0;
  while (actual[i] === expected[i]) i++;
  assert.fail(`${what}: first difference at byte ${i}: ${actual[i]} != ${expected[i]}`);
}

/** The server side of the pair: raw reads and writes, plus an MQTT parser. */
class Peer {
  readonly #buffer = new Uint8Array(256 * 1024);
  #leftover = new Uint8Array(0);
  readonly #parser = parser({ protocolVersion: 4 });
  readonly #parsed: Packet[] = [];

  constructor(readonly conn: Deno.TcpConn) {
    this.#parser.on("packet", (packet: Packet) => this.#parsed.push(packet));
    this.#parser.on("error", (error: Error) => {
      throw error;
    });
  }

  /** One read: whatever the socket has, or null at EOF. */
  async read(ms = TIMEOUT): Promise<Uint8Array | null> {
    const n = await within(this.conn.read(this.#buffer), "a server read", ms);
    return n === null ? null : this.#buffer.slice(0, n);
  }

  /** Exactly `length` bytes (however many reads that takes). */
  async readBytes(length: number, ms = TIMEOUT): Promise<Uint8Array> {
    const chunks: Uint8Array[] = [this.#leftover];
    let have = this.#leftover.length;
    while (have < length) {
      const chunk = await this.read(ms);
      if (chunk === null) throw new Error(`EOF after ${have} of ${length} bytes`);
      chunks.push(chunk);
      have += chunk.length;
    }
    const all = concat(...chunks);
    this.#leftover = all.slice(length);
    return all.subarray(0, length);
  }

  /** The next `count` packets the client sent. */
  async readPackets(count: number, ms = TIMEOUT): Promise<Packet[]> {
    while (this.#parsed.length < count) {
      const chunk = await this.read(ms);
      if (chunk === null) throw new Error(`EOF after ${this.#parsed.length} of ${count} packets`);
      this.#parser.parse(Buffer.from(chunk));
    }
    return this.#parsed.splice(0, count);
  }

  /** The client closed its side: EOF (or a reset if it left bytes unread), nothing more. */
  async expectClosed(allowReset = false): Promise<void> {
    assert.equal(this.#leftover.length, 0, "unexpected leftover bytes");
    try {
      const chunk = await this.read();
      assert.equal(chunk, null, `expected EOF, got ${chunk?.length} bytes`);
    } catch (error) {
      if (!(allowReset && error instanceof Deno.errors.ConnectionReset)) throw error;
    }
  }

  async write(bytes: Uint8Array): Promise<void> {
    let offset = 0;
    while (offset < bytes.length) offset += await this.conn.write(bytes.subarray(offset));
  }
}

/**
 * A socket pair with MQTTProto on the client side. The client conn's read and
 * write are instrumented: reads can be capped at `maxRead` bytes, and every
 * delivered packet records how many bytes the proto had read at that moment.
 */
class Harness {
  readonly packets: Packet[] = [];
  /** `bytesRead` when each packet was delivered. */
  readonly deliveredAt: number[] = [];
  readonly closeErrors: (Error | undefined)[] = [];
  /** Sizes the proto asked each conn.write() to write. */
  readonly writes: number[] = [];
  readCalls = 0;
  bytesRead = 0;
  maxRead = Infinity;
  readonly peer: Peer;
  proto!: MQTTProto;
  #waiters: (() => void)[] = [];

  constructor(
    readonly listener: Deno.TcpListener,
    readonly client: Deno.TcpConn,
    readonly server: Deno.TcpConn,
  ) {
    this.peer = new Peer(server);
    const read = client.read.bind(client);
    const write = client.write.bind(client);
    client.read = async (p: Uint8Array) => {
      this.readCalls++;
      this.#changed();
      const n = await read(p.subarray(0, Math.min(p.length, this.maxRead)));
      if (n !== null) this.bytesRead += n;
      this.#changed();
      return n;
    };
    client.write = (p: Uint8Array) => {
      this.writes.push(p.length);
      return write(p);
    };
  }

  #changed(): void {
    for (const wake of this.#waiters.splice(0)) wake();
  }

  /** Resolves when `condition` holds (checked after every event), or rejects after `ms`. */
  until(condition: () => boolean, what: string, ms = TIMEOUT): Promise<void> {
    return within(
      new Promise<void>((resolve) => {
        const check = () => condition() ? resolve() : this.#waiters.push(check);
        check();
      }),
      what,
      ms,
    );
  }

  async nextPackets(count: number, ms = TIMEOUT): Promise<Packet[]> {
    await this.until(() => this.packets.length >= count, `${count} packet(s)`, ms);
    return this.packets.splice(0, count);
  }

  async closeError(): Promise<Error | undefined> {
    await this.until(() => this.closeErrors.length > 0, "onClose");
    await within(this.proto.closed, "closed");
    return this.closeErrors[0];
  }

  onPacket(packet: Packet): void {
    this.packets.push(packet);
    this.deliveredAt.push(this.bytesRead);
    this.#changed();
  }

  onClose(error?: Error): void {
    this.closeErrors.push(error);
    this.#changed();
  }

  async dispose(): Promise<void> {
    this.proto.close();
    await within(this.proto.closed, "closed");
    try {
      this.server.close();
    } catch { /* the test closed it */ }
    this.listener.close();
    await nextMacrotask(); // lets the proto's cancelled read settle
  }
}

interface PairOptions {
  /** Have the server answer a CONNACK before the test starts. Default true. */
  handshake?: boolean;
  /** Cap every read the proto makes at this many bytes (set before its first read). */
  maxRead?: number;
}

/** Opens a pair; with `handshake` (the default) the server has answered a CONNACK. */
async function open(options: ProtoOptions = {}, pair: PairOptions = {}): Promise<Harness> {
  const { handshake = true, maxRead = Infinity } = pair;
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const [client, server] = await Promise.all([
    Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port }),
    listener.accept(),
  ]);
  client.setNoDelay(true);
  server.setNoDelay(true);
  const h = new Harness(listener, client, server);
  h.maxRead = maxRead;
  h.proto = new MQTTProto(fromByteConn(client), {
    onPacket: (packet) => h.onPacket(packet as unknown as Packet),
    onClose: (error) => h.onClose(error),
  }, options);
  if (handshake) {
    await h.peer.write(CONNACK);
    const [connack] = await h.nextPackets(1);
    assert.equal(connack.cmd, "connack");
    h.deliveredAt.length = 0;
  }
  return h;
}

/** Runs `body` on a fresh pair and always cleans up. */
async function withPair(
  body: (h: Harness) => Promise<void>,
  options: ProtoOptions = {},
  pair: PairOptions = {},
): Promise<void> {
  const h = await open(options, pair);
  try {
    await body(h);
  } finally {
    await h.dispose();
  }
}

// ---------------------------------------------------------------------------
// Handshake

Deno.test("a CONNACK arrives as a packet like any other, with its flags and code", async () => {
  for (const [flags, code] of [[0, 0], [1, 0], [0, 5]]) {
    await withPair(
      async (h) => {
        h.proto.send({
          cmd: "connect",
          clientId: "proto-test",
          protocolVersion: 4,
          clean: true,
          keepalive: 30,
        }, { urgent: true });
        const [connect] = await h.peer.readPackets(1);
        assert.equal(connect.cmd, "connect");
        assert.equal((connect as { clientId: string }).clientId, "proto-test");
        await h.peer.write(new Uint8Array([0x20, 0x02, flags, code]));
        const [packet] = await h.nextPackets(1);
        assert.equal(packet.cmd, "connack");
        assert.equal((packet as { returnCode?: number }).returnCode, code);
        assert.equal((packet as { sessionPresent: boolean }).sessionPresent, flags === 1);
        assert.equal(h.proto.isClosed, false);
      },
      {},
      { handshake: false },
    );
  }
});

Deno.test("a packet in the same read as the CONNACK is delivered right after it", async () => {
  await withPair(
    async (h) => {
      await h.peer.write(concat(CONNACK, frame(publish(pattern(10)))));
      const [connack, packet] = await h.nextPackets(2);
      assert.equal(connack.cmd, "connack");
      assertBytes(payloadOf(packet), pattern(10), "payload");
    },
    {},
    { handshake: false },
  );
});

// ---------------------------------------------------------------------------
// Incoming framing

Deno.test("a PUBLISH written one byte at a time arrives as exactly one packet", async () => {
  await withPair(async (h) => {
    const payload = pattern(300); // two-byte remaining length, so the header is split too
    const bytes = frame(publish(payload, { qos: 1, messageId: 7 }));
    const base = h.bytesRead;
    for (let i = 0; i < bytes.length; i++) {
      await h.peer.write(bytes.subarray(i, i + 1));
      // Wait until the proto has taken this byte in, so reads really are split.
      await h.until(() => h.bytesRead - base > i, `byte ${i} to be read`);
    }
    const [packet] = await h.nextPackets(1);
    assertBytes(payloadOf(packet), payload, "payload");
    assert.equal((packet as IPublishPacket).messageId, 7);
    assert.deepEqual(h.deliveredAt, [base + bytes.length], "delivered only after the last byte");
    await nextMacrotask();
    assert.equal(h.packets.length, 0, "exactly one packet");
  });
});

Deno.test("frames cut at every possible read boundary are delivered exactly when complete", async () => {
  const frames = [
    puback(1),
    frame(publish(pattern(200), { qos: 1, messageId: 2 })),
    frame({ cmd: "pingresp" }),
    frame(publish(new Uint8Array(0))),
    frame({ cmd: "suback", messageId: 3, granted: [1, 0x80] }),
    frame(publish(pattern(20_000))),
  ];
  const all = concat(...frames);
  for (const chunk of [1, 2, 3, 7, 64]) {
    await withPair(
      async (h) => {
        const base = h.bytesRead;
        await h.peer.write(all);
        const packets = await h.nextPackets(frames.length);
        assert.deepEqual(packets.map((p) => p.cmd), [
          "puback",
          "publish",
          "pingresp",
          "publish",
          "suback",
          "publish",
        ]);
        assertBytes(payloadOf(packets[1]), pattern(200), `reads of ${chunk}: payload 1`);
        assert.equal(payloadOf(packets[3]).length, 0);
        assertBytes(payloadOf(packets[5]), pattern(20_000), `reads of ${chunk}: payload 5`);
        // Each packet is handed over on the read that completes its frame, not before or after.
        let end = 0;
        const expected = frames.map((f) => {
          end += f.length;
          return base + Math.min(all.length, Math.ceil(end / chunk) * chunk);
        });
        assert.deepEqual(h.deliveredAt, expected, `reads of ${chunk}`);
      },
      {},
      { maxRead: chunk },
    );
  }
});

Deno.test("50 PUBACKs and a PUBLISH in one write arrive as 51 packets in order", async () => {
  await withPair(async (h) => {
    const pubacks = Array.from({ length: 50 }, (_, i) => puback(i + 1));
    const bytes = concat(...pubacks, frame(publish(pattern(33))));
    await h.peer.write(bytes);
    const packets = await h.nextPackets(51);
    assert.deepEqual(
      packets.slice(0, 50).map((p) => [p.cmd, p.messageId]),
      Array.from({ length: 50 }, (_, i) => ["puback", i + 1]),
    );
    assertBytes(payloadOf(packets[50]), pattern(33), "payload");
    // They really came in one read: all were delivered at the same read position.
    assert.equal(new Set(h.deliveredAt).size, 1, `deliveredAt ${h.deliveredAt}`);
  });
});

const WIDTHS: [remaining: number, header: number[]][] = [
  [127, [0x30, 0x7f]],
  [128, [0x30, 0x80, 0x01]],
  [16383, [0x30, 0xff, 0x7f]],
  [16384, [0x30, 0x80, 0x80, 0x01]],
  [2_097_151, [0x30, 0xff, 0xff, 0x7f]],
  [2_097_152, [0x30, 0x80, 0x80, 0x80, 0x01]],
];

Deno.test("incoming frames of every remaining-length width are parsed exactly", async () => {
  await withPair(async (h) => {
    for (const [remaining, header] of WIDTHS) {
      const packet = publishWithRemaining(remaining);
      const bytes = frame(packet);
      assert.deepEqual([...bytes.subarray(0, header.length)], header, "fixture header");
      assert.equal(bytes.length, header.length + remaining, "fixture length");
      await h.peer.write(bytes);
      const [received] = await h.nextPackets(1, BIG_TIMEOUT);
      assertBytes(payloadOf(received), packet.payload as Buffer, `remaining length ${remaining}`);
      assert.equal((received as IPublishPacket).topic, "t");
    }
  });
});

Deno.test("send() writes every remaining-length width with the right header", async () => {
  await withPair(async (h) => {
    for (const [remaining, header] of WIDTHS) {
      const packet = publishWithRemaining(remaining);
      h.proto.send(packet);
      const bytes = await h.peer.readBytes(header.length + remaining, BIG_TIMEOUT);
      assert.deepEqual([...bytes.subarray(0, header.length)], header, `header of ${remaining}`);
      const parsed: Packet[] = [];
      const p = parser({ protocolVersion: 4 });
      p.on("packet", (packet: Packet) => parsed.push(packet));
      p.parse(Buffer.from(bytes));
      assert.equal(parsed.length, 1);
      assertBytes(payloadOf(parsed[0]), packet.payload as Buffer, `remaining length ${remaining}`);
    }
  });
});

const PAYLOADS: [string, Uint8Array][] = [
  ["0 B", new Uint8Array(0)],
  ["1 MiB", pattern(1024 * 1024, 5)],
  ["all 256 byte values", ALL_BYTES],
];

Deno.test("payloads of 0 B, 1 MiB and all byte values arrive exact from the broker", async () => {
  await withPair(async (h) => {
    const frames = PAYLOADS.map(([, payload], i) =>
      frame(publish(payload, { qos: 1, messageId: i + 1 }))
    );
    await h.peer.write(concat(...frames));
    const packets = await h.nextPackets(PAYLOADS.length, BIG_TIMEOUT);
    PAYLOADS.forEach(([name, payload], i) => {
      assertBytes(payloadOf(packets[i]), payload, name);
      assert.equal(packets[i].messageId, i + 1);
    });
  });
});

Deno.test("payloads of 0 B, 1 MiB and all byte values arrive exact at the broker", async () => {
  await withPair(async (h) => {
    PAYLOADS.forEach(([, payload], i) =>
      h.proto.send(publish(payload, { qos: 1, messageId: i + 1 }))
    );
    const packets = await h.peer.readPackets(PAYLOADS.length, BIG_TIMEOUT);
    PAYLOADS.forEach(([name, payload], i) => {
      assertBytes(payloadOf(packets[i]), payload, name);
      assert.equal(packets[i].messageId, i + 1);
    });
  });
});

// ---------------------------------------------------------------------------
// Malformed and oversized frames

Deno.test("a 5th remaining-length byte closes with ProtocolError", async () => {
  await withPair(async (h) => {
    await h.peer.write(new Uint8Array([0x30, 0xff, 0xff, 0xff, 0xff, 0x01]));
    const error = await h.closeError();
    assert.ok(error instanceof ProtocolError, `got ${error}`);
    assert.match(error.message, /remaining length/);
    assert.deepEqual(h.packets, []);
    await h.peer.expectClosed(true);
  });
});

Deno.test("a frame over maxPacketSize closes with ProtocolError before its body arrives", async () => {
  await withPair(async (h) => {
    // Only the header, claiming 10 MB: the proto must not wait for the body.
    await h.peer.write(new Uint8Array([0x30, ...varint(10_000_000)]));
    const error = await h.closeError();
    assert.ok(error instanceof ProtocolError, `got ${error}`);
    assert.match(error.message, /maximum packet size of 1048576 bytes/);
    assert.deepEqual(h.packets, []);
    await h.peer.expectClosed(true);
  }, { maxPacketSize: 1024 * 1024 });
});

Deno.test("maxPacketSize counts the whole frame: equal is accepted, one more is not", async () => {
  await withPair(async (h) => {
    const exact = publishWithRemaining(997); // 1 + 2 + 997 = 1000 bytes
    assert.equal(frame(exact).length, 1000);
    await h.peer.write(frame(exact));
    const [packet] = await h.nextPackets(1);
    assertBytes(payloadOf(packet), exact.payload as Buffer, "payload");
    await h.peer.write(frame(publishWithRemaining(998)));
    const error = await h.closeError();
    assert.ok(error instanceof ProtocolError, `got ${error}`);
    assert.match(error.message, /PUBLISH of 1001 bytes exceeds the maximum packet size of 1000/);
  }, { maxPacketSize: 1000 });
});

Deno.test("a frame mqtt-packet rejects closes with ProtocolError", async () => {
  await withPair(async (h) => {
    await h.peer.write(new Uint8Array([0x00, 0x00])); // packet type 0 is reserved
    const error = await h.closeError();
    assert.ok(error instanceof ProtocolError, `got ${error}`);
    assert.match(error.message, /malformed/);
    assert.deepEqual(h.packets, []);
  });
});

// ---------------------------------------------------------------------------
// Outgoing: coalescing, end()

Deno.test("send() calls in the same tick go out in one write and arrive in one read", async () => {
  await withPair(async (h) => {
    const frames = Array.from({ length: 5 }, (_, i) => frame(publish(pattern(10, i))));
    const writesBefore = h.writes.length;
    for (let i = 0; i < 5; i++) h.proto.send(publish(pattern(10, i)));
    const first = await h.peer.read();
    assert.ok(first, "EOF");
    assertBytes(first, concat(...frames), "the server's first read");
    assert.deepEqual(h.writes.slice(writesBefore), [first.length], "one conn.write()");
  });
});

Deno.test("sends separated by awaits (a producer awaiting each publish) still go out in one write", async () => {
  await withPair(async (h) => {
    const frames = Array.from({ length: 20 }, (_, i) => frame(publish(pattern(10, i))));
    const writesBefore = h.writes.length;
    for (let i = 0; i < 20; i++) {
      h.proto.send(publish(pattern(10, i)));
      await Promise.resolve(); // what `await client.publish(...)` costs between frames
      await Promise.resolve();
    }
    let received: Uint8Array = new Uint8Array(0);
    const expected = concat(...frames);
    while (received.length < expected.length) {
      const chunk = await h.peer.read();
      assert.ok(chunk, "EOF");
      received = concat(received, chunk);
    }
    assertBytes(received, expected, "what the server read");
    assert.deepEqual(h.writes.slice(writesBefore), [expected.length], "one conn.write()");
  });
});

Deno.test("an urgent frame is written within microtasks; a batched one waits for the macrotask", async () => {
  await withPair(async (h) => {
    const writesBefore = h.writes.length;
    h.proto.sendBytes(frame(publish(pattern(10, 1))));
    await Promise.resolve();
    await Promise.resolve();
    assert.equal(h.writes.length, writesBefore, "batched: not yet written");
    h.proto.send({ cmd: "pingreq" }, { urgent: true });
    await Promise.resolve();
    assert.equal(h.writes.length, writesBefore + 1, "urgent: written, with the frame before it");
    const expected = concat(frame(publish(pattern(10, 1))), new Uint8Array([0xc0, 0]));
    assert.deepEqual(h.writes.slice(writesBefore), [expected.length]);
  });
});

Deno.test("nothing is queued after a DISCONNECT: it is the last frame on the wire", async () => {
  await withPair(async (h) => {
    h.proto.send({ cmd: "disconnect" }, { urgent: true });
    h.proto.send({ cmd: "pingreq" }, { urgent: true });
    h.proto.sendBytes(frame(publish(pattern(10))));
    await within(h.proto.end(), "end()");
    let received: Uint8Array = new Uint8Array(0);
    for (;;) {
      const chunk = await h.peer.read();
      if (!chunk) break;
      received = concat(received, chunk);
    }
    assertBytes(received, new Uint8Array([0xe0, 0]), "all the broker read");
  });
});

Deno.test("a single small frame is written in one write", async () => {
  await withPair(async (h) => {
    const bytes = frame(publish(pattern(100)));
    const writesBefore = h.writes.length;
    h.proto.sendBytes(bytes);
    const first = await h.peer.read();
    assert.ok(first, "EOF");
    assertBytes(first, bytes, "the server's first read");
    assert.deepEqual(h.writes.slice(writesBefore), [bytes.length]);
  });
});

Deno.test("end() writes everything queued, then closes", async () => {
  await withPair(async (h) => {
    const big = pattern(1024 * 1024, 9); // more than one socket write's worth
    h.proto.send(publish(pattern(10)));
    h.proto.send(publish(big));
    h.proto.send({ cmd: "disconnect" });
    const ending = h.proto.end();
    const packets = await h.peer.readPackets(3, BIG_TIMEOUT);
    assert.deepEqual(packets.map((p) => p.cmd), ["publish", "publish", "disconnect"]);
    assertBytes(payloadOf(packets[1]), big, "queued payload");
    await h.peer.expectClosed();
    await within(ending, "end()");
    assert.equal(await h.closeError(), undefined);
    assert.equal(h.closeErrors.length, 1);
  });
});

// ---------------------------------------------------------------------------
// onClose / closed

Deno.test("onClose is called once when the broker closes; closed resolves", async () => {
  const h = await open();
  try {
    h.server.close();
    const error = await h.closeError();
    assert.ok(error instanceof ConnectionLostError, `got ${error}`);
    assert.equal(h.proto.isClosed, true);
    h.proto.close(new Error("again"));
    h.proto.send({ cmd: "pingreq" }); // a no-op once closed
  } finally {
    await h.dispose();
  }
  assert.equal(h.closeErrors.length, 1);
});

Deno.test("onClose is called once on a local close(), with its reason", async () => {
  const h = await open();
  const reason = new Error("local reason");
  try {
    h.proto.close(reason);
    assert.equal(h.proto.isClosed, true);
    assert.equal(await h.closeError(), reason);
    await h.peer.expectClosed();
    h.proto.close();
  } finally {
    await h.dispose();
  }
  assert.deepEqual(h.closeErrors, [reason]);
});

Deno.test("onClose is called once when a protocol error closes the connection", async () => {
  const h = await open();
  try {
    await h.peer.write(new Uint8Array([0x30, 0xff, 0xff, 0xff, 0xff, 0x01]));
    assert.ok((await h.closeError()) instanceof ProtocolError);
    h.server.close(); // the peer's close must not report a second time
    h.proto.close();
    await nextMacrotask();
  } finally {
    await h.dispose();
  }
  assert.equal(h.closeErrors.length, 1);
});

// ---------------------------------------------------------------------------
// Flow control

Deno.test("pauseReading() holds back frames until resumeReading()", async () => {
  await withPair(async (h) => {
    const base = h.bytesRead;
    const readCalls = h.readCalls; // the proto's next read is already pending
    h.proto.pauseReading();
    await h.peer.write(concat(puback(1), puback(2), puback(3)));
    // The pending read returns the PUBACKs; once every continuation of it has run,
    // nothing may have been delivered and no further read started.
    await h.until(() => h.bytesRead >= base + 12, "the pending read to return");
    await nextMacrotask();
    assert.deepEqual(h.packets, [], "delivered while paused");
    assert.equal(h.readCalls, readCalls, "read again while paused");
    // More frames while paused stay in the socket (bounded negative check, 100 ms).
    await h.peer.write(puback(4));
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.deepEqual(h.packets, [], "delivered while paused");
    h.proto.resumeReading();
    const packets = await h.nextPackets(4);
    assert.deepEqual(packets.map((p) => p.messageId), [1, 2, 3, 4]);
  });
});

Deno.test("backedUp and drained() follow the high-water mark", async () => {
  await withPair(async (h) => {
    const bytes = frame(publish(pattern(1024)));
    assert.equal(h.proto.backedUp, false);
    await within(h.proto.drained(), "drained() when not backed up");
    h.proto.send(publish(pattern(1024)));
    assert.equal(h.proto.bufferedBytes, bytes.length);
    assert.equal(h.proto.backedUp, true);
    let drained = false;
    const waiting = h.proto.drained().then(() => drained = true);
    await Promise.resolve();
    assert.equal(drained, false, "drained() resolved before any write");
    assertBytes(await h.peer.readBytes(bytes.length), bytes, "written bytes");
    await within(waiting, "drained()");
    assert.equal(h.proto.backedUp, false);
    assert.equal(h.proto.bufferedBytes, 0);
  }, { highWaterMark: 16 });
});

Deno.test("drained() waits while the broker does not read, and resolves on close", async () => {
  await withPair(async (h) => {
    // More than loopback socket buffers hold, so the write blocks until the server reads.
    const payload = pattern(16 * 1024 * 1024, 3);
    h.proto.send(publish(payload));
    let drained = false;
    const waiting = h.proto.drained().then(() => drained = true);
    await new Promise((resolve) => setTimeout(resolve, 100)); // bounded negative check
    assert.equal(drained, false, "drained() resolved while the write was stuck");
    assert.equal(h.proto.backedUp, true);
    const [packet] = await h.peer.readPackets(1, BIG_TIMEOUT);
    assertBytes(payloadOf(packet), payload, "payload");
    await within(waiting, "drained()");
    assert.equal(h.proto.backedUp, false);

    h.proto.send(publish(pattern(64)));
    assert.equal(h.proto.backedUp, true);
    const onClose = h.proto.drained();
    h.proto.close();
    await within(onClose, "drained() on close");
    assert.equal(h.proto.bufferedBytes, 0);
  }, { highWaterMark: 16 });
});

// ---------------------------------------------------------------------------
// dial()

Deno.test("dial() to a port nobody listens on rejects with ConnectionLostError naming it", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  await assert.rejects(
    within(dial({ hostname: "127.0.0.1", port }), "dial()"),
    (error: Error) => {
      assert.ok(error instanceof ConnectionLostError, `got ${error}`);
      assert.ok(error.message.includes(`127.0.0.1:${port}`), error.message);
      return true;
    },
  );
});

Deno.test("dial() returns a connection MQTTProto can talk over", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepted = listener.accept();
  const conn = await within(dial({ hostname: "127.0.0.1", port: listener.addr.port }), "dial()");
  const server = await within(accepted, "accept");
  const peer = new Peer(server);
  let resolveConnack!: (packet: { cmd: string; returnCode?: number }) => void;
  const connack = new Promise<{ cmd: string; returnCode?: number }>((r) => resolveConnack = r);
  const proto = new MQTTProto(fromByteConn(conn), {
    onPacket: (packet) => resolveConnack(packet),
    onClose: () => {},
  });
  try {
    proto.send({ cmd: "pingreq" });
    assert.deepEqual((await peer.readPackets(1)).map((p) => p.cmd), ["pingreq"]);
    await peer.write(CONNACK);
    assert.equal((await within(connack, "CONNACK")).returnCode, 0);
  } finally {
    proto.close();
    await within(proto.closed, "closed");
    server.close();
    listener.close();
    await nextMacrotask();
  }
});
