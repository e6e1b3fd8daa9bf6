/**
 * The library's one small logger. Replace it with your own, or silence it.
 * Nothing the library logs contains a password.
 *
 * @module
 */

/** Where the client writes what it does. Any object with these four methods. */
export interface Logger {
  /** Protocol-level detail: frames, timers, decisions. */
  debug(message: string): void;
  /** Connection changes. */
  info(message: string): void;
  /** Something went wrong and the client recovers from it. */
  warn(message: string): void;
  /** Something went wrong in user code or the broker that the client cannot fix. */
  error(message: string): void;
}

/** Levels in increasing severity. */
export type LogLevel = "debug" | "info" | "warn" | "error" | "silent";

const RANK: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3, silent: 4 };

/**
 * A logger writing to the console with a `mqtt_async` prefix, dropping
 * messages below `level`.
 *
 * @example
 * ```ts
 * import { consoleLogger, MQTTClient } from "./mod.ts";
 * const client = new MQTTClient({ server: "127.0.0.1", logger: consoleLogger("debug") });
 * ```
 */
export function consoleLogger(level: LogLevel = "warn"): Logger {
  const min = RANK[level];
  const write = (at: LogLevel, sink: (line: string) => void) => (message: string) => {
    if (RANK[at] >= min) sink(`mqtt_async ${at}: ${message}`);
  };
  return {
    debug: write("debug", (line) => console.debug(line)),
    info: write("info", (line) => console.info(line)),
    warn: write("warn", (line) => console.warn(line)),
    error: write("error", (line) => console.error(line)),
  };
}

/** A logger that drops everything. */
export const silentLogger: Logger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
};

/**
 * `logger` with every method made unable to throw: the client logs from
 * background tasks (reconnects, timers, socket callbacks), where a throwing
 * user logger would otherwise end as an unhandled rejection.
 */
export function neverThrowing(logger: Logger): Logger {
  const guard = (method: (message: string) => void) => (message: string) => {
    try {
      method.call(logger, message);
    } catch { /* a logger's failure is not the client's */ }
  };
  return {
    debug: guard(logger.debug),
    info: guard(logger.info),
    warn: guard(logger.warn),
    error: guard(logger.error),
  };
}
