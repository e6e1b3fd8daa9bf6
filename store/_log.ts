/**
 * The record format of {@linkcode FileStore}'s files, and the small file
 * helpers it needs. Private to the store.
 *
 * Every file (a log segment or a snapshot) is a sequence of records:
 *
 * ```text
 * record = crc:u32le  length:u32le  body[length]      crc = CRC-32 of length+body
 * body   = kind:u8 ...
 *   HEADER        7  version:u8 fileType:u8 number:f64le clientId:utf8(rest)
 *   PUT           1  id:u16be flags:u8 topicLength:u32le topic
 *                    [propertiesLength:u32le properties] payload(rest)
 *                    flags: bits 0-1 qos, 0x04 retain, 0x08 properties present;
 *                    properties: the MQTT 5 PUBLISH Properties field
 *                    (codec/properties.ts), so user properties keep their order
 *   RELEASED      2  id:u16be
 *   DELETE        3  id:u16be
 *   INCOMING      4  id:u16be
 *   INCOMING_DONE 5  id:u16be
 *   LAST_ID       6  id:u16be                         (snapshots)
 *   END           8  count:u32le                      (snapshots: records between HEADER and END)
 * ```
 *
 * The first record of a file is its HEADER; a snapshot ends with END.
 *
 * @module
 */

import type { PublishProperties, QoS } from "../codec/packets.ts";
import { encodeProperties, readProperties } from "../codec/properties.ts";
import { Reader } from "../codec/_wire.ts";
import type { StoredPublish } from "./store.ts";
import { crc32 } from "./_crc32.ts";

/** Record kinds (first byte of a body). */
export const PUT = 1;
/** See {@linkcode PUT}. */
export const RELEASED = 2;
/** See {@linkcode PUT}. */
export const DELETE = 3;
/** See {@linkcode PUT}. */
export const INCOMING = 4;
/** See {@linkcode PUT}. */
export const INCOMING_DONE = 5;
/** See {@linkcode PUT}. */
export const LAST_ID = 6;
/** See {@linkcode PUT}. */
export const HEADER = 7;
/** See {@linkcode PUT}. */
export const END = 8;

/** Format version written in every HEADER. */
export const FORMAT_VERSION = 1;
/** HEADER file types. */
export const LOG_FILE = 1;
/** See {@linkcode LOG_FILE}. */
export const SNAPSHOT_FILE = 2;

/** Bytes in front of a body: CRC and length. */
export const FRAME = 8;

/** Size of an id-only record (RELEASED, DELETE, INCOMING, INCOMING_DONE, LAST_ID). */
export const ID_RECORD = FRAME + 3;

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

function writeU32(buf: Uint8Array, pos: number, n: number): void {
  buf[pos] = n;
  buf[pos + 1] = n >>> 8;
  buf[pos + 2] = n >>> 16;
  buf[pos + 3] = n >>> 24;
}

/** Reads a little-endian u32 at `pos`. */
export function readU32(buf: Uint8Array, pos: number): number {
  return (buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16 | buf[pos + 3] << 24) >>> 0;
}

/** Fills in the CRC and length of a record whose body is `buf[FRAME..]`. */
function seal(buf: Uint8Array): Uint8Array {
  writeU32(buf, 4, buf.length - FRAME);
  writeU32(buf, 0, crc32(buf, 4));
  return buf;
}

function checkId(id: number): void {
  if (!(Number.isInteger(id) && id >= 0 && id <= 0xffff)) {
    throw new RangeError(`FileStore: packet id must be an integer in 0..65535, got ${id}`);
  }
}

/** An id-only record of `kind`. */
export function encodeId(kind: number, id: number): Uint8Array {
  checkId(id);
  const buf = new Uint8Array(ID_RECORD);
  buf[FRAME] = kind;
  buf[FRAME + 1] = id >>> 8;
  buf[FRAME + 2] = id;
  return seal(buf);
}

// A stream repeats its topic: encoding it once per topic, not per record,
// is a fifth of the store's CPU per message.
let cachedTopic = "";
let cachedTopicBytes = new Uint8Array(0);

function topicBytes(topic: string): Uint8Array {
  if (topic !== cachedTopic) {
    cachedTopicBytes = encoder.encode(topic);
    cachedTopic = topic;
  }
  return cachedTopicBytes;
}

/** A PUT record of `record` (its StoredPublish fields only). */
export function encodePut(record: StoredPublish): Uint8Array {
  checkId(record.id);
  const qos = record.qos;
  if (qos !== 0 && qos !== 1 && qos !== 2) {
    throw new RangeError(`FileStore: qos must be 0, 1 or 2, got ${qos}`);
  }
  const topic = topicBytes(record.topic);
  const props = record.properties === undefined
    ? undefined
    : encodeProperties("publish", record.properties);
  const payload = record.payload;
  const size = FRAME + 8 + topic.length + (props ? 4 + props.length : 0) + payload.length;
  const buf = new Uint8Array(size);
  let pos = FRAME;
  buf[pos++] = PUT;
  buf[pos++] = record.id >>> 8;
  buf[pos++] = record.id;
  buf[pos++] = qos | (record.retain ? 0x04 : 0) | (props ? 0x08 : 0);
  writeU32(buf, pos, topic.length);
  buf.set(topic, pos + 4);
  pos += 4 + topic.length;
  if (props) {
    writeU32(buf, pos, props.length);
    buf.set(props, pos + 4);
    pos += 4 + props.length;
  }
  buf.set(payload, pos);
  return seal(buf);
}

/** The HEADER record of a file. */
export function encodeHeader(fileType: number, number: number, clientId: string): Uint8Array {
  const id = encoder.encode(clientId);
  const buf = new Uint8Array(FRAME + 11 + id.length);
  buf[FRAME] = HEADER;
  buf[FRAME + 1] = FORMAT_VERSION;
  buf[FRAME + 2] = fileType;
  new DataView(buf.buffer).setFloat64(FRAME + 3, number, true);
  buf.set(id, FRAME + 11);
  return seal(buf);
}

/** The END record of a snapshot holding `count` records. */
export function encodeEnd(count: number): Uint8Array {
  const buf = new Uint8Array(FRAME + 5);
  buf[FRAME] = END;
  writeU32(buf, FRAME + 1, count);
  return seal(buf);
}

/**
 * The end of the record at `pos` when it is whole and its CRC matches;
 * -1 otherwise (cut short, zero length, or corrupt).
 */
export function frameEnd(buf: Uint8Array, pos: number): number {
  if (pos + FRAME > buf.length) return -1;
  const length = readU32(buf, pos + 4);
  const end = pos + FRAME + length;
  if (length === 0 || end > buf.length) return -1;
  return crc32(buf, pos + 4, end) === readU32(buf, pos) ? end : -1;
}

/** Where the record at `pos` claims to end (its length field), or -1 when that is unreadable. */
export function claimedEnd(buf: Uint8Array, pos: number): number {
  if (pos + FRAME > buf.length) return -1;
  return pos + FRAME + readU32(buf, pos + 4);
}

/** The id of the id-only record (or PUT) at `pos`. */
export function recordId(buf: Uint8Array, pos: number): number {
  return buf[pos + FRAME + 1] << 8 | buf[pos + FRAME + 2];
}

/** A file's HEADER. */
export interface Header {
  /** Format version. */
  version: number;
  /** {@linkcode LOG_FILE} or {@linkcode SNAPSHOT_FILE}. */
  fileType: number;
  /** Segment number (a snapshot: the last segment it covers). */
  number: number;
  /** The client id the file belongs to. */
  clientId: string;
}

/** Decodes the HEADER record `buf[pos..end)`; undefined when it is not one. */
export function decodeHeader(buf: Uint8Array, pos: number, end: number): Header | undefined {
  const body = pos + FRAME;
  if (end - body < 11 || buf[body] !== HEADER) return undefined;
  try {
    return {
      version: buf[body + 1],
      fileType: buf[body + 2],
      number: new DataView(buf.buffer, buf.byteOffset).getFloat64(body + 3, true),
      clientId: decoder.decode(buf.subarray(body + 11, end)),
    };
  } catch {
    return undefined;
  }
}

/** Decodes the PUT record `buf[pos..end)` into fresh memory; throws when malformed. */
export function decodePut(buf: Uint8Array, pos: number, end: number): StoredPublish {
  let p = pos + FRAME;
  if (end - p < 8 || buf[p] !== PUT) throw new Error("not a put record");
  const id = buf[p + 1] << 8 | buf[p + 2];
  const flags = buf[p + 3];
  const qos = flags & 0x03;
  if (qos === 3 || (flags & ~0x0f) !== 0) throw new Error("bad put flags");
  const topicLength = readU32(buf, p + 4);
  p += 8;
  if (p + topicLength > end) throw new Error("topic runs past the record");
  const topic = decoder.decode(buf.subarray(p, p + topicLength));
  p += topicLength;
  let properties: PublishProperties | undefined;
  if (flags & 0x08) {
    if (p + 4 > end) throw new Error("properties run past the record");
    const length = readU32(buf, p);
    p += 4;
    if (p + length > end) throw new Error("properties run past the record");
    const block = buf.slice(p, p + length); // fresh memory: binary values are views into it
    const reader = new Reader(block, 0, block.length, 5, "stored PUBLISH");
    properties = (readProperties(reader, "publish") ?? {}) as PublishProperties;
    if (reader.pos !== block.length) throw new Error("bytes after the properties");
    p += length;
  }
  const record: {
    id: number;
    qos: QoS;
    topic: string;
    payload: Uint8Array;
    retain: boolean;
    properties?: PublishProperties;
  } = { id, qos: qos as QoS, topic, payload: buf.slice(p, end), retain: (flags & 0x04) !== 0 };
  if (properties !== undefined) record.properties = properties;
  return record;
}

/** Writes all of `bytes` to `file` (a write may take fewer bytes than offered). */
export async function writeAll(file: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  let done = 0;
  while (done < bytes.length) {
    const n = await file.write(bytes.subarray(done));
    if (n <= 0) throw new Error("write made no progress");
    done += n;
  }
}

/** Joins `chunks` (holding `total` bytes) after `head` into one buffer. */
export function concat(
  head: Uint8Array | undefined,
  chunks: Uint8Array[],
  total: number,
): Uint8Array {
  const out = new Uint8Array((head?.length ?? 0) + total);
  let pos = 0;
  if (head) {
    out.set(head, 0);
    pos = head.length;
  }
  for (const chunk of chunks) {
    out.set(chunk, pos);
    pos += chunk.length;
  }
  return out;
}
