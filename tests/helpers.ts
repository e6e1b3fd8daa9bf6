/** Small shared helpers for the client tests: bounded waits, quick clients, log capture. */

import type { Logger } from "../logger.ts";
import { MQTTClient } from "../client.ts";
import type { MQTTClientOptions } from "../options.ts";
import type { FakeBroker } from "../testing.ts";

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
): MQTTClient & { log: string[] } {
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
