/**
 * Typed errors. Every error the library raises on its own account is an
 * {@linkcode MQTTError}; bad arguments raise the standard `TypeError` or
 * `RangeError` instead, before anything is sent.
 *
 * @module
 */

import { reasonName as specReasonName } from "./codec/reason_codes.ts";

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

/**
 * The text the spec gives for a reason code: a 3.1.1 CONNACK return code
 * (`version` 4) or an MQTT 5 reason code (`version` 5, the default).
 */
export function reasonName(code: number, version: 4 | 5 = 5): string {
  if (version === 5) return specReasonName(code);
  return CONNACK_REASONS[code] ?? `unknown return code ${code}`;
}

/** The text MQTT 3.1.1 gives for a CONNACK return code. */
export function connackReason(code: number): string {
  return reasonName(code, 4);
}

function hex(code: number): string {
  return `0x${code.toString(16).padStart(2, "0")}`;
}

/**
 * The broker refused the connection: a 3.1.1 CONNACK return code 1-5, or an
 * MQTT 5 CONNACK reason code of 0x80 or more.
 */
export class ConnectionRefusedError extends MQTTError {
  /** The CONNACK return code (3.1.1) or reason code (5). */
  readonly code: number;
  /** The same code, under the name every reason-coded error uses. */
  readonly reasonCode: number;
  /** Human-readable reason, e.g. "not authorized". */
  readonly reason: string;
  /** The broker's reason string (MQTT 5), when it sent one. */
  readonly reasonString: string | undefined;
  /** Another server to use (MQTT 5 0x9c "use another server", 0x9d "server moved"). */
  readonly serverReference: string | undefined;
  /** Creates the error for CONNACK `code` of protocol `version` (default 4). */
  constructor(code: number, version: 4 | 5 = 4, reasonString?: string, serverReference?: string) {
    const reason = reasonName(code, version);
    const detail = reasonString ? `: ${reasonString}` : "";
    const label = version === 4 ? `CONNACK code ${code}` : `CONNACK reason ${hex(code)}`;
    super(`broker refused the connection: ${reason} (${label})${detail}`);
    this.code = code;
    this.reasonCode = code;
    this.reason = reason;
    this.reasonString = reasonString;
    this.serverReference = serverReference;
  }
}

/** The broker answered an MQTT 5 PUBLISH with a PUBACK or PUBREC reason code of 0x80 or more. */
export class PublishRefusedError extends MQTTError {
  /** The reason code, e.g. 0x87. */
  readonly reasonCode: number;
  /** Human-readable reason, e.g. "not authorized". */
  readonly reason: string;
  /** The topic of the refused publish. */
  readonly topic: string;
  /** Creates the error. */
  constructor(topic: string, reasonCode: number, reasonString?: string) {
    const reason = reasonName(reasonCode);
    super(
      `broker refused the publish to "${topic}": ${reason} (${hex(reasonCode)})` +
        (reasonString ? `: ${reasonString}` : ""),
    );
    this.reasonCode = reasonCode;
    this.reason = reason;
    this.topic = topic;
  }
}

/** The broker told the client to go (MQTT 5 DISCONNECT from the server). */
export class ServerDisconnectError extends MQTTError {
  /** The DISCONNECT reason code, e.g. 0x8b "server shutting down". */
  readonly reasonCode: number;
  /** Human-readable reason. */
  readonly reason: string;
  /** Another server to use (0x9c "use another server", 0x9d "server moved"), when given. */
  readonly serverReference: string | undefined;
  /** Creates the error. */
  constructor(reasonCode: number, reasonString?: string, serverReference?: string) {
    const reason = reasonName(reasonCode);
    super(
      `broker disconnected the client: ${reason} (${hex(reasonCode)})` +
        (reasonString ? `: ${reasonString}` : "") +
        (serverReference ? `; server reference "${serverReference}"` : ""),
    );
    this.reasonCode = reasonCode;
    this.reason = reason;
    this.serverReference = serverReference;
  }
}

/** The connection closed or could not be opened (TCP/TLS level). */
export class ConnectionLostError extends MQTTError {}

/** The broker did not answer within `responseTime`. */
export class ResponseTimeoutError extends MQTTError {}

/** The broker refused a subscription (SUBACK 0x80, or an MQTT 5 reason code of 0x80 or more). */
export class SubscriptionRefusedError extends MQTTError {
  /** The topic filter the broker refused. */
  readonly filter: string;
  /** The SUBACK code (0x80 in 3.1.1; an MQTT 5 reason code). */
  readonly reasonCode: number;
  /** Human-readable reason. */
  readonly reason: string;
  /** Creates the error for `filter`. */
  constructor(filter: string, reasonCode = 0x80, version: 4 | 5 = 4) {
    const reason = version === 4 ? "failure" : reasonName(reasonCode);
    super(`broker refused the subscription to "${filter}": ${reason} (SUBACK ${hex(reasonCode)})`);
    this.filter = filter;
    this.reasonCode = reasonCode;
    this.reason = reason;
  }
}

/** The broker refused an MQTT 5 UNSUBSCRIBE (UNSUBACK reason code of 0x80 or more). */
export class UnsubscribeRefusedError extends MQTTError {
  /** The topic filter. */
  readonly filter: string;
  /** The UNSUBACK reason code. */
  readonly reasonCode: number;
  /** Human-readable reason. */
  readonly reason: string;
  /** Creates the error for `filter`. */
  constructor(filter: string, reasonCode: number) {
    const reason = reasonName(reasonCode);
    super(`broker refused to unsubscribe "${filter}": ${reason} (UNSUBACK ${hex(reasonCode)})`);
    this.filter = filter;
    this.reasonCode = reasonCode;
    this.reason = reason;
  }
}

/** Options of {@linkcode ProtocolError}. */
export interface ProtocolErrorOptions extends ErrorOptions {
  /** The conformance statement broken, e.g. "MQTT-3.3.1-4", when the spec has one. */
  rule?: string;
}

/** The peer sent bytes that break the MQTT protocol; the connection is closed. */
export class ProtocolError extends MQTTError {
  /** The conformance statement broken (e.g. "MQTT-3.3.1-4"), when the spec names one. */
  readonly rule: string | undefined;
  /** Creates the error; the rule, when given, is appended to the message. */
  constructor(message: string, options: ProtocolErrorOptions = {}) {
    super(options.rule ? `${message} (${options.rule})` : message, options);
    this.rule = options.rule;
  }
}

/** The client was disconnected by `disconnect()`; the call cannot complete. */
export class ClientClosedError extends MQTTError {
  /**
   * For a publish: the message stays in the session store and goes out when
   * a client resumes the session (a durable store was configured).
   */
  readonly stored: boolean;
  /** Creates the error; `stored` says the publish is kept in the store. */
  constructor(message: string, options: ErrorOptions & { stored?: boolean } = {}) {
    super(message, options);
    this.stored = options.stored ?? false;
  }
}
