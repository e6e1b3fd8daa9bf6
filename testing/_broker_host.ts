/**
 * Broker mode's engine room: runs a {@linkcode BrokerCore} over the fake
 * broker's TCP connections. Every accepted connection, decoded packet and
 * closed socket goes to the core; what the core sends and closes is written
 * and closed here; a timer set to the core's next deadline runs its
 * keepalive enforcement, delayed wills and session expiry.
 *
 * @module
 */

import type { Packet } from "../codec/packets.ts";
import { BrokerCore, type BrokerCoreOptions, type BrokerOutput } from "./_broker_core.ts";
import type { FrameRecord } from "./_frames.ts";
import type { FakeConnection } from "./fake_connection.ts";

/** setTimeout's longest delay; a later deadline is reached in several steps. */
const MAX_DELAY_MS = 2 ** 31 - 1;

/** Filters starting with this are refused (SUBACK 0x80), a convention of the fake broker. */
const REJECTED_PREFIX = "reject/";

/** Runs a {@linkcode BrokerCore} over {@linkcode FakeConnection}s. */
export class BrokerHost {
  readonly #core: BrokerCore;
  readonly #maximumPacketSize: number;
  readonly #connections = new Map<number, FakeConnection>();
  readonly #out: BrokerOutput;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #tickAt = Infinity;
  #stopped = false;

  /** A host for a core with `options` (plus the `reject/` convention). */
  constructor(options: BrokerCoreOptions = {}) {
    const authorize = options.authorizeSubscribe;
    this.#core = new BrokerCore({
      ...options,
      authorizeSubscribe: (clientId, filter) =>
        filter.startsWith(REJECTED_PREFIX) ? 0x80 : authorize?.(clientId, filter) ?? 0,
    });
    this.#maximumPacketSize = options.maximumPacketSize ?? Infinity;
    this.#out = {
      send: (id, packet) => this.#send(id, packet),
      close: (id) => this.#connections.get(id)?.closeAfterWrites(),
    };
  }

  /** A TCP connection was accepted. */
  accepted(conn: FakeConnection): void {
    this.#connections.set(conn.id, conn);
    this.#core.accept(conn.id, performance.now());
    this.#schedule();
  }

  /** A packet arrived on `conn`, in `frame`. */
  received(conn: FakeConnection, packet: Packet, frame: FrameRecord): void {
    const now = performance.now();
    if (frame.bytes.length > this.#maximumPacketSize) {
      // MQTT-3.2.2-15: the broker announced its Maximum Packet Size; over it is a violation.
      if (conn.protocolVersion === 5) this.#send(conn.id, { cmd: "disconnect", reasonCode: 0x95 });
      conn.closeAfterWrites();
      this.#core.disconnected(conn.id, now, this.#out);
    } else {
      this.#core.receive(conn.id, packet, now, this.#out);
    }
    this.#schedule();
  }

  /** `conn` ended (either side). */
  closed(conn: FakeConnection): void {
    this.#connections.delete(conn.id);
    if (this.#stopped) return;
    this.#core.disconnected(conn.id, performance.now(), this.#out);
    this.#schedule();
  }

  /**
   * The broker process restarts: the core forgets every connection (no wills
   * are published), keeping sessions and retained messages only with
   * `persistence`; then every connection is closed.
   */
  restart(persistence: boolean): void {
    this.#core.restart(persistence, performance.now());
    for (const conn of [...this.#connections.values()]) conn.close();
    this.#connections.clear();
    this.#tickAt = Infinity;
    clearTimeout(this.#timer);
    this.#schedule();
  }

  /** Stops the timer for good (the broker is closing). */
  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #send(id: number, packet: Packet): void {
    const conn = this.#connections.get(id);
    if (conn === undefined) return;
    conn.send(packet).catch((error) => {
      // A packet the encoder refuses is a bug (of the core or of the options): say so, and drop.
      console.error(`fake broker: cannot send ${packet.cmd} on connection ${id}:`, error);
      conn.close();
    });
  }

  /** Sets the timer to the core's next deadline if that is earlier than the one set. */
  #schedule(): void {
    if (this.#stopped) return;
    const at = this.#core.nextDeadline();
    if (at >= this.#tickAt) return; // the timer set fires first; it reschedules then
    clearTimeout(this.#timer);
    this.#tickAt = at;
    if (at === Infinity) return;
    const delay = Math.min(MAX_DELAY_MS, Math.max(0, Math.ceil(at - performance.now())));
    this.#timer = setTimeout(() => this.#tick(), delay);
  }

  #tick(): void {
    this.#timer = undefined;
    this.#tickAt = Infinity;
    this.#core.tick(performance.now(), this.#out);
    this.#schedule();
  }
}
