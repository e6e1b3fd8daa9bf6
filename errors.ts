/**
 * Typed errors. Every error the library raises on its own account is an
 * {@linkcode MQTTError}; bad arguments raise the standard `TypeError` or
 * `RangeError` instead, before anything is sent.
 *
 * @module
 */

/**
 * Base class of every MQTT-level error this library raises.
 *
 * @example
 * ```ts
 * import { MQTTClient, MQTTError } from "./mod.ts";
 * const client = new MQTTClient({ server: "127.0.0.1", port: 1 });
 * try {
 *   await client.connect();
 * } catch (err) {
 *   if (err instanceof MQTTError) console.error("MQTT failed:", err.message);
 * }
 * ```
 */
export class MQTTError extends Error {
  /** Creates an error with a message and an optional cause. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
  }
}

const CONNACK_REASONS: Record<number, string> = {
  1: "unacceptable protocol version",
  2: "identifier rejected",
  3: "server unavailable",
  4: "bad user name or password",
  5: "not authorized",
};

/** The text MQTT 3.1.1 gives for a CONNACK return code. */
export function connackReason(code: number): string {
  return CONNACK_REASONS[code] ?? `unknown return code ${code}`;
}

/** The broker answered CONNECT with a CONNACK return code 1-5. */
export class ConnectionRefusedError extends MQTTError {
  /** The CONNACK return code (1-5, or another non-zero code a broker invented). */
  readonly code: number;
  /** Human-readable reason, e.g. "not authorized". */
  readonly reason: string;
  /** Creates the error for CONNACK return `code`. */
  constructor(code: number) {
    const reason = connackReason(code);
    super(`broker refused the connection: ${reason} (CONNACK code ${code})`);
    this.code = code;
    this.reason = reason;
  }
}

/** The connection closed or could not be opened (TCP/TLS level). */
export class ConnectionLostError extends MQTTError {}

/** The broker did not answer within `responseTime`. */
export class ResponseTimeoutError extends MQTTError {}

/** The broker refused a subscription (SUBACK return code 0x80). */
export class SubscriptionRefusedError extends MQTTError {
  /** The topic filter the broker refused. */
  readonly filter: string;
  /** Creates the error for `filter`. */
  constructor(filter: string) {
    super(`broker refused the subscription to "${filter}" (SUBACK 0x80)`);
    this.filter = filter;
  }
}

/** The broker sent bytes that break MQTT 3.1.1; the connection is closed. */
export class ProtocolError extends MQTTError {}

/** The client was disconnected by `disconnect()`; the call cannot complete. */
export class ClientClosedError extends MQTTError {}
