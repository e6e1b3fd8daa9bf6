/**
 * The one place external code enters the library. The specifier is complete
 * on its own (not an import-map alias) so that a program importing `mod.ts`
 * by URL, without this repository's deno.json, resolves it too.
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
