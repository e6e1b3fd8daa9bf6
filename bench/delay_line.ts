/**
 * The benchmark's network: a TCP proxy on 127.0.0.1 that adds a one-way delay
 * and, optionally, a bandwidth cap, in both directions. Used instead of
 * `tests/fault_proxy.ts` (which delays but does not shape) so that a window
 * can meet a real bottleneck.
 *
 * The model, per direction: bytes enter a FIFO link queue as they are read;
 * the link sends them at `rateMbit` (in segments of at most 1 448 bytes, as a
 * TCP segment on a 1 500-byte MTU), and each segment arrives `delayMs` after
 * its last byte was sent. Without a rate the link is infinitely fast and a
 * chunk arrives `delayMs` after it was read. Everything due is written in one
 * write, on sockets with `TCP_NODELAY`, so the proxy adds no Nagle holds of
 * its own. When more than `queueBytes` wait in a direction, the proxy stops
 * reading that side until the queue drains: the sender meets TCP flow control,
 * as behind a bottleneck router's buffer (without its drops).
 *
 * It can also cut every connection and refuse new ones (the replay scenario).
 *
 * @module
 */

const HOSTNAME = "127.0.0.1";
const READ_BYTES = 64 * 1024;
const SEGMENT_BYTES = 1448;

/** Options of {@link DelayLine.start}. */
export interface DelayLineOptions {
  /** Where to forward connections (the broker). */
  targetHostname: string;
  /** The target's port. */
  targetPort: number;
  /** One-way delay in ms added to each direction (10 gives a 20 ms round trip). Default 0. */
  delayMs?: number;
  /** Link rate in Mbit/s (10⁶ bit/s) in each direction; 0 or absent: unlimited. */
  rateMbit?: number;
  /**
   * Bytes a direction may hold before the proxy stops reading that side.
   * Default: 256 KiB with a rate (about 200 ms at 10 Mbit/s), 64 MiB without.
   */
  queueBytes?: number;
}

/** Something a loop can sleep on until poked or until a deadline passes. */
class Wakeup {
  #resolve: (() => void) | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;

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

interface Segment {
  /** `performance.now()` at which it arrives at the far side. */
  dueAt: number;
  /** Bytes, or `null` for end of stream. */
  data: Uint8Array | null;
}

async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < data.length) offset += await conn.write(data.subarray(offset));
}

/** One direction of one connection: a reader, the link queue and a writer. */
class Direction {
  readonly #queue: Segment[] = [];
  #head = 0;
  #queued = 0;
  #linkFreeAt = 0; // when the link has sent everything queued so far
  readonly #writerWake = new Wakeup();
  readonly #readerWake = new Wakeup();
  readonly done: Promise<void>;

  constructor(
    readonly from: Deno.Conn,
    readonly to: Deno.Conn,
    readonly line: DelayLine,
    readonly isClosed: () => boolean,
    readonly onError: () => void,
  ) {
    this.done = Promise.all([this.#read(), this.#write()]).then(() => {});
  }

  poke(): void {
    this.#writerWake.notify();
    this.#readerWake.notify();
  }

  #enqueue(data: Uint8Array | null, now: number): void {
    const { delayMs, bytesPerMs } = this.line;
    if (data === null || bytesPerMs === 0) {
      const at = Math.max(now, this.#linkFreeAt);
      this.#queue.push({ dueAt: at + delayMs, data });
      if (data) this.#queued += data.length;
      return;
    }
    for (let offset = 0; offset < data.length; offset += SEGMENT_BYTES) {
      const segment = data.subarray(offset, Math.min(offset + SEGMENT_BYTES, data.length));
      this.#linkFreeAt = Math.max(now, this.#linkFreeAt) + segment.length / bytesPerMs;
      this.#queue.push({ dueAt: this.#linkFreeAt + delayMs, data: segment });
      this.#queued += segment.length;
    }
  }

  async #read(): Promise<void> {
    try {
      while (!this.isClosed()) {
        while (this.#queued > this.line.queueBytes && !this.isClosed()) {
          await this.#readerWake.wait();
        }
        const buffer = new Uint8Array(READ_BYTES);
        const n = await this.from.read(buffer);
        const now = performance.now();
        this.#enqueue(n === null ? null : buffer.subarray(0, n), now);
        this.#writerWake.notify();
        if (n === null) break;
      }
    } catch {
      this.onError(); // reset, or closed by cutAll()
    } finally {
      this.#writerWake.notify();
    }
  }

  async #write(): Promise<void> {
    try {
      while (!this.isClosed()) {
        const head = this.#queue[this.#head];
        if (head === undefined) {
          await this.#writerWake.wait();
          if (this.#queue.length === this.#head && this.isClosed()) break;
          continue;
        }
        const now = performance.now();
        if (head.dueAt > now) {
          await this.#writerWake.wait(head.dueAt - now);
          continue;
        }
        // Everything due goes out in one write.
        let end = this.#head;
        let bytes = 0;
        let eof = false;
        while (end < this.#queue.length && this.#queue[end].dueAt <= now) {
          const data = this.#queue[end].data;
          end++;
          if (data === null) {
            eof = true;
            break;
          }
          bytes += data.length;
        }
        const out = new Uint8Array(bytes);
        let offset = 0;
        for (let i = this.#head; i < end; i++) {
          const data = this.#queue[i].data;
          if (data) {
            out.set(data, offset);
            offset += data.length;
          }
        }
        this.#head = end;
        if (this.#head > 4096) {
          this.#queue.splice(0, this.#head);
          this.#head = 0;
        }
        if (bytes > 0) await writeAll(this.to, out);
        this.#queued -= bytes;
        this.#readerWake.notify();
        if (eof) {
          await this.to.closeWrite().catch(() => this.onError());
          break;
        }
      }
    } catch {
      this.onError();
    }
  }
}

/** One proxied connection. */
class Pair {
  closed = false;
  readonly done: Promise<void>;
  readonly #directions: Direction[];

  constructor(line: DelayLine, readonly client: Deno.Conn, readonly server: Deno.Conn) {
    const isClosed = () => this.closed;
    const onError = () => this.close();
    this.#directions = [
      new Direction(client, server, line, isClosed, onError),
      new Direction(server, client, line, isClosed, onError),
    ];
    this.done = Promise.all(this.#directions.map((d) => d.done)).then(() => this.close());
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const conn of [this.client, this.server]) {
      try {
        conn.close();
      } catch { /* already closed */ }
    }
    for (const d of this.#directions) d.poke();
  }
}

/** A delay line (and bandwidth cap) between the benchmark's clients and its broker. */
export class DelayLine implements AsyncDisposable {
  readonly hostname: "127.0.0.1" = HOSTNAME;
  /** Where clients connect. */
  readonly port: number;
  readonly delayMs: number;
  /** The link rate in bytes per ms (0: unlimited). */
  readonly bytesPerMs: number;
  readonly queueBytes: number;
  readonly #listener: Deno.TcpListener;
  readonly #target: { hostname: string; port: number };
  readonly #pairs = new Set<Pair>();
  readonly #pending = new Set<Promise<unknown>>();
  readonly #acceptLoop: Promise<void>;
  #refusing = false;
  #closed = false;

  private constructor(listener: Deno.TcpListener, options: DelayLineOptions) {
    this.#listener = listener;
    this.port = (listener.addr as Deno.NetAddr).port;
    this.#target = { hostname: options.targetHostname, port: options.targetPort };
    this.delayMs = options.delayMs ?? 0;
    this.bytesPerMs = (options.rateMbit ?? 0) * 1e6 / 8 / 1000;
    this.queueBytes = options.queueBytes ?? (this.bytesPerMs > 0 ? 256 * 1024 : 64 << 20);
    this.#acceptLoop = this.#accept();
  }

  /** Listens on a free port of 127.0.0.1. */
  static start(options: DelayLineOptions): Promise<DelayLine> {
    const listener = Deno.listen({ hostname: HOSTNAME, port: 0 });
    return Promise.resolve(new DelayLine(listener, options));
  }

  /** Closes every proxied connection now, dropping what the line still holds. */
  cutAll(): void {
    for (const pair of this.#pairs) pair.close();
  }

  /** While on, new connections are closed as soon as they are accepted. */
  refuse(on: boolean): void {
    this.#refusing = on;
  }

  async close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      try {
        this.#listener.close();
      } catch { /* already closed */ }
      this.cutAll();
    }
    await this.#acceptLoop;
    while (this.#pending.size > 0) await Promise.all([...this.#pending]);
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async #accept(): Promise<void> {
    while (!this.#closed) {
      let client: Deno.TcpConn;
      try {
        client = await this.#listener.accept();
      } catch {
        break;
      }
      if (this.#refusing || this.#closed) {
        client.close();
        continue;
      }
      const work = this.#connect(client);
      this.#pending.add(work);
      work.finally(() => this.#pending.delete(work));
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
    client.setNoDelay(true);
    server.setNoDelay(true);
    const pair = new Pair(this, client, server);
    this.#pairs.add(pair);
    await pair.done;
    this.#pairs.delete(pair);
  }
}
