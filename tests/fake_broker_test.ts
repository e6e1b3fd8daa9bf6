/**
 * Tests of the fake broker itself, driven over raw TCP with mqtt-packet (not
 * with the client library), so a fault in the client cannot hide one here.
 */
import assert from "node:assert/strict";
import { Buffer, generate, type Packet as WirePacket, parser } from "./oracle.ts";
import { FakeBroker, type Packet } from "./fake_broker.ts";

const decoder = new TextDecoder();

function encode(packet: Packet): Uint8Array {
  return new Uint8Array(generate(packet as WirePacket, { protocolVersion: 4 }));
}

function text(payload: string | Uint8Array): string {
  return typeof payload === "string" ? payload : decoder.decode(payload);
}

/** A bare MQTT client: raw TCP, mqtt-packet parsing, a queue of received packets. */
class RawClient {
  readonly received: Packet[] = [];
  readonly #conn: Deno.Conn;
  readonly #parser = parser({ protocolVersion: 4 });
  readonly #waiters: { resolve(): void; timer: ReturnType<typeof setTimeout> }[] = [];
  readonly #reading: Promise<void>;
  #taken = 0;
  #ended = false;

  private constructor(conn: Deno.Conn) {
    this.#conn = conn;
    this.#parser.on("packet", (packet: WirePacket) => {
      this.received.push(packet as Packet);
      this.#wake();
    });
    this.#reading = this.#read();
  }

  static async connect(broker: FakeBroker): Promise<RawClient> {
    const conn = await Deno.connect({ hostname: broker.hostname, port: broker.port });
    conn.setNoDelay(true);
    return new RawClient(conn);
  }

  /** Connects and completes CONNECT/CONNACK (for broker mode). */
  static async session(
    broker: FakeBroker,
    connect: Partial<Extract<Packet, { cmd: "connect" }>> = {},
  ): Promise<{ client: RawClient; sessionPresent: boolean }> {
    const client = await RawClient.connect(broker);
    await client.send({
      cmd: "connect",
      clientId: "",
      protocolVersion: 4,
      clean: true,
      ...connect,
    });
    const connack = await client.expect("connack");
    assert.equal(connack.returnCode, 0);
    return { client, sessionPresent: connack.sessionPresent };
  }

  /** Whether the broker side closed the connection (our read saw EOF or a reset). */
  get ended(): boolean {
    return this.#ended;
  }

  send(packet: Packet): Promise<void> {
    return this.write(encode(packet));
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

  async expect<C extends Packet["cmd"]>(cmd: C): Promise<Extract<Packet, { cmd: C }>> {
    const packet = await this.next();
    assert.equal(packet.cmd, cmd, `raw client expected ${cmd}, got ${packet.cmd}`);
    return packet as Extract<Packet, { cmd: C }>;
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
        this.#parser.parse(Buffer.from(buffer.slice(0, n)));
      }
    } catch { /* closed by us, or reset */ }
    this.#ended = true;
    try {
      this.#conn.close();
    } catch { /* already closed */ }
    this.#wake();
  }
}

const CONNECT: Packet = {
  cmd: "connect",
  clientId: "raw-1",
  protocolVersion: 4,
  protocolId: "MQTT",
  clean: true,
  keepalive: 30,
};

function publish(topic: string, payload: string, qos: 0 | 1, messageId?: number): Packet {
  return { cmd: "publish", topic, payload, qos, dup: false, retain: false, messageId };
}

/** Scripted mode: a raw client connected and through CONNECT/CONNACK. */
async function scripted() {
  const broker = await FakeBroker.start();
  const client = await RawClient.connect(broker);
  const conn = await broker.accept();
  await client.send(CONNECT);
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
    // A plain Uint8Array payload (not a Node Buffer) is sent byte for byte.
    const bytes = new Uint8Array([0, 1, 2, 255]);
    await conn.send({ ...publish("a/bin", "", 0), payload: bytes } as Packet);
    assert.deepEqual(new Uint8Array((await client.expect("publish")).payload as Uint8Array), bytes);

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
  // The recorded bytes are the exact frames on the wire.
  assert.deepEqual(broker.frames[0].bytes, encode(CONNECT));
  assert.deepEqual(broker.frames[3].bytes, encode({ cmd: "puback", messageId: 1 }));
  assert.equal(broker.framesOf("publish").length, 1);
  assert.equal(broker.framesOf("publish", "toClient").length, 0);
  assert.equal(broker.framesOf("puback", "toClient").length, 1);
});

Deno.test("scripted: a frame split across many writes and reads is reassembled", async () => {
  await using s = await scripted();
  const { broker, client, conn } = s;
  // Byte by byte: the header alone arrives in several pieces.
  const small = encode(publish("split/topic", "abc", 1, 42));
  for (let i = 0; i < small.length; i++) await client.write(small.subarray(i, i + 1));
  const first = await conn.expect("publish");
  assert.equal(first.topic, "split/topic");
  assert.equal(first.messageId, 42);
  // Larger than one read buffer: necessarily split across reads.
  const big = "x".repeat(300_000);
  const bigFrame = encode(publish("split/big", big, 0));
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
  for (let i = 1; i <= 50; i++) frames.push(encode(publish(`many/${i}`, `${i}`, 1, i)));
  frames.push(encode({ cmd: "pingreq" }));
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
  const puback = await client.expect("puback");
  assert.equal(puback.messageId, 7);
  assert.equal((await conn.expect("publish")).topic, "q0");
  assert.equal((await conn.expect("publish")).topic, "q1");
  assert.equal(broker.framesOf("puback").length, 1, "QoS 0 gets no PUBACK");
});

Deno.test("scripted: dropAfterPublishes closes after the Nth PUBLISH without acking it", async () => {
  await using s = await scripted();
  const { broker, client, conn } = s;
  conn.autoPuback();
  conn.dropAfterPublishes(2);
  const three = [1, 2, 3].map((i) => encode(publish(`d/${i}`, "x", 1, i)));
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
});

Deno.test("scripted: silence keeps TCP open but never reads or answers", async () => {
  await using s = await scripted();
  const { broker, client, conn } = s;
  conn.autoPingresp();
  conn.silence();
  await client.send({ cmd: "pingreq" });
  await client.send(publish("into/the/void", "?", 1, 1));
  // Nothing comes back within a generous window, and the socket stays open.
  await assert.rejects(client.next(300), /no packet within 300 ms/);
  assert.equal(client.ended, false);
  assert.equal(conn.isClosed, false);
  await assert.rejects(conn.next({ timeoutMs: 50 }), /timed out after 50 ms waiting for a packet/);
  await conn.send({ cmd: "pingresp" }); // dropped: a silenced connection never writes
  assert.equal(broker.framesOf("pingresp").length, 0);
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
});

Deno.test("scripted: sendRaw writes exact bytes, recorded without a packet", async () => {
  await using s = await scripted();
  const { broker, client, conn } = s;
  const raw = encode({ cmd: "puback", messageId: 300 });
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
    assert.deepEqual(suback.granted, [1, 0, 1]);

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
    await sub.close();
    await pub.close();
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
    await pub.send({ ...publish("r/1", "kept", 1, 1), retain: true } as Packet);
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

    await pub.send({ ...publish("r/1", "", 0), retain: true } as Packet);
    const { client: later } = await RawClient.session(broker, { clientId: "later" });
    clients.push(later);
    await later.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "r/#", qos: 0 }] });
    await later.expect("suback");
    await pub.send(publish("r/marker", "m", 0));
    const first = await later.expect("publish");
    assert.equal(first.topic, "r/marker", "the cleared retained message is not delivered");
  } finally {
    for (const client of clients) await client.close();
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
    for (const client of clients) await client.close();
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
    const will = (id: string) => ({ topic: `will/${id}`, payload: `${id} gone`, qos: 1 as const });

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
    for (const client of clients) await client.close();
  }
});

Deno.test('broker: SUBACK 0x80 for "reject/..." filters', async () => {
  await using broker = await FakeBroker.start({ mode: "broker" });
  const { client } = await RawClient.session(broker, { clientId: "r" });
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
  } finally {
    await client.close();
  }
});

Deno.test("broker: accept() and fault injection still work in broker mode", async () => {
  await using broker = await FakeBroker.start({ mode: "broker" });
  const { client } = await RawClient.session(broker, { clientId: "f" });
  try {
    const conn = await broker.accept();
    conn.silence();
    await client.send({ cmd: "pingreq" });
    await assert.rejects(client.next(200), /no packet within 200 ms/);
    broker.dropAll();
    await client.waitEnded();
    assert.equal(conn.isClosed, true);
  } finally {
    await client.close();
  }
});
