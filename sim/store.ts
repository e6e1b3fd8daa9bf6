/**
 * A session store in virtual time: opening and every commit take time, and a
 * process crash loses what was appended but not yet committed, as a disk
 * does. It lets the simulator find the races a store that is durable at once
 * (the memory store) hides: calls made before the store opened, ids handed
 * out twice, a PUBLISH or PUBREC written before its record was durable.
 *
 * @module
 */

import {
  SessionImage,
  type SessionStore,
  type StoredSession,
  type StoreOp,
} from "../store/store.ts";
import type { Scheduler } from "./scheduler.ts";

/** How long the simulated disk takes. */
export interface SimStoreTiming {
  /** Opening and reading the session, ms. */
  openMs: number;
  /** One commit (write + fsync), ms. */
  commitMs: number;
}

/** A {@linkcode SessionStore} on a simulated disk; see the module doc. */
export class SimStore implements SessionStore {
  readonly durableOnAppend = false;
  /** What survived on the disk, per client id. */
  readonly #disk = new Map<string, SessionImage>();
  #open: SessionImage | undefined;
  #owner = "";
  /** Appended, not yet durable, with their sequence numbers. */
  #unsynced: { seq: number; op: StoreOp }[] = [];
  #appended = 0;
  #durable = 0;
  /** Commits: each time one finishes the disk has everything up to its target. */
  commits = 0;

  constructor(readonly sched: Scheduler, readonly timing: SimStoreTiming) {}

  /** The session on disk of `clientId` (for the checker), or undefined. */
  image(clientId: string): SessionImage | undefined {
    return this.#disk.get(clientId);
  }

  /**
   * The process `owner` will use the store next. The disk's events run as
   * `<owner>:disk`: they die with the process, but are not its timers.
   */
  bind(owner: string): void {
    this.#owner = `${owner}:disk`;
  }

  open(clientId: string): Promise<StoredSession> {
    if (this.#open !== undefined) {
      return Promise.reject(new Error("SimStore: another client holds the session"));
    }
    let image = this.#disk.get(clientId);
    if (image === undefined) {
      image = new SessionImage();
      this.#disk.set(clientId, image);
    }
    this.#open = image;
    const session = image.session();
    return new Promise((resolve) => {
      this.sched.after(this.timing.openMs, () => resolve(session), this.#owner);
    });
  }

  append(ops: readonly StoreOp[]): void {
    if (this.#open === undefined) throw new Error("SimStore: not open");
    for (const op of ops) this.#unsynced.push({ seq: ++this.#appended, op });
  }

  commit(): Promise<void> {
    if (this.#open === undefined) return Promise.reject(new Error("SimStore: not open"));
    const target = this.#appended;
    if (target <= this.#durable) return Promise.resolve();
    const image = this.#open;
    return new Promise((resolve) => {
      this.sched.after(this.timing.commitMs, () => {
        let n = 0;
        while (n < this.#unsynced.length && this.#unsynced[n].seq <= target) {
          image.apply(this.#unsynced[n].op);
          n++;
        }
        this.#unsynced.splice(0, n);
        if (target > this.#durable) this.#durable = target;
        this.commits++;
        resolve();
      }, this.#owner);
    });
  }

  async close(): Promise<void> {
    if (this.#open === undefined) return;
    await this.commit();
    this.#open = undefined;
  }

  /** The process died: what was not durable is gone, and the lock with it. */
  crash(): void {
    this.#unsynced = [];
    this.#durable = this.#appended;
    this.#open = undefined;
  }
}
