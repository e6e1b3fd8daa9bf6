/**
 * A simulated network between the client and the simulated brokers: every
 * connection is two ordered byte pipes with latency, jitter, a bandwidth
 * limit and segments of bounded size (so frames arrive split and merged),
 * and faults: cuts (reset), blackholes (half-open links that stay "up" but
 * carry nothing), refused or unanswered connection attempts.
 *
 * @module
 */

import { ConnectionLostError } from "../errors.ts";
import type { Connection, DialContext, Endpoint } from "../transport/connection.ts";
import type { Rng } from "./rng.ts";
import type { Scheduler, SimEvent } from "./scheduler.ts";

function concatBytes(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** How a link behaves. */
export interface LinkProfile {
  /** One-way latency, ms. */
  latencyMs: number;
  /** Extra one-way delay drawn uniformly from [0, jitterMs]. */
  jitterMs: number;
  /** Bandwidth in bytes per ms (Infinity: unlimited). */
  bytesPerMs: number;
  /** Largest segment delivered in one read. */
  mss: number;
  /** Bytes a write may leave untransmitted before the writer waits (the socket buffer). */
  sendBuffer: number;
}

/** What a broker host sees of the network. */
export interface ServerSide {
  /** A connection arrived; returns false to refuse it at the TCP level. */
  accept(conn: SimConnection): boolean;
}

/** One direction of a connection. */
export class Pipe {
  /** When the wire is done with what was sent so far. */
  txFreeAt = 0;
  #lastArrival = 0;
  /** Bytes written and not yet on the wire. */
  unsent = 0;
  dead = false; // blackholed or reset: nothing more arrives
  #writable: (() => void)[] = [];

  constructor(
    readonly sched: Scheduler,
    readonly rng: Rng,
    readonly net: SimNetwork,
    readonly deliver: (chunk: Uint8Array) => void,
    readonly end: () => void,
  ) {}

  send(bytes: Uint8Array): void {
    const p = this.net.profile;
    const now = this.sched.now;
    const size = bytes.length;
    const txStart = Math.max(now, this.txFreeAt);
    const txEnd = txStart + (p.bytesPerMs === Infinity ? 0 : size / p.bytesPerMs);
    this.txFreeAt = txEnd;
    if (txEnd > now) {
      this.unsent += size;
      this.sched.at(txEnd, () => {
        this.unsent -= size;
        this.#wake();
      }, "network");
    }
    // Segments of at most one MSS (the reader sees frames split and merged).
    // With a bandwidth limit each arrives when it has crossed the wire; without
    // one they all arrive together, in one event.
    const jitter = p.jitterMs > 0 ? this.rng.float() * p.jitterMs : 0;
    let batch: Uint8Array[] = [];
    let batchAt = -1;
    for (const [offset, end] of this.#cuts(size, p.mss)) {
      const sentAt = p.bytesPerMs === Infinity ? txStart : txStart + end / p.bytesPerMs;
      const arrival = Math.max(this.#lastArrival, sentAt + p.latencyMs + jitter);
      this.#lastArrival = arrival;
      if (arrival !== batchAt && batch.length > 0) this.#arrive(batchAt, batch);
      if (arrival !== batchAt) batch = [];
      batchAt = arrival;
      batch.push(bytes.slice(offset, end));
    }
    if (batch.length > 0) this.#arrive(batchAt, batch);
  }

  /**
   * Where a write of `size` bytes is cut into segments: at most `mss` apart
   * when that makes few segments, else at up to 8 random places, so frames
   * arrive split anywhere without one event (and one copy) per tiny segment.
   */
  #cuts(size: number, mss: number): [number, number][] {
    const pieces = Math.ceil(size / mss);
    const points: number[] = [];
    if (pieces <= 9) {
      for (let at = mss; at < size; at += mss) points.push(at);
    } else {
      const set = new Set<number>();
      for (let i = 0; i < 8; i++) set.add(1 + Math.floor(this.rng.float() * (size - 1)));
      points.push(...[...set].sort((a, b) => a - b));
    }
    const cuts: [number, number][] = [];
    let start = 0;
    for (const point of points) {
      cuts.push([start, point]);
      start = point;
    }
    cuts.push([start, size]);
    return cuts;
  }

  #arrive(at: number, segments: Uint8Array[]): void {
    // Writes that arrive together may merge into one read, as TCP merges
    // segments: a CONNACK and the PUBLISHes right behind it, say.
    const last = this.#pending;
    if (last !== undefined && last.at === at && !last.event.cancelled) {
      const tail = last.segments[last.segments.length - 1];
      const head = segments[0];
      if (tail.length + head.length <= this.net.profile.mss) {
        last.segments[last.segments.length - 1] = concatBytes(tail, head);
        segments = segments.slice(1);
      }
      last.segments.push(...segments);
      return;
    }
    const batch = { at, segments, event: undefined as unknown as SimEvent };
    batch.event = this.sched.at(at, () => {
      if (this.#pending === batch) this.#pending = undefined;
      for (const segment of batch.segments) {
        if (this.dead) return;
        this.deliver(segment);
      }
    }, "network");
    this.#pending = batch;
  }

  #pending: { at: number; segments: Uint8Array[]; event: SimEvent } | undefined;

  /** End of stream after everything sent so far. */
  fin(): void {
    const at = Math.max(this.#lastArrival, this.sched.now + this.net.profile.latencyMs);
    this.sched.at(at, () => {
      if (!this.dead) this.end();
    }, "network");
  }

  /** Resolves once untransmitted bytes are at most `limit`. */
  whenBelow(limit: number): Promise<void> {
    if (this.unsent <= limit) return Promise.resolve();
    return new Promise((resolve) => {
      const check = () => {
        if (this.unsent <= limit || this.dead) resolve();
        else this.#writable.push(check);
      };
      this.#writable.push(check);
    });
  }

  #wake(): void {
    const waiting = this.#writable;
    this.#writable = [];
    for (const check of waiting) check();
  }

  kill(): void {
    this.dead = true;
    this.#wake();
  }

  /** Writers waiting for room are forgotten, never woken (their process died). */
  abandonWriters(): void {
    this.#writable = [];
  }
}

/** A simulated TCP connection: the client's {@linkcode Connection}, and the broker's side. */
export class SimConnection implements Connection {
  /** 1-based, unique per network. */
  readonly id: number;
  readonly toBroker: Pipe;
  readonly toClient: Pipe;
  readonly #inbound: Uint8Array[] = [];
  #reader: { resolve: (chunk: Uint8Array | null) => void; reject: (e: Error) => void } | undefined;
  #ended = false; // the broker's FIN arrived
  #reset: Error | undefined;
  #clientClosed = false;
  #brokerClosed = false;
  /** When the client last got a chunk: virtual time passing before its next read() is a pause. */
  #lastChunkAt = 0;
  /**
   * When the client last took up reading after a pause (it stops reading while
   * the application is behind: the broker's TCP window then fills); 0 if never
   * paused. Nothing the broker sends can be heard while the client does not read.
   */
  readResumedAt = 0;
  /** Broker side: bytes from the client. */
  onBrokerData: (chunk: Uint8Array) => void = () => {};
  /** Broker side: the client's side ended (FIN or reset). */
  onBrokerEnd: () => void = () => {};
  /** Observers: every write of the client, and every chunk the client read. */
  readonly taps: {
    clientWrite?(conn: SimConnection, bytes: Uint8Array): void;
    clientRead?(conn: SimConnection, bytes: Uint8Array): void;
    clientClose?(conn: SimConnection): void;
  } = {};

  constructor(
    id: number,
    readonly net: SimNetwork,
    readonly endpoint: Endpoint,
    rng: Rng,
    /** The client process that opened it. */
    readonly owner: string,
  ) {
    this.id = id;
    const sched = net.sched;
    this.toBroker = new Pipe(sched, rng, net, (c) => {
      if (!this.#brokerClosed) this.onBrokerData(c);
    }, () => this.#brokerSawEnd());
    this.toClient = new Pipe(
      sched,
      rng.fork(1),
      net,
      (c) => this.#arrived(c),
      () => this.#finArrived(),
    );
  }

  /** Whether the client has closed its side. */
  get clientClosed(): boolean {
    return this.#clientClosed;
  }

  /** Whether the broker side has closed. */
  get brokerClosed(): boolean {
    return this.#brokerClosed;
  }

  // ---- the client's side (Connection) --------------------------------------------------

  read(): Promise<Uint8Array | null> {
    const now = this.net.sched.now;
    // A chunk's handling takes no virtual time: a later read() comes after a pause.
    if (now > this.#lastChunkAt) this.readResumedAt = now;
    if (this.#inbound.length > 0) {
      const chunk = this.#inbound.shift()!;
      this.#lastChunkAt = now;
      this.taps.clientRead?.(this, chunk); // what the client actually read, when it read it
      return Promise.resolve(chunk);
    }
    if (this.#reset) return Promise.reject(this.#reset);
    if (this.#ended || this.#clientClosed) return Promise.resolve(null);
    return new Promise((resolve, reject) => this.#reader = { resolve, reject });
  }

  write(bytes: Uint8Array): Promise<void> {
    if (this.#reset) return Promise.reject(this.#reset);
    if (this.#clientClosed) {
      return Promise.reject(new ConnectionLostError("write on a closed connection"));
    }
    this.taps.clientWrite?.(this, bytes);
    this.toBroker.send(bytes);
    return this.toBroker.whenBelow(this.net.profile.sendBuffer).then(() => {
      if (this.#reset) throw this.#reset;
    });
  }

  close(): void {
    if (this.#clientClosed) return;
    this.#clientClosed = true;
    this.taps.clientClose?.(this);
    this.toBroker.fin();
    this.#wakeReader(null);
  }

  /**
   * The client process died: the OS closes the socket (the broker sees a
   * FIN), and nothing of the process runs again (its pending read never
   * settles).
   */
  processDied(): void {
    if (this.#clientClosed) return;
    this.#clientClosed = true;
    this.#reader = undefined;
    this.toBroker.abandonWriters();
    this.toBroker.fin();
  }

  #arrived(chunk: Uint8Array): void {
    if (this.#clientClosed) return;
    const reader = this.#reader;
    if (reader) {
      this.#reader = undefined;
      this.#lastChunkAt = this.net.sched.now;
      this.taps.clientRead?.(this, chunk);
      reader.resolve(chunk);
    } else {
      this.#inbound.push(chunk);
    }
  }

  #finArrived(): void {
    this.#ended = true;
    if (this.#inbound.length === 0) this.#wakeReader(null);
  }

  #wakeReader(value: null): void {
    const reader = this.#reader;
    this.#reader = undefined;
    reader?.resolve(value);
  }

  // ---- the broker's side --------------------------------------------------------------

  /** The broker writes `bytes` to the client. */
  brokerWrite(bytes: Uint8Array): void {
    if (this.#brokerClosed || this.#reset) return;
    this.toClient.send(bytes);
  }

  /** The broker closes the connection (FIN after what it sent). */
  brokerClose(): void {
    if (this.#brokerClosed) return;
    this.#brokerClosed = true;
    this.toClient.fin();
  }

  #brokerSawEnd(): void {
    if (this.#brokerClosed) return;
    this.#brokerClosed = true;
    this.onBrokerEnd();
  }

  // ---- faults --------------------------------------------------------------------------

  /** A reset: both sides learn at once; bytes in flight are lost. */
  cut(): void {
    if (this.#reset) return;
    this.#reset = new ConnectionLostError("read failed: connection reset by peer (simulated cut)");
    this.toBroker.kill();
    this.toClient.kill();
    const reader = this.#reader;
    this.#reader = undefined;
    reader?.reject(this.#reset);
    if (!this.#brokerClosed) {
      this.#brokerClosed = true;
      this.onBrokerEnd();
    }
  }

  /** A half-open link: nothing more arrives either way; both sides think it is up. */
  blackhole(): void {
    this.toBroker.kill();
    this.toClient.kill();
  }

  /** Whether the link still carries bytes. */
  get alive(): boolean {
    return !this.toBroker.dead && !this.toClient.dead && !this.#reset;
  }
}

/** How connection attempts fare. */
export type DialMode = "ok" | "refuse" | "blackhole";

/** The simulated network. */
export class SimNetwork {
  profile: LinkProfile;
  /** How new connection attempts fare, per broker host name. */
  readonly dialMode = new Map<string, DialMode>();
  readonly connections: SimConnection[] = [];
  #servers = new Map<string, ServerSide>();
  #pendingDials = new Map<SimEvent, string>();
  /** Observes each connection as it opens. */
  onConnection: ((conn: SimConnection) => void) | undefined;

  constructor(readonly sched: Scheduler, readonly rng: Rng, profile: LinkProfile) {
    this.profile = profile;
  }

  /** Registers the broker reachable as `host`. */
  serve(host: string, server: ServerSide): void {
    this.#servers.set(host, server);
  }

  /** A dialer for the client process `owner`. */
  dialer(owner: string): (endpoint: Endpoint, context: DialContext) => Promise<Connection> {
    return (endpoint, context) => this.#dial(endpoint, context, owner);
  }

  /** The process `owner` died: its dials never complete, its connections close as the OS would. */
  kill(owner: string): void {
    for (const [event, dialOwner] of this.#pendingDials) {
      if (dialOwner !== owner) continue;
      this.sched.cancel(event);
      this.#pendingDials.delete(event);
    }
    for (const conn of this.connections) {
      if (conn.owner === owner) conn.processDied();
    }
  }

  #dial(endpoint: Endpoint, context: DialContext, owner: string): Promise<Connection> {
    const sched = this.sched;
    if (sched.isDead(owner)) return new Promise(() => {}); // a dead process dials nothing
    return new Promise((resolve, reject) => {
      const mode = this.dialMode.get(endpoint.host) ?? "ok";
      const rtt = 2 * this.profile.latencyMs;
      // deno-lint-ignore prefer-const -- assigned below, after the abort listener that reads it
      let event: SimEvent | undefined;
      const onAbort = () => {
        sched.cancel(event);
        if (event) this.#pendingDials.delete(event);
        reject(context.signal.reason ?? new ConnectionLostError("dial aborted"));
      };
      if (context.signal.aborted) return onAbort();
      context.signal.addEventListener("abort", onAbort, { once: true });
      if (mode === "blackhole") return; // no answer to the SYN: only an abort ends it
      event = sched.after(rtt, () => {
        this.#pendingDials.delete(event!);
        context.signal.removeEventListener("abort", onAbort);
        const server = this.#servers.get(endpoint.host);
        if (mode === "refuse" || server === undefined) {
          reject(
            new ConnectionLostError(`cannot connect to ${endpoint.host}:${endpoint.port}: refused`),
          );
          return;
        }
        const id = this.connections.length + 1;
        const conn = new SimConnection(id, this, endpoint, this.rng.fork(id), owner);
        this.connections.push(conn);
        this.onConnection?.(conn);
        if (!server.accept(conn)) {
          conn.cut();
          reject(
            new ConnectionLostError(`cannot connect to ${endpoint.host}:${endpoint.port}: refused`),
          );
          return;
        }
        resolve(conn);
      }, "network");
      this.#pendingDials.set(event, owner);
    });
  }

  /** Every connection that still carries bytes. */
  live(): SimConnection[] {
    return this.connections.filter((c) => c.alive && !c.clientClosed && !c.brokerClosed);
  }
}
