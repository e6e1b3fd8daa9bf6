/**
 * A WebSocket-to-TCP bridge for MQTT: it upgrades requests on one path
 * (`/mqtt`) with the `mqtt` subprotocol and pipes the bytes both ways to a
 * broker's plain TCP port, for brokers without a WebSocket listener. Used by
 * the web example's server and, with its fault options, by the tests.
 *
 * Bytes are forwarded in order and unchanged; only how the broker's bytes
 * are cut into WebSocket messages can be changed (`mergeMs`, `split`), since
 * MQTT over WebSocket gives message boundaries no meaning.
 *
 * @module
 */

/** Settings of a {@linkcode WebSocketBridge}. */
export interface BridgeOptions {
  /** The broker's host name or IP. */
  brokerHostname: string;
  /** The broker's plain MQTT (TCP) port. */
  brokerPort: number;
  /** The request path that is upgraded. Default `/mqtt`. */
  path?: string;
  /**
   * The subprotocol the bridge selects; `null` selects none (a server that
   * refuses MQTT, for tests). Default `"mqtt"`; a client that does not offer
   * it gets a 400 answer.
   */
  protocol?: string | null;
  /**
   * Gathers what the broker sends for this many milliseconds after a read
   * and sends it as one message (several packets per message). Default 0:
   * one message per read.
   */
  mergeMs?: number;
  /**
   * Cuts what goes to the client into messages of 1..`maxBytes` bytes at
   * pseudo-random boundaries drawn from `seed` (packets span messages).
   */
  split?: { seed: number; maxBytes: number };
  /** Called after every change of {@linkcode WebSocketBridge.stats}. */
  onChange?: () => void;
}

/** What a bridge has done so far. */
export interface BridgeStats {
  /** WebSocket sessions accepted (each with its own broker connection). */
  sessions: number;
  /** Sessions open now. */
  open: number;
  /** Reads from broker connections. */
  readsFromBroker: number;
  /** Binary messages sent to clients. */
  messagesToClient: number;
  /** Binary messages received from clients. */
  messagesFromClient: number;
}

const READ_SIZE = 64 * 1024;
const CLIENT_HIGH_WATER = 1024 * 1024;
const BACKPRESSURE_POLL_MS = 5;
const OPEN = 1;

/** A small seeded pseudo-random generator (xorshift32): the same seed, the same cuts. */
function xorshift32(seed: number): () => number {
  let state = (seed >>> 0) || 0x9e3779b9;
  return () => {
    state ^= state << 13;
    state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    return state;
  };
}

function concat(chunks: Uint8Array[]): Uint8Array {
  if (chunks.length === 1) return chunks[0];
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < bytes.length) offset += await conn.write(bytes.subarray(offset));
}

/** One client: its WebSocket and its TCP connection to the broker. */
class Session {
  readonly done: Promise<void>;
  readonly #bridge: WebSocketBridge;
  readonly #socket: WebSocket;
  readonly #tcp: Deno.Conn;
  #pending: Uint8Array[] = [];
  #mergeTimer: ReturnType<typeof setTimeout> | undefined;
  #toBroker: Promise<void> = Promise.resolve();
  #tcpClosed = false;
  #ended = false;
  #socketClosed: Promise<void>;

  constructor(bridge: WebSocketBridge, socket: WebSocket, tcp: Deno.Conn) {
    this.#bridge = bridge;
    this.#socket = socket;
    this.#tcp = tcp;
    socket.binaryType = "arraybuffer";
    let opened!: () => void;
    const open = new Promise<void>((resolve) => opened = resolve);
    this.#socketClosed = new Promise<void>((resolve) => {
      socket.addEventListener("close", () => {
        opened(); // never opened: let the pump start and stop
        this.end();
        resolve();
      });
    });
    socket.addEventListener("open", () => opened());
    socket.addEventListener("error", () => this.end());
    socket.addEventListener("message", (event) => this.#fromClient(event.data));
    const pump = open.then(() => this.#pumpToClient());
    this.done = Promise.all([pump, this.#socketClosed]).then(() => this.#toBroker);
  }

  #fromClient(data: unknown): void {
    if (this.#ended) return;
    if (!(data instanceof ArrayBuffer)) {
      this.end(1003, "MQTT needs binary messages"); // MQTT-6.0.0-1
      return;
    }
    this.#bridge.count("messagesFromClient");
    const bytes = new Uint8Array(data);
    this.#toBroker = this.#toBroker
      .then(() => this.#ended ? undefined : writeAll(this.#tcp, bytes))
      .catch(() => this.end());
  }

  async #pumpToClient(): Promise<void> {
    const buffer = new Uint8Array(READ_SIZE);
    try {
      while (!this.#ended && this.#socket.readyState === OPEN) {
        const n = await this.#tcp.read(buffer);
        if (n === null) break;
        this.#bridge.count("readsFromBroker");
        this.#pending.push(buffer.slice(0, n));
        const mergeMs = this.#bridge.options.mergeMs ?? 0;
        if (mergeMs <= 0) this.#flush();
        else this.#mergeTimer ??= setTimeout(() => this.#flush(), mergeMs);
        while (this.#socket.bufferedAmount > CLIENT_HIGH_WATER && !this.#ended) {
          await new Promise((resolve) => setTimeout(resolve, BACKPRESSURE_POLL_MS));
        }
      }
    } catch {
      // The broker connection failed or was cut: end the session below.
    }
    this.#flush();
    this.end(1000, "the broker closed the connection");
  }

  /** Sends what the broker sent since the last flush, cut as the options say. */
  #flush(): void {
    clearTimeout(this.#mergeTimer);
    this.#mergeTimer = undefined;
    if (this.#pending.length === 0) return;
    const bytes = concat(this.#pending);
    this.#pending = [];
    if (this.#ended || this.#socket.readyState !== OPEN) return;
    const split = this.#bridge.options.split;
    if (split === undefined) {
      this.#send(bytes);
      return;
    }
    const next = this.#bridge.random!;
    for (let offset = 0; offset < bytes.length;) {
      const size = 1 + (next() % Math.max(1, split.maxBytes));
      this.#send(bytes.subarray(offset, offset + size));
      offset += size;
    }
  }

  #send(bytes: Uint8Array): void {
    try {
      this.#socket.send(bytes as Uint8Array<ArrayBuffer>);
      this.#bridge.count("messagesToClient");
    } catch {
      this.end();
    }
  }

  #closeTcp(): void {
    if (this.#tcpClosed) return;
    this.#tcpClosed = true;
    try {
      this.#tcp.close();
    } catch { /* already closed */ }
  }

  /** Ends both sides: the WebSocket with `code` (a normal close by default). Idempotent. */
  end(code = 1000, reason = ""): void {
    if (this.#ended) return;
    this.#ended = true;
    clearTimeout(this.#mergeTimer);
    this.#mergeTimer = undefined;
    this.#pending = [];
    this.#closeTcp();
    try {
      this.#socket.close(code, reason);
    } catch { /* closed already */ }
  }
}

/**
 * Bridges WebSocket clients to a broker's TCP port; plug
 * {@linkcode WebSocketBridge.handle} into a `Deno.serve` handler.
 *
 * @example
 * ```ts ignore
 * import { WebSocketBridge } from "./_bridge.ts";
 * const bridge = new WebSocketBridge({ brokerHostname: "127.0.0.1", brokerPort: 1883 });
 * Deno.serve({ port: 8080 }, (request) => bridge.handle(request) ?? new Response("", { status: 404 }));
 * ```
 */
export class WebSocketBridge {
  /** The settings it was made with. */
  readonly options: Readonly<BridgeOptions>;
  /** The split generator, when `split` is set. */
  readonly random: (() => number) | undefined;
  readonly #stats: BridgeStats = {
    sessions: 0,
    open: 0,
    readsFromBroker: 0,
    messagesToClient: 0,
    messagesFromClient: 0,
  };
  readonly #sessions = new Set<Session>();
  readonly #pending = new Set<Promise<unknown>>();
  #closed = false;

  /** A bridge to the broker the options name; it does nothing until requests come. */
  constructor(options: BridgeOptions) {
    this.options = { ...options };
    this.random = options.split ? xorshift32(options.split.seed) : undefined;
  }

  /** A copy of the counters. */
  get stats(): BridgeStats {
    return { ...this.#stats };
  }

  /** Bumps a counter (sessions use it). */
  count(key: keyof BridgeStats, by = 1): void {
    this.#stats[key] += by;
    this.options.onChange?.();
  }

  /**
   * The answer to `request` when its path is the bridge's (an upgrade, or an
   * error status); `undefined` for any other path, for the caller to serve.
   */
  handle(request: Request): Promise<Response> | undefined {
    if (new URL(request.url).pathname !== (this.options.path ?? "/mqtt")) return undefined;
    const answer = this.#upgrade(request);
    this.#track(answer);
    return answer;
  }

  async #upgrade(request: Request): Promise<Response> {
    if (this.#closed) return new Response("bridge closed\n", { status: 503 });
    if (request.headers.get("upgrade")?.toLowerCase() !== "websocket") {
      return new Response("MQTT over WebSocket only\n", { status: 426 });
    }
    const protocol = this.options.protocol === undefined ? "mqtt" : this.options.protocol;
    const offered = (request.headers.get("sec-websocket-protocol") ?? "")
      .split(",").map((p) => p.trim()).filter((p) => p !== "");
    if (protocol !== null && !offered.includes(protocol)) {
      return new Response(`the WebSocket subprotocol "${protocol}" is required\n`, {
        status: 400,
      });
    }
    let tcp: Deno.Conn;
    try {
      tcp = await Deno.connect({
        hostname: this.options.brokerHostname,
        port: this.options.brokerPort,
      });
    } catch (error) {
      const text = error instanceof Error ? error.message : String(error);
      return new Response(`cannot reach the broker: ${text}\n`, { status: 502 });
    }
    if (this.#closed) {
      tcp.close();
      return new Response("bridge closed\n", { status: 503 });
    }
    const { socket, response } = Deno.upgradeWebSocket(
      request,
      protocol === null ? {} : { protocol },
    );
    const session = new Session(this, socket, tcp);
    this.#sessions.add(session);
    this.count("sessions");
    this.count("open");
    this.#track(session.done.finally(() => {
      this.#sessions.delete(session);
      this.count("open", -1);
    }));
    return response;
  }

  #track(promise: Promise<unknown>): void {
    const tracked = promise.catch(() => {}).finally(() => this.#pending.delete(tracked));
    this.#pending.add(tracked);
  }

  /**
   * Drops every bridged connection at once, both sides: the broker's TCP
   * connection is closed and the WebSocket closed with code 4000.
   */
  cutAll(): void {
    for (const session of this.#sessions) session.end(4000, "cut by the bridge");
  }

  /** Ends every session and resolves once all their resources are released. */
  async close(): Promise<void> {
    this.#closed = true;
    for (const session of this.#sessions) session.end(1001, "the bridge is closing");
    while (this.#pending.size > 0) await Promise.all([...this.#pending]);
  }
}
