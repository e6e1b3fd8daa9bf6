/**
 * The reconnect supervisor: one connect sequence (network up, dial, MQTT
 * handshake, the clean-session dance) used by `connect()` and by the
 * background loop that keeps a session up until `disconnect()`, with
 * back-off, network bounces and sticky failover across a server list.
 *
 * @module
 */

import { errorText } from "../_bytes.ts";
import { Backoff } from "../backoff.ts";
import type { Clock, TimerHandle } from "../core/clock.ts";
import {
  ClientClosedError,
  ConnectionRefusedError,
  ResponseTimeoutError,
  ServerDisconnectError,
} from "../errors.ts";
import type { Logger } from "../logger.ts";
import type { Connection, Dialer, Endpoint } from "../transport/connection.ts";
import type { NetInterface } from "../wifi.ts";
import type { Engine } from "./_engine.ts";
import { describeEndpoint, parseServerReference } from "./_endpoints.ts";

/** Settings of a {@linkcode Supervisor}. */
export interface SupervisorOptions {
  /** The brokers, in preference order (one for a single server). */
  endpoints: readonly Endpoint[];
  /** Opens connections. */
  dial: Dialer;
  /** The network the client may bounce. */
  net: NetInterface;
  /** Time and timers. */
  clock: Clock;
  /** Randomness for back-off jitter. */
  random: () => number;
  /** Where log lines go. */
  logger: Logger;
  /** First back-off delay, ms. */
  initialDelayMs: number;
  /** Back-off cap, ms (also the wait after a refusal). */
  maxDelayMs: number;
  /** Failed attempts on one server before moving on (and, once round the list, bouncing). */
  bounceAfter: number;
  /** How long a connection attempt (TCP, TLS, WebSocket) may take before it is given up, ms. */
  responseTimeMs: number;
  /** Client id, for log lines. */
  clientId: string;
  /** Runs after every successful connection. */
  onConnect(sessionPresent: boolean): Promise<void>;
  /** Runs before each attempt (opens the session store); a failure is retried like a failed dial. */
  prepare?(): Promise<void>;
}

/** Reported to the simulator: each connection attempt and each back-off sleep. */
export interface SupervisorProbe {
  /** A dial is about to start. */
  dialing?(endpoint: Endpoint): void;
  /** The supervisor sleeps `delayMs` before the next attempt; `reset` if back-off started over. */
  sleeping?(delayMs: number, attempt: number): void;
}

/** See the module doc. */
export class Supervisor {
  readonly #o: SupervisorOptions;
  readonly #engine: Engine;
  readonly #backoff: Backoff;
  readonly #lifetime = new AbortController();
  readonly probe: SupervisorProbe = {};
  #current = 0; // sticky: the server that worked last
  #redirect: Endpoint | undefined; // a server the broker named (v5 server reference)
  #failuresHere = 0; // failed attempts on the current server in a row
  #serversFailed = 0; // servers that failed bounceAfter times, since a success or a bounce
  #refusals = 0; // refusals since the last success
  #netCameUp = false;
  #unlistenNet: (() => void) | undefined;
  #wake: (() => void) | undefined;
  #linkDown: (() => void) | undefined;
  #loop: Promise<void> | undefined;
  #stopped = false;
  #dialAbort: AbortController | undefined;

  /** A supervisor for `engine`. */
  constructor(engine: Engine, options: SupervisorOptions) {
    this.#engine = engine;
    this.#o = options;
    this.#backoff = new Backoff({
      initialDelayMs: options.initialDelayMs,
      maxDelayMs: options.maxDelayMs,
      random: options.random,
    });
  }

  /** The endpoint the next attempt goes to. */
  get endpoint(): Endpoint {
    return this.#redirect ?? this.#o.endpoints[this.#current];
  }

  /** Back-off attempts since the last accepted connection (for invariants). */
  get backoffAttempts(): number {
    return this.#backoff.attempts;
  }

  /** The engine's live link went down (with the connection's error): wake the loop. */
  linkDown(error?: Error): void {
    if (error !== undefined) this.#redirectBy(error);
    const wake = this.#linkDown;
    this.#linkDown = undefined;
    wake?.();
  }

  /**
   * `connect()`: one connect sequence on each server at most, from the
   * current one round the list, until one works (a server the broker
   * redirects to counts as one of them). Resolves with sessionPresent;
   * rejects with the last attempt's error. `signal` aborts it.
   */
  async establish(signal?: AbortSignal): Promise<boolean> {
    const servers = this.#o.endpoints.length;
    for (let attempt = 1;; attempt++) {
      try {
        return await this.#establish(signal);
      } catch (error) {
        if (attempt >= servers || signal?.aborted || this.#lifetime.signal.aborted) throw error;
        this.#o.logger.warn(`connection attempt failed: ${errorText(error)}`);
        if (!this.#redirectBy(error)) this.#moveOn();
      }
    }
  }

  /**
   * One connect sequence: network up, dial, handshake (twice for the
   * clean-session dance). Resolves with sessionPresent; rejects with the
   * attempt's error. `signal` aborts it.
   */
  async #establish(signal?: AbortSignal): Promise<boolean> {
    const lifetime = this.#lifetime.signal;
    const abort = new AbortController();
    this.#dialAbort = abort;
    const onAbort = () => {
      const reason = signal?.aborted ? signal.reason : lifetime.reason;
      abort.abort(reason);
      this.#engine.abortConnection(asError(reason));
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    lifetime.addEventListener("abort", onAbort, { once: true });
    try {
      for (;;) {
        // A listener added to an aborted signal never fires: look at it directly.
        lifetime.throwIfAborted();
        abort.signal.throwIfAborted();
        const endpoint = this.endpoint;
        const o = this.#o;
        o.logger.info(`connecting to ${describeEndpoint(endpoint)} as ${o.clientId}`);
        this.probe.dialing?.(endpoint);
        const conn = await this.#dial(endpoint, abort);
        if (abort.signal.aborted) {
          conn.close();
          abort.signal.throwIfAborted();
        }
        const outcome = await this.#engine.handshake(conn, describeEndpoint(endpoint));
        if (outcome.kind === "redial") continue;
        if (outcome.kind === "failed") throw outcome.error;
        o.logger.info(
          `connected to ${describeEndpoint(endpoint)} (session ${
            outcome.sessionPresent ? "resumed" : "new"
          })`,
        );
        this.#connected();
        return outcome.sessionPresent;
      }
    } finally {
      signal?.removeEventListener("abort", onAbort);
      lifetime.removeEventListener("abort", onAbort);
      if (this.#dialAbort === abort) this.#dialAbort = undefined;
    }
  }

  /**
   * Dials with a deadline: an unanswered SYN or a stalled TLS or WebSocket
   * handshake would otherwise hold the client for the operating system's
   * timeout (minutes), or for ever.
   */
  async #dial(endpoint: Endpoint, abort: AbortController): Promise<Connection> {
    const o = this.#o;
    const limit = o.responseTimeMs;
    const timer = o.clock.setTimer(() => {
      abort.abort(
        new ResponseTimeoutError(
          `no connection to ${describeEndpoint(endpoint)} within ${limit} ms`,
        ),
      );
    }, limit);
    try {
      return await o.dial(endpoint, { signal: abort.signal });
    } catch (error) {
      throw abort.signal.aborted ? abort.signal.reason : error;
    } finally {
      o.clock.clearTimer(timer);
    }
  }

  #connected(): void {
    this.#backoff.reset();
    this.#failuresHere = 0;
    this.#serversFailed = 0;
    this.#refusals = 0;
    this.#redirect = undefined; // a redirect is for one connection: the list stays as configured
  }

  /** Starts the background loop (after connect() succeeded, or for start()). */
  run(): void {
    const o = this.#o;
    this.#unlistenNet = o.net.onUp(() => {
      this.#netCameUp = true;
      this.#wake?.();
    });
    this.#loop = this.#supervise().catch((error) => {
      o.logger.error(`reconnect loop stopped unexpectedly: ${errorText(error)}`);
    });
  }

  async #supervise(): Promise<void> {
    const o = this.#o;
    while (!this.#stopped) {
      if (this.#engine.connected) {
        await new Promise<void>((resolve) => this.#linkDown = resolve);
        if (this.#stopped) return;
        // The first delay before redialling: a broker that accepts and drops at
        // once (a session takeover by a client with the same id, a redirect
        // loop) would otherwise be redialled in a tight loop.
        const delay = this.#backoff.next();
        this.probe.sleeping?.(delay, this.#backoff.attempts);
        await this.#sleep(delay);
        continue;
      }
      if (this.#netCameUp) {
        // "Up again": try TCP before any bounce.
        this.#netCameUp = false;
        this.#failuresHere = 0;
        this.#serversFailed = 0;
      }
      let delay: number;
      try {
        await o.prepare?.();
        if (this.#stopped) return;
      } catch (error) {
        if (this.#stopped) return;
        // Not the network's fault (another process holds the store, say): wait and retry.
        delay = this.#backoff.next();
        o.logger.error(`${errorText(error)}; retrying in ${(delay / 1000).toFixed(2)} s`);
        await this.#sleep(delay);
        continue;
      }
      try {
        const bounce = this.#serversFailed >= o.endpoints.length;
        if (bounce) {
          this.#serversFailed = 0;
          o.logger.warn(
            `${o.bounceAfter} connection attempts failed on every server: bouncing the network`,
          );
        }
        await o.net.ensureUp({ bounce, signal: this.#lifetime.signal });
        if (this.#stopped) return;
        const sessionPresent = await this.#establish();
        o.onConnect(sessionPresent); // in the background: never rejects
        continue;
      } catch (error) {
        if (this.#stopped) return;
        delay = this.#failed(error);
      }
      this.probe.sleeping?.(delay, this.#backoff.attempts);
      await this.#sleep(delay);
    }
  }

  /** Notes a failed attempt, moves on when due; returns how long to wait before the next. */
  #failed(error: unknown): number {
    const o = this.#o;
    if (this.#redirectBy(error)) {
      return this.#backoff.next();
    }
    if (error instanceof ConnectionRefusedError) {
      // The network is fine: a refusal moves on (with a list) but never bounces.
      this.#refusals++;
      if (o.endpoints.length > 1) this.#moveOn();
      const delay = this.#refusals >= o.endpoints.length
        ? this.#backoff.cap()
        : this.#backoff.next();
      o.logger.error(`${error.message}; retrying in ${(delay / 1000).toFixed(1)} s`);
      return delay;
    }
    this.#redirect = undefined;
    this.#failuresHere++;
    if (this.#failuresHere >= o.bounceAfter) {
      this.#serversFailed++;
      this.#moveOn();
    }
    const delay = this.#backoff.next();
    o.logger.warn(
      `connection attempt failed: ${errorText(error)}; retrying in ${(delay / 1000).toFixed(2)} s`,
    );
    return delay;
  }

  /** A v5 "use another server" or "server moved": go where the broker says, or to the next one. */
  #redirectBy(error: unknown): boolean {
    const code = error instanceof ServerDisconnectError || error instanceof ConnectionRefusedError
      ? error.reasonCode
      : 0;
    if (code !== 0x9c && code !== 0x9d) return false;
    const reference = (error as ServerDisconnectError).serverReference;
    const target = parseServerReference(reference, this.endpoint);
    if (target !== undefined) {
      this.#o.logger.warn(`the broker sent the client to ${describeEndpoint(target)}`);
      this.#redirect = target;
    } else {
      this.#moveOn();
    }
    return true;
  }

  #moveOn(): void {
    const o = this.#o;
    this.#redirect = undefined;
    this.#failuresHere = 0;
    if (o.endpoints.length > 1) {
      this.#current = (this.#current + 1) % o.endpoints.length;
      o.logger.warn(`moving on to ${describeEndpoint(o.endpoints[this.#current])}`);
    }
  }

  /** Sleeps `ms`, cut short by the network coming back up or by stop(). */
  #sleep(ms: number): Promise<void> {
    const clock = this.#o.clock;
    return new Promise((resolve) => {
      let timer: TimerHandle | undefined = undefined;
      const done = () => {
        clock.clearTimer(timer);
        this.#wake = undefined;
        resolve();
      };
      timer = clock.setTimer(done, ms);
      this.#wake = done;
    });
  }

  /** Stops the loop and any attempt under way; resolves when the loop has ended. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#lifetime.abort(new ClientClosedError("client is disconnecting"));
    this.#unlistenNet?.();
    this.#unlistenNet = undefined;
    this.#wake?.();
    this.linkDown();
    await this.#loop;
  }
}

function asError(reason: unknown): Error {
  return reason instanceof Error ? reason : new ClientClosedError(String(reason));
}
