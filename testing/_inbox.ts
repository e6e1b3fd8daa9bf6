/**
 * The packets a scripted connection received and the test has not taken
 * yet, and the calls waiting for one.
 *
 * @module
 */

import type { Packet } from "./packets.ts";

interface Waiter {
  resolve(packet: Packet): void;
  reject(error: Error): void;
  what: string;
  timer: ReturnType<typeof setTimeout>;
}

/** Received packets in arrival order, handed to waiting calls first. */
export class PacketInbox {
  readonly #queue: Packet[] = [];
  readonly #waiters: Waiter[] = [];

  /** Hands `packet` to the oldest waiting call, or keeps it. */
  put(packet: Packet): void {
    const waiter = this.#waiters.shift();
    if (waiter) {
      clearTimeout(waiter.timer);
      waiter.resolve(packet);
    } else {
      this.#queue.push(packet);
    }
  }

  /**
   * The oldest packet kept, or the next to arrive; rejects with
   * `closed(what)` when `isClosed` and none is kept, or with `timedOut(what)`
   * after `timeoutMs`.
   */
  take(
    what: string,
    timeoutMs: number,
    isClosed: boolean,
    errors: { closed(what: string): Error; timedOut(what: string): Error },
  ): Promise<Packet> {
    const queued = this.#queue.shift();
    if (queued) return Promise.resolve(queued);
    if (isClosed) return Promise.reject(errors.closed(what));
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        resolve,
        reject,
        what,
        timer: setTimeout(() => {
          this.#waiters.splice(this.#waiters.indexOf(waiter), 1);
          reject(errors.timedOut(what));
        }, timeoutMs),
      };
      this.#waiters.push(waiter);
    });
  }

  /** Rejects every waiting call with `error(what)`. */
  rejectAll(error: (what: string) => Error): void {
    for (const waiter of this.#waiters.splice(0)) {
      clearTimeout(waiter.timer);
      waiter.reject(error(waiter.what));
    }
  }
}
