/**
 * The durable session: what a client must not forget across a crash or a
 * restart. The engine writes through one {@linkcode SessionStore}: the
 * memory store by default, `FileStore` for durability.
 *
 * @module
 */

import type { PublishProperties, QoS } from "../codec/packets.ts";

/** An outgoing QoS 1/2 publish the store keeps until its last acknowledgement. */
export interface StoredPublish {
  /** Packet id, assigned when the call was accepted. */
  readonly id: number;
  /** 1 or 2. */
  readonly qos: QoS;
  /** Topic name. */
  readonly topic: string;
  /** Payload bytes. */
  readonly payload: Uint8Array;
  /** Retain flag. */
  readonly retain: boolean;
  /** MQTT 5 properties. */
  readonly properties?: PublishProperties;
}

/**
 * A change to the durable session. Changes become durable in the order they
 * were appended; a later one never survives a crash without the earlier.
 */
export type StoreOp =
  /** A QoS 1/2 publish was accepted (queued or written). */
  | { op: "put"; record: StoredPublish }
  /** QoS 2: its PUBREC arrived; from now on PUBREL is re-sent, never the PUBLISH. */
  | { op: "released"; id: number }
  /** Its exchange is over (acknowledged, refused or withdrawn). */
  | { op: "delete"; id: number }
  /** An incoming QoS 2 message was delivered: its id awaits PUBREL. */
  | { op: "incoming"; id: number }
  /** The broker released that id (PUBREL). */
  | { op: "incomingDone"; id: number };

/** A publish as restored from the store, in acceptance order. */
export interface RestoredPublish extends StoredPublish {
  /** QoS 2 whose PUBREC had arrived: PUBREL comes next, never the PUBLISH. */
  readonly released: boolean;
}

/** What a store held when it was opened. */
export interface StoredSession {
  /** Unfinished outgoing publishes, in acceptance order. */
  publishes: RestoredPublish[];
  /** Incoming QoS 2 packet ids delivered and awaiting PUBREL. */
  incoming: number[];
  /** The last packet id handed to a publish (ids continue after it). */
  lastId: number;
}

/**
 * Where a client keeps its session. One client at a time per store and
 * client id (a second open is refused).
 *
 * @example
 * ```ts ignore
 * import { FileStore, MQTTClient } from "./mod.ts";
 * const client = new MQTTClient({
 *   server: "127.0.0.1",
 *   clientId: "gateway-7",
 *   store: new FileStore("./outbox"),
 * });
 * ```
 */
export interface SessionStore {
  /**
   * Opens the session of `clientId`, taking its lock, and returns what it
   * holds. Rejects when another client holds it.
   */
  open(clientId: string): Promise<StoredSession>;
  /** Records changes, in order; cheap and synchronous (they become durable at the next commit). */
  append(ops: readonly StoreOp[]): void;
  /**
   * Makes every change appended before the call durable. Concurrent calls
   * share the work (group commit). Rejects when the store failed.
   */
  commit(): Promise<void>;
  /** Commits, then releases the lock. */
  close(): Promise<void>;
  /** Changes are durable as soon as they are appended (nothing to wait for). */
  readonly durableOnAppend: boolean;
}

/** Replays `ops` onto an in-memory picture of a session (stores and tests share it). */
export class SessionImage {
  /** Unfinished publishes by id, in acceptance order. */
  readonly publishes = new Map<number, { record: StoredPublish; released: boolean }>();
  /** Incoming QoS 2 ids awaiting PUBREL. */
  readonly incoming = new Set<number>();
  /** The last id given to a publish. */
  lastId = 0;

  /** Applies one change. */
  apply(op: StoreOp): void {
    switch (op.op) {
      case "put":
        this.publishes.set(op.record.id, { record: op.record, released: false });
        this.lastId = op.record.id;
        break;
      case "released": {
        const entry = this.publishes.get(op.id);
        if (entry) entry.released = true;
        break;
      }
      case "delete":
        this.publishes.delete(op.id);
        break;
      case "incoming":
        this.incoming.add(op.id);
        break;
      case "incomingDone":
        this.incoming.delete(op.id);
        break;
    }
  }

  /** What a store opened on this image returns. */
  session(): StoredSession {
    return {
      publishes: [...this.publishes.values()].map(({ record, released }) => ({
        ...record,
        released,
      })),
      incoming: [...this.incoming],
      lastId: this.lastId,
    };
  }
}
