import assert from "node:assert/strict";
import { Buffer, generate } from "../deps.ts";
import { encodePublish } from "../publish_codec.ts";

const topics = ["t", "sensors/7/temp", "é/ü/日本", "x".repeat(300), "y".repeat(65_535)];
const sizes = [0, 1, 100, 121, 122, 16_370, 16_384, 2_097_152];

Deno.test("encodePublish writes the same bytes as mqtt-packet for every flag and length width", () => {
  let cases = 0;
  for (const topic of topics) {
    for (const size of sizes) {
      const payload = Uint8Array.from({ length: size }, (_, i) => (i * 7 + size) & 0xff);
      for (const qos of [0, 1] as const) {
        for (const retain of [false, true]) {
          for (const dup of [false, true]) {
            const id = qos === 1 ? 1 + ((size + topic.length) % 65_535) : 0;
            const ours = encodePublish(topic, payload, qos, id, retain, dup);
            const theirs = generate({
              cmd: "publish",
              topic,
              payload: Buffer.from(payload),
              qos,
              messageId: qos === 1 ? id : undefined,
              retain,
              dup,
            });
            assert.deepEqual(ours, new Uint8Array(theirs), `${topic.length}/${size}/${qos}`);
            cases++;
          }
        }
      }
    }
  }
  assert.equal(cases, topics.length * sizes.length * 8);
});

Deno.test("encodePublish switches topics correctly after caching one", () => {
  const a = encodePublish("a/b", new Uint8Array([1]), 0, 0, false, false);
  const b = encodePublish("c", new Uint8Array([1]), 0, 0, false, false);
  const a2 = encodePublish("a/b", new Uint8Array([1]), 0, 0, false, false);
  assert.deepEqual(a, a2);
  assert.notDeepEqual(a, b);
  assert.equal(new TextDecoder().decode(b.subarray(4, 5)), "c");
});
