/**
 * The internal seam through which the simulator (or a test) runs the real
 * client in a world of its own: its clock, its network and its randomness.
 * Not part of the public API.
 *
 * @module
 */

import type { Clock } from "../core/clock.ts";
import type { Dialer } from "../transport/connection.ts";
import type { EngineProbe } from "./_engine.ts";
import type { SupervisorProbe } from "./_supervisor.ts";

/** The key under which client options carry a {@linkcode World}. */
export const WORLD: unique symbol = Symbol.for("mqtt_async.world");

/** Everything the client takes from its surroundings. */
export interface World {
  /** Time and timers. Default: the real clock. */
  clock?: Clock;
  /** Opens connections for every endpoint. Default: TCP/TLS or WebSocket by scheme. */
  dial?: Dialer;
  /** Randomness in [0, 1) for back-off jitter. Default: Math.random. */
  random?: () => number;
  /** Observes every engine event (invariants). */
  engineProbe?: EngineProbe;
  /** Observes dials and back-off sleeps (invariants). */
  supervisorProbe?: SupervisorProbe;
}

/** The world an options object carries, if any. */
export function worldOf(options: object): World {
  return (options as { [WORLD]?: World })[WORLD] ?? {};
}
