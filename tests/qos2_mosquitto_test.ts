/**
 * QoS 2 on the wire against a real mosquitto, MQTT 3.1.1 and 5, through
 * connection cuts placed right after each of PUBLISH, PUBREC, PUBREL and
 * PUBCOMP.
 *
 * The cuts come from the fault proxy: its frame tap reports each frame the
 * moment it is read, and a frame that triggers a cut is never forwarded (the
 * cut drops it with the connection). So "cut after PUBLISH" means the PUBLISH
 * left its sender and was lost; "after PUBREC" means the broker stored the
 * message, sent PUBREC, and the client never got it; and so on.
 *
 * What the client wrote and read is recorded on the client side of the socket
 * (a `dial` wrapper decoding both directions), so the tests check packet ids
 * and DUP flags, per connection: an un-PUBRECed PUBLISH is re-sent on the next
 * connection with its id and DUP=1, a PUBREL awaiting PUBCOMP is re-sent, and
 * no PUBLISH goes out again once its PUBREL did (MQTT-4.3.3). A subscriber
 * counts every message: exactly once, in order.
 *
 * Skipped without mosquitto; failing instead with MQTT_REQUIRE_BROKER=1.
 */

import assert from "node:assert/strict";
import { PacketDecoder } from "../codec/decode.ts";
import type { Packet } from "../codec/packets.ts";
import type { ByteConn, DialOptions } from "../mod.ts";
import { dial } from "../transport/tcp.ts";
import type { FaultProxy, TappedFrame } from "./fault_proxy.ts";
import {
  closeAll,
  connected,
  Links,
  proxyTo,
  type TestClient,
  text,
  until,
  Watch,
  within,
} from "./helpers.ts";
import { brokerTest } from "./mosquitto.ts";

const PUBLISH = 3;
const PUBREC = 5;
const PUBREL = 6;
const PUBCOMP = 7;
const NAMES: Record<number, string> = { 3: "PUBLISH", 5: "PUBREC", 6: "PUBREL", 7: "PUBCOMP" };

// ---- the client's side of the wire -------------------------------------------------

/** A frame the client wrote ("out") or read ("in"), on its n-th connection. */
interface WireFrame {
  conn: number;
  dir: "out" | "in";
  cmd: Packet["cmd"];
  id?: number;
  dup: boolean;
  /** PUBLISH: the message's sequence number (its payload). */
  seq?: number;
}

/** Records every frame a client writes and reads, decoded, per connection. */
class WireTap {
  readonly frames: WireFrame[] = [];
  readonly errors: unknown[] = [];
  conns = 0;

  constructor(readonly version: 4 | 5) {}

  readonly dial = async (options: DialOptions): Promise<ByteConn> => {
    const conn = await dial(options);
    const n = ++this.conns;
    const decoders = {
      out: new PacketDecoder({ protocolVersion: this.version }),
      in: new PacketDecoder({ protocolVersion: this.version }),
    };
    const record = (dir: "out" | "in", bytes: Uint8Array) => {
      try {
        decoders[dir].push(bytes, (p) => {
          const publish = p.cmd === "publish" ? p : undefined;
          this.frames.push({
            conn: n,
            dir,
            cmd: p.cmd,
            id: "messageId" in p ? p.messageId : undefined,
            dup: publish?.dup ?? false,
            seq: publish ? Number(text(publish.payload)) : undefined,
          });
        });
      } catch (error) {
        this.errors.push(error);
      }
    };
    return {
      async read(buffer) {
        const got = await conn.read(buffer);
        if (got !== null) record("in", buffer.slice(0, got));
        return got;
      },
      async write(bytes) {
        const wrote = await conn.write(bytes);
        record("out", bytes.slice(0, wrote));
        return wrote;
      },
      close: () => conn.close(),
    };
  };

  /** One line per frame, for failure messages. */
  describe(frames = this.frames): string {
    return frames.map((f) =>
      `#${f.conn} ${f.dir} ${f.cmd}${f.id !== undefined ? ` id=${f.id}` : ""}` +
      `${f.dup ? " DUP" : ""}${f.seq !== undefined ? ` seq=${f.seq}` : ""}`
    ).join("\n");
  }
}

/**
 * The QoS 2 rules for a publisher, checked on everything `tap` recorded:
 * - every message keeps its packet id; its first PUBLISH has DUP=0, every
 *   later one DUP=1 and on a later connection (never re-sent on a live one);
 * - no PUBLISH of a message after its PUBREL was written (MQTT-4.3.3);
 * - at each reconnect, a message whose PUBLISH went out without a PUBREC read
 *   back is re-sent as PUBLISH (same id, DUP=1), and one whose PUBREC was
 *   read but not its PUBCOMP gets its PUBREL re-sent, both before any new
 *   PUBLISH on that connection.
 * Returns counts of the re-sends seen.
 */
function checkPublisherWire(tap: WireTap): { dupPublishes: number; repeatedPubrels: number } {
  const out = tap.frames.filter((f) => f.dir === "out");
  const idOf = new Map<number, number>(); // seq -> packet id
  const seqOfId = new Map<number, number>(); // packet id -> seq in flight
  const publishedOn = new Map<number, number[]>(); // seq -> connections
  const released = new Set<number>(); // seqs whose PUBREL went out
  let dupPublishes = 0;
  let repeatedPubrels = 0;
  const pubrelConns = new Map<number, number>(); // seq -> conn of its last PUBREL
  for (const f of out) {
    if (f.cmd === "publish") {
      const seq = f.seq!;
      assert.ok(!released.has(seq), `PUBLISH of seq ${seq} after its PUBREL (#${f.conn})`);
      const conns = publishedOn.get(seq) ?? [];
      if (conns.length === 0) {
        assert.equal(f.dup, false, `first PUBLISH of seq ${seq} has DUP=1`);
        idOf.set(seq, f.id!);
      } else {
        assert.equal(f.id, idOf.get(seq), `seq ${seq} re-sent with another id`);
        assert.equal(f.dup, true, `seq ${seq} re-sent without DUP`);
        assert.ok(f.conn > conns.at(-1)!, `seq ${seq} re-sent on the same connection #${f.conn}`);
        dupPublishes++;
      }
      conns.push(f.conn);
      publishedOn.set(seq, conns);
      seqOfId.set(f.id!, seq);
    } else if (f.cmd === "pubrel") {
      const seq = seqOfId.get(f.id!);
      assert.ok(seq !== undefined, `PUBREL for id ${f.id}, never published`);
      const before = pubrelConns.get(seq);
      if (before !== undefined) {
        assert.ok(f.conn > before, `PUBREL ${f.id} repeated on the same connection #${f.conn}`);
        repeatedPubrels++;
      }
      pubrelConns.set(seq, f.conn);
      released.add(seq);
    }
  }

  // What each connection left unfinished must open the next one.
  for (let conn = 1; conn < tap.conns; conn++) {
    const state = new Map<number, "sent" | "received" | "done">(); // id -> stage
    for (const f of tap.frames) {
      if (f.conn > conn) break;
      if (f.dir === "out" && f.cmd === "publish") state.set(f.id!, "sent");
      if (f.dir === "in" && f.cmd === "pubrec" && state.get(f.id!) === "sent") {
        state.set(f.id!, "received");
      }
      if (f.dir === "in" && f.cmd === "pubcomp") state.set(f.id!, "done");
    }
    const next = out.filter((f) => f.conn === conn + 1);
    const firstNew = next.findIndex((f) => f.cmd === "publish" && !f.dup);
    const head = firstNew < 0 ? next : next.slice(0, firstNew);
    for (const [id, stage] of state) {
      if (stage === "sent") {
        assert.ok(
          head.some((f) => f.cmd === "publish" && f.id === id && f.dup),
          `id ${id}: PUBLISH without PUBREC on #${conn}, not re-sent with DUP first on #${
            conn + 1
          }\n${tap.describe()}`,
        );
      } else if (stage === "received") {
        assert.ok(
          head.some((f) => f.cmd === "pubrel" && f.id === id),
          `id ${id}: PUBREC without PUBCOMP on #${conn}, PUBREL not re-sent first on #${
            conn + 1
          }\n${tap.describe()}`,
        );
      }
    }
  }
  return { dupPublishes, repeatedPubrels };
}

// ---- cuts driven by the proxy's frames ---------------------------------------------

interface CutStep {
  direction: TappedFrame["direction"];
  type: number;
  /** Cut on the nth frame of this type on a connection opened after the previous cut. */
  nth: number;
}

/** Cuts the proxy's connections on the frames `plan` names, one step per connection. */
class CutPlan {
  readonly cuts: string[] = [];
  readonly watch = new Watch();
  #step = 0;
  #seen = 0;
  #armedAfter: number;

  constructor(readonly proxy: FaultProxy, readonly plan: CutStep[]) {
    this.#armedAfter = proxy.connectionCount - 1;
    const frames = proxy.frames;
    const push = frames.push.bind(frames);
    // The tap pushes each frame the moment it is read, before forwarding it:
    // cutting here drops that frame (and the rest of its chunk).
    frames.push = (...items: TappedFrame[]) => {
      const length = push(...items);
      for (const frame of items) this.#check(frame);
      return length;
    };
  }

  get done(): boolean {
    return this.#step >= this.plan.length;
  }

  #check(frame: TappedFrame): void {
    if (this.done || this.proxy.connectionCount <= this.#armedAfter) return;
    const step = this.plan[this.#step];
    if (frame.direction !== step.direction || frame.type !== step.type) return;
    if (++this.#seen < step.nth) return;
    this.proxy.cutAll();
    this.cuts.push(`${NAMES[step.type]} ${step.direction}`);
    this.#armedAfter = this.proxy.connectionCount;
    this.#step++;
    this.#seen = 0;
    this.watch.changed();
  }

  finished(ms: number): Promise<void> {
    return this.watch.until(() => this.done, ms, () => `all cuts (done: ${this.cuts})`);
  }
}

/** Messages on one topic counted by sequence number. */
class Counter {
  readonly order: number[] = [];
  readonly count = new Map<number, number>();
  readonly watch = new Watch();

  add(payload: Uint8Array): void {
    const seq = Number(text(payload));
    this.order.push(seq);
    this.count.set(seq, (this.count.get(seq) ?? 0) + 1);
    this.watch.changed();
  }

  has(n: number, ms: number): Promise<void> {
    return this.watch.until(
      () => this.count.size >= n,
      ms,
      () => `${n} distinct messages (have ${this.count.size})`,
    );
  }

  /** Every seq 1..n exactly once, in order. */
  assertExactlyOnceInOrder(n: number, label: string): void {
    const dups = [...this.count].filter(([, c]) => c > 1).map(([s]) => s);
    assert.deepEqual(dups, [], `${label}: delivered more than once`);
    const missing = [];
    for (let s = 1; s <= n; s++) if (!this.count.has(s)) missing.push(s);
    assert.deepEqual(missing, [], `${label}: never delivered`);
    assert.deepEqual(this.order, Array.from({ length: n }, (_, i) => i + 1), `${label}: order`);
  }
}

const OUTGOING_PLAN: CutStep[] = [
  { direction: "toBroker", type: PUBLISH, nth: 3 },
  { direction: "toClient", type: PUBREC, nth: 3 },
  { direction: "toBroker", type: PUBREL, nth: 3 },
  { direction: "toClient", type: PUBCOMP, nth: 3 },
];

const INCOMING_PLAN: CutStep[] = [
  { direction: "toClient", type: PUBLISH, nth: 3 },
  { direction: "toBroker", type: PUBREC, nth: 3 },
  { direction: "toClient", type: PUBREL, nth: 3 },
  { direction: "toBroker", type: PUBCOMP, nth: 3 },
];

/** Messages published after the last cut, so the stream ends on a healthy link. */
const TAIL = 20;

for (const version of [4, 5] as const) {
  const v = version === 4 ? "3.1.1" : "5";

  brokerTest(
    `QoS 2 publisher (MQTT ${v}) through cuts after PUBLISH, PUBREC, PUBREL, PUBCOMP: ` +
      "exactly once, re-sends as the spec says",
    async (broker) => {
      const clients: TestClient[] = [];
      const proxy = await proxyTo(broker);
      try {
        const got = new Counter();
        const sub = await connected(broker, clients, {
          clientId: `q2-sub-v${version}`,
          protocolVersion: version,
          onMessage: (_t, payload) => got.add(payload),
        });
        assert.equal(await sub.subscribe("q2/out", 2), 2);

        const tap = new WireTap(version);
        const links = new Links();
        const pub = await connected(proxy, clients, {
          clientId: `q2-pub-v${version}`,
          protocolVersion: version,
          dial: tap.dial,
          onConnectionChange: links.handler,
        });
        const plan = new CutPlan(proxy, OUTGOING_PLAN);
        let sent = 0;
        let tailFrom = Infinity;
        const run = (async () => {
          // Paced by the window: a sync:false call resolves once its message is windowed.
          while (sent < tailFrom + TAIL) {
            sent++;
            await pub.publish("q2/out", String(sent), { qos: 2, sync: false });
            if (plan.done && tailFrom === Infinity) tailFrom = sent;
            if (sent > 2000) throw new Error(`cuts not all done after 2000 messages: ${plan.cuts}`);
          }
          await pub.publish("q2/out", String(++sent), { qos: 2 }); // resolves at its PUBCOMP
        })();
        await within(run, 20_000, "the QoS 2 stream through 4 cuts");
        assert.deepEqual(plan.cuts, OUTGOING_PLAN.map((s) => `${NAMES[s.type]} ${s.direction}`));
        assert.equal(links.down, 4, "one connection loss per cut");
        assert.equal(pub.inflightCount, 0);

        await got.has(sent, 10_000);
        got.assertExactlyOnceInOrder(sent, "subscriber");
        assert.deepEqual(tap.errors, []);
        const seen = checkPublisherWire(tap);
        // The cuts after PUBLISH and PUBREC leave PUBLISHes to re-send; the
        // cuts after PUBREL and PUBCOMP leave PUBRELs to re-send.
        assert.ok(seen.dupPublishes >= 2, `DUP PUBLISHes re-sent: ${seen.dupPublishes}`);
        assert.ok(seen.repeatedPubrels >= 2, `PUBRELs re-sent: ${seen.repeatedPubrels}`);
        console.log(
          `  v${version}: ${sent} messages, ${tap.conns} connections, ` +
            `${seen.dupPublishes} DUP PUBLISHes, ${seen.repeatedPubrels} PUBRELs re-sent`,
        );
      } finally {
        await closeAll(clients);
        await proxy.close();
      }
    },
  );

  brokerTest(
    `incoming QoS 2 (MQTT ${v}) through cuts after PUBLISH, PUBREC, PUBREL, PUBCOMP: ` +
      "the handler runs once per message",
    async (broker) => {
      const clients: TestClient[] = [];
      const proxy = await proxyTo(broker);
      try {
        const got = new Counter();
        const tap = new WireTap(version);
        const links = new Links();
        const sub = await connected(proxy, clients, {
          clientId: `q2-in-sub-v${version}`,
          protocolVersion: version,
          dial: tap.dial,
          onConnectionChange: links.handler,
          onMessage: (_t, payload) => got.add(payload),
        });
        assert.equal(await sub.subscribe("q2/in", 2), 2);
        const pub = await connected(broker, clients, {
          clientId: `q2-in-pub-v${version}`,
          protocolVersion: version,
        });
        const plan = new CutPlan(proxy, INCOMING_PLAN);
        let sent = 0;
        let tailFrom = Infinity;
        const run = (async () => {
          while (sent < tailFrom + TAIL) {
            sent++;
            await pub.publish("q2/in", String(sent), { qos: 2, sync: false });
            if (plan.done && tailFrom === Infinity) tailFrom = sent;
            // Let the subscriber's side move too: wait for it to catch up now and then.
            if (sent % 10 === 0) {
              await got.watch.until(
                () => got.count.size >= sent - 10 || plan.done,
                10_000,
                () => `the subscriber to catch up with ${sent} (cuts: ${plan.cuts})`,
              );
            }
            if (sent > 2000) throw new Error(`cuts not all done after 2000 messages: ${plan.cuts}`);
          }
          await pub.publish("q2/in", String(++sent), { qos: 2 });
        })();
        await within(run, 20_000, "the QoS 2 stream while the subscriber's link is cut 4 times");
        assert.deepEqual(plan.cuts, INCOMING_PLAN.map((s) => `${NAMES[s.type]} ${s.direction}`));
        await got.has(sent, 10_000);
        got.assertExactlyOnceInOrder(sent, "handler");
        assert.equal(links.down, 4, "one connection loss per cut");
        assert.deepEqual(tap.errors, []);

        // The broker did re-send messages the handler had already seen (the cut
        // after PUBREC), so "once" was the client's doing, not luck.
        const delivered = new Set<number>();
        let redelivered = 0;
        const inbound = tap.frames.filter((f) => f.dir === "in" && f.cmd === "publish");
        for (const f of inbound) {
          if (delivered.has(f.seq!)) {
            assert.equal(f.dup, true, `seq ${f.seq} came again without DUP`);
            redelivered++;
          }
          delivered.add(f.seq!);
        }
        assert.ok(redelivered >= 1, `the broker re-sent no PUBLISH\n${tap.describe()}`);
        // And the client re-sent its PUBREC / PUBCOMP answers as asked.
        const pubcomps = () => tap.frames.filter((f) => f.dir === "out" && f.cmd === "pubcomp");
        await until(() => pubcomps().length >= sent, 5_000, `a PUBCOMP for each of ${sent}`);
        console.log(
          `  v${version}: ${sent} messages, ${tap.conns} connections, ` +
            `${redelivered} PUBLISHes the broker re-sent, handler ran ${got.order.length} times`,
        );
      } finally {
        await closeAll(clients);
        await proxy.close();
      }
    },
  );
}

brokerTest(
  "500 QoS 2 messages from a 3.1.1 client to a default mosquitto all arrive: " +
    "the default QoS 2 window fits max_inflight_messages 20",
  async (broker) => {
    const clients: TestClient[] = [];
    try {
      const N = 500;
      const got = new Counter();
      const sub = await connected(broker, clients, {
        clientId: "q2-500-sub",
        onMessage: (_t, payload) => got.add(payload),
      });
      await sub.subscribe("q2/500", 2);
      const pub = await connected(broker, clients, { clientId: "q2-500-pub" });
      const calls: Promise<void>[] = [];
      for (let seq = 1; seq <= N; seq++) {
        calls.push(pub.publish("q2/500", String(seq), { qos: 2, sync: seq === N }));
      }
      await within(Promise.all(calls), 20_000, `${N} QoS 2 publishes`);
      await got.has(N, 5_000);
      got.assertExactlyOnceInOrder(N, "subscriber");
      const log = await broker.log();
      assert.doesNotMatch(log, /q2-500-pub.*(?:disconnected|closed)/);
    } finally {
      await closeAll(clients);
    }
  },
);
