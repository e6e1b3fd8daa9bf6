/**
 * A schedule: the client's configuration, the network's and the broker's,
 * and a list of timed steps (user calls and faults), all drawn from one
 * seed. A schedule is plain data, so a failing one can be printed,
 * replayed, and shrunk by dropping steps.
 *
 * @module
 */

import type { SimStoreTiming } from "./store.ts";
import type { BrokerCoreOptions } from "../testing/_broker_core.ts";
import type { LinkProfile } from "./network.ts";
import { Rng } from "./rng.ts";

/** The client's side of a schedule. */
export interface ClientSetup {
  protocolVersion: 4 | 5;
  keepalive: number;
  responseTime: number;
  maxInflight: number;
  maxInflightQos2: number;
  clean: boolean;
  initialDelay: number;
  maxDelay: number;
  bounceAfter: number;
  /** QoS of the client's subscription to the broker's traffic ("in/#"), or -1 for none. */
  subscribeQos: -1 | 0 | 1 | 2;
  /** A session store shared by successive client processes (restarts resume from it). */
  store: boolean;
  /** Start with connect() (retried with start() if it fails) rather than start(). */
  connectFirst: boolean;
  /** The simulated disk under the store: open and commit times, ms. */
  storeTiming: SimStoreTiming;
}

/** One timed step. */
export type Step =
  | {
    at: number;
    kind: "publish";
    qos: 0 | 1 | 2;
    sync: boolean;
    size: number;
    abortAfter?: number;
  }
  | { at: number; kind: "stream"; count: number; qos: 0 | 1 | 2; size: number }
  | { at: number; kind: "subscribe"; filter: string; qos: 0 | 1 | 2 }
  | { at: number; kind: "unsubscribe"; filter: string }
  | { at: number; kind: "inject"; count: number; qos: 0 | 1 | 2 }
  | { at: number; kind: "cut" }
  | { at: number; kind: "blackhole" }
  | { at: number; kind: "dials"; mode: "refuse" | "blackhole"; durationMs: number }
  | { at: number; kind: "refuse"; code: number; count: number }
  | { at: number; kind: "restart"; persistence: boolean }
  | {
    at: number;
    kind: "acks";
    withhold: boolean;
    delayMs: number;
    duplicate: boolean;
    durationMs: number;
  }
  | {
    at: number;
    kind: "link";
    latencyMs: number;
    jitterMs: number;
    bytesPerMs: number;
    durationMs: number;
  }
  | { at: number; kind: "garbage" }
  | { at: number; kind: "wrongFirst" }
  | { at: number; kind: "slowConsumer"; delayMs: number; durationMs: number }
  | { at: number; kind: "netUp" }
  | { at: number; kind: "restartClient"; crash: boolean }
  // Two-broker schedules only: one broker (or both) goes away for a while, then comes back.
  | {
    at: number;
    kind: "brokerDown";
    host: string;
    mode: "refuse" | "blackhole";
    durationMs: number;
  }
  | { at: number; kind: "bothDown"; mode: "refuse" | "blackhole"; durationMs: number };

/** Everything one run does. */
export interface Schedule {
  seed: number;
  client: ClientSetup;
  link: LinkProfile;
  broker: BrokerCoreOptions;
  /**
   * The brokers' host names, in the client's `servers` order: one, or two for
   * failover (each its own broker with `broker`'s options, sessions not shared).
   */
  hosts: string[];
  /** When faults stop and the run only heals, ms. */
  healAt: number;
  steps: Step[];
}

/** How hard the generator goes: the share of fault steps among all steps, and the length. */
export interface Intensity {
  /** Virtual duration before the healed tail, ms. Default 8 000. */
  durationMs?: number;
  /** Mean steps per virtual second. Default 4. */
  stepsPerSecond?: number;
}

const FAULTS: Step["kind"][] = [
  "cut",
  "blackhole",
  "dials",
  "refuse",
  "restart",
  "acks",
  "link",
  "garbage",
  "wrongFirst",
  "slowConsumer",
  "netUp",
  "restartClient",
];

/** Faults only two-broker schedules draw (from their own stream). */
const FAILOVER_FAULTS: Step["kind"][] = ["brokerDown", "bothDown"];

/** The schedule of `seed`. */
export function generate(seed: number, intensity: Intensity = {}): Schedule {
  const rng = new Rng(seed);
  const disk = new Rng(seed ^ 0xd15c); // its own stream: the rest of the schedule stays as it was
  const failover = new Rng(seed ^ 0xfa11); // likewise
  const durationMs = intensity.durationMs ?? 8_000;
  const v5 = rng.chance(0.4);
  const keepalive = rng.pick([0, 1, 1, 2, 5, 30]);
  const client: ClientSetup = {
    protocolVersion: v5 ? 5 : 4,
    keepalive,
    responseTime: rng.pick([0.5, 1, 2, 10]),
    maxInflight: rng.pick([1, 4, 16, 64, 1024]),
    maxInflightQos2: rng.pick([1, 5, 20]),
    clean: rng.chance(0.5),
    initialDelay: rng.pick([0.05, 0.25]),
    maxDelay: rng.pick([1, 5, 30]),
    bounceAfter: rng.pick([1, 3]),
    subscribeQos: rng.pick([-1, 0, 1, 2] as const),
    store: rng.chance(0.3),
    storeTiming: {
      openMs: disk.pick([0, 1, 30, 400]),
      commitMs: disk.pick([0, 0.2, 2, 15]),
    },
    connectFirst: rng.chance(0.3),
  };
  const latency = rng.pick([0, 0.05, 1, 10, 50]);
  const bytesPerMs = rng.pick([Infinity, Infinity, 1_250, 125]); // unlimited, 10 Mbit/s, 1 Mbit/s
  const link: LinkProfile = {
    latencyMs: latency,
    jitterMs: rng.pick([0, 0, latency / 2, 5]),
    bytesPerMs,
    // Tiny segments cut frames everywhere; with a bandwidth limit they would cost an event each.
    mss: bytesPerMs === Infinity ? rng.pick([1_460, 1_460, 100, 7]) : 1_460,
    sendBuffer: rng.pick([65_536, 4_096]),
  };
  const broker: BrokerCoreOptions = {
    maxInflight: rng.pick([1, 20, 100]),
    receiveMaximum: rng.pick([5, 20, 65_535]),
    topicAliasMaximum: rng.pick([0, 10]),
    qos2InLimit: 20,
  };
  const steps: Step[] = [];
  const rate = intensity.stepsPerSecond ?? 4;
  const count = Math.max(1, Math.round((durationMs / 1000) * rate * (0.5 + rng.float())));
  const faultShare = rng.pick([0.1, 0.3, 0.5]);
  for (let i = 0; i < count; i++) {
    const at = Math.floor(rng.float() * durationMs);
    steps.push(rng.chance(faultShare) ? fault(rng, at) : call(rng, at));
  }
  const hosts = failover.chance(0.3) ? ["broker", "broker2"] : ["broker"];
  if (hosts.length > 1) {
    const downs = failover.pick([1, 2, 3, 5]);
    for (let i = 0; i < downs; i++) {
      steps.push(brokerDown(failover, Math.floor(failover.float() * durationMs), hosts));
    }
  }
  steps.sort((a, b) => a.at - b.at);
  return { seed, client, link, broker, hosts, healAt: durationMs, steps };
}

function call(rng: Rng, at: number): Step {
  const r = rng.float();
  const qos = rng.pick([0, 1, 1, 2] as const);
  if (r < 0.35) {
    const step: Step = { at, kind: "publish", qos, sync: rng.chance(0.5), size: size(rng) };
    if (rng.chance(0.1)) step.abortAfter = rng.pick([0, 1, 50, 500]);
    return step;
  }
  if (r < 0.65) {
    return {
      at,
      kind: "stream",
      count: rng.pick([10, 50, 200, 1000]),
      qos: rng.pick([0, 1, 1, 2] as const),
      size: size(rng),
    };
  }
  if (r < 0.75) return { at, kind: "inject", count: rng.pick([1, 10, 100]), qos };
  if (r < 0.87) return { at, kind: "subscribe", filter: rng.pick(FILTERS), qos };
  return { at, kind: "unsubscribe", filter: rng.pick(FILTERS) };
}

const FILTERS = ["in/#", "in/+", "in/a", "extra/#"];

function size(rng: Rng): number {
  return rng.pick([0, 10, 100, 1_000, 20_000]);
}

function fault(rng: Rng, at: number): Step {
  const kind = rng.pick(FAULTS);
  switch (kind) {
    case "cut":
    case "blackhole":
    case "garbage":
    case "wrongFirst":
    case "netUp":
      return { at, kind } as Step;
    case "dials":
      return {
        at,
        kind,
        mode: rng.pick(["refuse", "blackhole"] as const),
        durationMs: rng.pick([100, 2_000, 8_000]),
      };
    case "refuse":
      return { at, kind, code: rng.pick([3, 5]), count: rng.pick([1, 3]) };
    case "restart":
      return { at, kind, persistence: rng.chance(0.5) };
    case "restartClient":
      return { at, kind, crash: rng.chance(0.5) };
    case "acks":
      return {
        at,
        kind,
        withhold: rng.chance(0.3),
        delayMs: rng.pick([0, 5, 200, 3_000]),
        duplicate: rng.chance(0.3),
        durationMs: rng.pick([100, 1_000, 5_000]),
      };
    case "link":
      return {
        at,
        kind,
        latencyMs: rng.pick([0, 20, 100, 300]),
        jitterMs: rng.pick([0, 10]),
        bytesPerMs: rng.pick([Infinity, 125, 12]),
        durationMs: rng.pick([500, 5_000]),
      };
    default:
      return {
        at,
        kind: "slowConsumer",
        delayMs: rng.pick([1, 50, 500]),
        durationMs: rng.pick([1_000, 5_000]),
      };
  }
}

function brokerDown(rng: Rng, at: number, hosts: string[]): Step {
  const mode = rng.pick(["refuse", "blackhole"] as const);
  const durationMs = rng.pick([500, 3_000, 10_000]);
  if (rng.chance(0.25)) return { at, kind: "bothDown", mode, durationMs };
  return { at, kind: "brokerDown", host: rng.pick(hosts), mode, durationMs };
}

/** How many steps of a schedule are faults. */
export function faultCount(schedule: Schedule): number {
  return schedule.steps.filter((s) => FAULTS.includes(s.kind) || FAILOVER_FAULTS.includes(s.kind))
    .length;
}
