/**
 * The transport seam: what the client needs from a connection to a broker,
 * whatever carries it (TCP, TLS, WebSocket, or the simulator's network).
 *
 * @module
 */

/** Where a broker is and how to reach it, parsed from `server`/`servers`. */
export interface Endpoint {
  /** Transport: MQTT over TCP, TLS, WebSocket or secure WebSocket. */
  readonly scheme: "mqtt" | "mqtts" | "ws" | "wss";
  /** Host name or IP address (without brackets for IPv6). */
  readonly host: string;
  /** Port. */
  readonly port: number;
  /** Path of a WebSocket URL ("/mqtt"); "/" otherwise. */
  readonly path: string;
}

/** One open, ordered, reliable byte stream to a broker. */
export interface Connection {
  /**
   * The next bytes from the broker, as they arrived; `null` once the broker
   * closed its side. The chunk belongs to the caller (it is not reused).
   * Rejects when the connection fails.
   */
  read(): Promise<Uint8Array | null>;
  /**
   * Writes all of `bytes`; resolves when the transport accepted them and is
   * ready for more (its own buffer is below its limit). Rejects when the
   * connection failed.
   */
  write(bytes: Uint8Array): Promise<void>;
  /** Closes both directions at once; pending reads end. Idempotent. */
  close(): void;
}

/** Options of a {@linkcode Dialer} call. */
export interface DialContext {
  /** Aborted when the attempt must stop (the client is disconnecting). */
  readonly signal: AbortSignal;
}

/** Opens a connection to an endpoint; rejects with a ConnectionLostError when it cannot. */
export type Dialer = (endpoint: Endpoint, context: DialContext) => Promise<Connection>;
