/**
 * The decoder: MQTT 3.1.1 and MQTT 5 frames to packet objects, strictly
 * (every malformed input is a {@linkcode ProtocolError} naming the rule).
 *
 * {@linkcode PacketDecoder} takes a byte stream cut anywhere;
 * {@linkcode decodePacket} takes exactly one whole frame.
 *
 * Payloads and binary fields of decoded packets (PUBLISH payload, password,
 * will payload, correlation and authentication data) are views into the bytes
 * pushed, not copies: a caller must not reuse or overwrite a buffer it has
 * pushed, nor one it passed to `decodePacket`, while it keeps the packets.
 *
 * @module
 */

import { ProtocolError } from "../errors.ts";
import type { Packet, ProtocolVersion } from "./packets.ts";
import { decodeBody, PACKET_NAMES } from "./_decode_body.ts";
import { MAX_VBI } from "./_wire.ts";

/** Largest frame MQTT allows: 1 type byte, 4 length bytes, 268435455 body bytes. */
export const MAX_PACKET_SIZE: number = 1 + 4 + MAX_VBI;

/** Options of {@linkcode PacketDecoder}. */
export interface PacketDecoderOptions {
  /** Protocol level of the packets to decode: 4 (3.1.1) or 5. A CONNECT decodes with its own. */
  protocolVersion: ProtocolVersion;
  /**
   * Largest whole frame (fixed header included) accepted, in bytes; default
   * and maximum 268435460. A larger frame is a ProtocolError as soon as its
   * fixed header arrives.
   */
  maxPacketSize?: number;
}

/** Checks the first byte of a fixed header: packet type and reserved flags. */
function checkFirst(first: number, version: ProtocolVersion): void {
  const type = first >> 4;
  const flags = first & 0x0f;
  if (type === 3) {
    const qos = (flags >> 1) & 3;
    if (qos === 3) {
      throw new ProtocolError("PUBLISH has QoS 3 (both QoS bits set)", { rule: "MQTT-3.3.1-4" });
    }
    if (qos === 0 && (flags & 0x08)) {
      throw new ProtocolError("PUBLISH with QoS 0 has the DUP flag set", { rule: "MQTT-3.3.1-2" });
    }
    return;
  }
  if (type === 0) throw new ProtocolError("packet type 0 is reserved and must not be used");
  if (type === 15 && version === 4) {
    throw new ProtocolError("packet type 15 (AUTH) does not exist in MQTT 3.1.1");
  }
  const expected = type === 6 || type === 8 || type === 10 ? 2 : 0;
  if (flags !== expected) {
    throw new ProtocolError(
      `${PACKET_NAMES[type]} fixed header flags are 0b${bits(flags)}; they must be 0b${
        bits(expected)
      }`,
      { rule: version === 5 ? "MQTT-2.1.3-1" : "MQTT-2.2.2-2" },
    );
  }
}

function bits(n: number): string {
  return n.toString(2).padStart(4, "0");
}

/** Remaining lengths fixed by the packet type (the body need not arrive to check them). */
function checkRemaining(first: number, remaining: number, version: ProtocolVersion): void {
  const type = first >> 4;
  let expected = -1;
  if (type === 12 || type === 13) expected = 0;
  else if (version === 4) {
    if (type === 14) expected = 0;
    else if (type === 2 || (type >= 4 && type <= 7) || type === 11) expected = 2;
  }
  if (expected >= 0 && remaining !== expected) {
    throw new ProtocolError(
      `${PACKET_NAMES[type]} has remaining length ${remaining}; it must be ${expected}`,
    );
  }
}

/** Remaining length read by {@linkcode readHeader}. */
let headerRemaining = 0;

/**
 * Reads the remaining length of the fixed header at `buf[off]`. Returns the
 * header's size (2..5) and sets `headerRemaining`, or 0 when more bytes are
 * needed.
 */
function readHeader(buf: Uint8Array, off: number, end: number, version: ProtocolVersion): number {
  let value = 0;
  let multiplier = 1;
  for (let i = 1; i <= 4; i++) {
    if (off + i >= end) return 0;
    const byte = buf[off + i];
    value += (byte & 0x7f) * multiplier;
    if ((byte & 0x80) === 0) {
      if (byte === 0 && i > 1 && version === 5) {
        throw new ProtocolError("the remaining length is not in its shortest form", {
          rule: "MQTT-1.5.5-1",
        });
      }
      headerRemaining = value;
      return i + 1;
    }
    multiplier *= 128;
  }
  throw new ProtocolError("the remaining length takes more than 4 bytes");
}

/**
 * Decodes exactly one whole frame (fixed header, remaining length, body) with
 * protocol `version` (a CONNECT decodes with the level it declares). Throws a
 * {@linkcode ProtocolError} when it is malformed, truncated or followed by
 * more bytes. Binary fields are views into `frame`.
 *
 * @example
 * ```ts
 * import { decodePacket } from "./decode.ts";
 * console.log(decodePacket(Uint8Array.of(0x40, 2, 0, 7), 4)); // { cmd: "puback", messageId: 7 }
 * ```
 */
export function decodePacket(frame: Uint8Array, version: ProtocolVersion): Packet {
  if (frame.length === 0) throw new ProtocolError("empty frame");
  const first = frame[0];
  checkFirst(first, version);
  const headerLength = readHeader(frame, 0, frame.length, version);
  if (headerLength === 0) throw new ProtocolError("the frame ends inside its fixed header");
  const remaining = headerRemaining;
  checkRemaining(first, remaining, version);
  const total = headerLength + remaining;
  if (total !== frame.length) {
    throw new ProtocolError(
      `the frame has ${frame.length} bytes but its fixed header makes it ${total}`,
    );
  }
  return decodeBody(first, frame, headerLength, total, version);
}

/**
 * Incremental decoder for one connection's byte stream. {@linkcode push}
 * takes bytes cut anywhere (a packet may come in any number of chunks, a chunk
 * may hold many packets) and calls back once per whole packet, in order.
 *
 * A large frame that arrives in small chunks is collected as a list of chunks
 * and copied once, when it is complete. Decoded payloads and binary fields are
 * views into the chunks pushed (or into that one copy): do not reuse or
 * overwrite a buffer after pushing it.
 *
 * After a {@linkcode ProtocolError} the decoder is dead: every later `push`
 * throws that error again. If `onPacket` throws, its error propagates out of
 * `push` and the bytes after that packet are kept for the next `push`.
 *
 * @example
 * ```ts
 * import { PacketDecoder } from "./decode.ts";
 * const decoder = new PacketDecoder({ protocolVersion: 4 });
 * decoder.push(Uint8Array.of(0x40, 2), (p) => console.log(p));
 * decoder.push(Uint8Array.of(0, 7, 0xd0, 0), (p) => console.log(p)); // puback 7, then pingresp
 * ```
 */
export class PacketDecoder {
  /** Largest whole frame accepted, in bytes. */
  readonly maxPacketSize: number;
  #version: ProtocolVersion;
  #parts: Uint8Array[] = [];
  #partsLength = 0;
  /** Size of the incomplete frame once its header is known; 0 before. */
  #frameLength = 0;
  #failure: unknown = undefined;

  /** A decoder for `options.protocolVersion`. */
  constructor(options: PacketDecoderOptions) {
    this.#version = checkVersion(options.protocolVersion);
    const max = options.maxPacketSize ?? MAX_PACKET_SIZE;
    if (!Number.isInteger(max) || max < 2 || max > MAX_PACKET_SIZE) {
      throw new RangeError(`maxPacketSize must be an integer in 2..${MAX_PACKET_SIZE}, got ${max}`);
    }
    this.maxPacketSize = max;
  }

  /**
   * Protocol level of the packets that follow. A server sets it from the
   * CONNECT it decoded; set inside `onPacket`, it applies to the very next
   * packet of the same chunk.
   */
  get protocolVersion(): ProtocolVersion {
    return this.#version;
  }

  set protocolVersion(version: ProtocolVersion) {
    this.#version = checkVersion(version);
  }

  /** Bytes held of a frame that is not complete yet. */
  get buffered(): number {
    return this.#partsLength;
  }

  /** The error that stopped the decoder, if one did. */
  get error(): unknown {
    return this.#failure;
  }

  /** Decodes the whole packets `chunk` completes, calling `onPacket` for each, in order. */
  push(chunk: Uint8Array, onPacket: (packet: Packet) => void): void {
    if (this.#failure !== undefined) throw this.#failure;
    let data = chunk;
    let off = 0;
    let delivering = false;
    try {
      if (this.#partsLength > 0) {
        if (this.#frameLength === 0) {
          data = this.#join(chunk);
        } else {
          const need = this.#frameLength - this.#partsLength;
          if (chunk.length < need) {
            this.#keep(chunk, this.#frameLength);
            return;
          }
          const frame = this.#join(chunk.subarray(0, need));
          off = need;
          const packet = this.#decodeFrame(frame);
          delivering = true;
          onPacket(packet);
          delivering = false;
        }
      }
      const end = data.length;
      while (off < end) {
        const version = this.#version;
        const first = data[off];
        if (
          first === 0x40 && data[off + 1] === 2 && off + 4 <= end &&
          (data[off + 2] | data[off + 3]) !== 0
        ) {
          const messageId = (data[off + 2] << 8) | data[off + 3];
          off += 4;
          delivering = true;
          onPacket(
            version === 5
              ? { cmd: "puback", messageId, reasonCode: 0 }
              : { cmd: "puback", messageId },
          );
          delivering = false;
          continue;
        }
        checkFirst(first, version);
        const headerLength = readHeader(data, off, end, version);
        if (headerLength === 0) break;
        const remaining = headerRemaining;
        const total = headerLength + remaining;
        this.#checkSize(first, remaining, total, version);
        if (off + total > end) {
          this.#keep(data.subarray(off), total);
          off = end;
          break;
        }
        const packet = decodeBody(first, data, off + headerLength, off + total, version);
        off += total;
        delivering = true;
        onPacket(packet);
        delivering = false;
      }
      if (off < end) this.#keep(data.subarray(off), 0);
    } catch (err) {
      if (!delivering) {
        this.#failure = err;
        this.#parts = [];
        this.#partsLength = 0;
      } else if (off < data.length) {
        this.#keep(data.subarray(off), 0);
      }
      throw err;
    }
  }

  #checkSize(first: number, remaining: number, total: number, version: ProtocolVersion): void {
    if (total > this.maxPacketSize) {
      throw new ProtocolError(
        `${
          PACKET_NAMES[first >> 4]
        } of ${total} bytes exceeds the maximum packet size of ${this.maxPacketSize} bytes`,
      );
    }
    checkRemaining(first, remaining, version);
  }

  /** Holds `bytes` (a view) of a frame of `frameLength` bytes (0: size not known yet). */
  #keep(bytes: Uint8Array, frameLength: number): void {
    if (bytes.length === 0) return;
    this.#parts.push(bytes);
    this.#partsLength += bytes.length;
    if (frameLength !== 0) this.#frameLength = frameLength;
  }

  /** The held bytes followed by `tail`, in one new array; clears the held bytes. */
  #join(tail: Uint8Array): Uint8Array {
    const joined = new Uint8Array(this.#partsLength + tail.length);
    let pos = 0;
    for (const part of this.#parts) {
      joined.set(part, pos);
      pos += part.length;
    }
    joined.set(tail, pos);
    this.#parts = [];
    this.#partsLength = 0;
    this.#frameLength = 0;
    return joined;
  }

  /** Decodes a whole frame whose header was checked when it began. */
  #decodeFrame(frame: Uint8Array): Packet {
    const version = this.#version;
    const headerLength = readHeader(frame, 0, frame.length, version);
    return decodeBody(frame[0], frame, headerLength, frame.length, version);
  }
}

function checkVersion(version: unknown): ProtocolVersion {
  if (version !== 4 && version !== 5) {
    throw new RangeError(`protocolVersion must be 4 or 5, got ${version}`);
  }
  return version;
}
