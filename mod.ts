/**
 * mqtt_async for Deno: an MQTT 3.1.1 and 5 client that loses no message.
 *
 * - QoS 1 and 2 publishes survive dropped connections, half-open sockets and
 *   broker restarts: unacknowledged messages are re-sent on the fresh
 *   connection with their original packet id and DUP, in order.
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

export {
  MQTTClient,
  type PublishOptions,
  type ReauthenticateOptions,
  type RequestOptions,
  type SignalOptions,
  type SubscribeOptions,
} from "./client.ts";
export type { Message, MessageProperties } from "./messages.ts";
export type {
  AuthOptions,
  MessageHandler,
  MQTTClientOptions,
  ReconnectOptions,
  Will,
} from "./options.ts";
export type { ByteConn, DialOptions, TlsOptions } from "./transport/tcp.ts";
export {
  ClientClosedError,
  ConnectionLostError,
  ConnectionRefusedError,
  MQTTError,
  ProtocolError,
  type ProtocolErrorOptions,
  PublishRefusedError,
  reasonName,
  ResponseTimeoutError,
  ServerDisconnectError,
  SubscriptionRefusedError,
  UnsubscribeRefusedError,
} from "./errors.ts";
export type { PublishProperties, QoS, UserProperties } from "./codec/packets.ts";
export { MemoryStore } from "./store/memory.ts";
export {
  FileStore,
  type FileStoreOptions,
  type FileStoreRecovery,
  type FileStoreStats,
} from "./store/file.ts";
export type {
  RestoredPublish,
  SessionStore,
  StoredPublish,
  StoredSession,
  StoreOp,
} from "./store/store.ts";
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
