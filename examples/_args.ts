/**
 * Tiny helpers shared by the examples: a hand-rolled flag parser (the
 * examples must not depend on jsr:@std) and "use `--server`, or start an
 * embedded broker". Not part of the library.
 *
 * @module
 */

import { consoleLogger, type MQTTClientOptions, type TlsOptions } from "../mod.ts";
import { FakeBroker } from "../testing.ts";

/** Which flags an example accepts. */
export interface FlagSpec {
  /** Flags that take a value (`-n 10`, `-n=10`, `--server=host`). */
  values?: string[];
  /** Value flags that may be given more than once. */
  repeatable?: string[];
  /** Flags without a value. */
  booleans?: string[];
}

/** The parsed command line. */
export interface Flags {
  /** The last value of a value flag, or undefined. */
  get(flag: string): string | undefined;
  /** Every value of a (repeatable) value flag, in order. */
  all(flag: string): string[];
  /** Whether a boolean flag was given. */
  has(flag: string): boolean;
}

/** Prints `message` and the usage line on stderr and exits 2 (a usage error). */
export function usageError(message: string, usage: string): never {
  console.error(`error: ${message}`);
  console.error(usage);
  Deno.exit(2);
}

/**
 * Parses `argv` against `spec`. An unknown flag, a missing value or a stray
 * argument prints the usage line and exits 2; `--help` prints it and exits 0.
 */
export function parseFlags(argv: string[], spec: FlagSpec, usage: string): Flags {
  const valueFlags = new Set([...spec.values ?? [], ...spec.repeatable ?? []]);
  const repeatable = new Set(spec.repeatable ?? []);
  const booleanFlags = new Set(spec.booleans ?? []);
  const values = new Map<string, string[]>();
  const booleans = new Set<string>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--help") {
      console.log(usage);
      Deno.exit(0);
    }
    const eq = arg.startsWith("-") ? arg.indexOf("=") : -1;
    const flag = eq > 0 ? arg.slice(0, eq) : arg;
    if (valueFlags.has(flag)) {
      let value: string;
      if (eq > 0) {
        value = arg.slice(eq + 1);
      } else {
        if (i + 1 >= argv.length) usageError(`${flag} needs a value`, usage);
        value = argv[++i];
      }
      const list = values.get(flag) ?? [];
      if (list.length > 0 && !repeatable.has(flag)) list.length = 0; // the last one wins
      list.push(value);
      values.set(flag, list);
    } else if (booleanFlags.has(flag) && eq < 0) {
      booleans.add(flag);
    } else if (arg.startsWith("-")) {
      usageError(`unknown flag ${arg}`, usage);
    } else {
      usageError(`unexpected argument ${JSON.stringify(arg)}`, usage);
    }
  }
  return {
    get: (flag) => values.get(flag)?.at(-1),
    all: (flag) => values.get(flag) ?? [],
    has: (flag) => booleans.has(flag),
  };
}

/** A whole number in `min..max` from a flag value; anything else is a usage error. */
export function intFlag(
  flags: Flags,
  flag: string,
  fallback: number,
  min: number,
  max: number,
  usage: string,
): number {
  const text = flags.get(flag);
  if (text === undefined) return fallback;
  const value = Number(text);
  if (!/^\d+$/.test(text) || value < min || value > max) {
    usageError(
      `${flag} must be a whole number in ${min}..${max}, got ${JSON.stringify(text)}`,
      usage,
    );
  }
  return value;
}

/** `host`, `host:port` or `[v6addr]:port` split into its parts. */
export function parseServer(text: string, usage: string): { hostname: string; port?: number } {
  const match = /^(?:\[([^\]]+)\]|([^:]+))(?::(\d+))?$/.exec(text);
  const port = match?.[3] === undefined ? undefined : Number(match[3]);
  if (!match || (port !== undefined && (port < 1 || port > 65_535))) {
    usageError(`--server wants host or host:port, got ${JSON.stringify(text)}`, usage);
  }
  return { hostname: match[1] ?? match[2], port };
}

/** Where the example's client connects; closes the embedded broker, if any, on dispose. */
export interface BrokerAddress extends AsyncDisposable {
  /** Host name or IP. */
  hostname: string;
  /** Port, or undefined for the client's default. */
  port: number | undefined;
  /** The in-process broker when no server was given. */
  embedded: FakeBroker | undefined;
}

/**
 * The broker named by `server` (`host[:port]`), or, when it is undefined, a
 * plain broker started in this process on 127.0.0.1 and a free port.
 */
export async function brokerFor(server: string | undefined, usage: string): Promise<BrokerAddress> {
  if (server !== undefined) {
    const { hostname, port } = parseServer(server, usage);
    return { hostname, port, embedded: undefined, [Symbol.asyncDispose]: () => Promise.resolve() };
  }
  const broker = await FakeBroker.start({ mode: "broker" });
  return {
    hostname: broker.hostname,
    port: broker.port,
    embedded: broker,
    [Symbol.asyncDispose]: () => broker.close(),
  };
}

/** What to print about where we connect. */
export function describe(address: BrokerAddress): string {
  const where = `${address.hostname}:${address.port ?? "default port"}`;
  return address.embedded ? `embedded broker on ${where}` : `broker ${where}`;
}

/**
 * Resolves like `promise`, or rejects naming `what` after `ms`. Clears its
 * timer either way, so it never keeps the process alive.
 */
export function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** An error's message, for printing. */
export function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** The connection flags pub.ts and sub.ts share with mosquitto_pub/mosquitto_sub. */
export const MOSQUITTO_VALUES = ["-h", "-p", "-u", "-P", "-i", "-q", "--cafile", "--cert", "--key"];

/** The boolean flags pub.ts and sub.ts share with mosquitto_pub/mosquitto_sub. */
export const MOSQUITTO_BOOLEANS = ["-d", "--tls-use-os-certs"];

/**
 * Client options from mosquitto-style flags (`-h -p -u -P -i -d --cafile
 * --cert --key --tls-use-os-certs`); `hostname` is undefined when `-h` was
 * not given. Reads the TLS files (needs `--allow-read` for them).
 */
export function mosquittoOptions(
  flags: Flags,
  usage: string,
  defaultClientId: string,
): { hostname: string | undefined; options: Omit<MQTTClientOptions, "server"> } {
  const hostname = flags.get("-h");
  const port = flags.get("-p") === undefined
    ? undefined
    : intFlag(flags, "-p", 0, 1, 65_535, usage);
  const cafile = flags.get("--cafile");
  const cert = flags.get("--cert");
  const key = flags.get("--key");
  if (hostname === undefined) {
    for (const flag of ["-p", "--cafile", "--cert", "--key", "--tls-use-os-certs"]) {
      if (flags.get(flag) !== undefined || flags.has(flag)) {
        usageError(`${flag} needs -h (without -h the example starts its own plain broker)`, usage);
      }
    }
  }
  if ((cert === undefined) !== (key === undefined)) {
    usageError("--cert and --key go together", usage);
  }
  // TLS always verifies the broker: against the system roots, plus the --cafile CA if given.
  let tls: TlsOptions | boolean | undefined = flags.has("--tls-use-os-certs") || undefined;
  if (cafile !== undefined || cert !== undefined) {
    tls = {};
    if (cafile !== undefined) tls.caCerts = [readFile(cafile, "--cafile")];
    if (cert !== undefined) tls.cert = readFile(cert, "--cert");
    if (key !== undefined) tls.key = readFile(key, "--key");
  }
  const options: Omit<MQTTClientOptions, "server"> = {
    port,
    clientId: flags.get("-i") ?? defaultClientId,
    user: flags.get("-u"),
    password: flags.get("-P"),
    tls,
    logger: consoleLogger(flags.has("-d") ? "debug" : "warn"),
  };
  return { hostname, options };
}

/** The QoS of `-q`: 0 (default) or 1. */
export function qosFlag(flags: Flags, usage: string): 0 | 1 {
  const text = flags.get("-q") ?? "0";
  if (text === "2") usageError("-q 2: this client supports QoS 0 and 1 only", usage);
  if (text !== "0" && text !== "1") {
    usageError(`-q must be 0 or 1, got ${JSON.stringify(text)}`, usage);
  }
  return text === "1" ? 1 : 0;
}

function readFile(path: string, flag: string): string {
  try {
    return Deno.readTextFileSync(path);
  } catch (error) {
    console.error(`error: cannot read ${flag} ${path}: ${errorText(error)}`);
    Deno.exit(1);
  }
}

/** Polls `predicate` every few milliseconds; rejects naming `what` after `ms`. */
export async function until(predicate: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = performance.now() + ms;
  while (!predicate()) {
    if (performance.now() > deadline) {
      throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}
