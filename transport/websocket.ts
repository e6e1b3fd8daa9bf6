/**
 * MQTT over WebSocket (`ws://`, `wss://`).
 *
 * @module
 */

import { ConnectionLostError } from "../errors.ts";
import type { Dialer } from "./connection.ts";

/** A dialer for WebSocket endpoints. */
export function webSocketDialer(): Dialer {
  return () => Promise.reject(new ConnectionLostError("WebSocket transport: not built yet"));
}
