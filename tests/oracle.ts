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
// A macrotask that runs right after pending I/O callbacks (about 3 µs here);
// setTimeout(0) is clamped to milliseconds once nested.
export { setImmediate } from "node:timers";
