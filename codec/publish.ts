/**
 * The hot path: PUBLISH frames written straight into one Uint8Array, and the
 * 4-byte acknowledgements. A stream of publishes usually reuses one topic, so
 * the last topic is validated only when it changes.
 *
 * @module
 */

import type { ProtocolVersion, PublishProperties, QoS } from "./packets.ts";
import { propertiesSize, writeProperties } from "./properties.ts";
import { allocFrame, checkTopicName, MAX_VBI, vbiSize, writeVbi } from "./_wire.ts";

const encoder = new TextEncoder();
/** The last topic written, validated, and its UTF-8 length. */
let lastTopic = "";
let lastLength = 0;
/** Its UTF-8 bytes, kept once a non-ASCII topic comes twice in a row. */
let lastBytes: Uint8Array | undefined;
let lastRepeated = false;

/**
 * UTF-8 length of a non-empty `topic`, validated when it differs from the last
 * one (a stream of publishes usually reuses one topic).
 */
function topicLength(topic: string): number {
  if (topic !== lastTopic) {
    lastLength = checkTopicName(topic, "PUBLISH topic");
    lastTopic = topic;
    lastBytes = undefined;
    lastRepeated = false;
  } else {
    lastRepeated = true;
  }
  return lastLength;
}

/** Writes the last topic's `length` UTF-8 bytes at `frame[offset]`, without allocating. */
function writeTopic(frame: Uint8Array, offset: number, topic: string, length: number): void {
  if (length === topic.length && length <= 256) {
    for (let i = 0; i < length; i++) frame[offset + i] = topic.charCodeAt(i);
  } else if (lastBytes !== undefined) {
    frame.set(lastBytes, offset);
  } else {
    encoder.encodeInto(topic, frame.subarray(offset, offset + length));
    if (lastRepeated) lastBytes = frame.slice(offset, offset + length);
  }
}

/**
 * One whole PUBLISH frame.
 *
 * - `id` is the packet identifier (1..65535) for QoS 1 and 2, ignored for QoS 0.
 * - `version` 5 adds the Properties field: `properties` is either a properties
 *   object (validated) or a whole Properties field made once by
 *   `encodeProperties("publish", ...)` (copied as it is, not checked again);
 *   absent means none. With 3.1.1, `properties` must be absent.
 * - An empty `topic` is allowed only in MQTT 5 with a Topic Alias in the
 *   properties or in `topicAlias` (MQTT 5 §3.3.2.3.4).
 * - `topicAlias` (MQTT 5, 1..65535; 0: none) adds a Topic Alias property
 *   after `properties` without copying them: the client's outgoing aliases.
 *
 * The frame may be a view into a buffer shared with other frames: write the
 * Uint8Array itself, never its `.buffer`.
 *
 * Throws TypeError or RangeError on a QoS other than 0..2, DUP with QoS 0
 * (MQTT-3.3.1-2), a missing or out-of-range packet id, a topic that is not a
 * valid topic name, or a frame over the maximum remaining length.
 *
 * @example
 * ```ts
 * import { encodePublish } from "./publish.ts";
 * const payload = new TextEncoder().encode("21.5");
 * const frame = encodePublish("sensors/7/temp", payload, 1, 42, false, false);
 * console.log(frame[0].toString(16)); // "32"
 * ```
 */
export function encodePublish(
  topic: string,
  payload: Uint8Array,
  qos: QoS,
  id: number,
  retain: boolean,
  dup: boolean,
  version: ProtocolVersion = 4,
  properties?: PublishProperties | Uint8Array,
  topicAlias = 0,
): Uint8Array {
  if (qos === 0) {
    if (dup) throw new RangeError("PUBLISH with QoS 0 must not set DUP (MQTT-3.3.1-2)");
  } else if (qos !== 1 && qos !== 2) {
    throw new RangeError(`PUBLISH QoS must be 0, 1 or 2, got ${qos}`);
  } else if (id !== (id & 0xffff) || id === 0) {
    throw new RangeError(`PUBLISH QoS ${qos} needs a packet identifier in 1..65535, got ${id}`);
  }
  if (!(payload instanceof Uint8Array)) throw new TypeError("PUBLISH payload must be a Uint8Array");
  let block: Uint8Array | undefined;
  let propsSize = 0;
  let propsLength = 0;
  if (version === 5) {
    if (properties instanceof Uint8Array) {
      block = properties;
      propsLength = block.length;
    } else {
      propsSize = propertiesSize(properties, "publish");
      propsLength = vbiSize(propsSize) + propsSize;
    }
    if (topicAlias !== 0) {
      if (topicAlias !== (topicAlias & 0xffff)) {
        throw new RangeError(`PUBLISH topic alias must be 1..65535, got ${topicAlias}`);
      }
      if (block) {
        // Re-frame the block's properties with the alias after them.
        let start = 0;
        while (block[start] & 0x80) start++;
        start++;
        propsSize = block.length - start + 3;
        block = block.subarray(start);
      } else {
        propsSize += 3;
      }
      propsLength = vbiSize(propsSize) + propsSize;
    }
  } else if (topicAlias !== 0) {
    throw new TypeError("PUBLISH topic aliases need MQTT 5; this is 3.1.1");
  } else if (version !== 4) {
    throw new RangeError(`protocol version must be 4 or 5, got ${version}`);
  } else if (properties !== undefined && !isEmpty(properties)) {
    throw new TypeError("PUBLISH properties need MQTT 5; this is 3.1.1");
  }
  let nameLength = 0;
  if (topic === "") {
    if (topicAlias === 0 || version !== 5) checkEmptyTopic(version, properties);
  } else nameLength = topicLength(topic);
  const remaining = 2 + nameLength + (qos === 0 ? 0 : 2) + propsLength + payload.length;
  if (remaining > MAX_VBI) {
    throw new RangeError(`PUBLISH remaining length ${remaining} exceeds ${MAX_VBI}`);
  }
  const lengthBytes = remaining < 0x80 ? 1 : remaining < 0x4000 ? 2 : remaining < 0x200000 ? 3 : 4;
  const frame = allocFrame(1 + lengthBytes + remaining);
  frame[0] = 0x30 | (dup ? 0x08 : 0) | (qos << 1) | (retain ? 0x01 : 0);
  let offset = 1;
  let rest = remaining;
  while (rest > 0x7f) {
    frame[offset++] = (rest & 0x7f) | 0x80;
    rest >>>= 7;
  }
  frame[offset++] = rest;
  frame[offset++] = nameLength >> 8;
  frame[offset++] = nameLength & 0xff;
  if (nameLength > 0) {
    writeTopic(frame, offset, topic, nameLength);
    offset += nameLength;
  }
  if (qos !== 0) {
    frame[offset++] = id >> 8;
    frame[offset++] = id & 0xff;
  }
  if (version === 5) {
    if (topicAlias !== 0) {
      if (block) {
        offset = writeVbi(frame, offset, propsSize);
        frame.set(block, offset);
        offset += block.length;
      } else {
        offset = writeProperties(frame, offset, properties as PublishProperties, propsSize);
      }
      frame[offset++] = 0x23;
      frame[offset++] = topicAlias >> 8;
      frame[offset++] = topicAlias & 0xff;
    } else if (block) {
      frame.set(block, offset);
      offset += block.length;
    } else {
      offset = writeProperties(frame, offset, properties as PublishProperties, propsSize);
    }
  }
  frame.set(payload, offset);
  return frame;
}

/** A properties object with no property set. */
function isEmpty(properties: PublishProperties | Uint8Array): boolean {
  if (properties instanceof Uint8Array) return false;
  for (const value of Object.values(properties)) if (value !== undefined) return false;
  return true;
}

/** An empty topic name stands for a topic alias: MQTT 5, with a Topic Alias. */
function checkEmptyTopic(version: ProtocolVersion, properties: unknown): void {
  const aliased = properties instanceof Uint8Array
    ? blockHasTopicAlias(properties)
    : (properties as PublishProperties | undefined)?.topicAlias !== undefined;
  if (version !== 5 || !aliased) {
    throw new TypeError(
      "PUBLISH topic is empty; only an MQTT 5 PUBLISH with a Topic Alias may omit it (MQTT-4.7.3-1)",
    );
  }
}

/** Whether a pre-encoded PUBLISH Properties field holds a Topic Alias (0x23). */
function blockHasTopicAlias(block: Uint8Array): boolean {
  let pos = 0;
  while (block[pos] & 0x80) pos++;
  pos++;
  while (pos < block.length) {
    const id = block[pos++];
    if (id === 0x23) return true;
    switch (id) {
      case 0x01:
        pos += 1;
        break;
      case 0x02:
        pos += 4;
        break;
      case 0x0b:
        while (block[pos] & 0x80) pos++;
        pos++;
        break;
      case 0x26:
        pos += 2 + ((block[pos] << 8) | block[pos + 1]);
        pos += 2 + ((block[pos] << 8) | block[pos + 1]);
        break;
      default: // 0x03, 0x08, 0x09: length-prefixed
        pos += 2 + ((block[pos] << 8) | block[pos + 1]);
    }
  }
  return false;
}

/** The packet types {@linkcode encodeAck} writes. */
export type AckCmd = "puback" | "pubrec" | "pubrel" | "pubcomp";

/**
 * A 4-byte PUBACK, PUBREC, PUBREL or PUBCOMP for packet `id` (1..65535). The
 * same bytes serve MQTT 3.1.1 and MQTT 5, where a remaining length of 2 means
 * reason code 0 (Success) and no properties (MQTT 5 §3.4.2.1). Other reason
 * codes and properties go through `encode`.
 *
 * @example
 * ```ts
 * import { encodeAck } from "./publish.ts";
 * console.log(encodeAck("puback", 7)); // Uint8Array(4) [ 64, 2, 0, 7 ]
 * ```
 */
export function encodeAck(type: AckCmd, id: number): Uint8Array {
  let first: number;
  switch (type) {
    case "puback":
      first = 0x40;
      break;
    case "pubrec":
      first = 0x50;
      break;
    case "pubrel":
      first = 0x62;
      break;
    case "pubcomp":
      first = 0x70;
      break;
    default:
      throw new TypeError(`encodeAck writes puback, pubrec, pubrel or pubcomp, not ${type}`);
  }
  if (id !== (id & 0xffff) || id === 0) {
    throw new RangeError(`${type} needs a packet identifier in 1..65535, got ${id}`);
  }
  const frame = allocFrame(4);
  frame[0] = first;
  frame[1] = 2;
  frame[2] = id >> 8;
  frame[3] = id & 0xff;
  return frame;
}
