/**
 * The MQTT codec: every packet of MQTT 3.1.1 (protocol level 4) and MQTT 5
 * (level 5) to bytes and back, with no dependency and only web-standard APIs,
 * so it runs in Deno, Node and browsers alike.
 *
 * - {@linkcode encode} writes any packet; {@linkcode encodePublish} and
 *   {@linkcode encodeAck} are the fast paths for PUBLISH and its acks.
 * - {@linkcode PacketDecoder} decodes a byte stream cut anywhere;
 *   {@linkcode decodePacket} one whole frame. Malformed input is a
 *   `ProtocolError` whose `rule` names the conformance statement broken.
 *
 * See `docs/codec.md` for what is checked and how it differs from mqtt-packet.
 *
 * @example
 * ```ts
 * import { encode, PacketDecoder } from "./mod.ts";
 * const frame = encode({ cmd: "pingreq" }, 4);
 * new PacketDecoder({ protocolVersion: 4 }).push(frame, (p) => console.log(p.cmd)); // "pingreq"
 * ```
 *
 * @module
 */

export * from "./packets.ts";
export { encode } from "./encode.ts";
export { type AckCmd, encodeAck, encodePublish } from "./publish.ts";
export {
  decodePacket,
  MAX_PACKET_SIZE,
  PacketDecoder,
  type PacketDecoderOptions,
} from "./decode.ts";
export {
  encodeProperties,
  PROPERTIES,
  propertyById,
  propertyByName,
  type PropertyContext,
  type PropertySpec,
  type PropertyType,
} from "./properties.ts";
export {
  CONNACK_RETURN_CODES,
  isValidReasonCode,
  REASON_CODE_RULES,
  REASON_CODES,
  type ReasonCodeCmd,
  reasonName,
  SUBACK_RETURN_CODES,
} from "./reason_codes.ts";
