/**
 * MQTT 5 publish properties between the user's shape ({@linkcode MessageProperties})
 * and the wire's ({@linkcode PublishProperties}).
 *
 * @module
 */

import type { PublishProperties } from "../codec/packets.ts";
import type { MessageProperties } from "../messages.ts";

/** The wire properties of an incoming PUBLISH as the application sees them. */
export function toMessageProperties(p: PublishProperties): MessageProperties | undefined {
  const m: MessageProperties = {};
  let any = false;
  if (p.messageExpiryInterval !== undefined) {
    m.messageExpiry = p.messageExpiryInterval;
    any = true;
  }
  if (p.contentType !== undefined) {
    m.contentType = p.contentType;
    any = true;
  }
  if (p.responseTopic !== undefined) {
    m.responseTopic = p.responseTopic;
    any = true;
  }
  if (p.correlationData !== undefined) {
    m.correlationData = p.correlationData;
    any = true;
  }
  if (p.userProperties !== undefined) {
    m.userProperties = p.userProperties;
    any = true;
  }
  if (p.payloadFormatIndicator !== undefined) {
    m.payloadFormat = p.payloadFormatIndicator ? "utf8" : "bytes";
    any = true;
  }
  if (p.subscriptionIdentifier !== undefined) {
    m.subscriptionIdentifiers = p.subscriptionIdentifier;
    any = true;
  }
  return any ? m : undefined;
}

/** The wire properties for a publish's user-facing ones (already validated). */
export function toPublishProperties(m: MessageProperties): PublishProperties {
  const p: PublishProperties = {};
  if (m.messageExpiry !== undefined) p.messageExpiryInterval = m.messageExpiry;
  if (m.contentType !== undefined) p.contentType = m.contentType;
  if (m.responseTopic !== undefined) p.responseTopic = m.responseTopic;
  if (m.correlationData !== undefined) p.correlationData = m.correlationData;
  if (m.userProperties !== undefined) p.userProperties = m.userProperties;
  if (m.payloadFormat !== undefined) p.payloadFormatIndicator = m.payloadFormat === "utf8";
  return p;
}
