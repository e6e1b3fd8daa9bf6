/**
 * A fake MQTT broker for tests (MQTT 3.1.1 and 5), on 127.0.0.1 and a free
 * port.
 *
 * - **Scripted mode** (the default): the test accepts each client connection
 *   with {@linkcode FakeBroker.accept} and plays the broker's side packet by
 *   packet with {@linkcode FakeConnection.expect} and
 *   {@linkcode FakeConnection.send}, and injects faults: withheld or late
 *   acks, a connection dropped after the Nth PUBLISH, a half-open socket,
 *   Nagle-delayed writes, malformed bytes. Each connection speaks the
 *   protocol level of the client's CONNECT; {@linkcode FakeConnection.handshake}
 *   answers with the CONNACK of that level (MQTT 5: reason code and
 *   properties), and {@linkcode FakeConnection.autoAck} completes the QoS 1
 *   and 2 flows and subscriptions the test does not script.
 * - **Broker mode** (`mode: "broker"`): a small, correct broker (QoS 0, 1
 *   and 2, `+`/`#` wildcards, retained messages, persistent sessions and v5
 *   session expiry, wills and will delay, shared subscriptions, topic
 *   aliases, Receive Maximum, keepalive enforcement), configurable with
 *   {@linkcode FakeBrokerOptions.broker} and restartable with
 *   {@linkcode FakeBroker.restart}, so examples and tests run without an
 *   external broker. Subscriptions to filters starting with `reject/` are
 *   refused (SUBACK 0x80).
 *
 * Both modes record every frame in both directions with its time and its
 * decoded packet, in {@linkcode FakeBroker.frames}.
 *
 * @example
 * ```ts ignore
 * import { FakeBroker } from "./testing.ts";
 * await using broker = await FakeBroker.start();
 * // ... point a client at broker.hostname:broker.port ...
 * const conn = await broker.accept();
 * const connect = await conn.handshake(); // expects CONNECT, answers CONNACK 0
 * const publish = await conn.expect("publish");
 * await conn.send({ cmd: "puback", messageId: publish.messageId });
 * ```
 *
 * @module
 */

export {
  FakeBroker,
  type FakeBrokerOptions,
  type RestartOptions,
  type WaitForOptions,
} from "./testing/fake_broker.ts";
export {
  type ConnectionObserver,
  FakeConnection,
  type HandshakeOptions,
  type TimeoutOptions,
} from "./testing/fake_connection.ts";
export type { FrameRecord } from "./testing/_frames.ts";
export type { BrokerCoreOptions } from "./testing/_broker_core.ts";
export type {
  IAuthPacket,
  IConnackPacket,
  IConnectPacket,
  IDisconnectPacket,
  IPingreqPacket,
  IPingrespPacket,
  IPubackPacket,
  IPubcompPacket,
  IPublishPacket,
  IPubrecPacket,
  IPubrelPacket,
  ISubackPacket,
  ISubscribePacket,
  ISubscription,
  IUnsubackPacket,
  IUnsubscribePacket,
  PacketOf,
  PayloadInput,
  SendablePacket,
} from "./testing/packets.ts";
/** The codec's packet types, which the fake broker reads and writes. */
export type {
  AckProperties,
  AuthPacket,
  AuthProperties,
  ConnackPacket,
  ConnackProperties,
  ConnectPacket,
  ConnectProperties,
  DisconnectPacket,
  DisconnectProperties,
  Packet,
  PacketCmd,
  PingreqPacket,
  PingrespPacket,
  ProtocolVersion,
  PubAckPacket,
  PubackPacket,
  PubcompPacket,
  PublishPacket,
  PublishProperties,
  PubrecPacket,
  PubrelPacket,
  QoS,
  SubackPacket,
  SubscribePacket,
  SubscribeProperties,
  Subscription,
  UnsubackPacket,
  UnsubscribePacket,
  UnsubscribeProperties,
  UserProperties,
  WillMessage,
  WillProperties,
} from "./codec/packets.ts";

/** The NetInterface test double, here too so everything for tests comes from one module. */
export {
  type EnsureUpOptions,
  type NetCall,
  type NetInterface,
  RecordingNetInterface,
} from "./wifi.ts";
