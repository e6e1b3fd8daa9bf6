/**
 * Frames on a fake-broker connection: the record kept of each, and the
 * splitting of a byte stream into whole frames.
 *
 * @module
 */

import type { Packet } from "./packets.ts";

/** One MQTT frame that crossed a fake-broker connection, in either direction. */
export interface FrameRecord {
  /** `"toBroker"` for frames the client sent, `"toClient"` for frames the broker sent. */
  direction: "toBroker" | "toClient";
  /** 1-based index of the accepted connection ({@linkcode FakeConnection.id}). */
  connection: number;
  /** `performance.now()` when the frame was read, or when its write started. */
  time: number;
  /** The raw bytes of the frame (for {@linkcode FakeConnection.sendRaw}: the raw bytes sent). */
  bytes: Uint8Array;
  /**
   * The packet, decoded (or, for frames the broker sent, as encoded) at the
   * connection's protocol level, 3.1.1 or MQTT 5; undefined for raw sends and
   * for malformed frames.
   */
  packet?: Packet;
}

/**
 * Splits a byte stream into whole MQTT frames using the fixed header's
 * remaining length, however the reads cut it.
 */
export class FrameSplitter {
  #pending: Uint8Array = new Uint8Array(0);

  /** Appends `chunk` and returns every frame now complete. Throws on a bad length field. */
  push(chunk: Uint8Array): Uint8Array[] {
    const bytes = this.#pending.length === 0 ? chunk : concat([this.#pending, chunk]);
    const frames: Uint8Array[] = [];
    let offset = 0;
    while (offset < bytes.length) {
      const length = frameLength(bytes, offset);
      if (length === undefined || offset + length > bytes.length) break;
      frames.push(bytes.slice(offset, offset + length));
      offset += length;
    }
    this.#pending = bytes.slice(offset);
    return frames;
  }
}

/** Total length of the frame at `offset`, undefined while its header is incomplete. */
function frameLength(bytes: Uint8Array, offset: number): number | undefined {
  let remaining = 0;
  let multiplier = 1;
  for (let i = 1; i <= 4; i++) {
    if (offset + i >= bytes.length) return undefined;
    const digit = bytes[offset + i];
    remaining += (digit & 0x7f) * multiplier;
    if ((digit & 0x80) === 0) return 1 + i + remaining;
    multiplier *= 128;
  }
  throw new Error("malformed remaining length (more than 4 bytes)");
}

/** The chunks one after the other, in a new array. */
export function concat(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((sum, chunk) => sum + chunk.length, 0));
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}
