/**
 * The session state as an events → actions machine, without sockets or
 * timers: packet ids, the window, re-sends, keepalive and dead-link
 * deadlines, the Nagle nudge, QoS 2 exchanges, durability gates and the
 * clean-session dance. Every test drives events and reads the actions.
 */

import assert from "node:assert/strict";
import { PacketDecoder } from "../codec/decode.ts";
import type { Packet } from "../codec/packets.ts";
import { Actions } from "../core/actions.ts";
import { OutgoingPublish, Request } from "../core/records.ts";
import {
  CONNECTING,
  DOWN,
  MAX_PACKET_ID,
  MqttState,
  type SessionConfig,
  UP,
} from "../core/state.ts";
import { INITIAL_WINDOW, QUEUE_ALLOWANCE_MS } from "../core/_window.ts";
import { ConnectionRefusedError, ProtocolError, ResponseTimeoutError } from "../errors.ts";

const PAYLOAD = new Uint8Array([1, 2, 3]);

/** A state with its actions and a clock the test moves. */
class Rig {
  readonly state: MqttState;
  readonly out = new Actions();
  now = 0;
  readonly settled = new Map<unknown, { value?: unknown; error?: Error }>();

  constructor(config: Partial<SessionConfig> = {}) {
    this.state = new MqttState({
      protocolVersion: 4,
      clientId: "rig",
      keepalive: 60,
      responseTimeMs: 10_000,
      clean: false,
      maxInflight: 1024,
      maxInflightQos2: 20,
      highWaterMark: 1 << 20,
      sessionExpiry: 0,
      durable: false,
      gated: false,
      ...config,
    });
  }

  /** Runs one event on fresh actions; records settlements; returns the decoded writes. */
  event(run: (out: Actions, now: number) => void): Packet[] {
    this.out.reset();
    run(this.out, this.now);
    const out = this.out;
    out.settleCalls.forEach((call, i) => {
      this.settled.set(call, { value: out.settleValues[i], error: out.settleErrors[i] });
    });
    return decodeAll(out.writes, this.state.config.protocolVersion);
  }

  packet(packet: Packet): Packet[] {
    return this.event((out, now) => this.state.onPacket(packet, now, out));
  }

  timer(at: number): Packet[] {
    this.now = at;
    return this.event((out, now) => this.state.onTimer(now, out));
  }

  /** CONNECT and an accepting CONNACK. */
  connect(sessionPresent = true): Packet[] {
    this.event((out, now) => this.state.onConnecting(now, out));
    return this.packet({ cmd: "connack", sessionPresent, returnCode: 0 });
  }

  /** The reason the last event closed the connection, if it did. */
  closed(): Error | undefined {
    return this.out.close;
  }

  drop(): void {
    this.event((out, now) => this.state.onClose(undefined, now, out));
  }

  publish(qos: 0 | 1 | 2, sync = true, topic = "t"): OutgoingPublish {
    const record = new OutgoingPublish(topic, PAYLOAD, qos, false, undefined, sync);
    this.event((out, now) => this.state.onPublish(record, now, out));
    return record;
  }

  subscribe(filter: string): Request {
    const request = new Request("subscribe", [{ topic: filter, qos: 1 }], undefined);
    this.event((out, now) => this.state.onRequest(request, now, out));
    return request;
  }
}

function decodeAll(frames: readonly Uint8Array[], version: 4 | 5): Packet[] {
  const decoder = new PacketDecoder({ protocolVersion: version });
  const packets: Packet[] = [];
  for (const frame of frames) decoder.push(frame, (p) => packets.push(p));
  return packets;
}

function ids(packets: Packet[], cmd = "publish"): number[] {
  return packets.filter((p) => p.cmd === cmd).map((p) => (p as { messageId: number }).messageId);
}

// ---- connection lifecycle -------------------------------------------------------

Deno.test("CONNECT carries the settings; CONNACK 0 makes the link up and reports the session", () => {
  const rig = new Rig({ keepalive: 30, username: "u", password: new Uint8Array([112]) });
  const [connect] = rig.event((out, now) => rig.state.onConnecting(now, out));
  assert.equal(connect.cmd, "connect");
  assert.equal((connect as { clientId: string }).clientId, "rig");
  assert.equal((connect as { keepalive: number }).keepalive, 30);
  assert.equal((connect as { username: string }).username, "u");
  assert.equal(rig.state.phase, CONNECTING);
  rig.packet({ cmd: "connack", sessionPresent: true, returnCode: 0 });
  assert.deepEqual(rig.out.handshake, { kind: "connected", sessionPresent: true });
  assert.equal(rig.state.phase, UP);
});

Deno.test("a refusing CONNACK fails the handshake with the reason and closes", () => {
  const rig = new Rig();
  rig.event((out, now) => rig.state.onConnecting(now, out));
  rig.packet({ cmd: "connack", sessionPresent: false, returnCode: 5 });
  const outcome = rig.out.handshake;
  assert.equal(outcome?.kind, "failed");
  const error = (outcome as { error: Error }).error;
  assert.ok(error instanceof ConnectionRefusedError);
  assert.match(error.message, /not authorized/);
  assert.equal(rig.out.close, error);
  assert.equal(rig.state.phase, DOWN);
});

Deno.test("a first packet other than CONNACK is a protocol error that fails the handshake", () => {
  const rig = new Rig();
  rig.event((out, now) => rig.state.onConnecting(now, out));
  rig.packet({ cmd: "puback", messageId: 1 });
  assert.ok(rig.out.close instanceof ProtocolError);
  assert.match(rig.out.close.message, /expected CONNACK from broker, got puback/);
  assert.equal(rig.out.handshake?.kind, "failed");
});

Deno.test("a missing CONNACK fails the attempt after responseTime", () => {
  const rig = new Rig({ responseTimeMs: 500 });
  rig.event((out, now) => rig.state.onConnecting(now, out));
  assert.equal(rig.out.deadline, 500);
  rig.timer(499);
  assert.equal(rig.closed(), undefined);
  rig.timer(500);
  assert.ok(rig.closed() instanceof ResponseTimeoutError);
  assert.match(rig.closed()!.message, /no CONNACK within 500 ms/);
});

Deno.test("clean: true in 3.1.1: CleanSession=1 once, DISCONNECT, redial; CleanSession=0 ever after", () => {
  const rig = new Rig({ clean: true });
  const [first] = rig.event((out, now) => rig.state.onConnecting(now, out));
  assert.equal((first as { clean: boolean }).clean, true);
  const written = rig.packet({ cmd: "connack", sessionPresent: false, returnCode: 0 });
  assert.deepEqual(written.map((p) => p.cmd), ["disconnect"]);
  assert.equal(rig.out.endGracefully, true);
  assert.deepEqual(rig.out.handshake, { kind: "redial" });
  for (let i = 0; i < 3; i++) {
    const [again] = rig.event((out, now) => rig.state.onConnecting(now, out));
    assert.equal((again as { clean: boolean }).clean, false, `connection ${i + 2}`);
    rig.packet({ cmd: "connack", sessionPresent: true, returnCode: 0 });
    assert.equal(rig.out.handshake?.kind, "connected");
    rig.drop();
  }
});

Deno.test("clean: true in MQTT 5: Clean Start=1 on the first connect only, no dance", () => {
  const rig = new Rig({ clean: true, protocolVersion: 5, sessionExpiry: 3600 });
  const [first] = rig.event((out, now) => rig.state.onConnecting(now, out));
  assert.equal((first as { clean: boolean }).clean, true);
  rig.packet({ cmd: "connack", sessionPresent: false, reasonCode: 0 });
  assert.equal(rig.out.handshake?.kind, "connected");
  rig.drop();
  const [second] = rig.event((out, now) => rig.state.onConnecting(now, out));
  assert.equal((second as { clean: boolean }).clean, false);
});

// ---- packet ids and the window -------------------------------------------------------

Deno.test("packet ids start at 1 and skip ids still in flight; they wrap from 65535 to 1", () => {
  const rig = new Rig({ maxInflight: 65_535 });
  rig.connect();
  const first = rig.publish(1);
  assert.equal(first.id, 1);
  for (let i = 2; i <= MAX_PACKET_ID; i++) rig.publish(1);
  // Every id is in use: acknowledge 7 and the next publish takes it.
  rig.packet({ cmd: "puback", messageId: 7 });
  const next = rig.publish(1);
  assert.equal(next.id, 7);
});

Deno.test("all ids in use: a further publish waits for one to free, then queues behind the others", () => {
  const rig = new Rig({ maxInflight: 65_535 });
  rig.connect();
  for (let i = 1; i <= MAX_PACKET_ID; i++) rig.publish(1);
  const waiting = rig.publish(1);
  assert.equal(waiting.id, 0, "not accepted yet");
  const written = ids(rig.packet({ cmd: "puback", messageId: 42 }));
  assert.equal(waiting.id, 42, "it takes the freed id");
  assert.ok(written.length > 0 && written[0] === 65, `the queue moves on in order: ${written}`);
  assert.ok(!written.includes(42), "behind the publishes accepted before it");
});

Deno.test("the window holds maxInflight written publishes; the next goes out on an acknowledgement", () => {
  const rig = new Rig({ maxInflight: 3 });
  rig.connect();
  const records = [1, 2, 3, 4].map(() => rig.publish(1, false));
  assert.equal(rig.state.inflight, 3);
  assert.equal(records[3].stage, 0, "the 4th waits");
  assert.ok(rig.settled.has(records[0]) && rig.settled.has(records[1]), "streaming calls answered");
  assert.ok(!rig.settled.has(records[2]), "the call that filled the window waits for room");
  const written = rig.packet({ cmd: "puback", messageId: 1 });
  assert.deepEqual(ids(written), [4]);
  assert.ok(rig.settled.has(records[2]), "room again: answered");
});

Deno.test("the window starts at 64, or at maxInflight when that is smaller", () => {
  assert.equal(new Rig().state.inspect().window, INITIAL_WINDOW);
  assert.equal(new Rig({ maxInflight: 8 }).state.inspect().window, 8);
});

Deno.test("on a slow link without queueing the window doubles each round trip up to maxInflight", () => {
  const rig = new Rig({ maxInflight: 512 });
  rig.connect();
  const rtt = 100;
  for (let round = 0; round < 6; round++) {
    const window = rig.state.inspect().window;
    const sent: OutgoingPublish[] = [];
    while (rig.state.inflight < window) sent.push(rig.publish(1, false));
    rig.now += rtt;
    for (const r of sent) rig.packet({ cmd: "puback", messageId: r.id });
  }
  assert.equal(rig.state.inspect().window, 512);
});

Deno.test("when acknowledgements start to queue the window stops growing", () => {
  const rig = new Rig({ maxInflight: 4096 });
  rig.connect();
  for (let round = 0; round < 20; round++) {
    const window = rig.state.inspect().window;
    const sent: OutgoingPublish[] = [];
    while (rig.state.inflight < window) sent.push(rig.publish(1, false));
    // A broker that answers one message per 0.05 ms: the round trip grows with the window.
    for (const r of sent) {
      rig.now += 0.05;
      rig.packet({ cmd: "puback", messageId: r.id });
    }
  }
  // About two allowances' worth of its answers (200), not the 4 096 allowed.
  const allowed = QUEUE_ALLOWANCE_MS / 0.05;
  assert.ok(rig.state.inspect().window <= 2.5 * allowed, `${rig.state.inspect().window}`);
});

// ---- re-sends ---------------------------------------------------------------------------

Deno.test("a fresh connection re-sends unacknowledged publishes in order with DUP, before anything new", () => {
  const rig = new Rig();
  rig.connect();
  const sent = [rig.publish(1, false), rig.publish(1, false), rig.publish(1, false)];
  rig.packet({ cmd: "puback", messageId: sent[1].id });
  rig.drop();
  const queued = rig.publish(1, false);
  const written = rig.connect();
  assert.deepEqual(ids(written), [sent[0].id, sent[2].id, queued.id]);
  const dups = written.filter((p) => p.cmd === "publish").map((p) => (p as { dup: boolean }).dup);
  assert.deepEqual(dups, [true, true, false]);
});

Deno.test("nothing is re-sent while the connection stays up", () => {
  const rig = new Rig();
  rig.connect();
  rig.publish(1);
  for (let t = 1_000; t < 9_000; t += 1_000) {
    assert.deepEqual(ids(rig.timer(t)), []);
  }
});

Deno.test("unanswered subscribes are re-sent with their id; a lost session is re-subscribed first", () => {
  const rig = new Rig();
  rig.connect();
  const a = rig.subscribe("a/#");
  rig.packet({ cmd: "suback", messageId: a.id, granted: [1] });
  const b = rig.subscribe("b/#");
  rig.drop();
  const written = rig.connect(false);
  const subs = written.filter((p) => p.cmd === "subscribe") as {
    messageId: number;
    subscriptions: { topic: string }[];
  }[];
  assert.deepEqual(subs.map((s) => s.subscriptions[0].topic), ["a/#", "b/#"]);
  assert.equal(subs[1].messageId, b.id);
});

Deno.test("an unsubscribed filter is not made again after a session loss", () => {
  const rig = new Rig();
  rig.connect();
  const a = rig.subscribe("a/#");
  rig.packet({ cmd: "suback", messageId: a.id, granted: [1] });
  const off = new Request("unsubscribe", [{ topic: "a/#", qos: 0 }], undefined);
  rig.event((out, now) => rig.state.onRequest(off, now, out));
  rig.packet({ cmd: "unsuback", messageId: off.id, granted: [] });
  rig.drop();
  assert.deepEqual(rig.connect(false).filter((p) => p.cmd === "subscribe"), []);
});

// ---- keepalive and dead links --------------------------------------------------------

Deno.test("keepalive: a PINGREQ after keepalive without sending; only one at a time", () => {
  const rig = new Rig({ keepalive: 5 });
  rig.connect();
  assert.equal(rig.out.deadline, 5_000);
  assert.deepEqual(rig.timer(5_000).map((p) => p.cmd), ["pingreq"]);
  assert.deepEqual(rig.timer(6_000).map((p) => p.cmd), []);
});

Deno.test("after a PINGRESP the next deadline is the next keepalive, not ping + responseTime", () => {
  const rig = new Rig({ keepalive: 2, responseTimeMs: 1_000 });
  rig.connect();
  rig.timer(2_000);
  assert.equal(rig.out.deadline, 3_000, "waiting for the PINGRESP");
  rig.now = 2_010;
  rig.packet({ cmd: "pingresp" });
  assert.equal(rig.out.deadline, 4_000, "the keepalive after the PINGREQ");
});

Deno.test("with a PINGREQ out the client still speaks every keepalive (MQTT-3.1.2-23)", () => {
  const rig = new Rig({ keepalive: 2, responseTimeMs: 10_000 });
  rig.connect();
  assert.deepEqual(rig.timer(2_000).map((p) => p.cmd), ["pingreq"]);
  assert.equal(
    rig.out.deadline,
    4_000,
    "not ping + responseTime: the broker drops a silent client",
  );
  assert.deepEqual(rig.timer(4_000).map((p) => p.cmd), ["pingreq"]);
  assert.equal(rig.out.deadline, 6_000);
  rig.timer(12_000);
  assert.match(
    rig.closed()?.message ?? "",
    /no PINGRESP within 10000 ms/,
    "the first ping's deadline",
  );
});

Deno.test("a ping is due when nothing was received for keepalive, even while sending", () => {
  const rig = new Rig({ keepalive: 5 });
  rig.connect();
  for (let t = 1_000; t < 5_000; t += 1_000) {
    rig.now = t;
    rig.publish(0);
  }
  assert.deepEqual(rig.timer(5_000).map((p) => p.cmd), ["pingreq"]);
});

Deno.test("keepalive 0 never asks for a ping", () => {
  const rig = new Rig({ keepalive: 0 });
  rig.connect();
  assert.equal(rig.out.deadline, Infinity);
});

Deno.test("an unanswered PINGREQ marks the link dead after responseTime", () => {
  const rig = new Rig({ keepalive: 1, responseTimeMs: 500 });
  rig.connect();
  rig.timer(1_000);
  rig.timer(1_499);
  assert.equal(rig.closed(), undefined);
  rig.timer(1_500);
  assert.ok(rig.closed() instanceof ResponseTimeoutError);
  assert.match(rig.closed()!.message, /no PINGRESP within 500 ms/);
});

Deno.test("the oldest unacknowledged publish sets the dead-link deadline", () => {
  const rig = new Rig({ responseTimeMs: 1_000 });
  rig.connect();
  rig.now = 100;
  const first = rig.publish(1);
  rig.now = 300;
  rig.publish(1);
  assert.equal(rig.out.deadline, 1_100);
  rig.timer(1_100);
  assert.match(
    rig.out.close!.message,
    new RegExp(`no PUBACK for packet ${first.id} within 1000 ms`),
  );
});

Deno.test("an overdue SUBACK marks the link dead", () => {
  const rig = new Rig({ responseTimeMs: 1_000 });
  rig.connect();
  const request = rig.subscribe("x");
  rig.timer(1_000);
  assert.match(rig.out.close!.message, new RegExp(`no SUBACK for packet ${request.id}`));
});

Deno.test("no deadline while the link is down: nothing keeps a timer alive", () => {
  const rig = new Rig({ keepalive: 5 });
  rig.connect();
  rig.publish(1);
  rig.drop();
  assert.equal(rig.out.deadline, Infinity);
});

// ---- the Nagle nudge ------------------------------------------------------------------

Deno.test("a full window: a broker packet and no write of ours since calls for a PINGREQ at once", () => {
  const rig = new Rig({ maxInflight: 2 });
  rig.connect();
  const a = rig.publish(1, false);
  rig.publish(1, false);
  rig.publish(1, false); // queued behind the full window
  rig.now = 5;
  rig.packet({ cmd: "pingresp" });
  assert.equal(rig.out.deadline, 5, "due at once");
  assert.deepEqual(rig.timer(5).map((p) => p.cmd), ["pingreq"]);
  rig.packet({ cmd: "puback", messageId: a.id }); // the held PUBACK comes; room refills
  assert.equal(rig.state.inflight, 2);
});

Deno.test("room in the window: the silence must exceed two round trips before a nudge", () => {
  const rig = new Rig();
  rig.connect();
  const a = rig.publish(1, false);
  rig.now = 10;
  rig.packet({ cmd: "puback", messageId: a.id }); // a 10 ms round trip
  rig.publish(1, false);
  rig.now = 12;
  rig.packet({ cmd: "pingresp" });
  assert.equal(rig.out.deadline, 12 + 20);
});

/** A rig connected over a 20 ms round trip: its first window is 1 280. */
function twentyMsRig(): Rig {
  const rig = new Rig();
  rig.event((out, now) => rig.state.onConnecting(now, out));
  rig.now = 20;
  rig.packet({ cmd: "connack", sessionPresent: false, returnCode: 0 });
  return rig;
}

Deno.test("a burst's end on a 20 ms link: silent half a round trip with 100 due, a PINGREQ", () => {
  const rig = twentyMsRig();
  const first = rig.publish(1, false);
  rig.now = 40;
  rig.packet({ cmd: "puback", messageId: first.id }); // a 20 ms round trip
  const burst = Array.from({ length: 101 }, () => rig.publish(1, false));
  rig.now = 60;
  rig.packet({ cmd: "puback", messageId: burst[0].id }); // 100 still due, nothing left to write
  // Without the burst rule: two round trips (40 ms) exceed MAX_ACK_PAUSE_MS, so no nudge at all.
  assert.equal(rig.out.deadline, 60, "silent since 40 ms, more than half a round trip: at once");
  assert.deepEqual(rig.timer(60).map((p) => p.cmd), ["pingreq"]);
  rig.now = 61;
  rig.packet({ cmd: "puback", messageId: burst[1].id });
  assert.equal(rig.out.deadline, 70, "after that PINGREQ: 10 ms of silence again");
});

Deno.test("a paced producer with a burst's worth due is not nudged between its publishes", () => {
  const rig = twentyMsRig();
  const first = rig.publish(1, false);
  rig.now = 40;
  rig.packet({ cmd: "puback", messageId: first.id });
  // One publish every 0.25 ms, each PUBACK 20 ms later: 80 due at a time, never silent for 10 ms.
  const sent: OutgoingPublish[] = [];
  let acked = 0;
  for (let step = 0; step < 400; step++) {
    rig.now = 40 + step * 0.25;
    if (sent.length > 0 && rig.now >= sent[acked].sentAt + 20) {
      rig.packet({ cmd: "puback", messageId: sent[acked++].id });
      assert.ok(rig.state.inflight >= 64, `${rig.state.inflight} due`);
      assert.ok(rig.out.deadline > rig.now, `nudge due at ${rig.out.deadline}, now ${rig.now}`);
    }
    sent.push(rig.publish(1, false));
  }
  // The producer stops: 10 ms after its last publish, with a burst's worth due, the nudge is due.
  const last = rig.now;
  rig.now += 0.25;
  rig.packet({ cmd: "puback", messageId: sent[acked].id });
  assert.equal(rig.out.deadline, last + 10);
});

Deno.test("no nudge when nothing is due or we wrote last", () => {
  const rig = new Rig({ keepalive: 60 });
  rig.connect();
  rig.now = 5;
  rig.packet({ cmd: "pingresp" });
  assert.equal(rig.out.deadline, 60_000);
});

// ---- QoS 2 -------------------------------------------------------------------------------

Deno.test("QoS 2 out: PUBLISH, PUBREC → PUBREL, PUBCOMP resolves; the id is free again", () => {
  const rig = new Rig();
  rig.connect();
  const record = rig.publish(2);
  const afterRec = rig.packet({ cmd: "pubrec", messageId: record.id });
  assert.deepEqual(afterRec.map((p) => p.cmd), ["pubrel"]);
  assert.ok(!rig.settled.has(record));
  rig.packet({ cmd: "pubcomp", messageId: record.id });
  assert.deepEqual(rig.settled.get(record), { value: undefined, error: undefined });
  assert.equal(rig.state.inflight, 0);
});

Deno.test("QoS 2 after a reconnect: PUBLISH again before PUBREC, only PUBREL after it", () => {
  const rig = new Rig();
  rig.connect();
  const early = rig.publish(2, false);
  const late = rig.publish(2, false);
  rig.packet({ cmd: "pubrec", messageId: late.id });
  rig.drop();
  const written = rig.connect(true);
  assert.deepEqual(
    written.map((p) => `${p.cmd}:${(p as { messageId?: number }).messageId}`),
    [`publish:${early.id}`, `pubrel:${late.id}`],
  );
  assert.equal((written[0] as { dup: boolean }).dup, true);
});

Deno.test("3.1.1 QoS 2 window: at most maxInflightQos2 await PUBCOMP", () => {
  const rig = new Rig({ maxInflightQos2: 2 });
  rig.connect();
  const records = [rig.publish(2, false), rig.publish(2, false), rig.publish(2, false)];
  assert.equal(rig.state.inflight, 2);
  assert.equal(records[2].stage, 0);
  rig.packet({ cmd: "pubrec", messageId: records[0].id });
  assert.equal(records[2].stage, 0, "PUBREC alone does not free the slot");
  const written = rig.packet({ cmd: "pubcomp", messageId: records[0].id });
  assert.deepEqual(ids(written), [records[2].id]);
});

Deno.test("QoS 2 in: delivered once even when the broker re-sends it; PUBCOMP on PUBREL", () => {
  const rig = new Rig();
  rig.connect();
  const publish: Packet = {
    cmd: "publish",
    topic: "in",
    payload: PAYLOAD,
    qos: 2,
    dup: false,
    retain: false,
    messageId: 9,
  };
  rig.packet(publish);
  assert.equal(rig.out.deliveries.length, 1);
  const ticket = rig.out.deliveryTickets[0];
  rig.packet({ ...publish, dup: true }); // re-sent while the handler runs
  assert.equal(rig.out.deliveries.length, 0);
  const rec = rig.event((out, now) => rig.state.onDelivered(ticket, now, out));
  assert.deepEqual(rec.map((p) => p.cmd), ["pubrec"]);
  rig.packet({ ...publish, dup: true }); // our PUBREC was lost
  assert.equal(rig.out.deliveries.length, 0);
  assert.deepEqual(decodeAll(rig.out.writes, 4).map((p) => p.cmd), ["pubrec"]);
  assert.deepEqual(rig.packet({ cmd: "pubrel", messageId: 9 }).map((p) => p.cmd), ["pubcomp"]);
  rig.packet({ ...publish, dup: false }); // a new message reusing id 9
  assert.equal(rig.out.deliveries.length, 1);
});

Deno.test("QoS 1 in: the PUBACK goes on the connection the message came on, or not at all", () => {
  const rig = new Rig();
  rig.connect();
  const publish: Packet = {
    cmd: "publish",
    topic: "in",
    payload: PAYLOAD,
    qos: 1,
    dup: false,
    retain: false,
    messageId: 3,
  };
  rig.packet(publish);
  const ticket = rig.out.deliveryTickets[0];
  rig.drop();
  rig.connect();
  assert.deepEqual(rig.event((out, now) => rig.state.onDelivered(ticket, now, out)), []);
});

// ---- durability gates -------------------------------------------------------------------

Deno.test("with a gated store a publish is written only once its record is durable", () => {
  const rig = new Rig({ durable: true, gated: true });
  rig.connect();
  const record = rig.publish(1, false);
  assert.deepEqual(rig.out.storeOps.map((o) => o.op), ["put"]);
  assert.deepEqual(ids(decodeAll(rig.out.writes, 4)), []);
  assert.ok(!rig.settled.has(record));
  const written = rig.event((out, now) => rig.state.onDurable(rig.state.seq, now, out));
  assert.deepEqual(ids(written), [record.id]);
  assert.ok(rig.settled.has(record), "durable and windowed: answered");
});

Deno.test("with a gated store PUBREL waits until the PUBREC is durable", () => {
  const rig = new Rig({ durable: true, gated: true });
  rig.connect();
  const record = rig.publish(2, false);
  rig.event((out, now) => rig.state.onDurable(rig.state.seq, now, out));
  const afterRec = rig.packet({ cmd: "pubrec", messageId: record.id });
  assert.deepEqual(afterRec, []);
  assert.deepEqual(rig.out.storeOps.map((o) => o.op), ["released"]);
  const written = rig.event((out, now) => rig.state.onDurable(rig.state.seq, now, out));
  assert.deepEqual(written.map((p) => p.cmd), ["pubrel"]);
});

Deno.test("a restored session re-sends publishes with DUP and PUBREL for released ones, before new ones", () => {
  const rig = new Rig({ durable: true, gated: true });
  rig.state.restore(
    [
      { id: 40, qos: 1, topic: "a", payload: PAYLOAD, retain: false, released: false },
      { id: 41, qos: 2, topic: "b", payload: PAYLOAD, retain: false, released: true },
    ],
    [],
    41,
  );
  const fresh = rig.publish(1);
  const written = rig.connect();
  assert.deepEqual(written.map((p) => p.cmd), ["publish", "pubrel"]);
  assert.equal((written[0] as { dup: boolean }).dup, true);
  assert.equal(fresh.id, 42, "ids continue after the stored ones");
});

Deno.test("re-sends keep their order when the 3.1.1 QoS 2 window holds one back (MQTT-4.6.0-1)", () => {
  const rig = new Rig({ maxInflightQos2: 1 });
  rig.state.restore(
    [
      { id: 50, qos: 2, topic: "a", payload: PAYLOAD, retain: false, released: false },
      { id: 51, qos: 2, topic: "b", payload: PAYLOAD, retain: false, released: false },
      { id: 52, qos: 1, topic: "c", payload: PAYLOAD, retain: false, released: false },
    ],
    [],
    52,
  );
  // 51 has to wait for the QoS 2 window; 52 must wait behind it, not overtake it.
  assert.deepEqual(ids(rig.connect()), [50]);
  rig.packet({ cmd: "pubrec", messageId: 50 });
  assert.deepEqual(ids(rig.packet({ cmd: "pubcomp", messageId: 50 })), [51, 52]);
});

Deno.test("a dead link is responseTime after the previous answer, not after each write of a burst", () => {
  const rig = new Rig({ responseTimeMs: 1_000, keepalive: 0 });
  rig.connect();
  const records = [rig.publish(1, false), rig.publish(1, false), rig.publish(1, false)];
  // A slow link: each PUBACK comes 900 ms after the one before, 2 700 ms after the writes.
  for (const [i, record] of records.entries()) {
    rig.timer(900 * (i + 1));
    assert.equal(rig.closed(), undefined, `link declared dead before PUBACK ${i + 1}`);
    rig.packet({ cmd: "puback", messageId: record.id });
  }
  assert.equal(rig.state.inflight, 0);
});

// ---- calls --------------------------------------------------------------------------------

Deno.test("an aborted publish still queued is withdrawn: never written, its id freed", () => {
  const rig = new Rig({ maxInflight: 1 });
  rig.connect();
  rig.publish(1, false);
  const queued = rig.publish(1, false);
  const reason = new Error("aborted");
  rig.event((out, now) => rig.state.onAbort(queued, reason, now, out));
  assert.equal(rig.settled.get(queued)?.error, reason);
  assert.deepEqual(ids(rig.packet({ cmd: "puback", messageId: 1 })), []);
});

Deno.test("after disconnect() nothing new is written; DISCONNECT once the last PUBACK came", () => {
  const rig = new Rig();
  rig.connect();
  const record = rig.publish(1);
  rig.event((out, now) => rig.state.onDisconnect(now, out));
  assert.deepEqual(decodeAll(rig.out.writes, 4), []);
  rig.publish(1);
  assert.deepEqual(decodeAll(rig.out.writes, 4), [], "nothing new after disconnect()");
  const written = rig.packet({ cmd: "puback", messageId: record.id });
  assert.deepEqual(written.map((p) => p.cmd), ["disconnect"]);
  assert.equal(rig.out.endGracefully, true);
  assert.equal(rig.state.disconnected, true);
});

Deno.test("maxInflight outside 1..65535 is a RangeError", () => {
  assert.throws(() => new Rig({ maxInflight: 0 }), RangeError);
  assert.throws(() => new Rig({ maxInflight: 65_536 }), RangeError);
});
