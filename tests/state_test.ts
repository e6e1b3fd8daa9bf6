import assert from "node:assert/strict";
import {
  ACK_PAUSE_MS,
  type InflightPublish,
  MAX_ACK_PAUSE_MS,
  MAX_PACKET_ID,
  MqttState,
  type StateOptions,
} from "../state.ts";

const defaults: StateOptions = { keepaliveMs: 60_000, responseTimeMs: 10_000, maxInflight: 3 };

function connectedState(options: Partial<StateOptions> = {}, now = 0): MqttState {
  const state = new MqttState({ ...defaults, ...options });
  state.connectStarted(now);
  state.sessionStarted(now);
  return state;
}

function publish(state: MqttState, now: number, topic = "t"): InflightPublish {
  const entry: InflightPublish = {
    id: state.nextPacketId(),
    topic,
    payload: new Uint8Array([1]),
    retain: false,
    sentAt: now,
    dup: false,
  };
  state.publishSent(entry, now);
  return entry;
}

Deno.test("packet ids start at 1 and skip ids still in flight", () => {
  const state = connectedState({ maxInflight: 10 });
  const a = publish(state, 0);
  const b = publish(state, 0);
  assert.deepEqual([a.id, b.id], [1, 2]);
  state.pubackReceived(1, 1);
  assert.equal(state.nextPacketId(), 3);
});

Deno.test("packet ids wrap from 65535 to 1 and never reuse one in use", () => {
  const state = connectedState({ maxInflight: 10 });
  const held = publish(state, 0); // id 1 stays un-ACKed across the wrap
  for (let i = 2; i < MAX_PACKET_ID; i++) state.nextPacketId();
  assert.equal(state.nextPacketId(), MAX_PACKET_ID);
  assert.equal(held.id, 1);
  assert.equal(state.nextPacketId(), 2, "id 1 is in flight, so the wrap skips it");
});

Deno.test("a subscribe request holds its id until its SUBACK", () => {
  const state = connectedState();
  const id = state.nextPacketId();
  state.requestSent({ id, kind: "subscribe", filters: ["a"], qos: 1, sentAt: 0 }, 0);
  assert.equal(
    state.responseReceived(id, "unsubscribe", 1),
    undefined,
    "wrong kind is not a match",
  );
  assert.ok(state.responseReceived(id, "subscribe", 1));
  assert.equal(state.requests.size, 0);
});

Deno.test("all ids in use: nextPacketId throws and the window reports no room", () => {
  const state = connectedState({ maxInflight: MAX_PACKET_ID });
  for (let i = 0; i < MAX_PACKET_ID; i++) publish(state, 0);
  assert.equal(state.hasWindowRoom(), false);
  assert.equal(state.hasFreeId(), false);
  assert.throws(() => state.nextPacketId(), RangeError);
});

Deno.test("the window has room until maxInflight publishes are un-ACKed", () => {
  const state = connectedState({ maxInflight: 2 });
  assert.ok(state.hasWindowRoom());
  publish(state, 0);
  assert.ok(state.hasWindowRoom());
  const second = publish(state, 0);
  assert.equal(state.hasWindowRoom(), false);
  assert.equal(state.pubackReceived(second.id, 1), second);
  assert.ok(state.hasWindowRoom());
});

Deno.test("a full window: a packet from the broker and no write of ours since calls for a PINGREQ (Nagle)", () => {
  const state = connectedState({ maxInflight: 1024, responseTimeMs: 60_000 });
  driveSlowLink(state, 20, 1); // the window grew to 128
  const sent: InflightPublish[] = [];
  while (state.hasWindowRoom()) sent.push(publish(state, 100));
  assert.equal(sent.length, 128);
  assert.equal(state.ackNudgeDue(150), false, "before an answer, silence is the round trip");
  state.linkLost();
  state.connectStarted(200); // the window starts again at 64, below the 128 re-sends
  state.sessionStarted(200);
  state.pubackReceived(sent[0].id, 201); // the broker sends one, then holds the rest
  assert.equal(state.hasWindowRoom(), false, "127 in flight, window 64: no publish can carry it");
  assert.ok(state.ackNudgeDue(201), "due at once");
  assert.equal(state.nextDeadline(), 201 + ACK_PAUSE_MS, "the timer is only the backstop");
  state.pingSent(201);
  assert.equal(state.ackNudgeDue(300), false, "we wrote last: nothing is owed");
  state.pingrespReceived(310);
  state.pubackReceived(sent[1].id, 310); // the PINGREQ freed the held PUBACKs
  assert.ok(state.ackNudgeDue(310), "still full: the same again");
});

Deno.test("any packet counts as the broker's answer; each PINGREQ without a PUBACK since doubles the pause", () => {
  const state = connectedState({ maxInflight: 8 });
  Array.from({ length: 8 }, () => publish(state, 0));
  state.pingSent(1);
  state.pingrespReceived(2); // sent at once; PUBACKs behind it may be held
  assert.equal(state.nextDeadline(), 2 + 2 * ACK_PAUSE_MS, "one PINGREQ since the last PUBACK");
  assert.equal(state.ackNudgeDue(2 + ACK_PAUSE_MS), false);
  assert.ok(state.ackNudgeDue(2 + 2 * ACK_PAUSE_MS));
  const pauses: number[] = [];
  for (let t = 10; state.nextDeadline() < 10_000; t += 100) {
    state.pingSent(t);
    state.pingrespReceived(t + 1);
    if (state.nextDeadline() < 10_000) pauses.push(state.nextDeadline() - (t + 1));
  }
  assert.deepEqual(pauses, [4, 8, 16, 32], "a slow broker is pinged a few times, not in a loop");
  assert.ok(32 <= MAX_ACK_PAUSE_MS);
});

Deno.test("room in the window: the silence must exceed two round trips before a PINGREQ", () => {
  const state = connectedState({ maxInflight: 8 });
  const a = publish(state, 0);
  publish(state, 0);
  state.pubackReceived(a.id, 3); // round trip 3 ms; the second PUBACK may be held
  assert.equal(state.nextDeadline(), 3 + 2 * 3, "two round trips after the last packet");
  assert.equal(state.ackNudgeDue(8), false, "could still be the round trip");
  assert.ok(state.ackNudgeDue(9));
  state.pingSent(9);
  assert.equal(state.ackNudgeDue(50), false, "one write per silence");
});

Deno.test("a full window with a PINGREQ already out waits instead of nudging at once", () => {
  const state = connectedState({ maxInflight: 8 });
  state.pingSent(0); // a keepalive ping, say
  Array.from({ length: 8 }, () => publish(state, 0));
  const id = state.nextPacketId();
  state.requestSent({ id, kind: "subscribe", filters: ["a"], qos: 0, sentAt: 0 }, 0);
  state.responseReceived(id, "subscribe", 2); // a SUBACK while the window is full
  assert.equal(state.ackNudgeDue(2), false, "its PINGRESP may yet carry the hold away");
  assert.ok(state.ackNudgeDue(2 + 2 * ACK_PAUSE_MS));
});

Deno.test("before the first round-trip sample, room in the window waits the shortest pause", () => {
  const state = connectedState({ maxInflight: 8 });
  const [a] = Array.from({ length: 3 }, () => publish(state, 0));
  state.linkLost();
  state.connectStarted(10);
  state.sessionStarted(10); // re-sends give no round-trip sample
  state.pubackReceived(a.id, 11);
  assert.ok(state.ackNudgeDue(11 + ACK_PAUSE_MS));
});

Deno.test("no nudge is due while the link is down", () => {
  const state = connectedState({ maxInflight: 8 });
  const [a] = Array.from({ length: 3 }, () => publish(state, 0));
  state.pubackReceived(a.id, 1);
  state.linkLost();
  assert.equal(state.ackNudgeDue(1_000), false);
  assert.equal(state.nextDeadline(), Infinity);
});

Deno.test("no PINGREQ for silence when nothing is due or we wrote last", () => {
  const state = connectedState({ maxInflight: 8 });
  const a = publish(state, 0);
  state.pubackReceived(a.id, 3);
  assert.equal(state.ackNudgeDue(100), false, "nothing in flight");
  publish(state, 100);
  assert.equal(state.ackNudgeDue(200), false, "we wrote after the broker's last packet");
});

Deno.test("a second PINGREQ before the first PINGRESP keeps the first one's deadline", () => {
  const state = connectedState({ keepaliveMs: 1000, responseTimeMs: 500 });
  state.pingSent(100);
  state.pingSent(300);
  assert.equal(state.deadLinkReason(599), undefined);
  assert.equal(state.deadLinkReason(600), "no PINGRESP within 500 ms");
});

Deno.test("a PUBACK for an unknown id returns undefined and changes nothing", () => {
  const state = connectedState();
  publish(state, 0);
  assert.equal(state.pubackReceived(999, 1), undefined);
  assert.equal(state.inflight.size, 1);
});

Deno.test("a fresh session re-sends un-ACKed publishes in original order with DUP", () => {
  const state = connectedState({ maxInflight: 5 });
  const [a, b, c] = [publish(state, 0, "a"), publish(state, 1, "b"), publish(state, 2, "c")];
  state.pubackReceived(b.id, 3);
  state.linkLost();
  state.connectStarted(100);
  const plan = state.sessionStarted(101);
  assert.deepEqual(plan.publishes.map((p) => [p.id, p.topic, p.dup]), [
    [a.id, "a", true],
    [c.id, "c", true],
  ]);
  assert.ok(plan.publishes.every((p) => p.sentAt === 101));
});

Deno.test("nothing is re-sent while the link stays up: only sessionStarted plans re-sends", () => {
  const state = connectedState();
  const entry = publish(state, 0);
  // Time passes without a PUBACK: the state reports a dead link, never a re-send.
  assert.match(state.deadLinkReason(10_000) ?? "", /no PUBACK for packet 1/);
  assert.equal(entry.dup, false);
});

Deno.test("unanswered subscribe requests are re-sent on the next session", () => {
  const state = connectedState();
  const id = state.nextPacketId();
  state.requestSent({ id, kind: "subscribe", filters: ["x/#"], qos: 1, sentAt: 0 }, 0);
  state.linkLost();
  state.connectStarted(50);
  const plan = state.sessionStarted(60);
  assert.deepEqual(plan.requests.map((r) => r.id), [id]);
});

Deno.test("a ping is due after keepalive without sending, and only one at a time", () => {
  const state = connectedState({ keepaliveMs: 1000 });
  state.packetReceived(900); // traffic from the broker alone does not postpone the ping
  assert.equal(state.pingDue(999), false);
  assert.equal(state.pingDue(1000), true);
  state.pingSent(1000);
  assert.equal(state.pingDue(5000), false, "one ping outstanding at a time");
  state.pingrespReceived(1010);
  assert.equal(state.pingDue(1999), false);
  assert.equal(state.pingDue(2000), true);
});

Deno.test("a ping is due when nothing was received for keepalive even while sending", () => {
  const state = connectedState({ keepaliveMs: 1000 });
  for (let t = 100; t <= 1000; t += 100) state.packetSent(t); // a QoS 0 stream
  assert.equal(state.pingDue(1000), true);
});

Deno.test("keepalive 0 never asks for a ping", () => {
  const state = connectedState({ keepaliveMs: 0 });
  assert.equal(state.pingDue(1e9), false);
  assert.equal(state.nextDeadline(), Infinity);
});

Deno.test("no ping is due while the link is down", () => {
  const state = connectedState({ keepaliveMs: 1000 });
  state.linkLost();
  assert.equal(state.pingDue(10_000), false);
});

Deno.test("an unanswered PINGREQ marks the link dead after responseTime", () => {
  const state = connectedState({ keepaliveMs: 1000, responseTimeMs: 500 });
  state.pingSent(1000);
  assert.equal(state.deadLinkReason(1499), undefined);
  assert.equal(state.deadLinkReason(1500), "no PINGRESP within 500 ms");
});

Deno.test("half-open detection: silence is noticed within keepalive + responseTime", () => {
  const state = connectedState({ keepaliveMs: 1000, responseTimeMs: 500 });
  let now = 0;
  let dead: string | undefined;
  // Drive the state as the client's timer does: jump to each deadline.
  while (dead === undefined) {
    now = state.nextDeadline();
    if (state.pingDue(now)) state.pingSent(now);
    dead = state.deadLinkReason(now);
  }
  assert.equal(now, 1500);
  assert.match(dead, /PINGRESP/);
});

Deno.test("a missing CONNACK fails the attempt after responseTime", () => {
  const state = new MqttState({ ...defaults, responseTimeMs: 300 });
  state.connectStarted(1000);
  assert.equal(state.nextDeadline(), 1300);
  assert.equal(state.deadLinkReason(1299), undefined);
  assert.equal(state.deadLinkReason(1300), "no CONNACK within 300 ms");
});

Deno.test("an overdue SUBACK or UNSUBACK marks the link dead", () => {
  const state = connectedState({ responseTimeMs: 100 });
  const id = state.nextPacketId();
  state.requestSent({ id, kind: "unsubscribe", filters: ["a"], qos: 0, sentAt: 0 }, 0);
  assert.equal(state.nextDeadline(), 100);
  assert.equal(state.deadLinkReason(100), `no UNSUBACK for packet ${id} within 100 ms`);
});

Deno.test("the oldest un-ACKed publish sets the PUBACK deadline", () => {
  const state = connectedState({ responseTimeMs: 100, keepaliveMs: 0 });
  const a = publish(state, 0);
  publish(state, 50);
  assert.equal(state.nextDeadline(), 100);
  state.pubackReceived(a.id, 60);
  assert.equal(state.nextDeadline(), 150);
});

Deno.test("takeAll empties the tables for shutdown", () => {
  const state = connectedState();
  publish(state, 0);
  state.requestSent({
    id: state.nextPacketId(),
    kind: "subscribe",
    filters: ["a"],
    qos: 0,
    sentAt: 0,
  }, 0);
  const all = state.takeAll();
  assert.equal(all.publishes.length, 1);
  assert.equal(all.requests.length, 1);
  assert.equal(state.inflight.size + state.requests.size, 0);
});

Deno.test("maxInflight outside 1..65535 is a RangeError", () => {
  assert.throws(() => new MqttState({ ...defaults, maxInflight: 0 }), RangeError);
  assert.throws(() => new MqttState({ ...defaults, maxInflight: 70_000 }), RangeError);
});

Deno.test("the window starts at 64, or at maxInflight when that is smaller", () => {
  assert.equal(connectedState({ maxInflight: 1024 }).window, 64);
  assert.equal(connectedState({ maxInflight: 4 }).window, 4);
});

/** Keeps the window full on a link with a fixed round trip; returns the window after `rounds`. */
function driveSlowLink(state: MqttState, rttMs: number, rounds: number): number[] {
  const windows: number[] = [];
  let now = 0;
  for (let round = 0; round < rounds; round++) {
    const sent: InflightPublish[] = [];
    while (state.hasWindowRoom()) sent.push(publish(state, now));
    now += rttMs;
    for (const entry of sent) state.pubackReceived(entry.id, now);
    windows.push(state.window);
  }
  return windows;
}

Deno.test("on a slow link without queueing the window doubles each round trip up to maxInflight", () => {
  const state = connectedState({ maxInflight: 1024, responseTimeMs: 60_000 });
  const windows = driveSlowLink(state, 20, 6);
  assert.deepEqual(windows, [128, 256, 512, 1024, 1024, 1024]);
});

Deno.test("when PUBACKs start to queue the window stops growing (few messages in flight on a fast link)", () => {
  // A broker that serves one PUBLISH per 25 us behind a 50 us link, the client
  // keeping the window full: round trips grow with the window (queueing).
  const state = connectedState({ maxInflight: 1024, responseTimeMs: 60_000 });
  const serviceMs = 0.025;
  const pending: { entry: InflightPublish; ackAt: number }[] = [];
  let now = 0;
  let brokerFreeAt = 0;
  for (let acked = 0; acked < 20_000;) {
    while (state.hasWindowRoom()) {
      const entry = publish(state, now);
      brokerFreeAt = Math.max(brokerFreeAt, now + 0.025) + serviceMs;
      pending.push({ entry, ackAt: brokerFreeAt + 0.025 });
    }
    const next = pending.shift()!;
    now = next.ackAt;
    state.pubackReceived(next.entry.id, now);
    acked++;
  }
  assert.ok(state.window < 200, `window grew to ${state.window} on a queueing link`);
  assert.ok(state.window >= 64);
});

Deno.test("a re-sent publish's PUBACK gives no round-trip sample; a new connection restarts the window", () => {
  const state = connectedState({ maxInflight: 1024, responseTimeMs: 60_000 });
  driveSlowLink(state, 20, 1);
  assert.equal(state.window, 128);
  const entry = publish(state, 0);
  state.linkLost();
  state.connectStarted(1000);
  assert.equal(state.window, 64, "a fresh connection learns its path again");
  const plan = state.sessionStarted(1000);
  assert.equal(plan.publishes[0], entry);
  state.pubackReceived(entry.id, 999_999); // would look like massive queueing
  assert.equal(state.window, 64);
});
