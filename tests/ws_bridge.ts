/**
 * A WebSocket-to-TCP bridge for tests (Debian's mosquitto cannot open a
 * websockets listener): `Deno.serve` on 127.0.0.1 and a free port upgrades
 * `/mqtt` with the `mqtt` subprotocol and pipes the bytes to a TCP broker.
 * It can cut the broker's bytes into small messages at seeded boundaries and
 * merge several reads into one message, and drop every connection at once.
 *
 * Clients reach it through a small TCP relay in front of the HTTP server, so
 * that {@linkcode WsBridge.cutAll} drops the client's TCP connection without
 * a WebSocket close handshake, as a network failure does.
 *
 * @module
 */

import { type BridgeOptions, type BridgeStats, WebSocketBridge } from "../examples/web/_bridge.ts";
import { Watch } from "./helpers.ts";

const HOSTNAME = "127.0.0.1";
const READ_SIZE = 64 * 1024;

/** One relayed TCP connection: the client's and the one to the HTTP server. */
class RelayPair {
  readonly done: Promise<void>;
  #closed = false;

  constructor(readonly client: Deno.Conn, readonly server: Deno.Conn) {
    this.done = Promise.all([this.#pump(client, server), this.#pump(server, client)])
      .then(() => this.close());
  }

  async #pump(from: Deno.Conn, to: Deno.Conn): Promise<void> {
    const buffer = new Uint8Array(READ_SIZE);
    try {
      for (;;) {
        const n = await from.read(buffer);
        if (n === null) break;
        let offset = 0;
        while (offset < n) offset += await to.write(buffer.subarray(offset, n));
      }
    } catch {
      // Cut or reset: close both below.
    }
    this.close();
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const conn of [this.client, this.server]) {
      try {
        conn.close();
      } catch { /* already closed */ }
    }
  }
}

/** A TCP relay on 127.0.0.1 to a port of 127.0.0.1 whose connections can all be dropped. */
class Relay {
  readonly port: number;
  readonly #listener: Deno.TcpListener;
  readonly #pairs = new Set<RelayPair>();
  readonly #pending = new Set<Promise<void>>();
  readonly #accepting: Promise<void>;

  constructor(readonly targetPort: number) {
    this.#listener = Deno.listen({ hostname: HOSTNAME, port: 0 });
    this.port = this.#listener.addr.port;
    this.#accepting = this.#accept();
  }

  async #accept(): Promise<void> {
    try {
      for await (const client of this.#listener) this.#track(this.#relay(client));
    } catch {
      // The listener was closed.
    }
  }

  async #relay(client: Deno.Conn): Promise<void> {
    let server: Deno.Conn;
    try {
      server = await Deno.connect({ hostname: HOSTNAME, port: this.targetPort });
    } catch {
      client.close();
      return;
    }
    const pair = new RelayPair(client, server);
    this.#pairs.add(pair);
    await pair.done;
    this.#pairs.delete(pair);
  }

  #track(promise: Promise<void>): void {
    this.#pending.add(promise);
    promise.finally(() => this.#pending.delete(promise));
  }

  cutAll(): void {
    for (const pair of this.#pairs) pair.close();
  }

  async close(): Promise<void> {
    try {
      this.#listener.close();
    } catch { /* closed already */ }
    this.cutAll();
    await this.#accepting;
    while (this.#pending.size > 0) await Promise.all([...this.#pending]);
  }
}

/** Settings of {@linkcode WsBridge.start}. */
export interface WsBridgeOptions
  extends Omit<BridgeOptions, "brokerHostname" | "brokerPort" | "onChange"> {
  /** The broker to bridge to. */
  broker: { hostname: string; port: number };
}

/** A running bridge: connect to `ws://127.0.0.1:{port}/mqtt`. */
export class WsBridge implements AsyncDisposable {
  /** The address clients use. */
  readonly hostname: string = HOSTNAME;
  /** The port clients use (the relay in front of the HTTP server). */
  readonly port: number;
  /** The bridge logic (counters, options). */
  readonly bridge: WebSocketBridge;
  readonly #server: Deno.HttpServer<Deno.NetAddr>;
  readonly #relay: Relay;
  readonly #watch: Watch;
  #closed = false;

  private constructor(
    bridge: WebSocketBridge,
    server: Deno.HttpServer<Deno.NetAddr>,
    relay: Relay,
    watch: Watch,
  ) {
    this.bridge = bridge;
    this.#server = server;
    this.#relay = relay;
    this.#watch = watch;
    this.port = relay.port;
  }

  /** Starts the HTTP server and the relay in front of it. */
  static async start(options: WsBridgeOptions): Promise<WsBridge> {
    const { broker, ...rest } = options;
    const watch = new Watch();
    const bridge = new WebSocketBridge({
      ...rest,
      brokerHostname: broker.hostname,
      brokerPort: broker.port,
      onChange: () => watch.changed(),
    });
    const server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen() {} },
      (request) => bridge.handle(request) ?? new Response("not found\n", { status: 404 }),
    );
    let relay: Relay;
    try {
      relay = new Relay(server.addr.port);
    } catch (error) {
      await server.shutdown();
      throw error;
    }
    return new WsBridge(bridge, server, relay, watch);
  }

  /** `ws://127.0.0.1:{port}{path}`: the `server` option for a client. */
  url(path = this.bridge.options.path ?? "/mqtt"): string {
    return `ws://${this.hostname}:${this.port}${path}`;
  }

  /** A copy of the bridge's counters. */
  get stats(): BridgeStats {
    return this.bridge.stats;
  }

  /** Resolves once `predicate(stats)` holds; rejects after `ms` showing the counters. */
  until(predicate: (stats: BridgeStats) => boolean, ms: number, what: string): Promise<void> {
    return this.#watch.until(
      () => predicate(this.bridge.stats),
      ms,
      () => `${what} (bridge stats ${JSON.stringify(this.bridge.stats)})`,
    );
  }

  /**
   * Drops every bridged connection, both sides, at once: the client's TCP
   * connection closes without a WebSocket close frame and the broker's
   * connection closes.
   */
  cutAll(): void {
    this.#relay.cutAll();
    this.bridge.cutAll();
  }

  /** Closes every connection, the server and the relay; resolves once all is released. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#relay.cutAll();
    await this.bridge.close();
    await this.#relay.close();
    await this.#server.shutdown();
  }

  /** Same as {@linkcode close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
