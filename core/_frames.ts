/**
 * Frame builders the state uses: the hot-path PUBLISH and acknowledgements,
 * and everything else through the general encoder.
 *
 * @module
 */

import { encode } from "../codec/encode.ts";
import type { Packet, ProtocolVersion } from "../codec/packets.ts";
import { type AckCmd, encodeAck, encodePublish } from "../codec/publish.ts";
import type { OutgoingPublish } from "./records.ts";

/**
 * A PUBLISH frame for `record`. v5: `alias` (0: none) adds a Topic Alias;
 * `aliasOnly` leaves the topic out (the broker knows the alias).
 */
export function publishFrame(
  record: OutgoingPublish,
  version: ProtocolVersion,
  dup: boolean,
  alias = 0,
  aliasOnly = false,
): Uint8Array {
  return encodePublish(
    aliasOnly ? "" : record.topic,
    record.payload,
    record.qos,
    record.id,
    record.retain,
    dup,
    version,
    version === 5 ? record.properties : undefined,
    alias,
  );
}

/** A PUBACK, PUBREC, PUBREL or PUBCOMP frame; a v5 reason code other than 0 takes the long form. */
export function ackFrame(
  cmd: AckCmd,
  id: number,
  version: ProtocolVersion,
  reasonCode = 0,
): Uint8Array {
  if (reasonCode === 0 || version === 4) return encodeAck(cmd, id);
  return encode({ cmd, messageId: id, reasonCode }, version);
}

/** Any other packet. */
export function packetFrame(packet: Packet, version: ProtocolVersion): Uint8Array {
  return encode(packet, version);
}
