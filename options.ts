/**
 * The client's configuration: the option types users write, and their
 * validation into the settings the client runs on. Every mistake is a
 * `TypeError` or `RangeError` naming the option and the value.
 *
 * @module
 */

import type { Logger } from "./logger.ts";
import { consoleLogger, neverThrowing } from "./logger.ts";
import type { MessageProperties } from "./messages.ts";
import type { ByteConn, DialOptions, TlsOptions } from "./transport/tcp.ts";
import type { Endpoint } from "./transport/connection.ts";
import { show } from "./topic.ts";
import { AlwaysUpNetwork, type NetInterface } from "./wifi.ts";
import type { MQTTClient } from "./client.ts";
import type { SessionStore } from "./store/store.ts";
import {
  boolean,
  checkAuth,
  checkCallbacks,
  checkClientId,
  checkCredentials,
  checkEndpoints,
  checkLogger,
  checkReconnect,
  checkTls,
  checkWill,
  integer,
  positive,
  userProperties,
} from "./_options_checks.ts";
import type { UserProperties, WillMessage } from "./codec/packets.ts";

export { boolean, toBytes } from "./_options_checks.ts";

/** The last will: published by the broker if the client vanishes without DISCONNECT. */
export interface Will {
  /** Topic name (no wildcards). */
  topic: string;
  /** Payload; a string is sent as UTF-8. */
  payload: string | Uint8Array;
  /** Retain flag. Default false. */
  retain?: boolean;
  /** QoS 0, 1 or 2. Default 0. */
  qos?: 0 | 1 | 2;
  /** MQTT 5: will properties; `delay` is the Will Delay Interval in seconds. */
  properties?: Omit<MessageProperties, "subscriptionIdentifiers"> & { delay?: number };
}

/**
 * Called for every incoming message. For QoS 1 and 2 the acknowledgement
 * goes out after it returns or its Promise settles.
 */
export type MessageHandler = (
  topic: string,
  payload: Uint8Array,
  retained: boolean,
  qos: 0 | 1 | 2,
  dup: boolean,
) => unknown;

/** Reconnect timing, in seconds. */
export interface ReconnectOptions {
  /** First delay after a lost connection. Default 0.25 s. */
  initialDelay?: number;
  /** The cap; also the wait after a broker refused the CONNECT. Default 30 s. */
  maxDelay?: number;
  /**
   * Failed attempts on one server in a row before moving to the next one in
   * `servers`; once every server failed that often, the network is bounced.
   * Default 3.
   */
  bounceAfter?: number;
}

/** MQTT 5 enhanced authentication (AUTH packets). */
export interface AuthOptions {
  /** Authentication method, e.g. "SCRAM-SHA-256". */
  method: string;
  /** Initial authentication data sent in CONNECT. */
  data?: Uint8Array;
  /**
   * Answers the broker's AUTH challenge (reason 0x18) with the next
   * authentication data; called for every challenge, while connecting and
   * during `client.reauthenticate()`. Absent: a challenge fails the
   * connection. A hook that throws (or rejects) closes the connection, and
   * `connect()` rejects with an error naming it.
   */
  onChallenge?: (data: Uint8Array | undefined) => Uint8Array | Promise<Uint8Array>;
}

/** Everything `new MQTTClient(...)` accepts. `server` or `servers` is required. */
export interface MQTTClientOptions {
  /**
   * Broker: a host name or IP (with `port` and `tls`), or a URL:
   * `mqtt://host:1883`, `mqtts://host:8883`, `ws://host:8080/mqtt`,
   * `wss://host/mqtt` (the path is kept).
   */
  server?: string;
  /**
   * Brokers to fail over between, as URLs or host names. Sticky: the client
   * stays on the one that works and moves to the next when it keeps failing.
   */
  servers?: string[];
  /** Broker port for a bare host name; 0 or absent means 8883 with TLS, else 1883. */
  port?: number;
  /**
   * Client identifier. Default: random per process. `clean: false`, a durable
   * `store` or an MQTT 5 `sessionExpiry` need an explicit one.
   */
  clientId?: string;
  /** User name. */
  user?: string;
  /** Password (never logged). Needs `user` in 3.1.1. */
  password?: string;
  /** Start with a clean slate, then keep the session (see README). Default true. */
  clean?: boolean;
  /**
   * Keepalive in whole seconds, 0..65535; 0 disables keepalive pings (a
   * PINGREQ may still go out to free acknowledgements a Nagle broker holds).
   * Default 60.
   */
  keepalive?: number;
  /** Seconds the broker gets to answer CONNECT, ping, PUBLISH, SUBSCRIBE. Default 10. */
  responseTime?: number;
  /**
   * Ceiling of the in-flight window (unacknowledged QoS 1/2 publishes),
   * 1..65535. Default 16384: a 100 ms link carrying 60 000 msgs/s to a
   * broker that runs Nagle's algorithm (a PUBACK may be held a round trip)
   * needs 12 000. The window itself starts at 64, or at 64 per ms of the
   * CONNECT round trip (at most this), and adapts to the link. An MQTT 5
   * broker's Receive Maximum caps it further.
   */
  maxInflight?: number;
  /**
   * MQTT 3.1.1 only: QoS 2 publishes that may await their PUBCOMP at once.
   * Default 20, mosquitto's default `max_inflight_messages`: past its limit
   * a 3.1.1 broker may drop a QoS 2 message behind a normal PUBREC. MQTT 5
   * brokers say their limit (Receive Maximum) and this is ignored.
   */
  maxInflightQos2?: number;
  /** Last will. */
  will?: Will;
  /** TLS for `mqtts://` (or a bare host): `true` for the system roots, or certificates. */
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
  /** Opens TCP/TLS connections; replace it to tunnel or to test. Default: Deno's sockets. */
  dial?: (options: DialOptions) => Promise<ByteConn>;
  /** 4 (MQTT 3.1.1, default) or 5. */
  protocolVersion?: 4 | 5;
  /**
   * MQTT 5: seconds the broker keeps the session after the connection drops.
   * Default 3600, so a network hiccup or a restart within the hour loses
   * nothing; `disconnect()` with `clean: true` ends the session at once.
   */
  sessionExpiry?: number;
  /** MQTT 5: user properties sent with CONNECT. */
  userProperties?: Record<string, string> | [string, string][];
  /** MQTT 5: enhanced authentication. */
  auth?: AuthOptions;
  /**
   * Where the session's unacknowledged and queued publishes live. Default:
   * in memory. A `FileStore` keeps them across a crash or restart.
   */
  store?: SessionStore;
}

/** Validated settings, units converted to ms. */
export interface Settings {
  endpoints: Endpoint[];
  clientId: string;
  /** Whether the client id was generated (not stable across processes). */
  generatedClientId: boolean;
  user?: string;
  password?: string;
  clean: boolean;
  keepalive: number;
  responseTimeMs: number;
  maxInflight: number;
  maxInflightQos2: number;
  will?: WillMessage;
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
  dial?: (options: DialOptions) => Promise<ByteConn>;
  protocolVersion: 4 | 5;
  sessionExpiry: number;
  userProperties?: UserProperties;
  auth?: AuthOptions;
  store?: SessionStore;
}

/** Chosen by measurement: see `maxInflight` and bench/README.md. */
export const DEFAULT_MAX_INFLIGHT = 16_384;
/** mosquitto's default `max_inflight_messages`. */
export const DEFAULT_MAX_INFLIGHT_QOS2 = 20;
/** MQTT 5 session expiry when none is given, seconds. */
export const DEFAULT_SESSION_EXPIRY = 3600;

/** Validates `options` and fills in defaults. Throws TypeError/RangeError naming the problem. */
export function resolveSettings(options: MQTTClientOptions): Settings {
  if (options === null || typeof options !== "object") {
    throw new TypeError("MQTTClient needs an options object with at least `server`");
  }
  const protocolVersion = options.protocolVersion ?? 4;
  if (protocolVersion !== 4 && protocolVersion !== 5) {
    throw new RangeError(
      `option protocolVersion must be 4 (MQTT 3.1.1) or 5, got ${show(protocolVersion)}`,
    );
  }
  const v5 = protocolVersion === 5;
  const endpoints = checkEndpoints(options);
  const keepalive = options.keepalive ?? 60;
  integer("keepalive", keepalive, 0, 65_535);
  const responseTime = options.responseTime ?? 10;
  positive("responseTime", responseTime);
  const maxInflight = options.maxInflight ?? DEFAULT_MAX_INFLIGHT;
  integer("maxInflight", maxInflight, 1, 65_535);
  const maxInflightQos2 = options.maxInflightQos2 ?? DEFAULT_MAX_INFLIGHT_QOS2;
  integer("maxInflightQos2", maxInflightQos2, 1, 65_535);
  const clean = options.clean ?? true;
  boolean("clean", clean);
  const logger = neverThrowing(checkLogger(options.logger) ?? consoleLogger("warn"));
  if (options.sessionExpiry !== undefined) {
    if (!v5) throw new TypeError("option sessionExpiry needs protocolVersion: 5");
    integer("sessionExpiry", options.sessionExpiry, 0, 0xffff_ffff);
  }
  const { clientId, generated } = checkClientId(options, logger);
  checkCredentials(options, v5);
  const will = checkWill(options.will, v5);
  checkTls(options.tls, endpoints);
  const reconnect = checkReconnect(options.reconnect);
  const maxPacketSize = options.maxPacketSize ?? 4 * 1024 * 1024;
  integer("maxPacketSize", maxPacketSize, 2, 268_435_460);
  checkCallbacks(options);
  if (options.userProperties !== undefined && !v5) {
    throw new TypeError("option userProperties needs protocolVersion: 5");
  }
  const auth = checkAuth(options.auth, v5);
  if (options.store !== undefined) checkStore(options.store);
  return {
    endpoints,
    clientId,
    generatedClientId: generated,
    user: options.user,
    password: options.password,
    clean,
    keepalive,
    responseTimeMs: responseTime * 1000,
    maxInflight,
    maxInflightQos2,
    will,
    tls: options.tls,
    net: options.net ?? new AlwaysUpNetwork(),
    onMessage: options.onMessage,
    onConnect: options.onConnect,
    onConnectionChange: options.onConnectionChange,
    logger,
    ...reconnect,
    maxPacketSize,
    dial: options.dial,
    protocolVersion,
    sessionExpiry: options.sessionExpiry ?? DEFAULT_SESSION_EXPIRY,
    userProperties: userProperties(options.userProperties, "userProperties"),
    auth,
    store: options.store,
  };
}

function checkStore(store: unknown): void {
  const s = store as Record<string, unknown> | null;
  if (s === null || typeof s !== "object" || typeof s.open !== "function") {
    throw new TypeError(
      `option store must be a SessionStore (MemoryStore, FileStore), got ${show(store)}`,
    );
  }
}
