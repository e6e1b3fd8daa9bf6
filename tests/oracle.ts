/**
 * The test suite's reference codec, mqtt-packet: differential tests and
 * hand-made frames use it. The library itself has no dependency.
 *
 * @module
 */
export { generate, parser } from "npm:mqtt-packet@^9.0.2";
export type {
  IConnackPacket,
  IConnectPacket,
  IPubackPacket,
  IPublishPacket,
  ISubackPacket,
  ISubscribePacket,
  IUnsubackPacket,
  IUnsubscribePacket,
  Packet,
  Parser,
} from "npm:mqtt-packet@^9.0.2";
export { Buffer } from "node:buffer";
