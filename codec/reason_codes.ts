/**
 * MQTT 5 reason codes (MQTT 5 §2.4, Table 2-6): their names, and which codes
 * each packet type may carry. 3.1.1 has no reason codes; its CONNACK return
 * codes (0..5) and SUBACK return codes (0, 1, 2, 0x80) are listed here too.
 *
 * @module
 */

import type { PacketCmd } from "./packets.ts";

const NAMES: Record<number, string> = {
  0x00: "Success",
  0x01: "Granted QoS 1",
  0x02: "Granted QoS 2",
  0x04: "Disconnect with Will Message",
  0x10: "No matching subscribers",
  0x11: "No subscription existed",
  0x18: "Continue authentication",
  0x19: "Re-authenticate",
  0x80: "Unspecified error",
  0x81: "Malformed Packet",
  0x82: "Protocol Error",
  0x83: "Implementation specific error",
  0x84: "Unsupported Protocol Version",
  0x85: "Client Identifier not valid",
  0x86: "Bad User Name or Password",
  0x87: "Not authorized",
  0x88: "Server unavailable",
  0x89: "Server busy",
  0x8a: "Banned",
  0x8b: "Server shutting down",
  0x8c: "Bad authentication method",
  0x8d: "Keep Alive timeout",
  0x8e: "Session taken over",
  0x8f: "Topic Filter invalid",
  0x90: "Topic Name invalid",
  0x91: "Packet Identifier in use",
  0x92: "Packet Identifier not found",
  0x93: "Receive Maximum exceeded",
  0x94: "Topic Alias invalid",
  0x95: "Packet too large",
  0x96: "Message rate too high",
  0x97: "Quota exceeded",
  0x98: "Administrative action",
  0x99: "Payload format invalid",
  0x9a: "Retain not supported",
  0x9b: "QoS not supported",
  0x9c: "Use another server",
  0x9d: "Server moved",
  0x9e: "Shared Subscriptions not supported",
  0x9f: "Connection rate exceeded",
  0xa0: "Maximum connect time",
  0xa1: "Subscription Identifiers not supported",
  0xa2: "Wildcard Subscriptions not supported",
};

/**
 * The name MQTT 5 gives reason code `code`, e.g. 0x87 "Not authorized", 0x97
 * "Quota exceeded". Code 0 reads "Normal disconnection" for a DISCONNECT and
 * "Granted QoS 0" for a SUBACK when `cmd` says so, else "Success". An unknown
 * code reads "Unknown reason code 0x..".
 *
 * @example
 * ```ts
 * import { reasonName } from "./reason_codes.ts";
 * console.log(reasonName(0x87)); // "Not authorized"
 * ```
 */
export function reasonName(code: number, cmd?: PacketCmd): string {
  if (code === 0 && cmd === "disconnect") return "Normal disconnection";
  if (code === 0 && cmd === "suback") return "Granted QoS 0";
  return NAMES[code] ?? `Unknown reason code 0x${code.toString(16).padStart(2, "0")}`;
}

/** Packet types that carry MQTT 5 reason codes. */
export type ReasonCodeCmd =
  | "connack"
  | "puback"
  | "pubrec"
  | "pubrel"
  | "pubcomp"
  | "suback"
  | "unsuback"
  | "disconnect"
  | "auth";

const PUBACK = [0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
const PUBREL = [0x00, 0x92];

/** The MQTT 5 reason codes each packet type may carry (MQTT 5 §3.x.2.1). */
export const REASON_CODES: Readonly<Record<ReasonCodeCmd, readonly number[]>> = {
  connack: [
    0x00,
    0x80,
    0x81,
    0x82,
    0x83,
    0x84,
    0x85,
    0x86,
    0x87,
    0x88,
    0x89,
    0x8a,
    0x8c,
    0x90,
    0x95,
    0x97,
    0x99,
    0x9a,
    0x9b,
    0x9c,
    0x9d,
    0x9f,
  ],
  puback: PUBACK,
  pubrec: PUBACK,
  pubrel: PUBREL,
  pubcomp: PUBREL,
  suback: [0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8f, 0x91, 0x97, 0x9e, 0xa1, 0xa2],
  unsuback: [0x00, 0x11, 0x80, 0x83, 0x87, 0x8f, 0x91],
  disconnect: [
    0x00,
    0x04,
    0x80,
    0x81,
    0x82,
    0x83,
    0x87,
    0x89,
    0x8b,
    0x8d,
    0x8e,
    0x8f,
    0x90,
    0x93,
    0x94,
    0x95,
    0x96,
    0x97,
    0x98,
    0x99,
    0x9a,
    0x9b,
    0x9c,
    0x9d,
    0x9e,
    0x9f,
    0xa0,
    0xa1,
    0xa2,
  ],
  auth: [0x00, 0x18, 0x19],
};

/** The conformance rule that a wrong reason code in each packet type breaks. */
export const REASON_CODE_RULES: Readonly<Record<ReasonCodeCmd, string>> = {
  connack: "MQTT-3.2.2-8",
  puback: "MQTT-3.4.2-1",
  pubrec: "MQTT-3.5.2-1",
  pubrel: "MQTT-3.6.2-1",
  pubcomp: "MQTT-3.7.2-1",
  suback: "MQTT-3.9.3-2",
  unsuback: "MQTT-3.11.3-2",
  disconnect: "MQTT-3.14.2-1",
  auth: "MQTT-3.15.2-1",
};

const VALID: Record<string, Uint8Array> = {};
for (const [cmd, codes] of Object.entries(REASON_CODES)) {
  const table = new Uint8Array(256);
  for (const code of codes) table[code] = 1;
  VALID[cmd] = table;
}

/** True when MQTT 5 allows reason code `code` in a `cmd` packet. */
export function isValidReasonCode(cmd: ReasonCodeCmd, code: number): boolean {
  return VALID[cmd][code] === 1;
}

/** MQTT 3.1.1 CONNACK return codes (Table 3.1); 6..255 are reserved. */
export const CONNACK_RETURN_CODES: readonly number[] = [0, 1, 2, 3, 4, 5];

/** MQTT 3.1.1 SUBACK return codes (§3.9.3); the others are reserved (MQTT-3.9.3-2). */
export const SUBACK_RETURN_CODES: readonly number[] = [0x00, 0x01, 0x02, 0x80];
