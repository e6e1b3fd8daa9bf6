/**
 * The checks behind `resolveSettings`, one per group of options. Each throws
 * a TypeError or RangeError naming the option and the bad value.
 *
 * @module
 */

import type { UserProperties, WillMessage, WillProperties } from "./codec/packets.ts";
import { parseServer } from "./client/_endpoints.ts";
import type { Logger } from "./logger.ts";
import type { AuthOptions, MQTTClientOptions, ReconnectOptions, Will } from "./options.ts";
import type { Endpoint } from "./transport/connection.ts";
import { MAX_STRING_BYTES, show, validateTopicName } from "./topic.ts";

const encoder = new TextEncoder();

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

/** Throws a RangeError unless `value` is an integer in `min..max`. */
export function integer(what: string, value: unknown, min: number, max: number): void {
  if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
    throw new RangeError(`option ${what} must be an integer in ${min}..${max}, got ${show(value)}`);
  }
}

/** Throws a RangeError unless `value` is a positive, finite number of seconds. */
export function positive(what: string, value: unknown): void {
  if (typeof value !== "number" || !(value > 0) || !Number.isFinite(value)) {
    throw new RangeError(`option ${what} must be a positive number of seconds, got ${show(value)}`);
  }
}

/** Throws a RangeError when `value` is over MQTT's string limit. */
export function utf8Limit(what: string, value: string): void {
  if (value.length * 3 <= MAX_STRING_BYTES) return;
  const bytes = encoder.encode(value).length;
  if (bytes > MAX_STRING_BYTES) {
    throw new RangeError(`${what} is ${bytes} UTF-8 bytes, over ${MAX_STRING_BYTES}`);
  }
}

function string(what: string, value: unknown): asserts value is string {
  if (typeof value !== "string") {
    throw new TypeError(`${what} must be a string, got ${show(value)}`);
  }
  if (value.includes("\u0000")) throw new TypeError(`${what} must not contain U+0000`);
  utf8Limit(what, value);
}

/** `server`/`servers` as endpoints, in preference order. */
export function checkEndpoints(options: MQTTClientOptions): Endpoint[] {
  const defaults = { port: options.port, tls: Boolean(options.tls) };
  if (options.port !== undefined && options.port !== 0) integer("port", options.port, 1, 65_535);
  if (options.servers !== undefined) {
    if (!Array.isArray(options.servers) || options.servers.length === 0) {
      throw new TypeError(
        `option servers must be a non-empty array of URLs or host names, got ${
          show(options.servers)
        }`,
      );
    }
    const list = options.servers.map((s, i) => parseServer(s, defaults, `servers[${i}]`));
    if (options.server !== undefined) list.unshift(parseServer(options.server, defaults));
    return list;
  }
  if (options.server === undefined) {
    throw new TypeError("option server (or servers) is required: a host name, IP or URL");
  }
  return [parseServer(options.server, defaults)];
}

/** The logger as given (undefined for the default); a missing method is a TypeError. */
export function checkLogger(given: Logger | undefined): Logger | undefined {
  if (given === undefined) return undefined;
  for (const level of ["debug", "info", "warn", "error"] as const) {
    if (typeof given?.[level] !== "function") {
      throw new TypeError(
        `logger must have debug, info, warn and error methods; ${level} is ${show(given?.[level])}`,
      );
    }
  }
  return given;
}

/**
 * The client id, or a random one per process. A persistent session needs a
 * stable id: `clean: false`, a store or an MQTT 5 `sessionExpiry` without
 * one is a TypeError.
 */
export function checkClientId(
  options: MQTTClientOptions,
  logger: Logger,
): { clientId: string; generated: boolean } {
  const clientId = options.clientId;
  if (clientId === undefined) {
    const why = options.clean === false
      ? "clean: false"
      : options.store !== undefined
      ? "a session store"
      : options.sessionExpiry !== undefined
      ? "sessionExpiry"
      : undefined;
    if (why !== undefined) {
      throw new TypeError(
        `option clientId is required with ${why}: a persistent session is found again by its client id, ` +
          "and the default one is random per process",
      );
    }
    return { clientId: randomClientId(), generated: true };
  }
  string("option clientId", clientId);
  if (clientId.length === 0 && (options.clean === false || options.store !== undefined)) {
    throw new RangeError(
      "option clientId must not be empty with clean: false or a store (brokers refuse that, MQTT-3.1.3-7)",
    );
  }
  if (clientId.length > 23) {
    logger.debug(`clientId is ${clientId.length} characters; MQTT 3.1.1 only guarantees 23`);
  }
  return { clientId, generated: false };
}

/** A random client id: "mqttasync" and 12 hex digits (21 of the characters every broker must accept, MQTT-3.1.3-5), unique per process, so two programs never collide. */
export function randomClientId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(6));
  return "mqttasync" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** User name and password. */
export function checkCredentials(options: MQTTClientOptions, v5: boolean): void {
  if (options.user !== undefined) string("option user", options.user);
  if (options.password !== undefined) {
    if (typeof options.password !== "string") {
      throw new TypeError("option password must be a string");
    }
    if (options.user === undefined && !v5) {
      throw new TypeError("option password needs option user in MQTT 3.1.1 (MQTT-3.1.2-22)");
    }
    utf8Limit("option password", options.password);
  }
}

/** The will, as the CONNECT carries it. */
export function checkWill(will: Will | undefined, v5: boolean): WillMessage | undefined {
  if (will === undefined) return undefined;
  if (will === null || typeof will !== "object") {
    throw new TypeError("option will must be an object");
  }
  validateTopicName(will.topic, "will topic");
  const qos = will.qos ?? 0;
  if (qos !== 0 && qos !== 1 && qos !== 2) {
    throw new RangeError(`will qos must be 0, 1 or 2, got ${show(qos)}`);
  }
  const payload = toBytes(will.payload, "will payload");
  if (payload.length > MAX_STRING_BYTES) {
    throw new RangeError(`will payload is ${payload.length} bytes, over ${MAX_STRING_BYTES}`);
  }
  const retain = will.retain ?? false;
  boolean("will retain", retain);
  const message: WillMessage = { topic: will.topic, payload, qos, retain };
  if (will.properties !== undefined) {
    if (!v5) throw new TypeError("will properties need protocolVersion: 5");
    const p = will.properties;
    const out: WillProperties = {};
    if (p.delay !== undefined) {
      integer("will properties.delay", p.delay, 0, 0xffff_ffff);
      out.willDelayInterval = p.delay;
    }
    Object.assign(out, checkMessageProperties(p, "will properties"));
    message.properties = out;
  }
  return message;
}

/** MQTT 5 message properties (publish options, will), in wire form. */
export function checkMessageProperties(
  p: Record<string, unknown>,
  what: string,
): Omit<WillProperties, "willDelayInterval"> {
  if (p === null || typeof p !== "object") throw new TypeError(`${what} must be an object`);
  const known = new Set([
    "messageExpiry",
    "contentType",
    "responseTopic",
    "correlationData",
    "userProperties",
    "payloadFormat",
    "delay",
  ]);
  for (const key of Object.keys(p)) {
    if (!known.has(key)) throw new TypeError(`${what} has an unknown property "${key}"`);
  }
  const out: Omit<WillProperties, "willDelayInterval"> = {};
  if (p.messageExpiry !== undefined) {
    integer(`${what}.messageExpiry`, p.messageExpiry, 0, 0xffff_ffff);
    out.messageExpiryInterval = p.messageExpiry as number;
  }
  if (p.contentType !== undefined) {
    string(`${what}.contentType`, p.contentType);
    out.contentType = p.contentType;
  }
  if (p.responseTopic !== undefined) {
    validateTopicName(p.responseTopic, `${what}.responseTopic`);
    out.responseTopic = p.responseTopic;
  }
  if (p.correlationData !== undefined) {
    if (!(p.correlationData instanceof Uint8Array)) {
      throw new TypeError(
        `${what}.correlationData must be a Uint8Array, got ${show(p.correlationData)}`,
      );
    }
    if (p.correlationData.length > MAX_STRING_BYTES) {
      throw new RangeError(`${what}.correlationData is over ${MAX_STRING_BYTES} bytes`);
    }
    out.correlationData = p.correlationData;
  }
  if (p.payloadFormat !== undefined) {
    if (p.payloadFormat !== "utf8" && p.payloadFormat !== "bytes") {
      throw new TypeError(
        `${what}.payloadFormat must be "utf8" or "bytes", got ${show(p.payloadFormat)}`,
      );
    }
    out.payloadFormatIndicator = p.payloadFormat === "utf8";
  }
  const user = userProperties(p.userProperties, `${what}.userProperties`);
  if (user !== undefined) out.userProperties = user;
  return out;
}

/** User properties from a record or a list of pairs, checked, as pairs. */
export function userProperties(value: unknown, what: string): UserProperties | undefined {
  if (value === undefined) return undefined;
  let pairs: unknown[];
  if (Array.isArray(value)) pairs = value;
  else if (value !== null && typeof value === "object") pairs = Object.entries(value);
  else throw new TypeError(`${what} must be a record or [name, value] pairs, got ${show(value)}`);
  return pairs.map((pair, i) => {
    if (!Array.isArray(pair) || pair.length !== 2) {
      throw new TypeError(`${what}[${i}] must be a [name, value] pair`);
    }
    string(`${what} name`, pair[0]);
    string(`${what} value of "${pair[0]}"`, pair[1]);
    return [pair[0], pair[1]] as [string, string];
  });
}

/** TLS settings. */
export function checkTls(tls: MQTTClientOptions["tls"], endpoints: readonly Endpoint[]): void {
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
  const web = endpoints.find((e) => e.scheme === "ws" || e.scheme === "wss");
  const settings = (["caCerts", "cert", "key", "hostname"] as const).filter((n) =>
    tls[n] !== undefined
  );
  if (web !== undefined && settings.length > 0) {
    throw new TypeError(
      `option tls.${
        settings[0]
      } cannot apply to the WebSocket server ${web.scheme}://${web.host}: ` +
        "the WebSocket API takes no per-connection TLS settings (wss:// is verified by the " +
        "platform; trust a private CA with deno --cert ca.pem or DENO_CERT)",
    );
  }
  if ((tls.cert === undefined) !== (tls.key === undefined)) {
    throw new TypeError("option tls needs both cert and key for a client certificate, or neither");
  }
  if (tls.cert !== undefined && tls.hostname !== undefined) {
    for (const endpoint of endpoints) {
      if (tls.hostname !== endpoint.host) {
        throw new TypeError(
          "option tls.hostname cannot differ from server when a client certificate is used " +
            "(Deno.connectTls verifies the name it dials)",
        );
      }
    }
  }
}

/** Reconnect timing, in ms. */
export function checkReconnect(
  reconnect: ReconnectOptions | undefined,
): { initialDelayMs: number; maxDelayMs: number; bounceAfter: number } {
  const r = reconnect ?? {};
  if (r === null || typeof r !== "object") {
    throw new TypeError("option reconnect must be an object");
  }
  const initialDelay = r.initialDelay ?? 0.25;
  const maxDelay = r.maxDelay ?? 30;
  positive("reconnect.initialDelay", initialDelay);
  positive("reconnect.maxDelay", maxDelay);
  if (maxDelay < initialDelay) {
    throw new RangeError(
      `reconnect.maxDelay (${maxDelay}) must not be below reconnect.initialDelay (${initialDelay})`,
    );
  }
  const bounceAfter = r.bounceAfter ?? 3;
  integer("reconnect.bounceAfter", bounceAfter, 1, 1_000_000);
  return { initialDelayMs: initialDelay * 1000, maxDelayMs: maxDelay * 1000, bounceAfter };
}

/** Callbacks must be functions. */
export function checkCallbacks(options: MQTTClientOptions): void {
  for (const name of ["onMessage", "onConnect", "onConnectionChange", "dial"] as const) {
    if (options[name] !== undefined && typeof options[name] !== "function") {
      throw new TypeError(`option ${name} must be a function, got ${show(options[name])}`);
    }
  }
}

/** MQTT 5 enhanced authentication. */
export function checkAuth(auth: AuthOptions | undefined, v5: boolean): AuthOptions | undefined {
  if (auth === undefined) return undefined;
  if (!v5) throw new TypeError("option auth (enhanced authentication) needs protocolVersion: 5");
  if (auth === null || typeof auth !== "object") {
    throw new TypeError("option auth must be an object");
  }
  string("option auth.method", auth.method);
  if (auth.data !== undefined && !(auth.data instanceof Uint8Array)) {
    throw new TypeError(`option auth.data must be a Uint8Array, got ${show(auth.data)}`);
  }
  if (auth.onChallenge !== undefined && typeof auth.onChallenge !== "function") {
    throw new TypeError("option auth.onChallenge must be a function");
  }
  return auth;
}
