/**
 * The options of the client's calls, and their validation: everything a
 * call gets wrong is a TypeError or RangeError before anything is sent.
 *
 * @module
 */

import { MAX_REMAINING_LENGTH } from "../_bytes.ts";
import type { PublishProperties, Subscription, UserProperties } from "../codec/packets.ts";
import {
  boolean,
  checkMessageProperties,
  integer,
  toBytes,
  userProperties,
} from "../_options_checks.ts";
import type { MessageProperties } from "../messages.ts";
import { MAX_STRING_BYTES, show, validateTopicFilter, validateTopicName } from "../topic.ts";

/** Options of calls that accept only cancellation. */
export interface SignalOptions {
  /** Aborting rejects the call with the signal's reason. */
  signal?: AbortSignal;
}

/** Options of {@linkcode MQTTClient.publish}. */
export interface PublishOptions {
  /** 0 (at most once), 1 (at least once) or 2 (exactly once). Default 0. */
  qos?: 0 | 1 | 2;
  /** Retain flag. Default false. */
  retain?: boolean;
  /**
   * QoS 1/2 only. `true` (default): resolve when the broker's last
   * acknowledgement arrives (PUBACK, or PUBCOMP for QoS 2). `false`: resolve
   * once the PUBLISH is written (after its record is durable, with a store)
   * and the in-flight window has room (once it filled: an eighth of it free),
   * so the next message overlaps the wait.
   */
  sync?: boolean;
  /** MQTT 5 properties; a TypeError on a 3.1.1 client. */
  properties?: Omit<MessageProperties, "subscriptionIdentifiers" | "userProperties"> & {
    /** Name/value pairs, as a record or as ordered pairs (a name may repeat). */
    userProperties?: Record<string, string> | [string, string][];
  };
  /** Withdraws the publish while it still waits for the connection or the window. */
  signal?: AbortSignal;
}

/** MQTT 5 subscription options (a plain QoS number works for 3.1.1 and 5). */
export interface SubscribeOptions {
  /** Maximum QoS. Default 0. */
  qos?: 0 | 1 | 2;
  /** MQTT 5: do not send this client its own publishes. */
  noLocal?: boolean;
  /** MQTT 5: keep the retain flag as published when forwarding. */
  retainAsPublished?: boolean;
  /**
   * MQTT 5: 0 send retained messages on subscribe (default), 1 only if the
   * subscription is new, 2 never.
   */
  retainHandling?: 0 | 1 | 2;
  /** MQTT 5: a subscription identifier (1..268435455) that matching messages carry. */
  subscriptionIdentifier?: number;
  /** MQTT 5: user properties of the SUBSCRIBE. */
  userProperties?: Record<string, string> | [string, string][];
  /** Aborting rejects the call with the signal's reason. */
  signal?: AbortSignal;
}

const encoder = new TextEncoder();

/** A publish call's arguments, checked. */
export interface CheckedPublish {
  payload: Uint8Array;
  qos: 0 | 1 | 2;
  retain: boolean;
  sync: boolean;
  properties: PublishProperties | undefined;
}

/** Checks a publish call's arguments. */
export function checkPublish(
  topic: unknown,
  payload: unknown,
  options: PublishOptions,
  version: 4 | 5,
): CheckedPublish {
  validateTopicName(topic);
  if (options === null || typeof options !== "object") {
    throw new TypeError(`publish options must be an object, got ${show(options)}`);
  }
  const qos = options.qos ?? 0;
  checkQos(qos);
  const retain = options.retain ?? false;
  boolean("retain", retain);
  const sync = options.sync ?? true;
  boolean("sync", sync);
  const bytes = toBytes(payload, "payload");
  let properties: PublishProperties | undefined;
  if (options.properties !== undefined) {
    if (version !== 5) {
      throw new TypeError("publish properties need an MQTT 5 client (protocolVersion: 5)");
    }
    properties = checkMessageProperties(options.properties, "publish properties");
  }
  if (bytes.length > MAX_REMAINING_LENGTH - MAX_STRING_BYTES - 4) {
    const frame = bytes.length + encoder.encode(topic).length + 2 + (qos > 0 ? 2 : 0);
    if (frame > MAX_REMAINING_LENGTH) {
      throw new RangeError(
        `payload of ${bytes.length} bytes makes the PUBLISH exceed MQTT's ${MAX_REMAINING_LENGTH}-byte limit`,
      );
    }
  }
  return { payload: bytes, qos, retain, sync, properties };
}

/** A subscribe call's arguments, checked. */
export interface CheckedSubscribe {
  subscription: Subscription;
  properties: { subscriptionIdentifier?: number; userProperties?: UserProperties } | undefined;
}

/** Checks a subscribe call's filter and QoS or options. */
export function checkSubscribe(
  filter: unknown,
  qosOrOptions: unknown,
  version: 4 | 5,
): CheckedSubscribe {
  validateTopicFilter(filter);
  if (typeof qosOrOptions !== "object" || qosOrOptions === null) {
    checkQos(qosOrOptions);
    return { subscription: { topic: filter, qos: qosOrOptions }, properties: undefined };
  }
  const o = qosOrOptions as SubscribeOptions;
  const qos = o.qos ?? 0;
  checkQos(qos);
  const subscription: Subscription = { topic: filter, qos };
  const v5Only = (name: string) => {
    if (version !== 5) throw new TypeError(`subscribe option ${name} needs an MQTT 5 client`);
  };
  if (o.noLocal !== undefined) {
    v5Only("noLocal");
    boolean("noLocal", o.noLocal);
    if (o.noLocal && filter.startsWith("$share/")) {
      throw new TypeError("noLocal cannot be set on a shared subscription (MQTT-3.8.3-4)");
    }
    subscription.nl = o.noLocal;
  }
  if (o.retainAsPublished !== undefined) {
    v5Only("retainAsPublished");
    boolean("retainAsPublished", o.retainAsPublished);
    subscription.rap = o.retainAsPublished;
  }
  if (o.retainHandling !== undefined) {
    v5Only("retainHandling");
    if (o.retainHandling !== 0 && o.retainHandling !== 1 && o.retainHandling !== 2) {
      throw new RangeError(`retainHandling must be 0, 1 or 2, got ${show(o.retainHandling)}`);
    }
    subscription.rh = o.retainHandling;
  }
  let properties: CheckedSubscribe["properties"];
  if (o.subscriptionIdentifier !== undefined) {
    v5Only("subscriptionIdentifier");
    integer("subscriptionIdentifier", o.subscriptionIdentifier, 1, 268_435_455);
    properties = { subscriptionIdentifier: o.subscriptionIdentifier };
  }
  if (o.userProperties !== undefined) {
    v5Only("userProperties");
    properties = {
      ...properties,
      userProperties: userProperties(o.userProperties, "userProperties"),
    };
  }
  return { subscription, properties };
}

/** Throws unless `qos` is 0, 1 or 2. */
export function checkQos(qos: unknown): asserts qos is 0 | 1 | 2 {
  if (qos !== 0 && qos !== 1 && qos !== 2) {
    throw new RangeError(`QoS must be 0, 1 or 2, got ${show(qos)}`);
  }
}
