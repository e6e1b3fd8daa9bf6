/**
 * Conformance against the Eclipse Paho MQTT test broker (vendored, see
 * tests/vendor/paho_testing/README.md), which asserts on client protocol
 * violations: our client runs a full workload over MQTT 3.1.1 and MQTT 5 and
 * the broker must report nothing; raw-socket clients that break the protocol
 * on purpose prove that the checker reports what it should.
 *
 * Skipped without python3; failing instead with MQTT_REQUIRE_BROKER=1.
 */

import assert from "node:assert/strict";
import { MQTTClient } from "../mod.ts";
import type { MessageHandler } from "../options.ts";
import { captureLogger, Links, proxyTo, text, Watch, within } from "./helpers.ts";
import { type BrokerFinding, type PahoBroker, pahoTest } from "./paho_broker.ts";

interface Got {
  topic: string;
  text: string;
  retained: boolean;
  qos: 0 | 1 | 2;
  dup: boolean;
}

/** Messages received by a client, with event-driven, bounded waits on them. */
class Inbox {
  readonly got: Got[] = [];
  readonly #watch = new Watch();

  readonly handler: MessageHandler = (topic, payload, retained, qos, dup) => {
    this.got.push({ topic, text: text(payload), retained, qos, dup });
    this.#watch.changed();
  };

  /** Messages on `topic`. */
  on(topic: string): Got[] {
    return this.got.filter((m) => m.topic === topic);
  }

  /** Resolves once `predicate()` holds; rejects after `ms` saying what was awaited. */
  until(predicate: () => boolean, ms: number, what: string): Promise<void> {
    return this.#watch.until(predicate, ms, () => `${what} (${this.got.length} messages so far)`);
  }

  /** Waits until every one of `texts` arrived on `topic`. */
  all(topic: string, texts: string[], ms: number): Promise<void> {
    return this.until(
      () => {
        const seen = new Set(this.on(topic).map((m) => m.text));
        return texts.every((t) => seen.has(t));
      },
      ms,
      `${texts.length} messages on ${topic}`,
    );
  }
}

/** `["prefix 0", ..., "prefix n-1"]` */
function numbered(prefix: string, n: number): string[] {
  return Array.from({ length: n }, (_, i) => `${prefix} ${i}`);
}

/** How many times each text occurs among `messages`, for texts seen more than once. */
function duplicates(messages: Got[]): string[] {
  const counts = new Map<string, number>();
  for (const m of messages) counts.set(m.text, (counts.get(m.text) ?? 0) + 1);
  return [...counts].filter(([, n]) => n > 1).map(([t, n]) => `${t} x${n}`);
}

function describe(findings: BrokerFinding[], max = 8): string {
  const shown = findings.slice(0, max).map((f) => `${f.text}\n    (${f.reason})`);
  if (findings.length > max) shown.push(`... and ${findings.length - max} more`);
  return shown.join("\n");
}

function assertNoViolations(broker: PahoBroker, stage: string): void {
  const { violations } = broker.report();
  assert.equal(
    violations.length,
    0,
    `the Paho broker reported client protocol violations ${stage}:\n${describe(violations)}`,
  );
}

/** A client call, bounded: the client retries across reconnects, the test does not wait forever. */
function step<T>(call: Promise<T>, ms = 10_000): Promise<T> {
  return within(call, ms, "a client call (publish, subscribe or unsubscribe)");
}

/** A regexp source matching the broker's DEBUG line for a packet it read. */
const IN = String.raw`^DEBUG \d{8} \d{6} in: \(\d+\) `;

// ---- the workload -------------------------------------------------------------------

const STREAM = 300; // messages per sync: false stream
const SYNC = 10; // messages per sync publish run

async function workload(broker: PahoBroker, version: 4 | 5): Promise<void> {
  const tag = `v${version}`;
  // Both clients go through a proxy, so that one cut drops both TCP connections at once,
  // mid-stream, as a broker closing them would.
  await using proxy = await proxyTo(broker);
  const pubLog = captureLogger();
  const subLog = captureLogger();
  const pubLinks = new Links();
  const subLinks = new Links();
  const inbox = new Inbox();
  const common = {
    server: proxy.hostname,
    port: proxy.port,
    protocolVersion: version,
    responseTime: 5,
    reconnect: { initialDelay: 0.05, maxDelay: 0.2 },
  } as const;
  const pub = new MQTTClient({
    ...common,
    clientId: `pub-${tag}`,
    clean: true,
    keepalive: 1,
    will: { topic: `conf/will/${tag}`, payload: "pub vanished", qos: 1 },
    logger: pubLog,
    onConnectionChange: pubLinks.handler,
  });
  const sub = new MQTTClient({
    ...common,
    clientId: `sub-${tag}`,
    clean: false,
    keepalive: 2,
    onMessage: inbox.handler,
    logger: subLog,
    onConnectionChange: subLinks.handler,
  });
  const disconnects = new RegExp(`${IN}Disconnects\\(`);
  let byes = 0;
  try {
    try {
      await runWorkload(
        broker,
        version,
        proxy.cutAll.bind(proxy),
        pub,
        sub,
        inbox,
        pubLinks,
        subLinks,
      );
    } finally {
      byes = broker.countLog(disconnects);
      await within(Promise.all([pub.disconnect(), sub.disconnect()]), 15_000, "disconnect()");
    }
    // Both DISCONNECTs were read (nothing pending in the broker), then the verdict.
    await broker.waitForLog(disconnects, 5000, byes + 2);
    assertNoViolations(broker, "over the whole workload");
  } catch (error) {
    if (error instanceof Error) {
      error.message += `\n--- pub-${tag} log (last lines) ---\n${
        pubLog.lines.slice(-25).join("\n")
      }`;
      error.message += `\n--- sub-${tag} log (last lines) ---\n${
        subLog.lines.slice(-25).join("\n")
      }`;
    }
    throw error;
  }
}

async function runWorkload(
  broker: PahoBroker,
  version: 4 | 5,
  cut: () => void,
  pub: MQTTClient,
  sub: MQTTClient,
  inbox: Inbox,
  pubLinks: Links,
  subLinks: Links,
): Promise<void> {
  const tag = `v${version}`;

  // -- connect: clean true (the publisher), retained messages before anyone subscribes.
  await within(pub.connect(), 5000, "pub connect (clean: true)");
  for (const qos of [0, 1, 2] as const) {
    await step(pub.publish(`conf/r/${tag}/${qos}`, `retained ${qos}`, { qos, retain: true }));
  }
  // -- connect: clean false (the subscriber), wildcard filters at QoS 0, 1 and 2.
  await within(sub.connect(), 5000, "sub connect (clean: false)");
  assert.equal(await step(sub.subscribe(`conf/q0/${tag}/#`, 0)), 0);
  assert.equal(await step(sub.subscribe(`conf/q1/${tag}/+`, 1)), 1);
  assert.equal(await step(sub.subscribe(`conf/q2/${tag}/#`, 2)), 2);
  assert.equal(await step(sub.subscribe(`conf/r/${tag}/+`, 2)), 2);
  assert.equal(await step(sub.subscribe(`conf/will/+`, 1)), 1);
  await inbox.until(
    () => inbox.got.filter((m) => m.retained).length >= 3,
    5000,
    "3 retained messages",
  );
  for (const qos of [0, 1, 2] as const) {
    const [m] = inbox.on(`conf/r/${tag}/${qos}`);
    assert.ok(m, `retained message of QoS ${qos}`);
    assert.equal(m.text, `retained ${qos}`);
    assert.equal(m.retained, true);
    assert.equal(m.qos, qos);
  }
  assertNoViolations(broker, "after connect, retained publishes and subscribe");

  // -- idle for a few keepalive intervals: only PINGREQs keep the connections alive.
  const pings = new RegExp(`${IN}Pingreqs\\(`);
  const before = broker.countLog(pings);
  // pub (keepalive 1 s) pings about 3 times and sub (2 s) once or twice in ~3.5 s.
  await broker.waitForLog(pings, 8000, before + 4);
  assertNoViolations(broker, "after idling through several keepalive intervals");

  // -- sync publishes at QoS 0, 1 and 2.
  for (const qos of [0, 1, 2] as const) {
    for (const body of numbered(`sync q${qos}`, SYNC)) {
      await step(pub.publish(`conf/q${qos}/${tag}/sync`, body, { qos }));
    }
  }
  for (const qos of [0, 1, 2] as const) {
    await inbox.all(`conf/q${qos}/${tag}/sync`, numbered(`sync q${qos}`, SYNC), 10_000);
  }
  assert.deepEqual(duplicates(inbox.on(`conf/q2/${tag}/sync`)), [], "QoS 2 exactly once");

  // -- sync: false streams at QoS 0 and 1.
  for (const qos of [0, 1] as const) {
    const topic = `conf/q${qos}/${tag}/stream`;
    const bodies = numbered(`stream q${qos}`, STREAM);
    for (const body of bodies.slice(0, -1)) {
      await step(pub.publish(topic, body, { qos, sync: false }));
    }
    await step(pub.publish(topic, bodies.at(-1)!, { qos }));
    await inbox.all(topic, bodies, 20_000);
  }
  assertNoViolations(broker, "after the sync and sync: false publishes");

  // -- a QoS 2 stream cut in the middle: both connections drop, the clients reconnect and
  //    re-send what was in flight (PUBLISH with DUP, PUBREL), the broker re-sends to sub.
  const cutTopic = `conf/q2/${tag}/cut`;
  const cutBodies = numbered("cut q2", STREAM);
  const seenByBroker = new RegExp(`${IN}Publishes\\(.*QoS=2.*${cutTopic}`);
  const streaming = (async () => {
    for (const body of cutBodies.slice(0, -1)) {
      await pub.publish(cutTopic, body, { qos: 2, sync: false });
    }
    await pub.publish(cutTopic, cutBodies.at(-1)!, { qos: 2 });
  })();
  await broker.waitForLog(seenByBroker, 15_000, STREAM / 5);
  cut();
  await pubLinks.downs(1, 5000);
  await subLinks.downs(1, 5000);
  await within(streaming, 30_000, "the QoS 2 stream to complete after the cut");
  await inbox.all(cutTopic, cutBodies, 30_000);
  assert.deepEqual(duplicates(inbox.on(cutTopic)), [], "QoS 2 exactly once across the cut");
  // The cut sent pub's will (QoS 1, so at least once).
  await inbox.until(() => inbox.on(`conf/will/${tag}`).length >= 1, 5000, "the will");
  assert.equal(inbox.on(`conf/will/${tag}`)[0].text, "pub vanished");
  const log = broker.log();
  // The connects the broker read: clean: true starts clean, clean: false never does,
  // and the reconnect after the cut resumes the session.
  const cleanFlags = (id: string) =>
    (log.match(new RegExp(`${IN}Connects\\(.*ClientId=${id},.*`, "gm")) ?? [])
      .map((l) => /Clean(?:Session|Start)=(True|False)/.exec(l)?.[1]);
  const pubFlags = cleanFlags(`pub-${tag}`);
  assert.equal(pubFlags[0], "True", `pub-${tag} connects clean first: ${pubFlags}`);
  assert.equal(pubFlags.at(-1), "False", `pub-${tag} resumes after the cut: ${pubFlags}`);
  assert.ok(pubFlags.length >= 2, `pub-${tag} reconnected: ${pubFlags}`);
  const subFlags = cleanFlags(`sub-${tag}`);
  assert.ok(subFlags.length >= 2, `sub-${tag} reconnected: ${subFlags}`);
  assert.ok(subFlags.every((f) => f === "False"), `sub-${tag} never connects clean: ${subFlags}`);
  // The checker saw pub's re-sends on its last connection: PUBLISH with DUP, or PUBREL.
  const lines = log.split("\n");
  const resumed = lines.findLastIndex((l) =>
    new RegExp(`${IN}Connects\\(.*ClientId=pub-${tag},`).test(l)
  );
  const fd = /in: \((\d+)\)/.exec(lines[resumed])?.[1];
  const resends = lines.slice(resumed).filter((l) =>
    l.includes(` in: (${fd}) Pubrels(`) ||
    new RegExp(` in: \\(${fd}\\) Publishes\\((fh\\.)?DUP=True`).test(l)
  );
  assert.ok(resends.length > 0, `pub-${tag} re-sent something after the cut`);
  assertNoViolations(broker, "after the cut and the re-sends");

  // -- unsubscribe: QoS 0 messages stop; a QoS 1 marker proves the later ones were sent.
  await step(sub.unsubscribe(`conf/q0/${tag}/#`));
  await step(pub.publish(`conf/q0/${tag}/after`, "after unsubscribe", { qos: 1 }));
  await step(pub.publish(`conf/q1/${tag}/marker`, "marker", { qos: 1 }));
  await inbox.until(() => inbox.on(`conf/q1/${tag}/marker`).length > 0, 5000, "the marker");
  assert.equal(inbox.on(`conf/q0/${tag}/after`).length, 0, "nothing after unsubscribe");

  // -- clear the retained messages (zero-length retained payloads).
  for (const qos of [0, 1, 2] as const) {
    await step(pub.publish(`conf/r/${tag}/${qos}`, "", { qos, retain: true }));
  }

  assertNoViolations(broker, "after unsubscribe and clearing the retained messages");
}

pahoTest("Paho conformance: the MQTT 3.1.1 workload raises no violation", async (broker) => {
  await workload(broker, 4);
});

pahoTest("Paho conformance: the MQTT 5 workload raises no violation", async (broker) => {
  await workload(broker, 5);
});

/** An MQTT 5 client straight to the broker, connected; disconnect it in `finally`. */
async function v5Client(
  broker: PahoBroker,
  clientId: string,
  inbox?: Inbox,
): Promise<MQTTClient & { log: string[] }> {
  const logger = captureLogger();
  const client = new MQTTClient({
    server: broker.hostname,
    port: broker.port,
    protocolVersion: 5,
    clientId,
    keepalive: 2,
    responseTime: 5,
    reconnect: { initialDelay: 0.05, maxDelay: 0.2 },
    logger,
    onMessage: inbox?.handler,
  });
  await within(client.connect(), 5000, `connect() of ${clientId}`);
  return Object.assign(client, { log: logger.lines });
}

pahoTest(
  "Paho conformance: MQTT 5 topic aliases from the broker are resolved",
  async (broker) => {
    const inbox = new Inbox();
    const sub = await v5Client(broker, "alias-sub", inbox);
    const pub = await v5Client(broker, "alias-pub");
    try {
      assert.equal(await step(sub.subscribe("alias/#", 2)), 2);
      const topics = ["alias/a", "alias/b/c", "alias/d", "alias/e/f/g"];
      const expected: string[] = [];
      for (let round = 0; round < 3; round++) {
        for (const [i, topic] of topics.entries()) {
          const qos = ((round + i) % 3) as 0 | 1 | 2;
          await step(pub.publish(topic, `${topic} ${round}`, { qos }));
          expected.push(`${topic} ${topic} ${round}`);
        }
      }
      await inbox.until(() => inbox.got.length >= expected.length, 10_000, "every message");
      assert.deepEqual(inbox.got.map((m) => `${m.topic} ${m.text}`).sort(), expected.sort());
      // The broker did send PUBLISHes with an alias and no topic name.
      const aliased = broker.countLog(/ out: \(\d+\) Publishes\(.*TopicAlias : \d+\], TopicName=,/);
      assert.ok(aliased > 0, "the broker used topic aliases");
      assertNoViolations(broker, "with topic aliases");
    } finally {
      await within(Promise.all([pub.disconnect(), sub.disconnect()]), 15_000, "disconnect()");
    }
  },
  { serverTopicAliases: true },
);

pahoTest(
  "Paho conformance: MQTT 5 PUBLISH above the broker's Maximum Packet Size is not sent",
  async (broker) => {
    // The broker's CONNACK says Maximum Packet Size 256; MQTT-3.2.2-15: the client must not
    // send a bigger packet (the broker would answer DISCONNECT "Packet too large").
    const pub = await v5Client(broker, "big-pub");
    try {
      const outcome = await within(
        pub.publish("big/x", "x".repeat(300), { qos: 1 }).then(
          () => "acknowledged",
          (error: Error) => `refused: ${error.name}: ${error.message}`,
        ),
        3000,
        "the oversized publish",
      ).catch(() => "no answer within 3 s");
      assertNoViolations(broker, "for a PUBLISH above the broker's Maximum Packet Size");
      assert.match(outcome, /^refused: /, "the oversized PUBLISH is refused by the client");
    } finally {
      await within(pub.disconnect(), 15_000, "disconnect()");
    }
  },
);

// ---- the checker catches a wrong client ----------------------------------------------

const enc = new TextEncoder();

function str(s: string): number[] {
  const b = enc.encode(s);
  return [b.length >> 8, b.length & 0xff, ...b];
}

function packet(first: number, body: number[]): number[] {
  const len: number[] = [];
  let n = body.length;
  do {
    let digit = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) digit |= 0x80;
    len.push(digit);
  } while (n > 0);
  return [first, ...len, ...body];
}

function connect(version: 4 | 5, clientId: string, keepalive = 60, cleanFlag = 0x02): number[] {
  const props = version === 5 ? [0] : [];
  return packet(0x10, [
    ...str("MQTT"),
    version,
    cleanFlag,
    keepalive >> 8,
    keepalive & 0xff,
    ...props,
    ...str(clientId),
  ]);
}

function publish(version: 4 | 5, flags: number, topic: string, id: number, payload = ""): number[] {
  const qos = (flags >> 1) & 3;
  return packet(0x30 | flags, [
    ...str(topic),
    ...(qos > 0 ? [id >> 8, id & 0xff] : []),
    ...(version === 5 ? [0] : []),
    ...enc.encode(payload),
  ]);
}

const PUBREL = (id: number) => packet(0x62, [id >> 8, id & 0xff]);
const DISCONNECT = [0xe0, 0];

/**
 * Sends `bytes`, then DISCONNECT, and reads until the broker closes (it does
 * after a DISCONNECT or a violation): bounded by `ms`.
 */
async function raw(broker: PahoBroker, bytes: number[], ms = 5000): Promise<void> {
  const conn = await Deno.connect({ hostname: broker.hostname, port: broker.port });
  const timer = setTimeout(() => conn.close(), ms);
  try {
    await conn.write(new Uint8Array(bytes));
    await conn.write(new Uint8Array(DISCONNECT)).catch(() => {}); // may be closed already
    const buffer = new Uint8Array(1024);
    while ((await conn.read(buffer).catch(() => null)) !== null) { /* drain */ }
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch {
      // Closed by the timer or the read.
    }
  }
}

pahoTest("Paho checker: deliberately wrong raw clients are reported", async (broker) => {
  // Keepalive: connect with 1 s and stay silent; runs while the other cases go.
  const idle = (async () => {
    const conn = await Deno.connect({ hostname: broker.hostname, port: broker.port });
    try {
      await conn.write(new Uint8Array(connect(4, "bad-keepalive", 1)));
      await broker.waitForLog(/keepalive timeout for client bad-keepalive/, 6000);
    } finally {
      conn.close();
    }
  })();
  idle.catch(() => {}); // awaited below; do not let an early failure go unhandled

  // Legal traffic first: a QoS 2 exchange, then the PUBREL re-sent on a new connection.
  await raw(broker, [
    ...connect(4, "good-rel", 60, 0),
    ...publish(4, 0x04, "ok/x", 1),
    ...PUBREL(1),
  ]);
  await raw(broker, [...connect(4, "good-rel", 60, 0), ...PUBREL(1)]);
  assert.deepEqual(broker.violations(), [], "a re-sent PUBREL is legal");
  assert.ok(broker.report().notes.some((n) => n.reason.startsWith("a PUBREL re-sent")));

  const cases: { name: string; bytes: number[]; expect: RegExp }[] = [
    {
      name: "3.1.1 PUBLISH with QoS 3",
      bytes: [...connect(4, "bad-qos3"), ...publish(4, 0x06, "bad/x", 1)],
      expect: /^ERROR .*QoS in Publish must be 0, 1, or 2/,
    },
    {
      name: "5 PUBLISH with QoS 3",
      bytes: [...connect(5, "bad-qos3-v5"), ...publish(5, 0x06, "bad/x", 1)],
      expect: /^ERROR .*\[MQTT5-3\.3\.1-4\] QoS in Publish must be 0, 1, or 2/,
    },
    {
      name: "CONNECT with the reserved flag set",
      bytes: connect(4, "bad-reserved", 60, 0x03),
      expect: /^ERROR .*\[MQTT-3\.1\.4-1\] server must validate connect packet[^]*AssertionError/,
    },
    {
      name: "PUBLISH to a wildcard topic",
      bytes: [...connect(4, "bad-wild"), ...publish(4, 0x02, "bad/#", 1)],
      expect: /^ERROR .*\[MQTT-3\.3\.2-2\]\[MQTT-4\.7\.1-1\] wildcards not allowed/,
    },
    {
      // Upstream logs each [MQTT-...] tag once; after the legal DUP re-send above
      // ([MQTT-3.3.1-2] DUP flag is 1 on redelivery) this is only seen thanks to the launcher.
      name: "QoS 2 PUBLISH re-sent with DUP 0",
      bytes: [
        ...connect(4, "bad-dup", 60, 0),
        ...publish(4, 0x04, "bad/x", 7),
        ...publish(4, 0x0c, "bad/x", 7),
        ...publish(4, 0x04, "bad/x", 7),
      ],
      expect: /^ERROR .*\[MQTT-3\.3\.1-2\] duplicate QoS 2 message id 7 found with DUP 0/,
    },
    {
      name: "PUBREL for an id never published",
      bytes: [...connect(4, "bad-rel"), ...PUBREL(9)],
      expect: /^ERROR .*Pubrec received for msgid 9, but no message found/,
    },
    {
      name: "SUBSCRIBE with wrong fixed-header flags",
      bytes: [...connect(4, "bad-sub"), ...packet(0x80, [0, 1, ...str("bad/+"), 0])],
      expect: /^ERROR .*\[MQTT-2\.1\.2-1\] QoS must be 1 in subscribe/,
    },
    {
      name: "a first packet that is not CONNECT",
      bytes: [0xc0, 0],
      expect: /^INFO .*Finishing communications for socket/,
    },
    {
      name: "5 PUBLISH above the broker's Maximum Packet Size (256)",
      bytes: [...connect(5, "bad-big"), ...publish(5, 0x00, "bad/x", 0, "x".repeat(300))],
      expect: /^DEBUG .*out: \(\d+\) Disconnects\(.*ReasonCode: Packet too large/,
    },
    {
      name: "5 PUBLISH with a null character in the topic (malformed)",
      bytes: [...connect(5, "bad-utf"), ...publish(5, 0x00, "bad\u0000x", 0)],
      expect: /^Traceback[^]*MalformedPacket: \[MQTT5-1\.5\.4-2\] Null found in UTF data/,
    },
  ];
  const reported: string[] = [];
  for (const c of cases) {
    const before = broker.violations().length;
    await raw(broker, c.bytes);
    const found = broker.violations().slice(before);
    assert.ok(
      found.some((v) => c.expect.test(v)),
      `${c.name}: expected a violation matching ${c.expect}, got:\n${found.join("\n")}`,
    );
    reported.push(...found);
  }
  await within(idle, 8000, "the keepalive timeout");
  assert.ok(
    broker.violations().some((v) =>
      /\[MQTT-3\.1\.2-22\] keepalive timeout for client bad-keepalive/.test(v)
    ),
    "keepalive timeout reported",
  );
});
