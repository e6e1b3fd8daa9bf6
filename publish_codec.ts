/**
 * The PUBLISH encoder of the hot path. Every other packet goes through
 * mqtt-packet; a stream of QoS 1 publishes is the one place where building a
 * packet object, a Node Buffer and an accumulator per message showed in the
 * profile, so PUBLISH frames are written straight into one Uint8Array.
 * `tests/publish_codec_test.ts` checks the bytes against mqtt-packet's.
 *
 * @module
 */

const encoder = new TextEncoder();
let lastTopic = "";
let lastTopicBytes = new Uint8Array(0);

/** UTF-8 bytes of `topic`, remembered for the next call (streams reuse one topic). */
function topicBytes(topic: string): Uint8Array {
  if (topic !== lastTopic) {
    lastTopicBytes = encoder.encode(topic);
    lastTopic = topic;
  }
  return lastTopicBytes;
}

/** One whole PUBLISH frame. `id` is ignored for QoS 0. */
export function encodePublish(
  topic: string,
  payload: Uint8Array,
  qos: 0 | 1,
  id: number,
  retain: boolean,
  dup: boolean,
): Uint8Array {
  const name = topicBytes(topic);
  const remaining = 2 + name.length + (qos === 1 ? 2 : 0) + payload.length;
  let lengthBytes = 1;
  for (let rest = remaining; rest > 127; rest = Math.floor(rest / 128)) lengthBytes++;
  const frame = new Uint8Array(1 + lengthBytes + remaining);
  frame[0] = 0x30 | (dup ? 0x08 : 0) | (qos << 1) | (retain ? 0x01 : 0);
  let offset = 1;
  let rest = remaining;
  do {
    let digit = rest % 128;
    rest = Math.floor(rest / 128);
    if (rest > 0) digit |= 0x80;
    frame[offset++] = digit;
  } while (rest > 0);
  frame[offset++] = name.length >> 8;
  frame[offset++] = name.length & 0xff;
  frame.set(name, offset);
  offset += name.length;
  if (qos === 1) {
    frame[offset++] = id >> 8;
    frame[offset++] = id & 0xff;
  }
  frame.set(payload, offset);
  return frame;
}
