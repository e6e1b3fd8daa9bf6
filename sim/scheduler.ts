/**
 * Virtual time: one queue of events ordered by (time, sequence). The
 * simulator runs them one at a time, and after each lets every microtask
 * the event started run to completion (a real macrotask turn), exactly as
 * the event loop would, so the real client code behaves as it does on a
 * real clock, only in simulated time and in a fixed order.
 *
 * @module
 */

import type { Clock } from "../core/clock.ts";

/** A scheduled event. */
export interface SimEvent {
  /** Virtual time, ms. */
  at: number;
  /** Tie-breaker: scheduling order. */
  seq: number;
  /** What runs. */
  run: () => void;
  /** Who scheduled it ("client", "network", "broker", "workload"). */
  owner: string;
  /** Cancelled events stay in the heap and are skipped. */
  cancelled: boolean;
}

/** Events at one virtual instant beyond which the run is a livelock. */
const STORM = 100_000;

const drain = (): Promise<void> => new Promise<void>((resolve) => setImmediate(resolve));

/** The simulator's event loop. */
export class Scheduler {
  /** Virtual time now, ms. */
  now = 0;
  /** Events run so far. */
  steps = 0;
  readonly #heap: SimEvent[] = [];
  #seq = 0;
  readonly #live = new Map<string, number>(); // owner -> events scheduled and not yet run/cancelled
  /** Errors thrown by event callbacks (a crash in a timer callback is a bug). */
  readonly errors: unknown[] = [];
  /** Set when events piled up at one instant (a zero-delay loop). */
  storm: string | undefined;
  /** Events a whole run may take; past it the run stops as "budget". */
  budget = Infinity;

  /** Runs `run` at virtual time `at` (not before now). */
  at(at: number, run: () => void, owner: string): SimEvent {
    if (this.#dead.has(owner)) {
      return { at, seq: -1, run, owner, cancelled: true }; // a dead process's timer never fires
    }
    const event: SimEvent = {
      at: Math.max(at, this.now),
      seq: this.#seq++,
      run,
      owner,
      cancelled: false,
    };
    this.#push(event);
    this.#live.set(owner, (this.#live.get(owner) ?? 0) + 1);
    return event;
  }

  /** Runs `run` `delay` ms from now. */
  after(delay: number, run: () => void, owner: string): SimEvent {
    return this.at(this.now + Math.max(0, delay), run, owner);
  }

  /** Cancels an event that has not run. */
  cancel(event: SimEvent | undefined): void {
    if (event === undefined || event.cancelled) return;
    event.cancelled = true;
    this.#live.set(event.owner, (this.#live.get(event.owner) ?? 1) - 1);
  }

  /** Owners (processes) that died: they schedule nothing any more. */
  readonly #dead = new Set<string>();

  /** Cancels every pending event of `owner` (a process that died), and all it asks later. */
  cancelAll(owner: string): void {
    this.#dead.add(owner);
    for (const event of this.#heap) {
      if (event.owner === owner && !event.cancelled) this.cancel(event);
    }
  }

  /** Whether `owner` died. */
  isDead(owner: string): boolean {
    return this.#dead.has(owner);
  }

  /** Events of `owner` scheduled and not yet run or cancelled. */
  pending(owner: string): number {
    return this.#live.get(owner) ?? 0;
  }

  /** The clock the client sees: its timers and deferrals are events owned by `owner`. */
  clock(owner = "client"): Clock {
    return {
      now: () => this.now,
      setTimer: (callback, delayMs) => this.after(delayMs, callback, owner),
      clearTimer: (handle) => this.cancel(handle as SimEvent | undefined),
      defer: (callback) => void this.at(this.now, callback, owner),
    };
  }

  /**
   * Runs events in order until `stop()` holds, the queue is empty, virtual
   * time passes `until`, or `maxSteps` events ran. Resolves with why it stopped.
   */
  async run(
    options: { until?: number; maxSteps?: number; stop?: () => boolean } = {},
  ): Promise<"stopped" | "idle" | "time" | "steps" | "storm" | "budget"> {
    const until = options.until ?? Infinity;
    const maxSteps = options.maxSteps ?? Infinity;
    let ran = 0;
    let sameTime = 0;
    for (;;) {
      if (options.stop?.()) return "stopped";
      let event = this.#pop();
      if (event === undefined) {
        // Microtasks a direct call started may still schedule something.
        await drain();
        if (options.stop?.()) return "stopped";
        event = this.#pop();
        if (event === undefined) return "idle";
      }
      if (event.at > until) {
        this.#push(event);
        this.now = until;
        return "time";
      }
      if (ran++ >= maxSteps) {
        this.#push(event);
        return "steps";
      }
      if (this.steps >= this.budget) {
        this.#push(event);
        return "budget";
      }
      if (event.at === this.now && event.owner.startsWith("client")) {
        // Time must move on: a client callback that keeps scheduling itself "now" is a livelock.
        if (++sameTime > STORM) {
          this.#push(event);
          this.storm = `over ${STORM} events at ${this.now} ms (last: ${event.owner})`;
          return "storm";
        }
      } else if (event.at !== this.now) {
        sameTime = 0;
      }
      this.now = event.at;
      this.#live.set(event.owner, (this.#live.get(event.owner) ?? 1) - 1);
      this.steps++;
      try {
        event.run();
      } catch (error) {
        this.errors.push(error);
      }
      await drain();
    }
  }

  /** Lets pending microtasks run (after a direct call into the client). */
  settle(): Promise<void> {
    return drain();
  }

  #pop(): SimEvent | undefined {
    const heap = this.#heap;
    for (;;) {
      if (heap.length === 0) return undefined;
      const top = heap[0];
      const last = heap.pop()!;
      if (heap.length > 0) {
        heap[0] = last;
        this.#down(0);
      }
      if (!top.cancelled) return top;
    }
  }

  #push(event: SimEvent): void {
    const heap = this.#heap;
    heap.push(event);
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!before(heap[i], heap[parent])) break;
      [heap[i], heap[parent]] = [heap[parent], heap[i]];
      i = parent;
    }
  }

  #down(i: number): void {
    const heap = this.#heap;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < heap.length && before(heap[l], heap[m])) m = l;
      if (r < heap.length && before(heap[r], heap[m])) m = r;
      if (m === i) return;
      [heap[i], heap[m]] = [heap[m], heap[i]];
      i = m;
    }
  }
}

function before(a: SimEvent, b: SimEvent): boolean {
  return a.at < b.at || (a.at === b.at && a.seq < b.seq);
}
