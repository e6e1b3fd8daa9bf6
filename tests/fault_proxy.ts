/**
 * A fault-injecting TCP proxy on 127.0.0.1 that tests put between a client and
 * a real broker: cut every connection, go silent (half-open), refuse new
 * connections, add latency, all while preserving the byte order exactly.
 *
 * @module
 */

const HOSTNAME = "127.0.0.1";
const CHUNK = 64 * 1024;

/** Something a writer loop can sleep on until it is poked or a deadline passes. */
class Wakeup {
  #resolve: (() => void) | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;

  /** Resolves on `notify()`, or after `ms` when given. */
  wait(ms?: number): Promise<void> {
    return new Promise((resolve) => {
      this.#resolve = resolve;
      if (ms !== undefined) this.#timer = setTimeout(() => this.notify(), Math.max(0, ms));
    });
  }

  notify(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    const resolve = this.#resolve;
    this.#resolve = undefined;
    resolve?.();
  }
}

/** An MQTT frame seen by the proxy (its fixed header), as it was read. */
export interface TappedFrame {
  /** Which way it went. */
  direction: "toBroker" | "toClient";
  /** The MQTT packet type (1 CONNECT ... 12 PINGREQ, 13 PINGRESP, 14 DISCONNECT). */
  type: number;
  /** `performance.now()` when the proxy read it. */
  at: number;
  /** The frame's first bytes (up to 64: fixed header, and the variable header of small packets). */
  head: Uint8Array;
}

/** Splits one direction's byte stream into frames, however reads cut it, and records each. */
class FrameTap {
  #pending = new Uint8Array(0);

  constructor(readonly direction: TappedFrame["direction"], readonly out: TappedFrame[]) {}

  push(chunk: Uint8Array, at: number): void {
    const bytes = new Uint8Array(this.#pending.length + chunk.length);
    bytes.set(this.#pending);
    bytes.set(chunk, this.#pending.length);
    let offset = 0;
    for (;;) {
      let remaining = 0;
      let multiplier = 1;
      let i = 1;
      for (; i <= 4 && offset + i < bytes.length; i++) {
        remaining += (bytes[offset + i] & 0x7f) * multiplier;
        if ((bytes[offset + i] & 0x80) === 0) break;
        multiplier *= 128;
      }
      if (offset + i >= bytes.length || i > 4) break; // header incomplete (or garbage: stop)
      const total = 1 + i + remaining;
      if (offset + total > bytes.length) break;
      const head = bytes.slice(offset, offset + Math.min(total, 64));
      this.out.push({ direction: this.direction, type: bytes[offset] >> 4, at, head });
      offset += total;
    }
    this.#pending = bytes.slice(offset);
  }
}

interface Item {
  /** `performance.now()` before which the item must not be written. */
  releaseAt: number;
  /** Bytes to forward, or `null` for end of stream (half-close the other side). */
  data: Uint8Array | null;
}

async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < data.length) offset += await conn.write(data.subarray(offset));
}

/** One proxied connection: the client side and the broker side. */
class Pair {
  closed = false;
  readonly done: Promise<void>;
  readonly #wakers: Wakeup[] = [];

  constructor(
    readonly proxy: FaultProxy,
    readonly client: Deno.Conn,
    readonly server: Deno.Conn,
    onClose: () => void,
  ) {
    const up = this.#pump(client, server);
    const down = this.#pump(server, client);
    this.done = Promise.all([up, down]).then(() => {
      this.close();
      onClose();
    });
  }

  /** Pokes both writer loops (blackhole switched off, delay changed, closing). */
  poke(): void {
    for (const waker of this.#wakers) waker.notify();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const conn of [this.client, this.server]) {
      try {
        conn.close();
      } catch {
        // Already closed.
      }
    }
    this.poke();
  }

  /** Reads `from` into a FIFO queue and writes it to `to` when due: one order, one writer. */
  async #pump(from: Deno.Conn, to: Deno.Conn): Promise<void> {
    const queue: Item[] = [];
    const tap = new FrameTap(from === this.client ? "toBroker" : "toClient", this.proxy.frames);
    const waker = new Wakeup();
    this.#wakers.push(waker);
    let readerDone = false;

    const reader = (async () => {
      const buffer = new Uint8Array(CHUNK);
      try {
        while (!this.closed) {
          const n = await from.read(buffer);
          const now = performance.now();
          const releaseAt = now + this.proxy.delayMs;
          if (n !== null) tap.push(buffer.subarray(0, n), now);
          queue.push({ releaseAt, data: n === null ? null : buffer.slice(0, n) });
          waker.notify();
          if (n === null) break;
        }
      } catch {
        // Reset or closed by cutAll(): the pair goes down.
        this.close();
      } finally {
        readerDone = true;
        waker.notify();
      }
    })();

    try {
      while (!this.closed) {
        const head = queue[0];
        if (head === undefined) {
          if (readerDone) break;
          await waker.wait();
          continue;
        }
        if (this.proxy.blackholed) {
          await waker.wait();
          continue;
        }
        const wait = head.releaseAt - performance.now();
        if (wait > 0) {
          await waker.wait(wait);
          continue;
        }
        queue.shift();
        if (head.data === null) {
          await to.closeWrite().catch(() => this.close());
          break;
        }
        await writeAll(to, head.data);
      }
    } catch {
      this.close();
    }
    await reader;
  }
}

/** Options of {@link FaultProxy.start}. */
export interface FaultProxyOptions {
  /** Where to forward connections (the broker). */
  targetHostname: string;
  /** The target's port. */
  targetPort: number;
  /** One-way delay in ms added to each direction. Default 0. */
  delayMs?: number;
}

/**
 * A TCP proxy on 127.0.0.1 whose faults a test switches on and off.
 *
 * Bytes held by `blackhole(true)` or by a delay are forwarded later, in order,
 * like a network that heals and TCP retransmits; `cutAll()` discards them.
 */
export class FaultProxy implements AsyncDisposable {
  /** Where the proxy listens: always the loopback address. */
  readonly hostname: "127.0.0.1" = HOSTNAME;
  /** The proxy's port; point the client here. */
  readonly port: number;
  /** Every MQTT frame that passed, both ways, in the order read. */
  readonly frames: TappedFrame[] = [];
  readonly #listener: Deno.TcpListener;
  readonly #target: { hostname: string; port: number };
  readonly #pairs = new Set<Pair>();
  readonly #pending = new Set<Promise<unknown>>();
  readonly #waiters = new Set<{ n: number; wake: () => void }>();
  #acceptLoop: Promise<void>;
  #connectionCount = 0;
  #delayMs: number;
  #blackholed = false;
  #refusing = false;
  #closed = false;

  private constructor(listener: Deno.TcpListener, options: FaultProxyOptions) {
    this.#listener = listener;
    this.port = (listener.addr as Deno.NetAddr).port;
    this.#target = { hostname: options.targetHostname, port: options.targetPort };
    this.#delayMs = options.delayMs ?? 0;
    this.#acceptLoop = this.#accept();
  }

  /** Starts a proxy listening on a free port of 127.0.0.1, forwarding to the target. */
  static start(options: FaultProxyOptions): Promise<FaultProxy> {
    const listener = Deno.listen({ hostname: HOSTNAME, port: 0 });
    return Promise.resolve(new FaultProxy(listener, options));
  }

  /** Connections accepted so far, including refused ones. */
  get connectionCount(): number {
    return this.#connectionCount;
  }

  /** Proxied connections currently open. */
  get openConnections(): number {
    return this.#pairs.size;
  }

  /** The current one-way delay in ms. */
  get delayMs(): number {
    return this.#delayMs;
  }

  /** Whether forwarding is currently stopped by {@link blackhole}. */
  get blackholed(): boolean {
    return this.#blackholed;
  }

  /** Closes every proxied connection (both sides) now, dropping bytes not yet forwarded. */
  cutAll(): void {
    for (const pair of this.#pairs) pair.close();
  }

  /**
   * Half-open network: while on, nothing is forwarded in either direction but
   * sockets stay open (new connections are accepted too). Held bytes flow, in
   * order, once it is switched off.
   */
  blackhole(on: boolean): void {
    this.#blackholed = on;
    if (!on) { for (const pair of this.#pairs) pair.poke(); }
  }

  /** While on, new connections are closed as soon as they are accepted. */
  refuse(on: boolean): void {
    this.#refusing = on;
  }

  /** Sets the one-way delay added to each direction (10 gives a 20 ms round trip). */
  setDelay(ms: number): void {
    if (!(ms >= 0)) throw new RangeError(`delay must be >= 0 ms, got ${ms}`);
    this.#delayMs = ms;
    for (const pair of this.#pairs) pair.poke();
  }

  /** Resolves once `connectionCount >= n`; rejects after `timeoutMs` (default 5000). */
  waitForConnections(n: number, timeoutMs = 5000): Promise<void> {
    if (this.#connectionCount >= n) return Promise.resolve();
    if (this.#closed) return Promise.reject(new Error("proxy is closed"));
    return new Promise((resolve, reject) => {
      const waiter = {
        n,
        wake: () => {
          clearTimeout(timer);
          this.#waiters.delete(waiter);
          if (this.#connectionCount >= n) resolve();
          else reject(new Error("proxy closed while waiting for connections"));
        },
      };
      const timer = setTimeout(() => {
        this.#waiters.delete(waiter);
        reject(
          new Error(
            `timed out after ${timeoutMs} ms waiting for ${n} connections ` +
              `(got ${this.#connectionCount})`,
          ),
        );
      }, timeoutMs);
      this.#waiters.add(waiter);
    });
  }

  /** Stops listening, closes every connection and waits until all its work has ended. */
  async close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      try {
        this.#listener.close();
      } catch {
        // Already closed.
      }
      this.cutAll();
      for (const waiter of [...this.#waiters]) waiter.wake();
    }
    await this.#acceptLoop;
    while (this.#pending.size > 0) await Promise.all([...this.#pending]);
  }

  /** Same as {@link close}, for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  #track(promise: Promise<unknown>): void {
    this.#pending.add(promise);
    promise.finally(() => this.#pending.delete(promise));
  }

  async #accept(): Promise<void> {
    while (!this.#closed) {
      let client: Deno.TcpConn;
      try {
        client = await this.#listener.accept();
      } catch {
        break; // listener closed
      }
      this.#connectionCount++;
      for (const waiter of [...this.#waiters]) {
        if (this.#connectionCount >= waiter.n) waiter.wake();
      }
      if (this.#refusing || this.#closed) {
        client.close();
        continue;
      }
      this.#track(this.#connect(client));
    }
  }

  async #connect(client: Deno.TcpConn): Promise<void> {
    let server: Deno.TcpConn;
    try {
      server = await Deno.connect(this.#target);
    } catch {
      client.close();
      return;
    }
    if (this.#closed) {
      client.close();
      server.close();
      return;
    }
    // A delay line, not a second TCP stack with its own Nagle holds: each
    // chunk goes on as it was read.
    client.setNoDelay(true);
    server.setNoDelay(true);
    const pair = new Pair(this, client, server, () => this.#pairs.delete(pair));
    this.#pairs.add(pair);
    await pair.done;
  }
}
