/**
 * Unit tests of the codec: round trips of every packet type in both versions,
 * incremental decoding, and every strictness rule of the decoder. The
 * encoder's own tests are in codec_encode_test.ts.
 */

import assert from "node:assert/strict";
import {
  decodePacket,
  encode,
  encodeAck,
  encodePublish,
  type Packet,
  PacketDecoder,
  type ProtocolVersion,
} from "../codec/mod.ts";
import { ProtocolError } from "../errors.ts";
import { CMDS, hex, MALFORMED, parseFrame, randomPacket, Rng, show } from "./_codec_gen.ts";

const SEED = 7_340_001;

/** Every whole packet `push` delivers for `chunks`, in order. */
function decodeAll(chunks: Uint8Array[], version: ProtocolVersion): Packet[] {
  const decoder = new PacketDecoder({ protocolVersion: version });
  const out: Packet[] = [];
  for (const chunk of chunks) decoder.push(chunk, (p) => out.push(p));
  assert.equal(decoder.buffered, 0, "bytes left over");
  return out;
}

/** `bytes` cut at random places into 1..n chunks. */
function split(rng: Rng, bytes: Uint8Array, maxPieces: number): Uint8Array[] {
  const cuts = new Set<number>();
  const n = rng.range(0, maxPieces - 1);
  for (let i = 0; i < n; i++) cuts.add(rng.int(bytes.length + 1));
  const sorted = [0, ...[...cuts].sort((a, b) => a - b), bytes.length];
  return sorted.slice(1).map((end, i) => bytes.subarray(sorted[i], end));
}

function concat(frames: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(frames.reduce((n, f) => n + f.length, 0));
  let pos = 0;
  for (const f of frames) {
    out.set(f, pos);
    pos += f.length;
  }
  return out;
}

function versions(cmd: string): ProtocolVersion[] {
  return cmd === "auth" ? [5] : [4, 5];
}

Deno.test("round trip: every packet type, both versions, decode(encode(p)) is p", () => {
  let cases = 0;
  for (const cmd of CMDS) {
    for (const version of versions(cmd)) {
      for (let i = 0; i < 40; i++) {
        const seed = SEED + cases++;
        const packet = randomPacket(new Rng(seed), cmd, version, {
          interleave: true,
          beyondOracle: true,
        });
        const bytes = encode(packet, version);
        assert.deepEqual(decodePacket(bytes, version), packet, `seed ${seed}: ${show(packet)}`);
      }
    }
  }
  assert.equal(cases, 29 * 40);
});

Deno.test("known frames: bytes from the specs' examples and by hand", () => {
  const cases: [Packet, ProtocolVersion, string][] = [
    [{ cmd: "pingreq" }, 4, "c0 00"],
    [{ cmd: "pingresp" }, 5, "d0 00"],
    [{ cmd: "disconnect" }, 4, "e0 00"],
    [{ cmd: "disconnect", reasonCode: 0 }, 5, "e0 02 00 00"],
    [{ cmd: "puback", messageId: 10 }, 4, "40 02 00 0a"],
    [{ cmd: "pubrel", messageId: 0x1234, reasonCode: 0 }, 5, "62 02 12 34"],
    [{ cmd: "pubrec", messageId: 1, reasonCode: 0x10 }, 5, "50 04 00 01 10 00"],
    [{ cmd: "connack", sessionPresent: true, returnCode: 0 }, 4, "20 02 01 00"],
    [{ cmd: "connack", sessionPresent: false, reasonCode: 0x87 }, 5, "20 03 00 87 00"],
    [{ cmd: "unsuback", messageId: 2, granted: [] }, 4, "b0 02 00 02"],
    [{ cmd: "auth", reasonCode: 0x19 }, 5, "f0 02 19 00"],
    [
      {
        cmd: "subscribe",
        messageId: 10,
        subscriptions: [{ topic: "a/b", qos: 1 }, { topic: "c/d", qos: 2 }],
      },
      4,
      "82 0e 00 0a 00 03 61 2f 62 01 00 03 63 2f 64 02",
    ],
    [
      {
        cmd: "publish",
        topic: "a/b",
        payload: new Uint8Array([1]),
        qos: 1,
        retain: true,
        dup: false,
        messageId: 10,
      },
      4,
      "33 08 00 03 61 2f 62 00 0a 01",
    ],
    [
      {
        cmd: "connect",
        protocolId: "MQTT",
        protocolVersion: 4,
        clean: true,
        keepalive: 10,
        clientId: "c",
        username: "u",
        password: new Uint8Array([0x70]),
      },
      4,
      "10 13 00 04 4d 51 54 54 04 c2 00 0a 00 01 63 00 01 75 00 01 70",
    ],
  ];
  for (const [packet, version, bytes] of cases) {
    assert.equal(hex(encode(packet, version)), bytes, show(packet));
    const frameBytes = Uint8Array.from(bytes.split(" "), (b) => parseInt(b, 16));
    assert.deepEqual(decodePacket(frameBytes, version), packet);
  }
});

Deno.test("decoder: packets arrive whole whatever the cut: byte by byte and in random splits", () => {
  const rng = new Rng(SEED);
  for (const version of [4, 5] as const) {
    const packets: Packet[] = [];
    const frames: Uint8Array[] = [];
    while (packets.length < 300) {
      const cmd = rng.pick(CMDS.filter((c) => version === 5 || c !== "auth"));
      const packet = randomPacket(rng, cmd, version);
      const bytes = encode(packet, version);
      if (bytes.length > 20_000 && frames.length > 0) continue; // one large frame at most
      packets.push(packet);
      frames.push(bytes);
    }
    const stream = concat(frames);
    assert.deepEqual(decodeAll(Array.from(stream, (b) => Uint8Array.of(b)), version), packets);
    for (let round = 0; round < 40; round++) {
      assert.deepEqual(decodeAll(split(rng, stream, 200), version), packets, `round ${round}`);
    }
    assert.deepEqual(decodeAll([stream], version), packets);
  }
});

Deno.test("decoder: a large frame in small chunks is copied once, not once per chunk", () => {
  const payload = new Uint8Array(4 << 20).map((_, i) => i * 31);
  const bytes = encodePublish("big", payload, 1, 9, false, false);
  const chunks: Uint8Array[] = [];
  for (let i = 0; i < bytes.length; i += 64) chunks.push(bytes.subarray(i, i + 64));
  const start = performance.now();
  const [packet] = decodeAll(chunks, 4);
  const ms = performance.now() - start;
  assert.ok(packet.cmd === "publish" && packet.payload.length === payload.length);
  assert.deepEqual(packet.payload, payload);
  // 65536 chunks of 64 bytes: copying the frame so far per chunk would move 128 GiB.
  assert.ok(ms < 3000, `${ms} ms`);
});

Deno.test("decoder: payloads are views into the pushed chunk; many packets in one chunk", () => {
  const a = encodePublish("t", new Uint8Array([1, 2, 3]), 0, 0, false, false);
  const chunk = concat([a, a, encodeAck("puback", 5)]);
  const out = decodeAll([chunk], 4);
  assert.equal(out.length, 3);
  const first = out[0] as Extract<Packet, { cmd: "publish" }>;
  assert.equal(first.payload.buffer, chunk.buffer);
  assert.deepEqual(out[2], { cmd: "puback", messageId: 5 });
});

Deno.test("decoder: protocolVersion set in onPacket applies to the next packet of the same chunk", () => {
  const connect: Packet = {
    cmd: "connect",
    protocolId: "MQTT",
    protocolVersion: 5,
    clientId: "c",
    clean: true,
    keepalive: 0,
  };
  const publish: Packet = {
    cmd: "publish",
    topic: "t",
    payload: new Uint8Array(0),
    qos: 1,
    retain: false,
    dup: false,
    messageId: 1,
    properties: { contentType: "x" },
  };
  const decoder = new PacketDecoder({ protocolVersion: 4 });
  const seen: Packet[] = [];
  decoder.push(concat([encode(connect, 5), encode(publish, 5)]), (p) => {
    seen.push(p);
    if (p.cmd === "connect") decoder.protocolVersion = p.protocolVersion;
  });
  assert.deepEqual(seen, [connect, publish]);
  assert.throws(() => decoder.protocolVersion = 3 as ProtocolVersion, RangeError);
});

Deno.test("decoder: a CONNECT decodes with the level it declares, 4 or 5", () => {
  for (const level of [4, 5] as const) {
    const connect: Packet = {
      cmd: "connect",
      protocolId: "MQTT",
      protocolVersion: level,
      clientId: "",
      clean: true,
      keepalive: 5,
    };
    for (const decoderVersion of [4, 5] as const) {
      assert.deepEqual(decodeAll([encode(connect, level)], decoderVersion), [connect]);
    }
  }
});

Deno.test("decoder: after a ProtocolError it is dead; every push throws it again", () => {
  const decoder = new PacketDecoder({ protocolVersion: 4 });
  const seen: Packet[] = [];
  const bad = concat([encodeAck("puback", 1), Uint8Array.of(0x36, 0)]);
  const err = assert.throws(() => decoder.push(bad, (p) => seen.push(p)), ProtocolError);
  assert.equal(seen.length, 1, "the packet before the bad one was delivered");
  assert.throws(() => decoder.push(encodeAck("puback", 2), () => {}), (e) => e === decoder.error);
  void err;
});

Deno.test("decoder: a frame over maxPacketSize fails from its header, naming both sizes", () => {
  const decoder = new PacketDecoder({ protocolVersion: 5, maxPacketSize: 1000 });
  const header = encodePublish("t", new Uint8Array(2000), 0, 0, false, false).subarray(0, 3);
  assert.throws(
    () => decoder.push(header, () => {}),
    (e: Error) =>
      e instanceof ProtocolError &&
      /2006 bytes exceeds the maximum packet size of 1000/.test(e.message),
  );
  assert.throws(() => new PacketDecoder({ protocolVersion: 4, maxPacketSize: 1 }), RangeError);
  assert.throws(() => new PacketDecoder({ protocolVersion: 3 as ProtocolVersion }), RangeError);
  const exact = new PacketDecoder({ protocolVersion: 4, maxPacketSize: 4 });
  const got: Packet[] = [];
  exact.push(encodeAck("pubcomp", 3), (p) => got.push(p));
  assert.deepEqual(got, [{ cmd: "pubcomp", messageId: 3 }]);
});

Deno.test("decoder: when onPacket throws, the bytes after that packet are kept", () => {
  const decoder = new PacketDecoder({ protocolVersion: 4 });
  const chunk = concat([encodeAck("puback", 1), encodeAck("puback", 2), Uint8Array.of(0x40)]);
  assert.throws(() =>
    decoder.push(chunk, () => {
      throw new Error("boom");
    }), /boom/);
  const seen: Packet[] = [];
  decoder.push(Uint8Array.of(2, 0, 3), (p) => seen.push(p));
  assert.deepEqual(seen.map((p) => (p as { messageId: number }).messageId), [2, 3]);
});

Deno.test("decodePacket: exactly one frame; shorter or longer is a ProtocolError", () => {
  assert.deepEqual(decodePacket(Uint8Array.of(0x40, 2, 0, 7), 4), { cmd: "puback", messageId: 7 });
  assert.throws(
    () => decodePacket(Uint8Array.of(0x40, 2, 0), 4),
    /has 3 bytes but its fixed header makes it 4/,
  );
  assert.throws(() => decodePacket(Uint8Array.of(0x40, 2, 0, 7, 0), 4), ProtocolError);
  assert.throws(() => decodePacket(Uint8Array.of(0x30, 0x80), 4), /inside its fixed header/);
  assert.throws(() => decodePacket(new Uint8Array(0), 4), /empty frame/);
});

Deno.test("strict: every malformed frame fails with its rule, whole and byte by byte", () => {
  for (const m of MALFORMED) {
    const what = `${m.what} (v${m.version}) ${hex(m.bytes)}`;
    const check = (e: unknown) => {
      assert.ok(e instanceof ProtocolError, `${what}: ${e}`);
      assert.equal(e.rule, m.rule, `${what}: ${e.message}`);
      assert.ok(e.message.includes(m.says), `${what}: "${e.message}" lacks "${m.says}"`);
      return true;
    };
    assert.throws(() => decodePacket(m.bytes, m.version), check);
    const decoder = new PacketDecoder({ protocolVersion: m.version });
    assert.throws(() => {
      for (const b of m.bytes) {
        decoder.push(Uint8Array.of(b), () => assert.fail(`${what}: decoded`));
      }
    }, check);
  }
  assert.ok(MALFORMED.length > 100);
});

Deno.test("lenient where the spec is: the short forms MQTT 5 allows", () => {
  const cases: [string, Packet][] = [
    ["40 00 01", { cmd: "puback", messageId: 1, reasonCode: 0 }],
    ["40 00 01 10", { cmd: "puback", messageId: 1, reasonCode: 0x10 }],
    ["e0", { cmd: "disconnect", reasonCode: 0 }],
    ["e0 8e", { cmd: "disconnect", reasonCode: 0x8e }],
    ["f0", { cmd: "auth", reasonCode: 0 }],
    ["30 '\uFEFFa' 00", {
      cmd: "publish",
      topic: "\uFEFFa",
      payload: new Uint8Array(0),
      qos: 0,
      retain: false,
      dup: false,
    }],
    ["30 '' 03 23 00 07 ff", {
      cmd: "publish",
      topic: "",
      payload: Uint8Array.of(0xff),
      qos: 0,
      retain: false,
      dup: false,
      properties: { topicAlias: 7 },
    }],
    ["10 'MQTT' 05 40 00 00 00 '' 00 00", {
      cmd: "connect",
      protocolId: "MQTT",
      protocolVersion: 5,
      clean: false,
      keepalive: 0,
      clientId: "",
      password: new Uint8Array(0),
    }],
  ];
  for (const [text, packet] of cases) {
    assert.deepEqual(decodePacket(parseFrame(text), 5), packet, text);
  }
  const nonMinimal = Uint8Array.of(0xc0, 0x80, 0x00);
  assert.deepEqual(
    decodePacket(nonMinimal, 4),
    { cmd: "pingreq" },
    "3.1.1 has no shortest-form rule",
  );
});
