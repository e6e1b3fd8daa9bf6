/**
 * The default store: the session in memory. It survives a reconnect and, if
 * the same instance is handed to a new client, a new client object; not a
 * crash.
 *
 * @module
 */

import { SessionImage, type SessionStore, type StoredSession, type StoreOp } from "./store.ts";

/**
 * A {@linkcode SessionStore} in memory.
 *
 * @example
 * ```ts ignore
 * import { MemoryStore, MQTTClient } from "./mod.ts";
 * const store = new MemoryStore();
 * const first = new MQTTClient({ server: "127.0.0.1", clientId: "c", clean: false, store });
 * // ... later, a new client object resumes what the first left unfinished:
 * const second = new MQTTClient({ server: "127.0.0.1", clientId: "c", clean: false, store });
 * ```
 */
export class MemoryStore implements SessionStore {
  readonly durableOnAppend = true;
  readonly #images = new Map<string, SessionImage>();
  #open: SessionImage | undefined;
  #openId: string | undefined;

  /** Opens the session of `clientId`; rejects while another client has this store open. */
  open(clientId: string): Promise<StoredSession> {
    if (this.#open !== undefined) {
      return Promise.reject(
        new Error(`store is in use by client "${this.#openId}": one client per store at a time`),
      );
    }
    let image = this.#images.get(clientId);
    if (image === undefined) {
      image = new SessionImage();
      this.#images.set(clientId, image);
    }
    this.#open = image;
    this.#openId = clientId;
    return Promise.resolve(image.session());
  }

  /** Applies the changes at once. */
  append(ops: readonly StoreOp[]): void {
    const image = this.#open;
    if (image === undefined) throw new Error("store is not open");
    for (const op of ops) image.apply(op);
  }

  /** Nothing to wait for. */
  commit(): Promise<void> {
    return Promise.resolve();
  }

  /** Releases the store for another client. */
  close(): Promise<void> {
    this.#open = undefined;
    this.#openId = undefined;
    return Promise.resolve();
  }
}
