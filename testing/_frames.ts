/**
 * Frames on a fake-broker connection: the record kept of each, and the
 * splitting of a byte stream into whole frames.
 *
 * @module
 */

import { concat, frameLength } from "../_bytes.ts";
import type { Packet } from "./packets.ts";

export { concat };

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
      if (length === -1) throw new Error("malformed remaining length (more than 4 bytes)");
      if (length === undefined || offset + length > bytes.length) break;
      frames.push(bytes.slice(offset, offset + length));
      offset += length;
    }
    this.#pending = bytes.slice(offset);
    return frames;
  }
}
