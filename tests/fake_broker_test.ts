/**
 * Tests of the fake broker itself. Most drive it over raw TCP with a bare
 * client built on the codec (not on the client library), so a fault in the
 * client cannot hide one here; frames are also checked against mqtt-packet,
 * an independent codec. The last tests run the library's MQTTClient through
 * broker mode, end to end.
 */
import assert from "node:assert/strict";
import { Buffer, generate, type Packet as OraclePacket, parser } from "./oracle.ts";
import { FakeBroker, type FakeBrokerOptions, type Packet, type PacketOf } from "./fake_broker.ts";
import type { SendablePacket } from "../testing.ts";
import { encode } from "../codec/encode.ts";
import { PacketDecoder } from "../codec/decode.ts";
import type { ProtocolVersion } from "../codec/packets.ts";
import { toWire } from "../testing/packets.ts";
import { MQTTClient } from "../mod.ts";
import { quickClient, type TestClient, until, within } from "./helpers.ts";

const decoder = new TextDecoder();

function frame(packet: SendablePacket, version: ProtocolVersion = 4): Uint8Array {
  return encode(toWire(packet, version), version);
}

function text(payload: Uint8Array): string {
  return decoder.decode(payload);
}

/** mqtt-packet's reading of `bytes` (one frame). */
function oracleParse(bytes: Uint8Array, protocolVersion: ProtocolVersion): OraclePacket {
  const packets: OraclePacket[] = [];
  const p = parser({ protocolVersion });
  p.on("packet", (packet: OraclePacket) => packets.push(packet));
  p.on("error", (error: Error) => {
    throw error;
  });
  p.parse(Buffer.from(bytes));
  assert.equal(packets.length, 1, "mqtt-packet reads exactly one packet");
  return packets[0];
}

type ConnectInput = Partial<Extract<SendablePacket, { cmd: "connect" }>>;

/** A bare MQTT client: raw TCP, the codec, a queue of received packets. */
class RawClient {
  readonly received: Packet[] = [];
  readonly version: ProtocolVersion;
  readonly #conn: Deno.Conn;
  readonly #decoder: PacketDecoder;
  readonly #waiters: { resolve(): void; timer: ReturnType<typeof setTimeout> }[] = [];
  readonly #reading: Promise<void>;
  #taken = 0;
  #ended = false;

  private constructor(conn: Deno.Conn, version: ProtocolVersion) {
    this.#conn = conn;
    this.version = version;
    this.#decoder = new PacketDecoder({ protocolVersion: version });
    this.#reading = this.#read();
  }

  static async connect(broker: FakeBroker, version: ProtocolVersion = 4): Promise<RawClient> {
    const conn = await Deno.connect({ hostname: broker.hostname, port: broker.port });
    conn.setNoDelay(true);
    return new RawClient(conn, version);
  }

  /** Connects and completes CONNECT/CONNACK (for broker mode). */
  static async session(
    broker: FakeBroker,
    connect: ConnectInput = {},
  ): Promise<{ client: RawClient; sessionPresent: boolean; connack: PacketOf<"connack"> }> {
    const version = connect.protocolVersion ?? 4;
    const client = await RawClient.connect(broker, version);
    await client.send({ cmd: "connect", clientId: "", clean: true, keepalive: 0, ...connect });
    const connack = await client.expect("connack");
    assert.equal(version === 5 ? connack.reasonCode : connack.returnCode, 0);
    return { client, sessionPresent: connack.sessionPresent, connack };
  }

  /** Whether the broker side closed the connection (our read saw EOF or a reset). */
  get ended(): boolean {
    return this.#ended;
  }

  send(packet: SendablePacket): Promise<void> {
    return this.write(frame(packet, this.version));
  }

  async write(bytes: Uint8Array): Promise<void> {
    let offset = 0;
    while (offset < bytes.length) offset += await this.#conn.write(bytes.subarray(offset));
  }

  /** The next packet from the broker; rejects after `timeoutMs` or when the connection ends. */
  async next(timeoutMs = 3000): Promise<Packet> {
    while (this.#taken >= this.received.length) {
      if (this.#ended) throw new Error("raw client: connection ended while waiting for a packet");
      await new Promise<void>((resolve, reject) => {
        const waiter = {
          resolve: () => {
            clearTimeout(waiter.timer);
            resolve();
          },
          timer: setTimeout(() => {
            this.#waiters.splice(this.#waiters.indexOf(waiter), 1);
            reject(new Error(`raw client: no packet within ${timeoutMs} ms`));
          }, timeoutMs),
        };
        this.#waiters.push(waiter);
      });
    }
    return this.received[this.#taken++];
  }

  async expect<C extends Packet["cmd"]>(cmd: C, timeoutMs = 3000): Promise<PacketOf<C>> {
    const packet = await this.next(timeoutMs);
    assert.equal(packet.cmd, cmd, `raw client expected ${cmd}, got ${packet.cmd}`);
    return packet as PacketOf<C>;
  }

  /** Asserts that nothing arrives within `ms`. */
  async quiet(ms: number): Promise<void> {
    await assert.rejects(this.next(ms), /no packet within/);
  }

  /** Resolves when the broker side has closed the connection. */
  async waitEnded(): Promise<void> {
    while (!this.#ended) await this.#reading;
  }

  /** Closes the socket and waits for the read loop to stop. */
  async close(): Promise<void> {
    if (!this.#ended) {
      try {
        this.#conn.close();
      } catch { /* already closed */ }
    }
    await this.#reading;
  }

  #wake(): void {
    for (const waiter of this.#waiters.splice(0)) waiter.resolve();
  }

  async #read(): Promise<void> {
    const buffer = new Uint8Array(65536);
    try {
      while (true) {
        const n = await this.#conn.read(buffer);
        if (n === null) break;
        this.#decoder.push(buffer.slice(0, n), (packet) => {
          this.received.push(packet);
          this.#wake();
        });
      }
    } catch { /* closed by us, reset, or malformed */ }
    this.#ended = true;
    try {
      this.#conn.close();
    } catch { /* already closed */ }
    this.#wake();
  }
}

/** Closes every client of `clients`, in order. */
async function closeAll(clients: RawClient[]): Promise<void> {
  for (const client of clients) await client.close();
}

const CONNECT: Extract<SendablePacket, { cmd: "connect" }> = {
  cmd: "connect",
  clientId: "raw-1",
  protocolVersion: 4,
  protocolId: "MQTT",
  clean: true,
  keepalive: 30,
};

function publish(
  topic: string,
  payload: string,
  qos: 0 | 1 | 2,
  messageId?: number,
): Extract<SendablePacket, { cmd: "publish" }> {
  return { cmd: "publish", topic, payload, qos, dup: false, retain: false, messageId };
}

/** Scripted mode: a raw client connected and through CONNECT/CONNACK. */
async function scripted(version: ProtocolVersion = 4) {
  const broker = await FakeBroker.start();
  const client = await RawClient.connect(broker, version);
  const conn = await broker.accept();
  await client.send({ ...CONNECT, protocolVersion: version });
  await conn.handshake();
  await client.expect("connack");
  return {
    broker,
    client,
    conn,
    async [Symbol.asyncDispose]() {
      await client.close();
      await broker.close();
    },
  };
}

// ---------------------------------------------------------------- scripted mode

Deno.test("scripted: handshake, then expect/send round trip", async () => {
  await using broker = await FakeBroker.start();
  assert.equal(broker.hostname, "127.0.0.1");
  assert.ok(broker.port > 0);
  const client = await RawClient.connect(broker);
  try {
    await client.send(CONNECT);
    const conn = await broker.accept();
    assert.equal(conn.id, 1);
    assert.equal(broker.connectionCount, 1);
    const connect = await conn.handshake({ sessionPresent: true });
    assert.equal(connect.clientId, "raw-1");
    assert.equal(connect.keepalive, 30);
    assert.equal(conn.protocolVersion, 4);
    const connack = await client.expect("connack");
    assert.equal(connack.returnCode, 0);
    assert.equal(connack.sessionPresent, true);

    await client.send({
      cmd: "subscribe",
      messageId: 3,
      subscriptions: [{ topic: "a/#", qos: 1 }],
    });
    const subscribe = await conn.expect("subscribe");
    assert.deepEqual(subscribe.subscriptions, [{ topic: "a/#", qos: 1 }]);
    await conn.send({ cmd: "suback", messageId: subscribe.messageId, granted: [1] });
    const suback = await client.expect("suback");
    assert.equal(suback.messageId, 3);
    assert.deepEqual(suback.granted, [1]);

    await conn.send(publish("a/b", "down", 1, 9));
    const down = await client.expect("publish");
    assert.equal(down.topic, "a/b");
    assert.equal(text(down.payload), "down");
    assert.equal(down.messageId, 9);
    // A Uint8Array payload is sent byte for byte.
    const bytes = new Uint8Array([0, 1, 2, 255]);
    await conn.send({ ...publish("a/bin", "", 0), payload: bytes });
    assert.deepEqual(new Uint8Array((await client.expect("publish")).payload), bytes);
    // A 3.1.1 UNSUBACK may omit `granted`.
    await conn.send({ cmd: "unsuback", messageId: 4 });
    assert.equal((await client.expect("unsuback")).messageId, 4);

    // expect() names what came instead of the expected packet.
    await client.send({ cmd: "pingreq" });
    await assert.rejects(conn.expect("publish"), /expected PUBLISH from the client, got PINGREQ/);
  } finally {
    await client.close();
  }
});

Deno.test("start() rejects when the port is taken", async () => {
  await using broker = await FakeBroker.start();
  await assert.rejects(FakeBroker.start({ port: broker.port }), /in use|AddrInUse/i);
  await assert.rejects(
    FakeBroker.start({ mode: "nope" } as unknown as FakeBrokerOptions),
    /mode must be "scripted" or "broker"/,
  );
});

Deno.test("scripted: handshake can refuse with a CONNACK return code", async () => {
  await using broker = await FakeBroker.start();
  const client = await RawClient.connect(broker);
  try {
    await client.send(CONNECT);
    const conn = await broker.accept();
    await conn.handshake({ returnCode: 5 });
    const connack = await client.expect("connack");
    assert.equal(connack.returnCode, 5);
    assert.equal(connack.sessionPresent, false);
  } finally {
    await client.close();
  }
});

Deno.test("scripted: frames are recorded in both directions, in order, with times", async () => {
  await using s = await scripted();
  const { broker, client, conn } = s;
  const before = performance.now();
  await client.send(publish("t", "up", 1, 1));
  await conn.expect("publish");
  await conn.send({ cmd: "puback", messageId: 1 });
  await client.expect("puback");

  const cmds = broker.frames.map((f) => `${f.direction}:${f.packet?.cmd}`);
  assert.deepEqual(cmds, [
    "toBroker:connect",
    "toClient:connack",
    "toBroker:publish",
    "toClient:puback",
  ]);
  assert.deepEqual(conn.frames, broker.frames);
  for (const frame of broker.frames) assert.equal(frame.connection, 1);
  for (let i = 1; i < broker.frames.length; i++) {
    assert.ok(broker.frames[i].time >= broker.frames[i - 1].time, "times must not go back");
  }
  assert.ok(broker.frames[2].time >= before);
  // The recorded bytes are the exact frames on the wire, as mqtt-packet writes them too.
  assert.deepEqual(broker.frames[0].bytes, frame(CONNECT));
  const oracle = (packet: object) => new Uint8Array(generate(packet as OraclePacket));
  assert.deepEqual(broker.frames[0].bytes, oracle({ ...CONNECT, protocolVersion: 4 }));
  assert.deepEqual(broker.frames[3].bytes, oracle({ cmd: "puback", messageId: 1 }));
  // Sent packets are recorded in the codec's shape: payload bytes, defaults filled in.
  assert.deepEqual(broker.frames[1].packet, {
    cmd: "connack",
    sessionPresent: false,
    returnCode: 0,
  });
  const up = broker.frames[2].packet as PacketOf<"publish">;
  assert.equal(text(up.payload), "up");
  assert.equal(broker.framesOf("publish").length, 1);
  assert.equal(broker.framesOf("publish", "toClient").length, 0);
  assert.equal(broker.framesOf("puback", "toClient").length, 1);
});

Deno.test("scripted: a frame split across many writes and reads is reassembled", async () => {
  await using s = await scripted();
  const { broker, client, conn } = s;
  // Byte by byte: the header alone arrives in several pieces.
  const small = frame(publish("split/topic", "abc", 1, 42));
  for (let i = 0; i < small.length; i++) await client.write(small.subarray(i, i + 1));
  const first = await conn.expect("publish");
  assert.equal(first.topic, "split/topic");
  assert.equal(first.messageId, 42);
  // Larger than one read buffer: necessarily split across reads.
  const big = "x".repeat(300_000);
  const bigFrame = frame(publish("split/big", big, 0));
  await client.write(bigFrame.subarray(0, 1000));
  await client.write(bigFrame.subarray(1000));
  const second = await conn.expect("publish");
  assert.equal(text(second.payload), big);
  const recorded = broker.framesOf("publish", "toBroker");
  assert.equal(recorded.length, 2);
  assert.deepEqual(recorded[0].bytes, small);
  assert.deepEqual(recorded[1].bytes, bigFrame);
});

Deno.test("scripted: many frames in one write are all delivered in order", async () => {
  await using s = await scripted();
  const { broker, client, conn } = s;
  const frames: Uint8Array[] = [];
  for (let i = 1; i <= 50; i++) frames.push(frame(publish(`many/${i}`, `${i}`, 1, i)));
  frames.push(frame({ cmd: "pingreq" }));
  const all = new Uint8Array(frames.reduce((n, f) => n + f.length, 0));
  frames.reduce((offset, f) => (all.set(f, offset), offset + f.length), 0);
  await client.write(all);
  for (let i = 1; i <= 50; i++) {
    const packet = await conn.expect("publish");
    assert.equal(packet.messageId, i);
    assert.equal(packet.topic, `many/${i}`);
  }
  await conn.expect("pingreq");
  assert.equal(broker.framesOf("publish", "toBroker").length, 50);
});

Deno.test("scripted: autoPingresp answers pings without delivering them", async () => {
  await using s = await scripted();
  const { broker, client, conn } = s;
  conn.autoPingresp();
  await client.send({ cmd: "pingreq" });
  await client.expect("pingresp");
  await client.send({ cmd: "pingreq" });
  await client.expect("pingresp");
  await client.send(publish("after/pings", "p", 0));
  // The pings were answered, not delivered: the next packet is the PUBLISH.
  const next = await conn.next();
  assert.equal(next.cmd, "publish");
  assert.equal(broker.framesOf("pingreq", "toBroker").length, 2);
  assert.equal(broker.framesOf("pingresp", "toClient").length, 2);

  conn.autoPingresp(false);
  await client.send({ cmd: "pingreq" });
  await conn.expect("pingreq");
  assert.equal(broker.framesOf("pingresp").length, 2);
});

Deno.test("scripted: autoPuback acks QoS 1 and still delivers the PUBLISH", async () => {
  await using s = await scripted();
  const { broker, client, conn } = s;
  conn.autoPuback();
  await client.send(publish("q0", "zero", 0));
  await client.send(publish("q1", "one", 1, 7));
  await client.send(publish("q2", "two", 2, 8));
  const puback = await client.expect("puback");
  assert.equal(puback.messageId, 7);
  assert.equal((await conn.expect("publish")).topic, "q0");
  assert.equal((await conn.expect("publish")).topic, "q1");
  assert.equal((await conn.expect("publish")).topic, "q2");
  assert.equal(broker.framesOf("puback").length, 1, "QoS 0 gets no PUBACK");
  assert.equal(broker.framesOf("pubrec").length, 0, "autoPuback leaves QoS 2 alone");
});

Deno.test("scripted: dropAfterPublishes closes after the Nth PUBLISH without acking it", async () => {
  await using s = await scripted();
  const { broker, client, conn } = s;
  conn.autoPuback();
  conn.dropAfterPublishes(2);
  const three = [1, 2, 3].map((i) => frame(publish(`d/${i}`, "x", 1, i)));
  await client.write(new Uint8Array([...three[0], ...three[1], ...three[2]]));
  await client.waitEnded();
  await conn.closed;
  assert.equal(conn.isClosed, true);
  // Publish 1 was acked; publish 2 arrived but was not; publish 3 was never read.
  assert.deepEqual(client.received.map((p) => p.cmd), ["connack", "puback"]);
  assert.equal((await conn.expect("publish")).messageId, 1);
  assert.equal((await conn.expect("publish")).messageId, 2);
  await assert.rejects(conn.next(), /closed by the broker side while waiting for a packet/);
  assert.equal(broker.framesOf("publish", "toBroker").length, 2);
  assert.throws(() => conn.dropAfterPublishes(0), RangeError);
});

Deno.test("scripted: silence keeps TCP open but never reads or answers", async () => {
  await using s = await scripted();
  const { broker, client, conn } = s;
  conn.autoPingresp();
  conn.autoAck();
  conn.silence();
  await client.send({ cmd: "pingreq" });
  await client.send(publish("into/the/void", "?", 1, 1));
  await client.send(publish("into/the/void", "?", 2, 2));
  // Nothing comes back within a generous window, and the socket stays open.
  await client.quiet(300);
  assert.equal(client.ended, false);
  assert.equal(conn.isClosed, false);
  await assert.rejects(conn.next({ timeoutMs: 50 }), /timed out after 50 ms waiting for a packet/);
  await conn.send({ cmd: "pingresp" }); // dropped: a silenced connection never writes
  assert.equal(broker.framesOf("pingresp").length, 0);
  assert.equal(broker.framesOf("pubrec").length, 0);
  // Only closing from the broker side ends it.
  broker.dropAll();
  await client.waitEnded();
  await conn.closed;
});

Deno.test("scripted: refuseConnections closes sockets at once", async () => {
  await using broker = await FakeBroker.start();
  broker.refuseConnections(true);
  const refused = await RawClient.connect(broker);
  await refused.waitEnded();
  await broker.waitFor(() => broker.refusedCount === 1, { what: "one refused connection" });
  assert.equal(broker.connectionCount, 0);
  await assert.rejects(broker.accept({ timeoutMs: 50 }), /no client connected within 50 ms/);

  broker.refuseConnections(false);
  const client = await RawClient.connect(broker);
  try {
    const conn = await broker.accept();
    assert.equal(conn.id, 1);
    await client.send(CONNECT);
    await conn.handshake();
    await client.expect("connack");
  } finally {
    await client.close();
  }
});

Deno.test("scripted: connections queue for accept() in arrival order", async () => {
  await using broker = await FakeBroker.start();
  const a = await RawClient.connect(broker);
  const b = await RawClient.connect(broker);
  try {
    await broker.waitFor(() => broker.connectionCount === 2, { what: "two connections" });
    const first = await broker.accept();
    const second = await broker.accept();
    assert.deepEqual([first.id, second.id], [1, 2]);
    await b.send({ cmd: "pingreq" });
    await second.expect("pingreq");
    assert.equal(broker.frames[0].connection, 2);
  } finally {
    await a.close();
    await b.close();
  }
});

Deno.test("scripted: the client closing rejects waiters and resolves closed", async () => {
  await using s = await scripted();
  const { client, conn } = s;
  const waiting = conn.expect("publish");
  await client.close();
  await assert.rejects(waiting, /the client closed the connection while waiting for PUBLISH/);
  await conn.closed;
  assert.equal(conn.isClosed, true);
  await conn.send({ cmd: "pingresp" }); // resolves; nothing is written on a closed connection
});

Deno.test("scripted: malformed bytes are recorded and close the connection", async () => {
  await using broker = await FakeBroker.start();
  // A remaining length of more than four bytes.
  const bad = await RawClient.connect(broker);
  const conn = await broker.accept();
  await bad.write(new Uint8Array([0x30, 0xff, 0xff, 0xff, 0xff, 0x7f]));
  await bad.waitEnded();
  await conn.closed;
  assert.equal(broker.frames.length, 1);
  assert.equal(broker.frames[0].packet, undefined);
  await assert.rejects(conn.next(), /closed by the broker side/);

  // A well-framed packet whose body is invalid (reserved flags on SUBSCRIBE).
  const bad2 = await RawClient.connect(broker);
  const conn2 = await broker.accept();
  await bad2.write(new Uint8Array([0x80, 0x02, 0x00, 0x01]));
  await bad2.waitEnded();
  await conn2.closed;
  const frames = conn2.frames;
  assert.equal(frames.length, 1);
  assert.deepEqual(frames[0].bytes, new Uint8Array([0x80, 0x02, 0x00, 0x01]));
  assert.equal(frames[0].packet, undefined);

  // AUTH does not exist in 3.1.1: malformed on a 3.1.1 connection.
  const bad3 = await RawClient.connect(broker);
  const conn3 = await broker.accept();
  await bad3.send(CONNECT);
  await conn3.handshake();
  await bad3.write(frame({ cmd: "auth", reasonCode: 0x18 }, 5));
  await bad3.waitEnded();
  await conn3.closed;
  assert.equal(conn3.frames.at(-1)!.packet, undefined);
  await closeAll([bad, bad2, bad3]);
});

Deno.test("scripted: sendRaw writes exact bytes, recorded without a packet", async () => {
  await using s = await scripted();
  const { broker, client, conn } = s;
  const raw = frame({ cmd: "puback", messageId: 300 });
  await conn.sendRaw(raw);
  assert.equal((await client.expect("puback")).messageId, 300);
  const last = broker.frames.at(-1)!;
  assert.equal(last.direction, "toClient");
  assert.equal(last.packet, undefined);
  assert.deepEqual(last.bytes, raw);
});

Deno.test("scripted: timeouts name what was awaited", async () => {
  await using s = await scripted();
  const { broker, conn } = s;
  await assert.rejects(conn.expect("subscribe", { timeoutMs: 20 }), /waiting for SUBSCRIBE/);
  await assert.rejects(
    broker.waitFor(() => false, { timeoutMs: 20, what: "the impossible" }),
    /timed out after 20 ms waiting for the impossible/,
  );
  await assert.rejects(broker.accept({ timeoutMs: 20 }), /1 connection\(s\) accepted so far/);
  await assert.rejects(broker.restart({ persistence: true }), /needs broker mode/);
});

Deno.test("scripted: close() rejects pending waits and stops all I/O", async () => {
  const broker = await FakeBroker.start();
  const client = await RawClient.connect(broker);
  const conn = await broker.accept();
  const pending = [
    assert.rejects(broker.accept(), /closed while waiting for a connection/),
    assert.rejects(
      broker.waitFor(() => false, { what: "never" }),
      /closed while waiting for never/,
    ),
    assert.rejects(conn.next(), /closed by the broker side/),
  ];
  await broker.close();
  await Promise.all(pending);
  assert.equal(conn.isClosed, true);
  await client.waitEnded();
  await client.close();
  await assert.rejects(Deno.connect({ hostname: broker.hostname, port: broker.port }));
});

// ---------------------------------------------------------------- scripted mode, MQTT 5

Deno.test("scripted v5: the connection speaks the CONNECT's level; handshake sends v5 CONNACK properties", async () => {
  await using broker = await FakeBroker.start();
  const client = await RawClient.connect(broker, 5);
  try {
    await client.send({
      cmd: "connect",
      clientId: "",
      protocolVersion: 5,
      clean: true,
      keepalive: 60,
      properties: { sessionExpiryInterval: 30, receiveMaximum: 7 },
    });
    const conn = await broker.accept();
    assert.equal(conn.protocolVersion, 4, "3.1.1 until a CONNECT says otherwise");
    const properties = {
      receiveMaximum: 3,
      maximumPacketSize: 4096,
      topicAliasMaximum: 5,
      maximumQoS: 1 as const,
      retainAvailable: false,
      serverKeepAlive: 20,
      assignedClientIdentifier: "assigned-1",
      reasonString: "welcome",
    };
    const connect = await conn.handshake({ properties });
    assert.equal(conn.protocolVersion, 5);
    assert.equal(connect.protocolVersion, 5);
    assert.deepEqual(connect.properties, { sessionExpiryInterval: 30, receiveMaximum: 7 });
    const connack = await client.expect("connack");
    assert.equal(connack.reasonCode, 0);
    assert.equal(connack.returnCode, undefined);
    assert.deepEqual(connack.properties, properties);
    // mqtt-packet reads the same CONNACK from the recorded bytes.
    const recorded = broker.framesOf("connack")[0];
    const oracle = oracleParse(recorded.bytes, 5) as unknown as Record<string, unknown>;
    assert.equal(oracle.reasonCode, 0);
    assert.deepEqual(
      { ...oracle.properties as object },
      { ...properties, retainAvailable: false },
    );
    assert.deepEqual(recorded.packet, {
      cmd: "connack",
      sessionPresent: false,
      reasonCode: 0,
      properties,
    });

    // A v5 PUBLISH from the client decodes with its properties, in next() and in the record.
    await client.send({
      ...publish("v5/topic", "hi", 1, 1),
      properties: { topicAlias: 2, userProperties: [["k", "v"], ["k", "w"]], contentType: "text" },
    });
    const up = await conn.expect("publish");
    assert.deepEqual(up.properties, {
      topicAlias: 2,
      userProperties: [["k", "v"], ["k", "w"]],
      contentType: "text",
    });
    assert.deepEqual(broker.framesOf("publish", "toBroker")[0].packet, up);
    // The v5 PUBACK's reason code: a 3.1.1 decoder would read it as a malformed frame.
    await conn.send({
      cmd: "puback",
      messageId: 1,
      reasonCode: 0x10,
      properties: { reasonString: "nobody" },
    });
    const puback = await client.expect("puback");
    assert.deepEqual(puback, {
      cmd: "puback",
      messageId: 1,
      reasonCode: 0x10,
      properties: { reasonString: "nobody" },
    });
  } finally {
    await client.close();
  }
});

Deno.test("scripted v5: refusals map between return codes and reason codes", async () => {
  await using broker = await FakeBroker.start();
  const cases: [ProtocolVersion, { returnCode?: number; reasonCode?: number }, number][] = [
    [5, { returnCode: 5 }, 0x87], // not authorized
    [5, { reasonCode: 0x9c }, 0x9c], // use another server
    [4, { reasonCode: 0x86 }, 4], // bad user name or password
    [4, { reasonCode: 0x89 }, 3], // server busy: unavailable
  ];
  for (const [version, options, expected] of cases) {
    const client = await RawClient.connect(broker, version);
    await client.send({ ...CONNECT, protocolVersion: version });
    const conn = await broker.accept();
    const properties = { serverReference: "other:1883" };
    await conn.handshake({ ...options, properties });
    const connack = await client.expect("connack");
    if (version === 5) {
      assert.equal(connack.reasonCode, expected);
      assert.deepEqual(connack.properties, properties);
    } else {
      assert.equal(connack.returnCode, expected);
      assert.equal(connack.properties, undefined, "no properties for 3.1.1");
    }
    await client.close();
  }
});

Deno.test("scripted v5: acks with reason codes, DISCONNECT with a server reference, AUTH", async () => {
  await using s = await scripted(5);
  const { broker, client, conn } = s;
  await client.send({
    cmd: "subscribe",
    messageId: 2,
    subscriptions: [{ topic: "a", qos: 1, nl: true, rap: true, rh: 2 }, { topic: "b", qos: 2 }],
    properties: { subscriptionIdentifier: 9 },
  });
  const subscribe = await conn.expect("subscribe");
  assert.deepEqual(subscribe.subscriptions[0], { topic: "a", qos: 1, nl: true, rap: true, rh: 2 });
  assert.equal(subscribe.properties?.subscriptionIdentifier, 9);
  await conn.send({ cmd: "suback", messageId: 2, granted: [1, 0x87] });
  assert.deepEqual((await client.expect("suback")).granted, [1, 0x87]);

  await conn.send({ cmd: "unsuback", messageId: 3, granted: [0x11] });
  assert.deepEqual((await client.expect("unsuback")).granted, [0x11]);

  await conn.send(publish("down", "two", 2, 4));
  await client.expect("publish");
  await client.send({ cmd: "pubrec", messageId: 4, reasonCode: 0x10 });
  assert.deepEqual(await conn.expect("pubrec"), { cmd: "pubrec", messageId: 4, reasonCode: 0x10 });
  await conn.send({ cmd: "pubrel", messageId: 5, reasonCode: 0x92 });
  assert.equal((await client.expect("pubrel")).reasonCode, 0x92);
  await conn.send({ cmd: "pubcomp", messageId: 6, reasonCode: 0x92 });
  assert.equal((await client.expect("pubcomp")).reasonCode, 0x92);

  const data = new Uint8Array([1, 2, 3]);
  await conn.send({
    cmd: "auth",
    reasonCode: 0x18,
    properties: { authenticationMethod: "SCRAM", authenticationData: data },
  });
  const auth = await client.expect("auth");
  assert.equal(auth.reasonCode, 0x18);
  assert.equal(auth.properties?.authenticationMethod, "SCRAM");
  assert.deepEqual(auth.properties?.authenticationData, data);
  await client.send({
    cmd: "auth",
    reasonCode: 0x18,
    properties: { authenticationMethod: "SCRAM" },
  });
  assert.equal((await conn.expect("auth")).reasonCode, 0x18);

  // An invalid reason code is the test's bug: the encoder says so.
  await assert.rejects(conn.send({ cmd: "puback", messageId: 1, reasonCode: 0x01 }), RangeError);

  await conn.send({
    cmd: "disconnect",
    reasonCode: 0x9c,
    properties: { serverReference: "elsewhere:1883", reasonString: "moving" },
  });
  conn.close();
  const disconnect = await client.expect("disconnect");
  assert.deepEqual(disconnect, {
    cmd: "disconnect",
    reasonCode: 0x9c,
    properties: { serverReference: "elsewhere:1883", reasonString: "moving" },
  });
  await client.waitEnded();
  const oracle = oracleParse(broker.framesOf("disconnect")[0].bytes, 5) as unknown as {
    reasonCode: number;
    properties: { serverReference: string };
  };
  assert.equal(oracle.reasonCode, 0x9c);
  assert.equal(oracle.properties.serverReference, "elsewhere:1883");
});

Deno.test("scripted: 3.1.1 connections refuse MQTT 5 packets at send()", async () => {
  await using s = await scripted(4);
  const { broker, conn } = s;
  await assert.rejects(conn.send({ cmd: "auth", reasonCode: 0 }), /AUTH exists only in MQTT 5/);
  await assert.rejects(conn.send({ cmd: "disconnect", reasonCode: 0x9c }), /need MQTT 5/);
  await assert.rejects(conn.send({ cmd: "puback", messageId: 1, reasonCode: 0x10 }), /need MQTT 5/);
  assert.equal(broker.framesOf("auth").length + broker.framesOf("disconnect").length, 0);
});

// ---------------------------------------------------------------- scripted mode, QoS 2

for (const version of [4, 5] as const) {
  Deno.test(`scripted v${version}: autoAck completes QoS 1 and 2 and answers (UN)SUBSCRIBE`, async () => {
    await using s = await scripted(version);
    const { broker, client, conn } = s;
    conn.autoAck();
    await client.send(publish("q2", "two", 2, 5));
    assert.equal((await client.expect("pubrec")).messageId, 5);
    await client.send({ cmd: "pubrel", messageId: 5 });
    assert.equal((await client.expect("pubcomp")).messageId, 5);
    await client.send(publish("q1", "one", 1, 6));
    assert.equal((await client.expect("puback")).messageId, 6);
    await client.send({
      cmd: "subscribe",
      messageId: 7,
      subscriptions: [{ topic: "a", qos: 0 }, { topic: "b/#", qos: 1 }, { topic: "c", qos: 2 }],
    });
    const suback = await client.expect("suback");
    assert.deepEqual([suback.messageId, suback.granted], [7, [0, 1, 2]]);
    await client.send({ cmd: "unsubscribe", messageId: 8, unsubscriptions: ["a", "c"] });
    const unsuback = await client.expect("unsuback");
    assert.deepEqual(
      [unsuback.messageId, unsuback.granted],
      [8, version === 5 ? [0, 0] : []],
    );
    // PUBLISH, SUBSCRIBE and UNSUBSCRIBE are delivered; the answered PUBREL is not.
    assert.equal((await conn.expect("publish")).messageId, 5);
    assert.equal((await conn.expect("publish")).messageId, 6);
    assert.equal((await conn.expect("subscribe")).messageId, 7);
    assert.equal((await conn.expect("unsubscribe")).messageId, 8);
    assert.equal(broker.framesOf("pubrel", "toBroker").length, 1);

    conn.autoAck(false);
    await client.send(publish("q2", "again", 2, 9));
    assert.equal((await conn.expect("publish")).messageId, 9);
    await client.send({ cmd: "pubrel", messageId: 9 });
    assert.equal((await conn.expect("pubrel")).messageId, 9, "delivered when autoAck is off");
    await client.quiet(100);
  });
}

Deno.test("scripted: dropAfterPublishes leaves the dropping QoS 2 PUBLISH un-acked", async () => {
  await using s = await scripted(5);
  const { broker, client, conn } = s;
  conn.autoAck();
  conn.dropAfterPublishes(2);
  const frames = [1, 2, 3].map((i) => frame(publish(`d/${i}`, "x", 2, i), 5));
  await client.write(new Uint8Array([...frames[0], ...frames[1], ...frames[2]]));
  await client.waitEnded();
  await conn.closed;
  assert.deepEqual(client.received.map((p) => p.cmd), ["connack", "pubrec"]);
  assert.equal((client.received[1] as PacketOf<"pubrec">).messageId, 1);
  assert.equal(broker.framesOf("publish", "toBroker").length, 2);
});

Deno.test("scripted: nagle holds PUBREC/PUBCOMP until the client sends again", async () => {
  await using s = await scripted();
  const { broker, client, conn } = s;
  conn.autoAck();
  conn.nagle();
  // Two PUBLISHes in one segment: the first PUBREC goes out, the second is held.
  await client.write(
    new Uint8Array([
      ...frame(publish("n/1", "a", 2, 1)),
      ...frame(publish("n/2", "b", 2, 2)),
    ]),
  );
  assert.equal((await client.expect("pubrec")).messageId, 1);
  await client.quiet(150);
  // The client's PUBREL carries its ACK: PUBREC 2 goes out; PUBCOMP 1 is held in turn.
  await client.send({ cmd: "pubrel", messageId: 1 });
  assert.equal((await client.expect("pubrec")).messageId, 2);
  await client.quiet(150);
  await client.send({ cmd: "pubrel", messageId: 2 });
  assert.equal((await client.expect("pubcomp")).messageId, 1);
  // Turning Nagle off releases what is held.
  conn.nagle(false);
  assert.equal((await client.expect("pubcomp")).messageId, 2);
  // PUBREC 2 and PUBCOMP 1 went out together, in one write: same recorded time.
  const out = broker.frames.filter((f) => f.direction === "toClient");
  const rec2 = out.find((f) => f.packet?.cmd === "pubrec" && f.packet.messageId === 2)!;
  assert.ok(rec2.time > out.find((f) => f.packet?.cmd === "pubrec")!.time);
});

// ---------------------------------------------------------------- scripted mode, real client

Deno.test("scripted v5, real client: CONNACK Receive Maximum bounds QoS 2 in flight until PUBCOMP", async () => {
  await using broker = await FakeBroker.start();
  const client = quickClient(broker, { protocolVersion: 5, clientId: "rm", responseTime: 5 });
  try {
    const connecting = client.connect();
    const conn = await broker.accept();
    conn.autoPingresp();
    const connect = await conn.handshake({ properties: { receiveMaximum: 2 } });
    assert.equal(connect.protocolVersion, 5);
    await connecting;
    const done = [1, 2, 3].map((i) => client.publish("rm/t", `${i}`, { qos: 2 }));
    const first = await conn.expect("publish");
    const second = await conn.expect("publish");
    assert.deepEqual([first.qos, second.qos], [2, 2]);
    await assert.rejects(conn.next({ timeoutMs: 200 }), /timed out/, "a third exceeds the window");
    await conn.send({ cmd: "pubrec", messageId: first.messageId });
    assert.equal((await conn.expect("pubrel")).messageId, first.messageId);
    await assert.rejects(conn.next({ timeoutMs: 150 }), /timed out/, "PUBREC does not free a slot");
    await conn.send({ cmd: "pubcomp", messageId: first.messageId });
    const third = await conn.expect("publish");
    assert.equal(text(third.payload), "3");
    conn.autoAck();
    await conn.send({ cmd: "pubrec", messageId: second.messageId });
    await conn.send({ cmd: "pubrec", messageId: third.messageId });
    await within(Promise.all(done), 3000, "the three publishes");
  } finally {
    await client.disconnect();
  }
});

Deno.test("scripted v5, real client: a server DISCONNECT ends the link and the client reconnects", async () => {
  await using broker = await FakeBroker.start();
  const client = quickClient(broker, { protocolVersion: 5, clientId: "dc" });
  try {
    const connecting = client.connect();
    const first = await broker.accept();
    await first.handshake();
    await connecting;
    await first.send({ cmd: "disconnect", reasonCode: 0x8b, properties: { reasonString: "bye" } });
    await first.closed; // the client closes after a server DISCONNECT
    const second = await broker.accept();
    const connect = await second.handshake({ sessionPresent: true });
    assert.equal(connect.clientId, "dc");
    await until(() => client.isConnected(), 3000, "the client to reconnect");
  } finally {
    await client.disconnect();
  }
});

// ---------------------------------------------------------------- broker mode

Deno.test("broker: +/# routing at min(QoS), PUBACK to the publisher, UNSUBSCRIBE", async () => {
  await using broker = await FakeBroker.start({ mode: "broker" });
  const { client: sub } = await RawClient.session(broker, { clientId: "sub" });
  const { client: pub } = await RawClient.session(broker, { clientId: "pub" });
  try {
    await sub.send({
      cmd: "subscribe",
      messageId: 1,
      subscriptions: [{ topic: "a/+/c", qos: 1 }, { topic: "x/#", qos: 0 }, {
        topic: "q2",
        qos: 2,
      }],
    });
    const suback = await sub.expect("suback");
    assert.equal(suback.messageId, 1);
    assert.deepEqual(suback.granted, [1, 0, 2]);

    await pub.send(publish("a/b/c", "one", 1, 5));
    assert.equal((await pub.expect("puback")).messageId, 5);
    const m1 = await sub.expect("publish");
    assert.deepEqual([m1.topic, text(m1.payload), m1.qos, m1.retain], ["a/b/c", "one", 1, false]);
    assert.ok(m1.messageId! > 0);
    await sub.send({ cmd: "puback", messageId: m1.messageId });

    await pub.send(publish("a/b", "no match", 0));
    await pub.send(publish("x/y/z", "downgraded", 1, 6));
    assert.equal((await pub.expect("puback")).messageId, 6);
    const m2 = await sub.expect("publish"); // not "a/b": it matches nothing
    assert.deepEqual([m2.topic, m2.qos], ["x/y/z", 0]);

    await pub.send(publish("x", "parent level", 0)); // "x/#" matches "x" too
    assert.equal((await sub.expect("publish")).topic, "x");

    await sub.send({ cmd: "unsubscribe", messageId: 2, unsubscriptions: ["x/#"] });
    assert.equal((await sub.expect("unsuback")).messageId, 2);
    await pub.send(publish("x/y", "unsubscribed", 0));
    await pub.send(publish("a/z/c", "marker", 0));
    assert.equal((await sub.expect("publish")).topic, "a/z/c");

    await sub.send({ cmd: "pingreq" });
    await sub.expect("pingresp");
    assert.equal(broker.framesOf("puback", "toBroker").length, 1);
  } finally {
    await closeAll([sub, pub]);
  }
});

Deno.test("broker: retained messages go to late subscribers; empty payload clears", async () => {
  await using broker = await FakeBroker.start({ mode: "broker" });
  const { client: pub } = await RawClient.session(broker, { clientId: "pub" });
  const { client: early } = await RawClient.session(broker, { clientId: "early" });
  const clients = [pub, early];
  try {
    await early.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "r/#", qos: 1 }] });
    await early.expect("suback");
    await pub.send({ ...publish("r/1", "kept", 1, 1), retain: true });
    await pub.expect("puback");
    const live = await early.expect("publish");
    assert.equal(live.retain, false, "live delivery is not flagged retained");

    const { client: late } = await RawClient.session(broker, { clientId: "late" });
    clients.push(late);
    await late.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "r/+", qos: 0 }] });
    await late.expect("suback");
    const retained = await late.expect("publish");
    assert.deepEqual(
      [retained.topic, text(retained.payload), retained.retain, retained.qos],
      ["r/1", "kept", true, 0],
    );

    await pub.send({ ...publish("r/1", "", 0), retain: true });
    const { client: later } = await RawClient.session(broker, { clientId: "later" });
    clients.push(later);
    await later.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "r/#", qos: 0 }] });
    await later.expect("suback");
    await pub.send(publish("r/marker", "m", 0));
    const first = await later.expect("publish");
    assert.equal(first.topic, "r/marker", "the cleared retained message is not delivered");
  } finally {
    await closeAll(clients);
  }
});

Deno.test("broker: persistent sessions keep subscriptions and queue QoS 1", async () => {
  await using broker = await FakeBroker.start({ mode: "broker" });
  const { client: pub } = await RawClient.session(broker, { clientId: "pub" });
  const first = await RawClient.session(broker, { clientId: "p1", clean: false });
  assert.equal(first.sessionPresent, false);
  const clients = [pub, first.client];
  try {
    await first.client.send({
      cmd: "subscribe",
      messageId: 1,
      subscriptions: [{ topic: "q/#", qos: 1 }],
    });
    await first.client.expect("suback");
    await first.client.send({ cmd: "disconnect" });
    await first.client.waitEnded();

    await pub.send(publish("q/1", "queued", 1, 1));
    await pub.expect("puback");
    await pub.send(publish("q/2", "qos 0 is not queued", 0));
    await pub.send(publish("q/3", "queued too", 1, 2));
    await pub.expect("puback");

    const second = await RawClient.session(broker, { clientId: "p1", clean: false });
    clients.push(second.client);
    assert.equal(second.sessionPresent, true);
    const m1 = await second.client.expect("publish");
    const m3 = await second.client.expect("publish");
    assert.deepEqual([m1.topic, m1.qos, m3.topic], ["q/1", 1, "q/3"]);
    assert.notEqual(m1.messageId, m3.messageId);
    await second.client.send({ cmd: "puback", messageId: m3.messageId });
    // m1 stays un-acked: the broker re-sends it, DUP set, on the next connection.
    await second.client.close();
    const [, , secondConn] = [await broker.accept(), await broker.accept(), await broker.accept()];
    assert.equal(secondConn.id, 3);
    await secondConn.closed; // the broker has seen the drop

    const third = await RawClient.session(broker, { clientId: "p1", clean: false });
    clients.push(third.client);
    const again = await third.client.expect("publish");
    assert.deepEqual([again.topic, again.dup, again.messageId], ["q/1", true, m1.messageId]);
    await third.client.send({ cmd: "puback", messageId: again.messageId });
    // Subscriptions survived: live messages still arrive.
    await pub.send(publish("q/live", "live", 0));
    assert.equal((await third.client.expect("publish")).topic, "q/live");
    await third.client.send({ cmd: "disconnect" });
    await third.client.waitEnded();

    // A clean session discards it all.
    const clean = await RawClient.session(broker, { clientId: "p1", clean: true });
    clients.push(clean.client);
    assert.equal(clean.sessionPresent, false);
    await pub.send(publish("q/4", "nobody", 1, 3));
    await pub.expect("puback");
    await clean.client.send({ cmd: "pingreq" });
    assert.equal((await clean.client.next()).cmd, "pingresp");
  } finally {
    await closeAll(clients);
  }
});

Deno.test("broker: a will is published on abrupt close, not after DISCONNECT", async () => {
  await using broker = await FakeBroker.start({ mode: "broker" });
  const { client: watcher } = await RawClient.session(broker, { clientId: "watcher" });
  const clients = [watcher];
  try {
    await watcher.send({
      cmd: "subscribe",
      messageId: 1,
      subscriptions: [{ topic: "will/#", qos: 1 }],
    });
    await watcher.expect("suback");
    const will = (id: string) => ({
      topic: `will/${id}`,
      payload: `${id} gone`,
      qos: 1 as const,
      retain: false,
    });

    const polite = await RawClient.session(broker, { clientId: "polite", will: will("polite") });
    clients.push(polite.client);
    await polite.client.send({ cmd: "disconnect" });
    await polite.client.waitEnded();

    const rude = await RawClient.session(broker, { clientId: "rude", will: will("rude") });
    clients.push(rude.client);
    await rude.client.close(); // no DISCONNECT
    const message = await watcher.expect("publish");
    assert.deepEqual([message.topic, text(message.payload), message.qos], [
      "will/rude",
      "rude gone",
      1,
    ]);
  } finally {
    await closeAll(clients);
  }
});

Deno.test('broker: SUBACK 0x80 for "reject/..." filters, also with authorizeSubscribe', async () => {
  const calls: string[] = [];
  await using broker = await FakeBroker.start({
    mode: "broker",
    broker: {
      authorizeSubscribe: (clientId, filter) => {
        calls.push(`${clientId}:${filter}`);
        return filter === "secret" ? 0x87 : 0;
      },
    },
  });
  const { client } = await RawClient.session(broker, { clientId: "r" });
  const { client: v5 } = await RawClient.session(broker, { clientId: "r5", protocolVersion: 5 });
  try {
    await client.send({
      cmd: "subscribe",
      messageId: 4,
      subscriptions: [{ topic: "reject/me", qos: 1 }, { topic: "ok", qos: 0 }],
    });
    const suback = await client.expect("suback");
    assert.deepEqual(suback.granted, [0x80, 0]);
    await client.send(publish("reject/me", "not delivered", 0));
    await client.send(publish("ok", "delivered", 0));
    assert.equal((await client.expect("publish")).topic, "ok");
    // The user's check runs for the rest; MQTT 5 carries its reason code.
    await v5.send({
      cmd: "subscribe",
      messageId: 1,
      subscriptions: [{ topic: "secret", qos: 1 }, { topic: "reject/x", qos: 0 }, {
        topic: "fine",
        qos: 2,
      }],
    });
    assert.deepEqual((await v5.expect("suback")).granted, [0x87, 0x80, 2]);
    assert.deepEqual(calls, ["r:ok", "r5:secret", "r5:fine"]);
  } finally {
    await closeAll([client, v5]);
  }
});

Deno.test("broker: accept() and fault injection still work in broker mode", async () => {
  await using broker = await FakeBroker.start({ mode: "broker" });
  const { client } = await RawClient.session(broker, { clientId: "f" });
  try {
    const conn = await broker.accept();
    conn.silence();
    await client.send({ cmd: "pingreq" });
    await client.quiet(200);
    broker.dropAll();
    await client.waitEnded();
    assert.equal(conn.isClosed, true);
  } finally {
    await client.close();
  }
});

Deno.test("broker: the first packet must be CONNECT; a 3.1.1 empty id needs clean", async () => {
  await using broker = await FakeBroker.start({ mode: "broker" });
  const early = await RawClient.connect(broker);
  await early.send({ cmd: "pingreq" });
  await early.waitEnded();
  assert.equal(early.received.length, 0);
  // CONNECT, 3.1.1, clean 0, empty client id (the encoder refuses to write it).
  const anonymous = await RawClient.connect(broker);
  await anonymous.write(new Uint8Array([0x10, 12, 0, 4, 0x4d, 0x51, 0x54, 0x54, 4, 0, 0, 0, 0, 0]));
  const refused = await anonymous.expect("connack");
  assert.equal(refused.returnCode, 2, "identifier rejected");
  await anonymous.waitEnded();
  // 3.1.1 with clean 1, and MQTT 5: the broker assigns an id.
  const v4 = await RawClient.session(broker, { clientId: "" });
  const v5 = await RawClient.session(broker, { protocolVersion: 5, clientId: "" });
  assert.match(v5.connack.properties?.assignedClientIdentifier ?? "", /^auto-/);
  await closeAll([early, anonymous, v4.client, v5.client]);
});

Deno.test("broker: a second connection with the same client id takes the session over", async () => {
  await using broker = await FakeBroker.start({ mode: "broker" });
  const { client: watcher } = await RawClient.session(broker, { clientId: "watcher" });
  await watcher.send({
    cmd: "subscribe",
    messageId: 1,
    subscriptions: [{ topic: "will/#", qos: 0 }],
  });
  await watcher.expect("suback");
  const connect = {
    clientId: "twin",
    protocolVersion: 5 as const,
    clean: false,
    properties: { sessionExpiryInterval: 60 },
    will: { topic: "will/twin", payload: "taken over", qos: 0 as const, retain: false },
  };
  const first = await RawClient.session(broker, connect);
  const second = await RawClient.session(broker, { ...connect, will: undefined });
  try {
    assert.equal(second.sessionPresent, true);
    assert.equal((await first.client.expect("disconnect")).reasonCode, 0x8e, "session taken over");
    await first.client.waitEnded();
    assert.equal((await watcher.expect("publish")).topic, "will/twin");
    assert.equal(second.client.ended, false);
  } finally {
    await closeAll([watcher, first.client, second.client]);
  }
});

for (const version of [4, 5] as const) {
  Deno.test(`broker v${version}: QoS 2 end to end between two raw clients, exactly once`, async () => {
    await using broker = await FakeBroker.start({ mode: "broker" });
    const sub = await RawClient.session(broker, { clientId: "sub", protocolVersion: version });
    const pub = await RawClient.session(broker, { clientId: "pub", protocolVersion: version });
    try {
      await sub.client.send({
        cmd: "subscribe",
        messageId: 1,
        subscriptions: [{ topic: "e/#", qos: 2 }],
      });
      assert.deepEqual((await sub.client.expect("suback")).granted, [2]);
      await pub.client.send(publish("e/1", "once", 2, 7));
      assert.equal((await pub.client.expect("pubrec")).messageId, 7);
      // A re-sent PUBLISH (DUP) before PUBREL is the same message: PUBREC again, no copy.
      await pub.client.send({ ...publish("e/1", "once", 2, 7), dup: true });
      assert.equal((await pub.client.expect("pubrec")).messageId, 7);
      await sub.client.quiet(100); // held until PUBREL (method A)
      await pub.client.send({ cmd: "pubrel", messageId: 7 });
      assert.equal((await pub.client.expect("pubcomp")).messageId, 7);
      // A PUBREL again (after a lost PUBCOMP) is answered and routes nothing.
      await pub.client.send({ cmd: "pubrel", messageId: 7 });
      const again = await pub.client.expect("pubcomp");
      assert.equal(again.messageId, 7);
      if (version === 5) assert.equal(again.reasonCode, 0x92, "packet identifier not found");

      const message = await sub.client.expect("publish");
      assert.deepEqual([message.topic, text(message.payload), message.qos], ["e/1", "once", 2]);
      await sub.client.send({ cmd: "pubrec", messageId: message.messageId });
      assert.equal((await sub.client.expect("pubrel")).messageId, message.messageId);
      await sub.client.send({ cmd: "pubcomp", messageId: message.messageId });
      await sub.client.quiet(100);
      const downs = broker.framesOf("publish", "toClient").filter((f) => f.connection === 1);
      assert.equal(downs.length, 1, "delivered exactly once");
    } finally {
      await closeAll([sub.client, pub.client]);
    }
  });
}

Deno.test("broker v5: sessions expire on the core's timer", async () => {
  await using broker = await FakeBroker.start({ mode: "broker" });
  const { client: pub } = await RawClient.session(broker, { clientId: "pub" });
  const clients = [pub];
  const connect = {
    clientId: "exp",
    protocolVersion: 5 as const,
    clean: false,
    properties: { sessionExpiryInterval: 1 },
  };
  try {
    const first = await RawClient.session(broker, connect);
    clients.push(first.client);
    assert.equal(first.sessionPresent, false);
    await first.client.send({
      cmd: "subscribe",
      messageId: 1,
      subscriptions: [{ topic: "x/#", qos: 1 }],
    });
    await first.client.expect("suback");
    await first.client.send({ cmd: "disconnect" });
    await first.client.waitEnded();
    await pub.send(publish("x/1", "kept for the session", 1, 1));
    await pub.expect("puback");

    const second = await RawClient.session(broker, connect);
    clients.push(second.client);
    assert.equal(second.sessionPresent, true, "back within the expiry interval");
    const queued = await second.client.expect("publish");
    assert.equal(text(queued.payload), "kept for the session");
    await second.client.send({ cmd: "puback", messageId: queued.messageId! });
    // DISCONNECT may change the interval (here to 0: the session ends with the connection).
    await second.client.send({ cmd: "disconnect", properties: { sessionExpiryInterval: 0 } });
    await second.client.waitEnded();
    const third = await RawClient.session(broker, connect);
    clients.push(third.client);
    assert.equal(third.sessionPresent, false);
    await third.client.close(); // abrupt: the 1 s expiry starts

    await new Promise((resolve) => setTimeout(resolve, 1300));
    const fourth = await RawClient.session(broker, connect);
    clients.push(fourth.client);
    assert.equal(fourth.sessionPresent, false, "expired while nobody was connected");
  } finally {
    await closeAll(clients);
  }
});

Deno.test("broker v5: a will with a delay is published late, and not if the client returns", async () => {
  await using broker = await FakeBroker.start({ mode: "broker" });
  const { client: watcher } = await RawClient.session(broker, { clientId: "watcher" });
  const clients = [watcher];
  const connect = (id: string) => ({
    clientId: id,
    protocolVersion: 5 as const,
    clean: false,
    properties: { sessionExpiryInterval: 10 },
    will: {
      topic: `will/${id}`,
      payload: `${id} gone`,
      qos: 1 as const,
      retain: false,
      properties: { willDelayInterval: 1 },
    },
  });
  try {
    await watcher.send({
      cmd: "subscribe",
      messageId: 1,
      subscriptions: [{ topic: "will/#", qos: 0 }],
    });
    await watcher.expect("suback");
    const late = await RawClient.session(broker, connect("late"));
    const back = await RawClient.session(broker, connect("back"));
    clients.push(late.client, back.client);
    const start = performance.now();
    await late.client.close();
    await back.client.close();
    await watcher.quiet(300);
    const returned = await RawClient.session(broker, { ...connect("back"), will: undefined });
    clients.push(returned.client);
    assert.equal(returned.sessionPresent, true);
    const will = await watcher.expect("publish", 3000);
    assert.equal(will.topic, "will/late");
    assert.ok(performance.now() - start >= 950, "not before the delay");
    await watcher.quiet(300); // "back" came back in time: its will is not published
  } finally {
    await closeAll(clients);
  }
});

Deno.test("broker v5: shared subscriptions deliver round robin; plain ones get everything", async () => {
  await using broker = await FakeBroker.start({ mode: "broker" });
  const clients: RawClient[] = [];
  try {
    const members: RawClient[] = [];
    for (const id of ["a", "b"]) {
      const { client } = await RawClient.session(broker, { clientId: id, protocolVersion: 5 });
      clients.push(client);
      members.push(client);
      await client.send({
        cmd: "subscribe",
        messageId: 1,
        subscriptions: [{ topic: "$share/g/s/#", qos: 0 }],
      });
      await client.expect("suback");
    }
    const { client: all } = await RawClient.session(broker, {
      clientId: "all",
      protocolVersion: 5,
    });
    clients.push(all);
    await all.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "s/#", qos: 0 }] });
    await all.expect("suback");
    const { client: pub } = await RawClient.session(broker, { clientId: "pub" });
    clients.push(pub);
    for (let i = 1; i <= 6; i++) await pub.send(publish(`s/${i}`, `${i}`, 0));
    const everything: string[] = [];
    for (let i = 1; i <= 6; i++) everything.push(text((await all.expect("publish")).payload));
    assert.deepEqual(everything, ["1", "2", "3", "4", "5", "6"]);
    const got = await Promise.all(members.map(async (member) => {
      const mine: number[] = [];
      for (let i = 0; i < 3; i++) mine.push(Number(text((await member.expect("publish")).payload)));
      return mine;
    }));
    // Alternating: one member gets 1, 3, 5 and the other 2, 4, 6.
    assert.deepEqual(got.map((mine) => mine.map((n) => n % 2)).sort(), [[0, 0, 0], [1, 1, 1]]);
    for (const member of members) await member.quiet(100);
  } finally {
    await closeAll(clients);
  }
});

Deno.test("broker: restart with persistence keeps sessions and retained messages, publishes no will", async () => {
  await using broker = await FakeBroker.start({ mode: "broker" });
  const clients: RawClient[] = [];
  try {
    const sub = await RawClient.session(broker, { clientId: "s", clean: false });
    const watcher = await RawClient.session(broker, { clientId: "w", clean: false });
    const pub = await RawClient.session(broker, {
      clientId: "p",
      will: { topic: "will/p", payload: "p died", qos: 1, retain: false },
    });
    clients.push(sub.client, watcher.client, pub.client);
    await sub.client.send({
      cmd: "subscribe",
      messageId: 1,
      subscriptions: [{ topic: "r/#", qos: 1 }],
    });
    await sub.client.expect("suback");
    await watcher.client.send({
      cmd: "subscribe",
      messageId: 1,
      subscriptions: [{ topic: "will/#", qos: 1 }],
    });
    await watcher.client.expect("suback");
    await pub.client.send({ ...publish("r/kept", "retained", 1, 1), retain: true });
    await pub.client.expect("puback");
    const live = await sub.client.expect("publish");
    // Not acked: it is in flight when the broker dies.

    const port = broker.port;
    await broker.restart({ persistence: true });
    for (const client of [sub.client, watcher.client, pub.client]) await client.waitEnded();
    assert.equal(broker.port, port);

    const pub2 = await RawClient.session(broker, { clientId: "p" });
    clients.push(pub2.client);
    await pub2.client.send(publish("r/queued", "while away", 1, 2));
    await pub2.client.expect("puback");
    const sub2 = await RawClient.session(broker, { clientId: "s", clean: false });
    clients.push(sub2.client);
    assert.equal(sub2.sessionPresent, true);
    const resent = await sub2.client.expect("publish");
    assert.deepEqual([resent.topic, resent.dup, resent.messageId], [
      "r/kept",
      true,
      live.messageId,
    ]);
    assert.equal((await sub2.client.expect("publish")).topic, "r/queued");

    const late = await RawClient.session(broker, { clientId: "late" });
    clients.push(late.client);
    await late.client.send({
      cmd: "subscribe",
      messageId: 1,
      subscriptions: [{ topic: "r/+", qos: 0 }],
    });
    await late.client.expect("suback");
    const retained = await late.client.expect("publish");
    assert.deepEqual([retained.topic, retained.retain], ["r/kept", true]);

    const watcher2 = await RawClient.session(broker, { clientId: "w", clean: false });
    clients.push(watcher2.client);
    assert.equal(watcher2.sessionPresent, true);
    await pub2.client.send(publish("will/marker", "m", 1, 3));
    await pub2.client.expect("puback");
    assert.equal((await watcher2.client.expect("publish")).topic, "will/marker", "no will");
  } finally {
    await closeAll(clients);
  }
});

Deno.test("broker: restart without persistence forgets sessions and retained messages", async () => {
  await using broker = await FakeBroker.start({ mode: "broker" });
  const clients: RawClient[] = [];
  try {
    const sub = await RawClient.session(broker, {
      clientId: "s5",
      clean: false,
      protocolVersion: 5,
      properties: { sessionExpiryInterval: 60 },
    });
    clients.push(sub.client);
    await sub.client.send({
      cmd: "subscribe",
      messageId: 1,
      subscriptions: [{ topic: "r/#", qos: 1 }],
    });
    await sub.client.expect("suback");
    await sub.client.send({ ...publish("r/kept", "retained", 1, 1), retain: true });
    await sub.client.expect("publish"); // routed to itself first, then acknowledged
    await sub.client.expect("puback");

    await broker.restart({ persistence: false });
    await sub.client.waitEnded();
    assert.equal(broker.connectionCount, 1);

    const again = await RawClient.session(broker, {
      clientId: "s5",
      clean: false,
      protocolVersion: 5,
      properties: { sessionExpiryInterval: 60 },
    });
    clients.push(again.client);
    assert.equal(again.sessionPresent, false);
    await again.client.send({
      cmd: "subscribe",
      messageId: 1,
      subscriptions: [{ topic: "r/#", qos: 1 }],
    });
    await again.client.expect("suback");
    await again.client.quiet(150); // no retained message any more
  } finally {
    await closeAll(clients);
  }
});

Deno.test("broker: keepalive is enforced by the core's timer (1.5 × keepalive)", async () => {
  await using broker = await FakeBroker.start({ mode: "broker" });
  const { client: watcher } = await RawClient.session(broker, { clientId: "watcher" });
  const clients = [watcher];
  try {
    await watcher.send({
      cmd: "subscribe",
      messageId: 1,
      subscriptions: [{ topic: "will/#", qos: 0 }],
    });
    await watcher.expect("suback");
    const start = performance.now();
    const v4 = await RawClient.session(broker, {
      clientId: "k4",
      keepalive: 1,
      will: { topic: "will/k4", payload: "k4 timed out", qos: 0, retain: false },
    });
    const v5 = await RawClient.session(broker, {
      clientId: "k5",
      keepalive: 1,
      protocolVersion: 5,
    });
    const pinging = await RawClient.session(broker, { clientId: "kp", keepalive: 1 });
    clients.push(v4.client, v5.client, pinging.client);
    const pings = setInterval(() => pinging.client.send({ cmd: "pingreq" }).catch(() => {}), 400);
    try {
      await v4.client.waitEnded();
      const elapsed = performance.now() - start;
      assert.ok(elapsed >= 1400 && elapsed < 3000, `closed after ${elapsed} ms`);
      assert.equal((await v5.client.expect("disconnect")).reasonCode, 0x8d, "keep alive timeout");
      await v5.client.waitEnded();
      assert.equal((await watcher.expect("publish")).topic, "will/k4");
      assert.equal(pinging.client.ended, false, "a pinging client stays");
    } finally {
      clearInterval(pings);
    }
  } finally {
    await closeAll(clients);
  }
});

Deno.test("broker: options reach the core (CONNACK properties, Receive Maximum, QoS 2 limit, sizes)", async () => {
  await using broker = await FakeBroker.start({
    mode: "broker",
    broker: { receiveMaximum: 2, topicAliasMaximum: 0, maximumPacketSize: 200, qos2InLimit: 1 },
  });
  const clients: RawClient[] = [];
  try {
    const v5 = await RawClient.session(broker, { clientId: "v5", protocolVersion: 5 });
    clients.push(v5.client);
    assert.deepEqual(v5.connack.properties, {
      receiveMaximum: 2,
      topicAliasMaximum: 0,
      maximumPacketSize: 200,
    });
    // A third QoS 2 message awaiting PUBREL exceeds the announced Receive Maximum.
    for (let id = 1; id <= 2; id++) {
      await v5.client.send(publish("t", "x", 2, id));
      await v5.client.expect("pubrec");
    }
    await v5.client.send(publish("t", "x", 2, 3));
    assert.equal((await v5.client.expect("disconnect")).reasonCode, 0x93);
    await v5.client.waitEnded();

    // Over the Maximum Packet Size: DISCONNECT 0x95.
    const big = await RawClient.session(broker, { clientId: "big", protocolVersion: 5 });
    clients.push(big.client);
    await big.client.send(publish("t", "y".repeat(300), 0));
    assert.equal((await big.client.expect("disconnect")).reasonCode, 0x95);
    await big.client.waitEnded();

    // 3.1.1: past qos2InLimit a QoS 2 message is dropped behind a normal PUBREC (as mosquitto).
    const sub = await RawClient.session(broker, { clientId: "sub" });
    const pub = await RawClient.session(broker, { clientId: "pub" });
    clients.push(sub.client, pub.client);
    await sub.client.send({
      cmd: "subscribe",
      messageId: 1,
      subscriptions: [{ topic: "t", qos: 0 }],
    });
    await sub.client.expect("suback");
    await pub.client.send(publish("t", "first", 2, 1));
    await pub.client.expect("pubrec");
    await pub.client.send(publish("t", "second", 2, 2));
    await pub.client.expect("pubrec");
    await pub.client.send({ cmd: "pubrel", messageId: 1 });
    await pub.client.send({ cmd: "pubrel", messageId: 2 });
    await pub.client.expect("pubcomp");
    await pub.client.expect("pubcomp");
    assert.equal(text((await sub.client.expect("publish")).payload), "first");
    await sub.client.quiet(100);
  } finally {
    await closeAll(clients);
  }
});

Deno.test("broker: maximumQoS, retainAvailable and authenticate", async () => {
  await using broker = await FakeBroker.start({
    mode: "broker",
    broker: {
      maximumQoS: 1,
      retainAvailable: false,
      authenticate: (connect) => connect.username === "bad" ? 0x86 : 0,
    },
  });
  const clients: RawClient[] = [];
  try {
    const v5 = await RawClient.session(broker, { clientId: "q", protocolVersion: 5 });
    clients.push(v5.client);
    assert.equal(v5.connack.properties?.maximumQoS, 1);
    assert.equal(v5.connack.properties?.retainAvailable, false);
    await v5.client.send({
      cmd: "subscribe",
      messageId: 1,
      subscriptions: [{ topic: "t", qos: 2 }],
    });
    assert.deepEqual((await v5.client.expect("suback")).granted, [1]);
    await v5.client.send(publish("t", "x", 2, 1));
    assert.equal((await v5.client.expect("disconnect")).reasonCode, 0x9b);

    const refused = await RawClient.connect(broker, 5);
    clients.push(refused);
    await refused.send({
      cmd: "connect",
      clientId: "b",
      clean: true,
      keepalive: 0,
      username: "bad",
      protocolVersion: 5,
    });
    assert.equal((await refused.expect("connack")).reasonCode, 0x86);
    await refused.waitEnded();
  } finally {
    await closeAll(clients);
  }
});

// ---------------------------------------------------------------- broker mode, real clients

/** Waits until `received` has `n` entries. */
function received(list: string[], n: number, what: string): Promise<void> {
  return until(() => list.length >= n, 5000, `${n} ${what} (have ${list.length})`);
}

for (const protocolVersion of [4, 5] as const) {
  Deno.test(`broker v${protocolVersion}, real clients: QoS 2 exactly once and in order across a dropped link`, async () => {
    await using broker = await FakeBroker.start({ mode: "broker" });
    const got: string[] = [];
    const sub = quickClient(broker, {
      clientId: "sub",
      protocolVersion,
      onMessage: (_topic, payload, _retained, qos) => {
        assert.equal(qos, 2);
        got.push(text(payload));
      },
    });
    const pub = quickClient(broker, { clientId: "pub", protocolVersion });
    const clients: TestClient[] = [sub, pub];
    try {
      await sub.connect();
      assert.equal(await sub.subscribe("e2e/#", 2), 2);
      await pub.connect();
      await broker.accept(); // the subscriber's connection
      const pubConn = await broker.accept();
      pubConn.dropAfterPublishes(4); // the 4th PUBLISH is lost with the link: the client re-sends it
      const sends: Promise<void>[] = [];
      for (let i = 1; i <= 9; i++) {
        sends.push(pub.publish("e2e/t", `${i}`, { qos: 2, sync: false }));
      }
      sends.push(pub.publish("e2e/t", "10", { qos: 2 }));
      await within(Promise.all(sends), 8000, "ten QoS 2 publishes");
      await received(got, 10, "messages");
      assert.deepEqual(got, ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10"]);
      assert.ok(broker.connectionCount >= 3, "the publisher reconnected");
      const dups = broker.framesOf("publish", "toBroker").filter((f) =>
        (f.packet as PacketOf<"publish">).dup
      );
      assert.ok(dups.length >= 1, "the lost PUBLISH was re-sent with DUP");
      await new Promise((resolve) => setTimeout(resolve, 100));
      assert.equal(got.length, 10, "no duplicate delivery");
    } finally {
      for (const client of clients) await client.disconnect();
    }
  });
}

Deno.test("broker v5, real clients: QoS 2 across a broker restart with persistence", async () => {
  await using broker = await FakeBroker.start({ mode: "broker" });
  const got: string[] = [];
  const sub = quickClient(broker, {
    clientId: "sub",
    protocolVersion: 5,
    onMessage: (_topic, payload) => got.push(text(payload)),
  });
  const pub = quickClient(broker, { clientId: "pub", protocolVersion: 5 });
  try {
    await sub.connect();
    await sub.subscribe("rs/#", 2);
    await pub.connect();
    for (let i = 1; i <= 3; i++) await pub.publish("rs/t", `${i}`, { qos: 2 });
    await received(got, 3, "messages before the restart");
    await broker.restart({ persistence: true });
    assert.equal(broker.connectionCount, 2);
    for (let i = 4; i <= 6; i++) await pub.publish("rs/t", `${i}`, { qos: 2 });
    await received(got, 6, "messages after the restart");
    assert.deepEqual(got, ["1", "2", "3", "4", "5", "6"]);
    assert.equal(await sub.subscribe("rs2/#", 1), 1, "the subscriber is back too");
    assert.equal(broker.connectionCount, 4, "both clients reconnected");
  } finally {
    await sub.disconnect();
    await pub.disconnect();
  }
});

for (const protocolVersion of [4, 5] as const) {
  Deno.test(`broker v${protocolVersion}, real clients: QoS 2 in flight through a restart with persistence`, async () => {
    await using broker = await FakeBroker.start({ mode: "broker" });
    const got: string[] = [];
    const sub = quickClient(broker, {
      clientId: "sub",
      protocolVersion,
      onMessage: (_topic, payload) => got.push(text(payload)),
    });
    const pub = quickClient(broker, { clientId: "pub", protocolVersion });
    try {
      await sub.connect();
      await sub.subscribe("fl/#", 2);
      await pub.connect();
      const sends: Promise<void>[] = [];
      for (let i = 1; i <= 200; i++) {
        sends.push(pub.publish("fl/t", `${i}`, { qos: 2, sync: false }));
      }
      await received(got, 20, "messages before the restart");
      await broker.restart({ persistence: true }); // typically with 20 to 40 delivered
      await within(Promise.all(sends), 10_000, "200 QoS 2 publishes");
      await received(got, 200, "messages");
      await new Promise((resolve) => setTimeout(resolve, 100));
      const expected = Array.from({ length: 200 }, (_, i) => `${i + 1}`);
      assert.deepEqual(got, expected, "exactly once, in order");
    } finally {
      await sub.disconnect();
      await pub.disconnect();
    }
  });
}

Deno.test("broker v5, real clients: the client keeps to the broker's Receive Maximum and topic aliases work", async () => {
  await using broker = await FakeBroker.start({
    mode: "broker",
    broker: { receiveMaximum: 2, maxInflight: 3 },
  });
  const got: string[] = [];
  const sub = quickClient(broker, {
    clientId: "sub",
    protocolVersion: 5,
    onMessage: (topic, payload) => got.push(`${topic}=${text(payload)}`),
  });
  const pub = quickClient(broker, { clientId: "pub", protocolVersion: 5 });
  try {
    await sub.connect();
    await sub.subscribe("rm/#", 2);
    await pub.connect();
    const sends: Promise<void>[] = [];
    for (let i = 1; i <= 50; i++) {
      sends.push(pub.publish(`rm/${i % 3}`, `${i}`, { qos: 2, sync: false }));
    }
    await within(Promise.all(sends), 5000, "50 QoS 2 publishes");
    await received(got, 50, "messages");
    assert.deepEqual(got, Array.from({ length: 50 }, (_, i) => `rm/${(i + 1) % 3}=${i + 1}`));
    assert.equal(
      broker.framesOf("disconnect", "toClient").length,
      0,
      "no Receive Maximum violation",
    );
    assert.equal(broker.connectionCount, 2);
    const aliased = broker.framesOf("publish", "toClient").filter((f) =>
      (f.packet as PacketOf<"publish">).topic === ""
    );
    assert.ok(aliased.length >= 40, `repeated topics go by alias (${aliased.length} of 50)`);
  } finally {
    await sub.disconnect();
    await pub.disconnect();
  }
});

Deno.test("broker, real client: an MQTTClient built from mod.ts round-trips QoS 0, 1 and 2", async () => {
  await using broker = await FakeBroker.start({ mode: "broker" });
  const got: [string, number][] = [];
  const client = new MQTTClient({
    server: broker.hostname,
    port: broker.port,
    clientId: "self",
    protocolVersion: 5,
    onMessage: (topic, _payload, _retained, qos) => got.push([topic, qos]),
  });
  try {
    await client.connect();
    await client.subscribe("self/#", 2);
    for (const qos of [0, 1, 2] as const) await client.publish(`self/${qos}`, "x", { qos });
    await until(() => got.length === 3, 3000, "three messages");
    assert.deepEqual(got.sort(), [["self/0", 0], ["self/1", 1], ["self/2", 2]]);
  } finally {
    await client.disconnect();
  }
});
