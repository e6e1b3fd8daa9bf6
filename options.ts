/**
 * The client's configuration: the option types users write, and their
 * validation into the settings the client runs on. Every mistake is a
 * `TypeError` or `RangeError` naming the option and the value.
 *
 * @module
 */

import type { Logger } from "./logger.ts";
import { consoleLogger, neverThrowing } from "./logger.ts";
import type { DialOptions, TlsOptions } from "./proto.ts";
import { MAX_STRING_BYTES, show, validateTopicName } from "./topic.ts";
import { AlwaysUpNetwork, type NetInterface } from "./wifi.ts";
import type { MQTTClient } from "./client.ts";

/** The last will: published by the broker if the client vanishes without DISCONNECT. */
export interface Will {
  /** Topic name (no wildcards). */
  topic: string;
  /** Payload; a string is sent as UTF-8. */
  payload: string | Uint8Array;
  /** Retain flag. Default false. */
  retain?: boolean;
  /** QoS 0 or 1. Default 0. */
  qos?: 0 | 1;
}

/**
 * Called for every incoming message. For QoS 1 the PUBACK goes out after it
 * returns or its Promise settles.
 */
export type MessageHandler = (
  topic: string,
  payload: Uint8Array,
  retained: boolean,
  qos: 0 | 1,
  dup: boolean,
) => unknown;

/** Reconnect timing, in seconds. */
export interface ReconnectOptions {
  /** First delay after a lost connection. Default 0.25 s. */
  initialDelay?: number;
  /** The cap; also the wait after a broker refused the CONNECT. Default 30 s. */
  maxDelay?: number;
  /** Failed TCP attempts in a row before the network is bounced. Default 3. */
  bounceAfter?: number;
}

/** Everything `new MQTTClient(...)` accepts. Only `server` is required. */
export interface MQTTClientOptions {
  /** Broker host name or IP address. */
  server: string;
  /** Broker port; 0 or absent means 8883 with TLS, else 1883. */
  port?: number;
  /** Client identifier. Default: stable per host (with `--allow-sys=hostname`), 23 chars max. */
  clientId?: string;
  /** User name. */
  user?: string;
  /** Password (never logged). Needs `user`. */
  password?: string;
  /** Start with a clean slate, then keep the session (see README). Default true. */
  clean?: boolean;
  /**
   * Keepalive in whole seconds, 0..65535; 0 disables keepalive pings (a
   * PINGREQ may still go out to free PUBACKs a Nagle broker holds). Default 60.
   */
  keepalive?: number;
  /** Seconds the broker gets to answer CONNECT, ping, PUBLISH, SUBSCRIBE. Default 10. */
  responseTime?: number;
  /**
   * Ceiling of the in-flight window (un-ACKed QoS 1 publishes), 1..65535.
   * Default 1024. The window itself starts at 64 (or this, if smaller) and
   * adapts to the link: large on a slow one, small where the broker queues.
   * Lower it for brokers that cap in-flight messages per client.
   */
  maxInflight?: number;
  /** Last will. */
  will?: Will;
  /** TLS: `true` for the system roots, or certificates; verification is always on. */
  tls?: TlsOptions | boolean;
  /** The network the client may bounce. Default: always up. */
  net?: NetInterface;
  /** Incoming messages. */
  onMessage?: MessageHandler;
  /** After every successful connection; `sessionPresent` says whether the broker kept the session. */
  onConnect?: (client: MQTTClient, sessionPresent: boolean) => void | Promise<void>;
  /** On every transition of the connection, up or down. */
  onConnectionChange?: (up: boolean) => void;
  /** Where the client logs. Default: the console, warnings and errors only. */
  logger?: Logger;
  /** Reconnect back-off. */
  reconnect?: ReconnectOptions;
  /** Largest packet accepted from the broker, bytes. Default 4 MiB. */
  maxPacketSize?: number;
  /** Opens the transport; replace it to tunnel or to test. Default: TCP/TLS via Deno. */
  dial?: (options: DialOptions) => Promise<Deno.Conn>;
}

/** Validated settings, units converted to ms. */
export interface Settings {
  server: string;
  port: number;
  clientId: string;
  user?: string;
  password?: string;
  clean: boolean;
  keepalive: number;
  keepaliveMs: number;
  responseTimeMs: number;
  maxInflight: number;
  will?: { topic: string; payload: Uint8Array; retain: boolean; qos: 0 | 1 };
  tls?: TlsOptions | boolean;
  net: NetInterface;
  onMessage?: MessageHandler;
  onConnect?: (client: MQTTClient, sessionPresent: boolean) => void | Promise<void>;
  onConnectionChange?: (up: boolean) => void;
  logger: Logger;
  initialDelayMs: number;
  maxDelayMs: number;
  bounceAfter: number;
  maxPacketSize: number;
  dial?: (options: DialOptions) => Promise<Deno.Conn>;
}

const encoder = new TextEncoder();

/** Chosen by measurement: see `maxInflight` and bench/README.md. */
export const DEFAULT_MAX_INFLIGHT = 1024;

/** Validates `options` and fills in defaults. Throws TypeError/RangeError naming the problem. */
export function resolveSettings(options: MQTTClientOptions): Settings {
  if (options === null || typeof options !== "object") {
    throw new TypeError("MQTTClient needs an options object with at least `server`");
  }
  const { server } = options;
  if (typeof server !== "string" || server.length === 0) {
    throw new TypeError(`option server must be a non-empty host name or IP, got ${show(server)}`);
  }
  const port = options.port || (options.tls ? 8883 : 1883);
  integer("port", port, 1, 65_535);
  const keepalive = options.keepalive ?? 60;
  integer("keepalive", keepalive, 0, 65_535);
  const responseTime = options.responseTime ?? 10;
  positive("responseTime", responseTime);
  const maxInflight = options.maxInflight ?? DEFAULT_MAX_INFLIGHT;
  integer("maxInflight", maxInflight, 1, 65_535);
  const clean = options.clean ?? true;
  boolean("clean", clean);
  const given = options.logger;
  for (const level of ["debug", "info", "warn", "error"] as const) {
    if (given !== undefined && typeof given?.[level] !== "function") {
      throw new TypeError(
        `logger must have debug, info, warn and error methods; ${level} is ${show(given?.[level])}`,
      );
    }
  }
  const logger = neverThrowing(given ?? consoleLogger("warn"));

  let clientId = options.clientId;
  if (clientId === undefined) {
    clientId = defaultClientId();
  } else {
    if (typeof clientId !== "string") {
      throw new TypeError(`option clientId must be a string, got ${show(clientId)}`);
    }
    utf8Limit("clientId", clientId);
    if (clientId.length === 0 && !clean) {
      throw new RangeError(
        "option clientId must not be empty with clean: false (brokers refuse that, MQTT-3.1.3-7)",
      );
    }
    if (clientId.length > 23) {
      logger.debug(`clientId is ${clientId.length} characters; MQTT only guarantees 23`);
    }
  }

  if (options.user !== undefined) {
    if (typeof options.user !== "string") {
      throw new TypeError(`option user must be a string, got ${show(options.user)}`);
    }
    utf8Limit("user", options.user);
  }
  if (options.password !== undefined) {
    if (typeof options.password !== "string") {
      throw new TypeError("option password must be a string");
    }
    if (options.user === undefined) {
      throw new TypeError("option password needs option user (MQTT-3.1.2-22)");
    }
    utf8Limit("password", options.password);
  }

  let will: Settings["will"];
  if (options.will !== undefined) {
    const w = options.will;
    if (w === null || typeof w !== "object") throw new TypeError("option will must be an object");
    validateTopicName(w.topic, "will topic");
    const qos = w.qos ?? 0;
    if (qos !== 0 && qos !== 1) {
      throw new RangeError(`will qos must be 0 or 1, got ${show(qos)}`);
    }
    const payload = toBytes(w.payload, "will payload");
    if (payload.length > MAX_STRING_BYTES) {
      throw new RangeError(`will payload is ${payload.length} bytes, over ${MAX_STRING_BYTES}`);
    }
    will = { topic: w.topic, payload, retain: w.retain ?? false, qos };
    boolean("will retain", will.retain);
  }

  checkTls(options.tls, server);

  const reconnect = options.reconnect ?? {};
  const initialDelay = reconnect.initialDelay ?? 0.25;
  const maxDelay = reconnect.maxDelay ?? 30;
  positive("reconnect.initialDelay", initialDelay);
  positive("reconnect.maxDelay", maxDelay);
  if (maxDelay < initialDelay) {
    throw new RangeError(
      `reconnect.maxDelay (${maxDelay}) must not be below reconnect.initialDelay (${initialDelay})`,
    );
  }
  const bounceAfter = reconnect.bounceAfter ?? 3;
  integer("reconnect.bounceAfter", bounceAfter, 1, 1_000_000);
  const maxPacketSize = options.maxPacketSize ?? 4 * 1024 * 1024;
  integer("maxPacketSize", maxPacketSize, 2, 268_435_460);

  for (const name of ["onMessage", "onConnect", "onConnectionChange", "dial"] as const) {
    if (options[name] !== undefined && typeof options[name] !== "function") {
      throw new TypeError(`option ${name} must be a function, got ${show(options[name])}`);
    }
  }

  return {
    server,
    port,
    clientId,
    user: options.user,
    password: options.password,
    clean,
    keepalive,
    keepaliveMs: keepalive * 1000,
    responseTimeMs: responseTime * 1000,
    maxInflight,
    will,
    tls: options.tls,
    net: options.net ?? new AlwaysUpNetwork(),
    onMessage: options.onMessage,
    onConnect: options.onConnect,
    onConnectionChange: options.onConnectionChange,
    logger,
    initialDelayMs: initialDelay * 1000,
    maxDelayMs: maxDelay * 1000,
    bounceAfter,
    maxPacketSize,
    dial: options.dial,
  };
}

function checkTls(tls: MQTTClientOptions["tls"], server: string): void {
  if (tls === undefined || typeof tls === "boolean") return;
  if (tls === null || typeof tls !== "object") {
    throw new TypeError(`option tls must be true or an object, got ${show(tls)}`);
  }
  for (const name of ["cert", "key", "hostname"] as const) {
    if (tls[name] !== undefined && typeof tls[name] !== "string") {
      throw new TypeError(
        `option tls.${name} must be a string (PEM for cert/key), got ${show(tls[name])}`,
      );
    }
  }
  if (
    tls.caCerts !== undefined &&
    !(Array.isArray(tls.caCerts) && tls.caCerts.every((c) => typeof c === "string"))
  ) {
    throw new TypeError("option tls.caCerts must be an array of PEM strings");
  }
  if ((tls.cert === undefined) !== (tls.key === undefined)) {
    throw new TypeError("option tls needs both cert and key for a client certificate, or neither");
  }
  if (tls.cert !== undefined && tls.hostname !== undefined && tls.hostname !== server) {
    throw new TypeError(
      "option tls.hostname cannot differ from server when a client certificate is used " +
        "(Deno.connectTls verifies the name it dials)",
    );
  }
}

/** A string as UTF-8 bytes, a Uint8Array as is; anything else is a TypeError. */
export function toBytes(value: unknown, what: string): Uint8Array {
  if (typeof value === "string") return encoder.encode(value);
  if (value instanceof Uint8Array) return value;
  throw new TypeError(`${what} must be a string or a Uint8Array, got ${show(value)}`);
}

/** Throws a TypeError unless `value` is a boolean. */
export function boolean(what: string, value: unknown): void {
  if (typeof value !== "boolean") {
    throw new TypeError(`${what} must be true or false, got ${show(value)}`);
  }
}

function integer(what: string, value: unknown, min: number, max: number): void {
  if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
    throw new RangeError(`option ${what} must be an integer in ${min}..${max}, got ${show(value)}`);
  }
}

function positive(what: string, value: unknown): void {
  if (typeof value !== "number" || !(value > 0) || !Number.isFinite(value)) {
    throw new RangeError(`option ${what} must be a positive number of seconds, got ${show(value)}`);
  }
}

function utf8Limit(what: string, value: string): void {
  const bytes = encoder.encode(value).length;
  if (bytes > MAX_STRING_BYTES) {
    throw new RangeError(`option ${what} is ${bytes} UTF-8 bytes, over ${MAX_STRING_BYTES}`);
  }
}

/**
 * A client id stable for this host ("deno" + 16 hex digits of a hash of the
 * host name) when the host name may be read without prompting; otherwise a
 * random one, which loses the session across restarts.
 */
export function defaultClientId(): string {
  let seed: string | undefined;
  try {
    if (Deno.permissions.querySync({ name: "sys", kind: "hostname" }).state === "granted") {
      seed = Deno.hostname();
    }
  } catch { /* no permission API or no access: fall back to random */ }
  if (seed === undefined) return "deno" + randomHex(16);
  return "deno" + fnv1a64(seed);
}

function randomHex(digits: number): string {
  const bytes = crypto.getRandomValues(new Uint8Array(digits / 2));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function fnv1a64(text: string): string {
  let hash = 0xcbf29ce484222325n;
  for (const byte of encoder.encode(text)) {
    hash ^= BigInt(byte);
    hash = (hash * 0x100000001b3n) & 0xffffffffffffffffn;
  }
  return hash.toString(16).padStart(16, "0");
}
