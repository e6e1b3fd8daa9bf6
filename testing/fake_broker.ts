/**
 * {@linkcode FakeBroker}: a fake MQTT broker on a local TCP port, scripted by
 * the test or working as a real broker over {@linkcode BrokerCore}.
 *
 * @module
 */

import type { BrokerCoreOptions } from "./_broker_core.ts";
import { BrokerHost } from "./_broker_host.ts";
import type { FrameRecord } from "./_frames.ts";
import { DEFAULT_TIMEOUT_MS, FakeConnection, type TimeoutOptions } from "./fake_connection.ts";
import type { Packet } from "./packets.ts";

/** Options of {@linkcode FakeBroker.start}. */
export interface FakeBrokerOptions {
  /** `"scripted"` (default): the test plays the broker. `"broker"`: a working broker. */
  mode?: "scripted" | "broker";
  /** Address to listen on. Default `"127.0.0.1"`. */
  hostname?: string;
  /** Port to listen on. Default 0: a free port, see {@linkcode FakeBroker.port}. */
  port?: number;
  /**
   * Broker mode: the broker's settings (Receive Maximum, Maximum Packet
   * Size, topic aliases, maximum QoS, QoS 2 limits, authentication and
   * subscription checks...). Filters starting with `reject/` are refused
   * whatever `authorizeSubscribe` says.
   */
  broker?: BrokerCoreOptions;
}

/** Options of {@linkcode FakeBroker.waitFor}. */
export interface WaitForOptions extends TimeoutOptions {
  /** What is being waited for, named in the timeout error. */
  what?: string;
}

/** Options of {@linkcode FakeBroker.restart}. */
export interface RestartOptions {
  /** Whether sessions and retained messages survive, as with mosquitto's persistence. */
  persistence: boolean;
}

interface Waiter<T> {
  resolve(value: T): void;
  reject(error: Error): void;
  timer: ReturnType<typeof setTimeout>;
}

/**
 * A fake MQTT broker (3.1.1 and 5) on a local TCP port, scripted by the test
 * or working as a real broker (see the module documentation of
 * `testing.ts`). Close it with {@linkcode close}, or `await using`.
 *
 * @example A scripted test
 * ```ts ignore
 * import { FakeBroker } from "./testing.ts";
 *
 * Deno.test("the client re-sends an un-acked PUBLISH after a drop", async () => {
 *   await using broker = await FakeBroker.start();
 *   // start a client against broker.hostname:broker.port, then:
 *   const first = await broker.accept();
 *   await first.handshake();
 *   first.dropAfterPublishes(1);
 *   const original = await first.expect("publish");
 *   const second = await broker.accept();
 *   await second.handshake({ sessionPresent: true });
 *   const resent = await second.expect("publish");
 *   if (!resent.dup || resent.messageId !== original.messageId) throw new Error("not re-sent");
 *   await broker.waitFor(() => broker.framesOf("publish", "toBroker").length === 2, {
 *     what: "two PUBLISH frames",
 *   });
 * });
 * ```
 *
 * @example Broker mode, restarted without persistence
 * ```ts ignore
 * import { FakeBroker } from "./testing.ts";
 * await using broker = await FakeBroker.start({ mode: "broker", broker: { receiveMaximum: 5 } });
 * // ... clients connect to broker.hostname:broker.port and exchange messages ...
 * await broker.restart({ persistence: false }); // every session and retained message is gone
 * ```
 */
export class FakeBroker implements AsyncDisposable {
  /** The address the broker listens on. */
  readonly hostname: string;
  /** The port the broker listens on (the free port chosen when started with port 0). */
  readonly port: number;
  /** Every frame on every connection, both directions, in order. */
  readonly frames: FrameRecord[] = [];

  readonly #listener: Deno.TcpListener;
  readonly #host: BrokerHost | undefined;
  readonly #connections = new Set<FakeConnection>();
  readonly #allConnections: FakeConnection[] = [];
  readonly #acceptQueue: FakeConnection[] = [];
  readonly #acceptWaiters: Waiter<FakeConnection>[] = [];
  readonly #watchers = new Set<() => void>();
  readonly #acceptLoop: Promise<void>;
  #connectionCount = 0;
  #refusedCount = 0;
  #refusing = false;
  #closing: Promise<void> | undefined;

  private constructor(listener: Deno.TcpListener, host: BrokerHost | undefined) {
    this.#listener = listener;
    const addr = listener.addr;
    this.hostname = addr.hostname;
    this.port = addr.port;
    this.#host = host;
    this.#acceptLoop = this.#runAcceptLoop();
  }

  /** Starts listening (on 127.0.0.1 and a free port unless told otherwise). */
  // deno-lint-ignore require-await
  static async start(options: FakeBrokerOptions = {}): Promise<FakeBroker> {
    const mode = options.mode ?? "scripted";
    if (mode !== "scripted" && mode !== "broker") {
      throw new TypeError(`mode must be "scripted" or "broker", got ${mode}`);
    }
    const host = mode === "broker" ? new BrokerHost(options.broker) : undefined;
    const listener = Deno.listen({ // throws (so start() rejects) if the port is taken
      hostname: options.hostname ?? "127.0.0.1",
      port: options.port ?? 0,
      transport: "tcp",
    });
    return new FakeBroker(listener, host);
  }

  /** How many connections have been accepted so far (refused ones not counted). */
  get connectionCount(): number {
    return this.#connectionCount;
  }

  /** How many connections were closed at once because of {@linkcode refuseConnections}. */
  get refusedCount(): number {
    return this.#refusedCount;
  }

  /** The frames whose packet is a `cmd` (e.g. `"publish"`), optionally in one direction only. */
  framesOf(cmd: Packet["cmd"], direction?: "toBroker" | "toClient"): FrameRecord[] {
    return this.frames.filter((frame) =>
      frame.packet?.cmd === cmd && (direction === undefined || frame.direction === direction)
    );
  }

  /**
   * The next client connection not yet handed out (connections are queued
   * if they arrive before the call). Rejects after `timeoutMs` (default 5000).
   */
  accept(options: TimeoutOptions = {}): Promise<FakeConnection> {
    const queued = this.#acceptQueue.shift();
    if (queued) return Promise.resolve(queued);
    if (this.#closing) return Promise.reject(new Error("the fake broker is closed"));
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    return new Promise((resolve, reject) => {
      const waiter: Waiter<FakeConnection> = {
        resolve,
        reject,
        timer: setTimeout(() => {
          this.#acceptWaiters.splice(this.#acceptWaiters.indexOf(waiter), 1);
          reject(
            new Error(
              `no client connected within ${timeoutMs} ms ` +
                `(${this.#connectionCount} connection(s) accepted so far)`,
            ),
          );
        }, timeoutMs),
      };
      this.#acceptWaiters.push(waiter);
    });
  }

  /**
   * While `refuse` is true, every accepted socket is closed at once, as a
   * broker that is down while its port still accepts TCP.
   */
  refuseConnections(refuse: boolean): void {
    this.#refusing = refuse;
  }

  /** Closes every open client connection (both modes; in broker mode wills are published). */
  dropAll(): void {
    for (const conn of [...this.#connections]) conn.close();
  }

  /**
   * Broker mode: restarts the broker process. Every connection is dropped
   * (no will is published: the process died); with `persistence`, sessions
   * (subscriptions, messages in flight and queued) and retained messages
   * survive, as with mosquitto's persistence, and without it everything is
   * forgotten. The broker keeps listening on the same port. Resolves when
   * the dropped connections' I/O has stopped; rejects in scripted mode.
   */
  async restart({ persistence }: RestartOptions): Promise<void> {
    if (this.#host === undefined) throw new Error("restart() needs broker mode");
    if (this.#closing) throw new Error("the fake broker is closed");
    const dropped = [...this.#connections];
    this.#host.restart(persistence);
    await Promise.all(dropped.map((conn) => conn.closed));
  }

  /**
   * Resolves once `predicate()` is true. It is checked now and after every
   * frame and connection event; rejects after `timeoutMs` (default 5000)
   * with a message naming `what`.
   */
  waitFor(predicate: () => boolean, options: WaitForOptions = {}): Promise<void> {
    const what = options.what ?? "a condition";
    try {
      if (predicate()) return Promise.resolve();
    } catch (error) {
      return Promise.reject(error);
    }
    if (this.#closing) {
      return Promise.reject(new Error(`the fake broker is closed; ${what} never happened`));
    }
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    return new Promise((resolve, reject) => {
      const finish = (error?: unknown) => {
        this.#watchers.delete(check);
        clearTimeout(timer);
        if (error === undefined) resolve();
        else reject(error);
      };
      const check = () => {
        try {
          if (this.#closing) finish(new Error(`the fake broker closed while waiting for ${what}`));
          else if (predicate()) finish();
        } catch (error) {
          finish(error);
        }
      };
      const timer = setTimeout(
        () => finish(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)),
        timeoutMs,
      );
      this.#watchers.add(check);
    });
  }

  /** Stops listening and closes every connection; resolves when all I/O has stopped. */
  close(): Promise<void> {
    this.#closing ??= this.#shutdown();
    return this.#closing;
  }

  /** Same as {@linkcode close}, for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async #shutdown(): Promise<void> {
    this.#host?.stop();
    try {
      this.#listener.close();
    } catch { /* already closed */ }
    await this.#acceptLoop;
    for (const waiter of this.#acceptWaiters.splice(0)) {
      clearTimeout(waiter.timer);
      waiter.reject(new Error("the fake broker closed while waiting for a connection"));
    }
    this.dropAll();
    await Promise.all(this.#allConnections.map((conn) => conn.closed));
    this.#notify(); // rejects pending waitFor() calls
  }

  async #runAcceptLoop(): Promise<void> {
    while (true) {
      let socket: Deno.TcpConn;
      try {
        socket = await this.#listener.accept();
      } catch {
        return; // the listener was closed
      }
      if (this.#closing || this.#refusing) {
        try {
          socket.close();
        } catch { /* already closed */ }
        if (this.#closing) return;
        this.#refusedCount++;
        this.#notify();
        continue;
      }
      socket.setNoDelay(true);
      this.#addConnection(socket);
    }
  }

  #addConnection(socket: Deno.TcpConn): void {
    const host = this.#host;
    const conn = new FakeConnection(socket, ++this.#connectionCount, {
      onFrame: (record) => {
        this.frames.push(record);
        this.#notify();
      },
      onClose: (closed) => {
        this.#connections.delete(closed);
        host?.closed(closed);
        this.#notify();
      },
      onPacket: host ? (from, packet, frame) => host.received(from, packet, frame) : undefined,
    });
    this.#connections.add(conn);
    this.#allConnections.push(conn);
    host?.accepted(conn);
    const waiter = this.#acceptWaiters.shift();
    if (waiter) {
      clearTimeout(waiter.timer);
      waiter.resolve(conn);
    } else {
      this.#acceptQueue.push(conn);
    }
    this.#notify();
  }

  #notify(): void {
    for (const check of [...this.#watchers]) check();
  }
}
