/**
 * Checks on frames from the broker that mqtt-packet's parser lets through but
 * MQTT 3.1.1 forbids. A violation closes the connection (MQTT-4.8.0-1).
 *
 * @module
 */

const CONNACK = 2;
const PUBLISH = 3;
const PUBACK = 4;
const SUBACK = 9;
const UNSUBACK = 11;
const PINGRESP = 13;

/** Remaining length each fixed-size packet type must have. */
const FIXED_LENGTH: Record<number, number> = {
  [CONNACK]: 2,
  [PUBACK]: 2,
  [UNSUBACK]: 2,
  [PINGRESP]: 0,
};
const NAMES: Record<number, string> = {
  [CONNACK]: "CONNACK",
  [PUBACK]: "PUBACK",
  [UNSUBACK]: "UNSUBACK",
  [PINGRESP]: "PINGRESP",
};

const utf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * Why `frame` (one whole frame: fixed header, remaining length, body) breaks
 * the protocol in a way the codec does not catch, or undefined when it is fine.
 */
export function frameViolation(frame: Uint8Array): string | undefined {
  const type = frame[0] >> 4;
  let body = 1;
  while (frame[body] & 0x80) body++;
  body++;
  const remaining = frame.length - body;
  const fixed = FIXED_LENGTH[type];
  if (fixed !== undefined && remaining !== fixed) {
    return `${NAMES[type]} with remaining length ${remaining}, must be ${fixed}`;
  }
  if (type === PUBACK || type === UNSUBACK || type === SUBACK) {
    if (remaining >= 2 && frame[body] === 0 && frame[body + 1] === 0) {
      return "packet id 0 in an acknowledgement";
    }
  }
  if (type === SUBACK) {
    for (let i = body + 2; i < frame.length; i++) {
      const code = frame[i];
      if (code > 2 && code !== 0x80) return `SUBACK return code 0x${code.toString(16)} is invalid`;
    }
  }
  if (type === PUBLISH && remaining >= 2) {
    const topicLength = (frame[body] << 8) | frame[body + 1];
    const topic = frame.subarray(body + 2, body + 2 + topicLength);
    return topicViolation(topic);
  }
  return undefined;
}

function topicViolation(topic: Uint8Array): string | undefined {
  let ascii = true;
  for (let i = 0; i < topic.length; i++) {
    const byte = topic[i];
    if (byte === 0) return "PUBLISH topic contains U+0000";
    if (byte === 0x23 || byte === 0x2b) return "PUBLISH topic from the broker contains a wildcard";
    if (byte >= 0x80) ascii = false;
  }
  if (ascii) return undefined;
  try {
    utf8.decode(topic);
  } catch {
    return "PUBLISH topic is not valid UTF-8";
  }
  return undefined;
}
