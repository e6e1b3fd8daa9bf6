/**
 * mqtt_async for Deno: an MQTT 3.1.1 client that loses no QoS 1 message.
 *
 * - QoS 1 publishes survive dropped connections, half-open sockets and
 *   broker restarts: un-ACKed messages are re-sent on the fresh connection
 *   with their original packet id and DUP, in order.
 * - `publish(..., { qos: 1, sync: false })` streams through an in-flight window.
 * - Keepalive, dead-link detection and reconnect with back-off are built in.
 *
 * @example
 * ```ts ignore
 * import { MQTTClient } from "./mod.ts";
 * const client = new MQTTClient({
 *   server: "127.0.0.1",
 *   onMessage: (topic, payload) => console.log(topic, new TextDecoder().decode(payload)),
 *   onConnect: async (client) => {
 *     await client.subscribe("hello/#", 1);
 *   },
 * });
 * await client.connect();
 * await client.publish("hello/world", "hi", { qos: 1 });
 * await client.disconnect();
 * ```
 *
 * @module
 */

export { MQTTClient, type PublishOptions, type SignalOptions } from "./client.ts";
export type { Message } from "./messages.ts";
export type { MessageHandler, MQTTClientOptions, ReconnectOptions, Will } from "./options.ts";
export type { DialOptions, TlsOptions } from "./proto.ts";
export {
  ClientClosedError,
  ConnectionLostError,
  ConnectionRefusedError,
  MQTTError,
  ProtocolError,
  ResponseTimeoutError,
  SubscriptionRefusedError,
} from "./errors.ts";
export { consoleLogger, type Logger, type LogLevel, silentLogger } from "./logger.ts";
export { matchTopic } from "./topic.ts";
export {
  AlwaysUpNetwork,
  CommandNetInterface,
  type EnsureUpOptions,
  type NetCall,
  type NetCommands,
  type NetInterface,
  RecordingNetInterface,
} from "./wifi.ts";
