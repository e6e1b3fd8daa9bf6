/**
 * The network the client may bounce: the seed's Wifi management, made
 * pluggable. The coupling between MQTT and the network is two messages:
 *
 * - client → network: "are you sure you are still up? bounce if you must"
 *   ({@linkcode NetInterface.ensureUp}), before connecting and when TCP keeps
 *   failing;
 * - network → client: "you are up again, try now"
 *   ({@linkcode NetInterface.onUp}), which cuts the client's back-off short.
 *
 * @module
 */

/** Options of {@linkcode NetInterface.ensureUp}. */
export interface EnsureUpOptions {
  /** Take the network down and up again even if it looks up (TCP kept failing). */
  bounce: boolean;
  /** Aborted when the client is disconnected. */
  signal?: AbortSignal;
}

/**
 * A network interface the client can ask to come up, or to bounce.
 *
 * @example
 * ```ts
 * import type { NetInterface } from "./mod.ts";
 * const listeners = new Set<() => void>();
 * const lte: NetInterface = {
 *   ensureUp: async ({ bounce }) => {
 *     if (bounce) console.log("power-cycling the modem");
 *   },
 *   onUp: (listener) => {
 *     listeners.add(listener);
 *     return () => listeners.delete(listener);
 *   },
 * };
 * ```
 */
export interface NetInterface {
  /**
   * Whether the network is up as far as the interface knows. Optional: the
   * client itself only calls {@linkcode ensureUp} (which asks it, if it needs
   * to) and listens to {@linkcode onUp}.
   */
  isUp?(): boolean | Promise<boolean>;
  /**
   * Bring the network up if it is down; with `bounce`, take it down and up
   * again. Resolves when it is up; rejects if it cannot be brought up (the
   * client logs that and tries again later).
   */
  ensureUp(options: EnsureUpOptions): Promise<void>;
  /**
   * Register `listener` to be told "you are up again, try now". Returns a
   * function that unregisters it.
   */
  onUp(listener: () => void): () => void;
}

/**
 * The default network: always up, nothing to bounce (a server or a desktop
 * whose operating system manages the network).
 */
export class AlwaysUpNetwork implements NetInterface {
  /** Always true. */
  isUp(): boolean {
    return true;
  }
  /** Nothing to do. */
  ensureUp(_options: EnsureUpOptions): Promise<void> {
    return Promise.resolve();
  }
  /** The network never comes back because it never goes away. */
  onUp(_listener: () => void): () => void {
    return () => {};
  }
}

/** Commands for {@linkcode CommandNetInterface}; each is an argv array. */
export interface NetCommands {
  /** Brings the network up, e.g. `["nmcli", "radio", "wifi", "on"]`. */
  up: string[];
  /** Takes it down, e.g. `["nmcli", "radio", "wifi", "off"]`. */
  down?: string[];
  /** Exits 0 when the network is up, e.g. `["nmcli", "-t", "networking", "connectivity", "check"]`. */
  check?: string[];
}

/**
 * A network managed by running commands (needs `--allow-run` for them), such
 * as NetworkManager's `nmcli` on a Raspberry Pi gateway.
 *
 * @example
 * ```ts ignore
 * import { CommandNetInterface, MQTTClient } from "./mod.ts";
 * const net = new CommandNetInterface({
 *   up: ["nmcli", "radio", "wifi", "on"],
 *   down: ["nmcli", "radio", "wifi", "off"],
 *   check: ["ping", "-c1", "-W1", "192.168.1.1"],
 * });
 * const client = new MQTTClient({ server: "broker.local", net });
 * ```
 */
export class CommandNetInterface implements NetInterface {
  readonly #commands: NetCommands;
  readonly #listeners = new Set<() => void>();

  /** Creates the interface; nothing runs until the client asks. */
  constructor(commands: NetCommands) {
    if (!Array.isArray(commands.up) || commands.up.length === 0) {
      throw new TypeError("CommandNetInterface needs an `up` command (argv array)");
    }
    this.#commands = commands;
  }

  /** Runs the `check` command; true when it exits 0 (or when there is none). */
  async isUp(): Promise<boolean> {
    if (!this.#commands.check) return true;
    return await run(this.#commands.check);
  }

  /** Runs `down` (when bouncing) then `up`, and tells listeners it is up. */
  async ensureUp({ bounce }: EnsureUpOptions): Promise<void> {
    if (!bounce && await this.isUp()) return;
    if (bounce && this.#commands.down) await run(this.#commands.down);
    if (!await run(this.#commands.up)) {
      throw new Error(`network command failed: ${this.#commands.up.join(" ")}`);
    }
    for (const listener of this.#listeners) listener();
  }

  /** Registers a listener for "up again". */
  onUp(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }
}

async function run(argv: string[]): Promise<boolean> {
  const [command, ...args] = argv;
  const { success } = await new Deno.Command(command, { args, stdout: "null", stderr: "null" })
    .output();
  return success;
}

/** One call a {@linkcode RecordingNetInterface} saw. */
export interface NetCall {
  /** Which method. */
  method: "isUp" | "ensureUp";
  /** The `bounce` flag of an ensureUp call. */
  bounce?: boolean;
  /** performance.now() at the call. */
  time: number;
}

/**
 * A test double: records every call, lets a test take the network down
 * (ensureUp then rejects) and bring it back (listeners are told).
 *
 * @example
 * ```ts
 * import { RecordingNetInterface } from "./mod.ts";
 * const net = new RecordingNetInterface();
 * net.setUp(false); // ensureUp now rejects: the client keeps backing off
 * net.setUp(true); // listeners hear "up again": the client retries at once
 * net.calls.filter((c) => c.bounce).length; // how often the client bounced
 * ```
 */
export class RecordingNetInterface implements NetInterface {
  /** Every call, in order. */
  readonly calls: NetCall[] = [];
  #up = true;
  readonly #listeners = new Set<() => void>();

  /** Whether the simulated network is up. */
  isUp(): boolean {
    this.calls.push({ method: "isUp", time: performance.now() });
    return this.#up;
  }

  /** Records the call; rejects while the simulated network is down. */
  ensureUp({ bounce }: EnsureUpOptions): Promise<void> {
    this.calls.push({ method: "ensureUp", bounce, time: performance.now() });
    return this.#up ? Promise.resolve() : Promise.reject(new Error("simulated network is down"));
  }

  /** Registers a listener for "up again". */
  onUp(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** How many listeners are registered (a disconnected client leaves none). */
  get listenerCount(): number {
    return this.#listeners.size;
  }

  /** Takes the simulated network down or up; going up tells every listener. */
  setUp(up: boolean): void {
    const wasUp = this.#up;
    this.#up = up;
    if (up && !wasUp) { for (const listener of [...this.#listeners]) listener(); }
  }
}
