/**
 * Private helpers shared by the encoder and the decoder: variable byte
 * integers, UTF-8 strings, frame buffers and a bounds-checked reader. Not
 * part of the public API.
 *
 * @module
 */

import { ProtocolError } from "../errors.ts";
import type { ProtocolVersion } from "./packets.ts";

/** Largest value of a variable byte integer, and so of a remaining length. */
export const MAX_VBI = 268_435_455;

/** Bytes a variable byte integer takes for `n` (0..MAX_VBI). */
export function vbiSize(n: number): number {
  return n < 0x80 ? 1 : n < 0x4000 ? 2 : n < 0x200000 ? 3 : 4;
}

/** Writes `n` as a variable byte integer at `pos`; returns the position after it. */
export function writeVbi(buf: Uint8Array, pos: number, n: number): number {
  while (n > 0x7f) {
    buf[pos++] = (n & 0x7f) | 0x80;
    n >>>= 7;
  }
  buf[pos++] = n;
  return pos;
}

/** Frames of up to `max` bytes cut in turn from `size`-byte buffers. */
class Slab {
  readonly size: number;
  readonly max: number;
  #buf: Uint8Array | undefined;
  #offset = 0;

  constructor(size: number, max: number) {
    this.size = size;
    this.max = max;
  }

  take(n: number): Uint8Array {
    let buf = this.#buf;
    if (buf === undefined || this.#offset + n > this.size) {
      buf = this.#buf = new Uint8Array(this.size);
      this.#offset = 0;
    }
    const frame = buf.subarray(this.#offset, this.#offset + n);
    this.#offset += (n + 7) & ~7;
    return frame;
  }
}

const small = new Slab(64 * 1024, 8 * 1024);
const medium = new Slab(256 * 1024, 32 * 1024);

/**
 * A zero-filled Uint8Array of `n` bytes for a frame. Allocating an
 * ArrayBuffer costs far more than filling a small frame, so frames up to 8 KiB
 * are cut from 64 KiB slabs and frames up to 32 KiB from 256 KiB slabs (views,
 * each region handed out once: no frame sees another's bytes); larger ones
 * get their own buffer. Callers must use the view (its byteOffset and
 * length), not its `.buffer`; a frame kept alive keeps its slab alive.
 */
export function allocFrame(n: number): Uint8Array {
  if (n <= small.max) return small.take(n);
  if (n <= medium.max) return medium.take(n);
  return new Uint8Array(n);
}

const textEncoder = new TextEncoder();
const strictDecoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/**
 * UTF-8 length of `s`, or -1 when `s` holds a lone surrogate (which has no
 * UTF-8 form), or -2 when it holds U+0000 (which MQTT strings must not).
 */
export function utf8Length(s: string): number {
  const units = s.length;
  let bytes = units;
  for (let i = 0; i < units; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) {
      if (c === 0) return -2;
    } else if (c < 0x800) {
      bytes += 1;
    } else if (c < 0xd800 || c > 0xdfff) {
      bytes += 2;
    } else if (c <= 0xdbff && i + 1 < units) {
      const low = s.charCodeAt(i + 1);
      if (low < 0xdc00 || low > 0xdfff) return -1;
      i++;
      bytes += 2; // 4 bytes for 2 code units
    } else {
      return -1;
    }
  }
  return bytes;
}

/**
 * Checks that `s` can be an MQTT UTF-8 string (well-formed, no U+0000, at most
 * 65535 bytes) and returns its UTF-8 length. `what` names it in the error.
 */
export function checkString(s: unknown, what: string): number {
  if (typeof s !== "string") throw new TypeError(`${what} must be a string, got ${typeof s}`);
  const length = utf8Length(s);
  if (length === -1) throw new TypeError(`${what} contains a lone UTF-16 surrogate`);
  if (length === -2) throw new TypeError(`${what} contains U+0000, which MQTT strings must not`);
  if (length > 0xffff) {
    throw new RangeError(`${what} takes ${length} UTF-8 bytes, more than the 65535 allowed`);
  }
  return length;
}

/** Checks that `b` is binary data MQTT can carry (at most 65535 bytes). */
export function checkBinary(b: unknown, what: string): number {
  if (!(b instanceof Uint8Array)) throw new TypeError(`${what} must be a Uint8Array`);
  if (b.length > 0xffff) {
    throw new RangeError(`${what} has ${b.length} bytes, more than the 65535 allowed`);
  }
  return b.length;
}

/** Checks a topic name (PUBLISH, will): non-empty, no wildcard; returns its UTF-8 length. */
export function checkTopicName(topic: unknown, what: string): number {
  const length = checkString(topic, what);
  if (length === 0) throw new TypeError(`${what} is empty`);
  if (hasWildcard(topic as string)) {
    throw new TypeError(`${what} "${topic}" contains a wildcard (+ or #)`);
  }
  return length;
}

/** True when `s` holds "+" or "#". */
export function hasWildcard(s: string): boolean {
  return s.includes("+") || s.includes("#");
}

/**
 * Writes `s` (whose UTF-8 length `length` the caller computed) with its
 * 2-byte length prefix at `pos`; returns the position after it.
 */
export function writeString(buf: Uint8Array, pos: number, s: string, length: number): number {
  buf[pos++] = length >> 8;
  buf[pos++] = length & 0xff;
  if (length === s.length && length < 64) {
    for (let i = 0; i < length; i++) buf[pos + i] = s.charCodeAt(i);
  } else if (length > 0) {
    textEncoder.encodeInto(s, buf.subarray(pos, pos + length));
  }
  return pos + length;
}

/** Writes `b` with its 2-byte length prefix at `pos`; returns the position after it. */
export function writeBinary(buf: Uint8Array, pos: number, b: Uint8Array): number {
  buf[pos++] = b.length >> 8;
  buf[pos++] = b.length & 0xff;
  buf.set(b, pos);
  return pos + b.length;
}

/** Writes a 2-byte big-endian integer at `pos`; returns the position after it. */
export function writeU16(buf: Uint8Array, pos: number, n: number): number {
  buf[pos] = n >> 8;
  buf[pos + 1] = n & 0xff;
  return pos + 2;
}

/** Writes a 4-byte big-endian integer at `pos`; returns the position after it. */
export function writeU32(buf: Uint8Array, pos: number, n: number): number {
  buf[pos] = n >>> 24;
  buf[pos + 1] = (n >>> 16) & 0xff;
  buf[pos + 2] = (n >>> 8) & 0xff;
  buf[pos + 3] = n & 0xff;
  return pos + 4;
}

/** True when `n` is an integer in min..max. */
export function isInt(n: unknown, min: number, max: number): n is number {
  return typeof n === "number" && Number.isInteger(n) && n >= min && n <= max;
}

/**
 * Reads the fields of one packet's body, between `pos` and `end`, throwing a
 * {@linkcode ProtocolError} that names the packet and the field when the data
 * is short or malformed.
 */
export class Reader {
  /** The bytes. */
  buf: Uint8Array;
  /** Next byte to read. */
  pos: number;
  /** One past the last byte this reader may read. */
  end: number;
  /** Protocol level the packet is read with. */
  version: ProtocolVersion;
  /** Packet name for messages, e.g. "PUBLISH". */
  name: string;

  /** A reader of `buf[pos..end)` for a packet called `name`. */
  constructor(buf: Uint8Array, pos: number, end: number, version: ProtocolVersion, name: string) {
    this.buf = buf;
    this.pos = pos;
    this.end = end;
    this.version = version;
    this.name = name;
  }

  /** An error for a field that runs past the end of the packet. */
  short(what: string): ProtocolError {
    return new ProtocolError(`${this.name}: the ${what} runs past the end of the packet`);
  }

  /** A malformed-packet error with the packet name in front. */
  fail(message: string, v4Rule?: string, v5Rule?: string): ProtocolError {
    const id = this.version === 5 ? v5Rule : v4Rule;
    return new ProtocolError(`${this.name}: ${message}`, id ? { rule: id } : {});
  }

  /** Bytes left. */
  get left(): number {
    return this.end - this.pos;
  }

  /** One byte. */
  u8(what: string): number {
    if (this.pos >= this.end) throw this.short(what);
    return this.buf[this.pos++];
  }

  /** A 2-byte big-endian integer. */
  u16(what: string): number {
    const pos = this.pos;
    if (pos + 2 > this.end) throw this.short(what);
    this.pos = pos + 2;
    return (this.buf[pos] << 8) | this.buf[pos + 1];
  }

  /** A 4-byte big-endian integer. */
  u32(what: string): number {
    const pos = this.pos;
    if (pos + 4 > this.end) throw this.short(what);
    this.pos = pos + 4;
    const b = this.buf;
    return ((b[pos] << 24) >>> 0) + ((b[pos + 1] << 16) | (b[pos + 2] << 8) | b[pos + 3]);
  }

  /** A variable byte integer (at most 4 bytes; minimal in MQTT 5). */
  vbi(what: string): number {
    let value = 0;
    let shift = 0;
    for (let i = 0; i < 4; i++) {
      const byte = this.u8(what);
      value += (byte & 0x7f) * 2 ** shift;
      if ((byte & 0x80) === 0) {
        if (byte === 0 && i > 0 && this.version === 5) {
          throw this.fail(`the ${what} is not in its shortest form`, undefined, "MQTT-1.5.5-1");
        }
        return value;
      }
      shift += 7;
    }
    throw this.fail(`the ${what} takes more than 4 bytes`);
  }

  /** A non-zero packet identifier. */
  packetId(v4Rule: string, v5Rule: string): number {
    const id = this.u16("packet identifier");
    if (id === 0) throw this.fail("packet identifier 0; it must be non-zero", v4Rule, v5Rule);
    return id;
  }

  /** A length-prefixed UTF-8 string. */
  string(what: string): string {
    const length = this.u16(`${what} length`);
    const start = this.pos;
    if (start + length > this.end) throw this.short(what);
    this.pos = start + length;
    return decodeUtf8(this.buf, start, start + length, this, what);
  }

  /** Length-prefixed binary data, as a view into the buffer. */
  binary(what: string): Uint8Array {
    const length = this.u16(`${what} length`);
    const start = this.pos;
    if (start + length > this.end) throw this.short(what);
    this.pos = start + length;
    return this.buf.subarray(start, start + length);
  }

  /** Throws when bytes are left after the content the packet declared. */
  done(): void {
    if (this.pos !== this.end) {
      throw this.fail(`${this.end - this.pos} unexpected byte(s) after the end of its content`);
    }
  }
}

/**
 * Decodes `buf[start..end)` as an MQTT UTF-8 string: well-formed, no
 * surrogates, no U+0000, U+FEFF kept wherever it is (MQTT-1.5.3-3 / MQTT-1.5.4-3).
 */
export function decodeUtf8(
  buf: Uint8Array,
  start: number,
  end: number,
  reader: Reader,
  what: string,
): string {
  let ascii = true;
  for (let i = start; i < end; i++) {
    const byte = buf[i];
    if (byte === 0) {
      throw reader.fail(`the ${what} contains U+0000`, "MQTT-1.5.3-2", "MQTT-1.5.4-2");
    }
    if (byte > 0x7f) ascii = false;
  }
  if (ascii && end - start <= 256) {
    return String.fromCharCode.apply(null, buf.subarray(start, end) as unknown as number[]);
  }
  try {
    return strictDecoder.decode(buf.subarray(start, end));
  } catch {
    throw reader.fail(`the ${what} is not well-formed UTF-8`, "MQTT-1.5.3-1", "MQTT-1.5.4-1");
  }
}
