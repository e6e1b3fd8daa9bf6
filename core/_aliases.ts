/**
 * Outgoing MQTT 5 topic aliases: which topics the broker knows by a number
 * on this connection. A topic gets an alias the second time it is published
 * (a topic used once does not take one of the broker's few slots), up to the
 * broker's Topic Alias Maximum; once every slot is taken, new topics go in
 * full. Everything is forgotten on a new connection (MQTT-3.3.2-7): the
 * first PUBLISH of a topic there carries the topic again.
 *
 * @module
 */

/** Topics seen once, remembered as candidates; cleared when this many are held. */
const MAX_CANDIDATES = 1024;

/** The outgoing aliases of one connection; see the module doc. */
export class OutgoingAliases {
  /** The broker's Topic Alias Maximum on this connection (0: aliases off). */
  max = 0;
  /** Topics the broker knows by alias on this connection. */
  #byTopic = new Map<string, number>();
  /** Topics published once on this connection without an alias. */
  #seen = new Set<string>();

  /** A new connection whose broker accepts `max` aliases: every alias is forgotten. */
  reset(max: number): void {
    this.max = max;
    if (this.#byTopic.size > 0) this.#byTopic = new Map();
    if (this.#seen.size > 0) this.#seen = new Set();
  }

  /** The alias the broker already knows `topic` by, or 0. */
  known(topic: string): number {
    return this.#byTopic.get(topic) ?? 0;
  }

  /**
   * The alias to set for `topic` with this publish (its frame carries the
   * topic and the alias), or 0 for none. Call {@linkcode set} once the frame
   * is certain to be written.
   */
  offer(topic: string): number {
    const next = this.#byTopic.size + 1;
    if (next > this.max) return 0;
    if (this.#seen.has(topic)) return next;
    if (this.#seen.size >= MAX_CANDIDATES) this.#seen.clear();
    this.#seen.add(topic);
    return 0;
  }

  /** The frame setting `alias` for `topic` is being written. */
  set(topic: string, alias: number): void {
    this.#byTopic.set(topic, alias);
    this.#seen.delete(topic);
  }

  /** How many aliases the broker holds from us. */
  get size(): number {
    return this.#byTopic.size;
  }
}
