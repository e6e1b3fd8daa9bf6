/**
 * Broker addresses: `server`/`servers` (host names or `mqtt://`, `mqtts://`,
 * `ws://`, `wss://` URLs) into endpoints, and back into text for logs.
 *
 * @module
 */

import type { Endpoint } from "../transport/connection.ts";
import { show } from "../topic.ts";

const DEFAULT_PORT: Record<Endpoint["scheme"], number> = {
  mqtt: 1883,
  mqtts: 8883,
  ws: 80,
  wss: 443,
};

/**
 * One endpoint from a `server` value: a URL with a scheme, or a bare host
 * name (or `host:port`) that takes `port` and `tls` from the options.
 * Throws a TypeError naming the problem.
 */
export function parseServer(
  server: unknown,
  defaults: { port?: number; tls: boolean },
  what = "server",
): Endpoint {
  if (typeof server !== "string" || server.trim().length === 0) {
    throw new TypeError(
      `option ${what} must be a non-empty host name, IP or URL, got ${show(server)}`,
    );
  }
  const text = server.trim();
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(text)?.[1]?.toLowerCase();
  if (scheme === undefined) {
    if (/[/?#\s@]/.test(text)) {
      throw new TypeError(`option ${what} is neither a host name nor a URL: ${show(server)}`);
    }
    const secure = defaults.tls;
    const parsed = hostPort(text);
    const port = defaults.port || parsed.port || (secure ? 8883 : 1883);
    return { scheme: secure ? "mqtts" : "mqtt", host: parsed.host, port, path: "/" };
  }
  if (!(scheme in DEFAULT_PORT)) {
    throw new TypeError(
      `option ${what} has an unsupported scheme "${scheme}://" (use mqtt, mqtts, ws or wss): ${
        show(server)
      }`,
    );
  }
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new TypeError(`option ${what} is not a valid URL: ${show(server)}`);
  }
  if (url.hostname.length === 0) throw new TypeError(`option ${what} has no host: ${show(server)}`);
  if (url.username || url.password) {
    throw new TypeError(`option ${what} must not carry credentials; use user and password`);
  }
  const s = scheme as Endpoint["scheme"];
  const host = url.hostname.replace(/^\[(.*)\]$/, "$1");
  const port = url.port ? Number(url.port) : DEFAULT_PORT[s];
  const path = s === "ws" || s === "wss" ? (url.pathname || "/") + url.search : "/";
  return { scheme: s, host, port, path };
}

function hostPort(text: string): { host: string; port: number | undefined } {
  const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(text);
  if (bracketed) {
    return { host: bracketed[1], port: bracketed[2] ? Number(bracketed[2]) : undefined };
  }
  const colons = text.split(":").length - 1;
  if (colons === 1) {
    const [host, port] = text.split(":");
    if (/^\d+$/.test(port)) return { host, port: Number(port) };
  }
  return { host: text, port: undefined }; // a host name, or a bare IPv6 address
}

/** `host:port` for plain MQTT, a URL for the others: how logs name an endpoint. */
export function describeEndpoint(endpoint: Endpoint): string {
  const host = endpoint.host.includes(":") ? `[${endpoint.host}]` : endpoint.host;
  if (endpoint.scheme === "mqtt") return `${host}:${endpoint.port}`;
  const path = endpoint.scheme === "ws" || endpoint.scheme === "wss" ? endpoint.path : "";
  return `${endpoint.scheme}://${host}:${endpoint.port}${path}`;
}

/**
 * The endpoint an MQTT 5 Server Reference names ("host", "host:port" or a
 * URL), with what it leaves out taken from `current`; undefined when absent
 * or unusable (the client then moves to its next server).
 */
export function parseServerReference(
  reference: string | undefined,
  current: Endpoint,
): Endpoint | undefined {
  if (reference === undefined || reference.trim().length === 0) return undefined;
  // A reference may list several servers separated by spaces: take the first.
  const first = reference.trim().split(/\s+/)[0];
  try {
    if (first.includes("://")) return parseServer(first, { tls: false });
    const { host, port } = hostPort(first);
    return { ...current, host, port: port ?? current.port };
  } catch {
    return undefined;
  }
}
