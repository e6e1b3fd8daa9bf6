/**
 * Small shared helpers for the client tests: bounded waits, quick clients, log
 * capture, connection counting, a dead port and a fault proxy in front of a broker.
 */

import type { Logger } from "../logger.ts";
import { MQTTClient } from "../client.ts";
import type { MQTTClientOptions } from "../options.ts";
import type { FakeBroker, FakeConnection } from "../testing.ts";
import { FaultProxy } from "./fault_proxy.ts";

/** A client made by {@link quickClient}: its log lines are kept. */
export type TestClient = MQTTClient & { log: string[] };

/** Resolves with `promise`, or rejects naming `what` after `ms`. */
export function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** A promise with its resolve function exposed. */
export function deferred<T = void>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => resolve = r);
  return { promise, resolve };
}

/** Polls `predicate` on a short interval until true, rejecting after `ms`. For client-side state. */
export async function until(predicate: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = performance.now() + ms;
  while (!predicate()) {
    if (performance.now() > deadline) {
      throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    }
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** A logger that keeps every line, with its level. */
export function captureLogger(): Logger & { lines: string[] } {
  const lines: string[] = [];
  return {
    lines,
    debug: (m) => lines.push(`debug: ${m}`),
    info: (m) => lines.push(`info: ${m}`),
    warn: (m) => lines.push(`warn: ${m}`),
    error: (m) => lines.push(`error: ${m}`),
  };
}

/** A client aimed at `broker` with quick timings and a captured log; override anything. */
export function quickClient(
  broker: { hostname: string; port: number } | FakeBroker,
  options: Partial<MQTTClientOptions> = {},
): TestClient {
  const logger = captureLogger();
  const client = new MQTTClient({
    server: broker.hostname,
    port: broker.port,
    clientId: "test-client",
    clean: false,
    responseTime: 1,
    reconnect: { initialDelay: 0.02, maxDelay: 0.2 },
    logger,
    ...options,
  });
  return Object.assign(client, { log: logger.lines });
}

export const text = (bytes: Uint8Array): string => new TextDecoder().decode(bytes);

/** A value that changes over time, with event-driven, bounded waits on it. */
export class Watch {
  readonly #waiters = new Set<() => void>();

  /** Call after every change. */
  changed(): void {
    for (const check of [...this.#waiters]) check();
  }

  /** Resolves once `predicate()` holds; rejects after `ms` naming `what()`. */
  async until(predicate: () => boolean, ms: number, what: () => string): Promise<void> {
    if (predicate()) return;
    let check!: () => void;
    const reached = new Promise<void>((resolve) => {
      check = () => {
        if (predicate()) resolve();
      };
      this.#waiters.add(check);
    });
    try {
      await within(reached, ms, "a condition").catch((error) => {
        throw new Error(`timed out after ${ms} ms waiting for ${what()}`, { cause: error });
      });
    } finally {
      this.#waiters.delete(check);
    }
  }
}

/** Counts onConnectionChange transitions; waits for the n-th up or down. */
export class Links {
  up = 0;
  down = 0;
  readonly watch = new Watch();
  readonly handler = (up: boolean): void => {
    if (up) this.up++;
    else this.down++;
    this.watch.changed();
  };
  ups(n: number, ms = 5000): Promise<void> {
    return this.watch.until(() => this.up >= n, ms, () => `connection #${n} (have ${this.up})`);
  }
  downs(n: number, ms = 5000): Promise<void> {
    return this.watch.until(() => this.down >= n, ms, () => `loss #${n} (have ${this.down})`);
  }
}

/**
 * A {@link quickClient} connected to a {@link FakeBroker}, with the broker side
 * of its connection, which answers PINGREQs by itself.
 */
export async function fakeConnected(
  broker: FakeBroker,
  options: Partial<MQTTClientOptions> = {},
): Promise<{ client: TestClient; conn: FakeConnection }> {
  const client = quickClient(broker, options);
  const connecting = client.connect();
  const conn = await broker.accept();
  await conn.handshake();
  await within(connecting, 2000, "connect()");
  conn.autoPingresp();
  return { client, conn };
}

/** A {@link quickClient}, added to `clients` and connected; see {@link closeAll}. */
export async function connected(
  target: { hostname: string; port: number },
  clients: TestClient[],
  options: Partial<MQTTClientOptions> = {},
): Promise<TestClient> {
  const client = quickClient(target, options);
  clients.push(client);
  await within(client.connect(), 5000, `connect() of ${client.clientId}`);
  return client;
}

/** Disconnects every client, as a test's `finally` does. */
export async function closeAll(clients: TestClient[]): Promise<void> {
  await Promise.all(clients.map((c) => c.disconnect()));
}

/** A {@link FaultProxy} forwarding to `broker`. */
export function proxyTo(broker: { hostname: string; port: number }): Promise<FaultProxy> {
  return FaultProxy.start({ targetHostname: broker.hostname, targetPort: broker.port });
}

/** A port on 127.0.0.1 where nothing listens: it was free a moment ago and is closed again. */
export function deadPort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  return port;
}
