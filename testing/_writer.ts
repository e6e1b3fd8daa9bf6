/**
 * The write side of a fake-broker connection: frames written in call order,
 * each recorded when its write starts, and the Nagle emulation that holds
 * frames back until the client sends something.
 *
 * @module
 */

import { concat } from "./_frames.ts";
import type { Packet } from "./packets.ts";

/** A frame to write: its bytes and, unless raw, its packet. */
export interface OutgoingFrame {
  /** The encoded frame. */
  bytes: Uint8Array;
  /** The packet, for the record; undefined for raw bytes. */
  packet: Packet | undefined;
}

/** What the writer needs from its connection. */
export interface WriterHost {
  /** Whether writing must stop (closed or silenced). */
  stopped(): boolean;
  /** Records frames whose write starts now, at `time`. */
  record(frames: OutgoingFrame[], time: number): void;
  /** The socket write failed: the client is gone. */
  failed(): void;
}

/** Serialized, recorded socket writes with an optional Nagle emulation. */
export class FrameWriter {
  readonly #conn: Deno.Conn;
  readonly #host: WriterHost;
  #chain: Promise<void> = Promise.resolve();
  #nagle = false;
  /** Nagle: a write the client has not yet "ACKed" by sending. */
  #unacknowledged = false;
  #held: OutgoingFrame[] = [];

  /** A writer for `conn`. */
  constructor(conn: Deno.Conn, host: WriterHost) {
    this.#conn = conn;
    this.#host = host;
  }

  /** Resolves when every write started so far has finished. */
  get idle(): Promise<void> {
    return this.#chain;
  }

  /** Whether the Nagle emulation is on. */
  get nagle(): boolean {
    return this.#nagle;
  }

  /** Turns the Nagle emulation on or off; off releases what is held. */
  set nagle(on: boolean) {
    this.#nagle = on;
    if (!on) this.clientSpoke();
  }

  /** Writes `frame` after earlier writes, or holds it back under Nagle. */
  write(frame: OutgoingFrame): Promise<void> {
    if (this.#nagle && this.#unacknowledged) {
      this.#held.push(frame);
      return Promise.resolve();
    }
    if (this.#nagle) this.#unacknowledged = true;
    return this.#writeFrames([frame]);
  }

  /** Runs `step` once the writes already queued are done. */
  after(step: () => void): void {
    this.#chain = this.#chain.then(step);
  }

  /** Data from the client carries its TCP ACK: what Nagle held goes out now, as one segment. */
  clientSpoke(): void {
    this.#unacknowledged = false;
    if (this.#held.length === 0 || this.#host.stopped()) return;
    const held = this.#held;
    this.#held = [];
    this.#unacknowledged = this.#nagle;
    this.#writeFrames(held);
  }

  /** Whether frames are held back or Nagle is on (the client's data must release them). */
  get holding(): boolean {
    return this.#nagle || this.#held.length > 0;
  }

  /** Records `frames` and writes them as one socket write, after earlier writes. */
  #writeFrames(frames: OutgoingFrame[]): Promise<void> {
    const write = this.#chain.then(async () => {
      if (this.#host.stopped()) return;
      this.#host.record(frames, performance.now());
      const bytes = frames.length === 1 ? frames[0].bytes : concat(frames.map((f) => f.bytes));
      try {
        let offset = 0;
        while (offset < bytes.length) offset += await this.#conn.write(bytes.subarray(offset));
      } catch {
        this.#host.failed();
      }
    });
    this.#chain = write.catch(() => {});
    return write;
  }
}
