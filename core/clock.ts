/**
 * Time, as the client sees it: a clock it reads, one kind of timer and a
 * "next macrotask" hook. The real one wraps `performance.now()`, `setTimeout`
 * and `setImmediate`; the simulator passes a virtual one, so the same client
 * code runs in simulated time.
 *
 * @module
 */

/** A handle returned by {@linkcode Clock.setTimer}. */
export type TimerHandle = unknown;

/** Where the client gets the time and its timers from. */
export interface Clock {
  /** Milliseconds on a monotonic clock (any origin). */
  now(): number;
  /** Calls `callback` once, `delayMs` from now (0 or less: as soon as possible). */
  setTimer(callback: () => void, delayMs: number): TimerHandle;
  /** Cancels a timer; a handle that already fired or was cleared is ignored. */
  clearTimer(handle: TimerHandle): void;
  /**
   * Calls `callback` on the next macrotask, after pending I/O callbacks: what
   * a batch of writes waits for so that one socket write carries it.
   */
  defer(callback: () => void): void;
}

// setImmediate runs right after pending I/O callbacks (about 3 µs here), where
// setTimeout(0) is clamped to milliseconds once nested. Browsers have no
// setImmediate: a MessageChannel message is the nearest macrotask there.
const immediate: (callback: () => void) => void = (() => {
  const g = globalThis as { setImmediate?: (callback: () => void) => void };
  if (typeof g.setImmediate === "function") return (callback) => g.setImmediate!(callback);
  if (typeof MessageChannel === "function") {
    const channel = new MessageChannel();
    const queue: (() => void)[] = [];
    channel.port1.onmessage = () => queue.shift()?.();
    return (callback) => {
      queue.push(callback);
      channel.port2.postMessage(0);
    };
  }
  return (callback) => void setTimeout(callback, 0);
})();

/** The real clock: `performance.now()`, `setTimeout`, `setImmediate`. */
export const realClock: Clock = {
  now: () => performance.now(),
  setTimer: (callback, delayMs) => setTimeout(callback, Math.max(0, delayMs)),
  clearTimer: (handle) => clearTimeout(handle as number),
  defer: immediate,
};
