/**
 * Runs one schedule: the real, unmodified `MQTTClient` in virtual time
 * against the simulated broker over the simulated network, the steps
 * played at their moments, the invariants checked throughout, then a
 * healed tail in which everything must arrive, then `disconnect()` after
 * which nothing of the client may remain.
 *
 * @module
 */

import { MQTTClient } from "../client.ts";
import { WORLD, type World } from "../client/_world.ts";
import type { Engine } from "../client/_engine.ts";
import type { Packet, PublishPacket } from "../codec/packets.ts";
import type { Logger } from "../logger.ts";
import type { Message } from "../messages.ts";
import { SimStore } from "./store.ts";
import type { NetInterface } from "../wifi.ts";
import { SimBroker } from "./broker_host.ts";
import { Checker, tagOf } from "./checker.ts";
import { type SimConnection, SimNetwork } from "./network.ts";
import { Rng } from "./rng.ts";
import type { Schedule, Step } from "./schedule.ts";
import { Scheduler } from "./scheduler.ts";

/** One line for a packet in the trace. */
function describePacket(p: Packet): string {
  const id = "messageId" in p && p.messageId !== undefined ? ` ${p.messageId}` : "";
  switch (p.cmd) {
    case "publish":
      return `PUBLISH${id} q${p.qos}${p.dup ? " dup" : ""}${p.retain ? " retain" : ""} ${
        p.topic || "(alias)"
      } ${tagOf(p) ?? ""} (${p.payload.length} B)`;
    case "connect":
      return `CONNECT clean=${p.clean} keepalive=${p.keepalive}`;
    case "connack":
      return `CONNACK ${p.returnCode ?? p.reasonCode} sessionPresent=${p.sessionPresent}`;
    case "suback":
    case "unsuback":
      return `${p.cmd.toUpperCase()}${id} [${p.granted.join(",")}]`;
    default: {
      const reason = "reasonCode" in p && p.reasonCode
        ? ` reason 0x${p.reasonCode.toString(16)}`
        : "";
      return `${p.cmd.toUpperCase()}${id}${reason}`;
    }
  }
}

/** The outcome of one schedule. */
export interface RunResult {
  seed: number;
  ok: boolean;
  violations: { at: number; rule: string; detail: string }[];
  /** Publish calls plus messages the broker sent to the client. */
  messages: number;
  /** Fault steps played. */
  faults: number;
  /** Events run. */
  events: number;
  /** Virtual time at the end, ms. */
  virtualMs: number;
  /** The readable trace, when asked for. */
  trace?: string[];
}

/** Options of {@linkcode runSchedule}. */
export interface RunOptions {
  /** Keep a readable trace of everything (slower). */
  trace?: boolean;
}

const CLIENT_ID = "sim-client";
/** Events one schedule may take (ordinary ones take under 500 000). */
const EVENT_BUDGET = 5_000_000;
/** After healing, a run with no message reaching the broker or the application for this long is stuck. */
const STALL_MS = 120_000;
/** ... and one still going after this long, however slowly, too. */
const HEAL_LIMIT_MS = 3_600_000;
const encoder = new TextEncoder();

let unhandled: unknown[] = [];
let listening = false;
function listenForUnhandled(): void {
  if (listening) return;
  listening = true;
  globalThis.addEventListener("unhandledrejection", (event) => {
    unhandled.push(event.reason);
    event.preventDefault();
  });
}

/** Runs `schedule` and reports what it found. */
export async function runSchedule(
  schedule: Schedule,
  options: RunOptions = {},
): Promise<RunResult> {
  listenForUnhandled();
  unhandled = [];
  const run = new Run(schedule, options);
  await run.play();
  const c = run.checker;
  for (const error of run.sched.errors) c.fail("no exception escapes a callback", String(error));
  if (run.sched.storm) c.fail("time moves on (no zero-delay loop)", run.sched.storm);
  for (const reason of unhandled) c.fail("no unhandled rejection", String(reason));
  return {
    seed: schedule.seed,
    ok: c.violations.length === 0,
    violations: c.violations,
    messages: run.messages,
    faults: run.faults,
    events: run.sched.steps,
    virtualMs: run.sched.now,
    trace: run.trace,
  };
}

class Run {
  readonly sched = new Scheduler();
  readonly rng: Rng;
  readonly net: SimNetwork;
  /** The first broker, and the second of a failover schedule (`schedule.hosts`). */
  readonly broker: SimBroker;
  readonly brokers: SimBroker[];
  readonly checker: Checker;
  readonly trace: string[] | undefined;
  readonly store: SimStore;
  client!: MQTTClient;
  engine: Engine | undefined;
  #generation = 0;
  #owner = "client#1";
  #netListeners = new Set<() => void>();
  #slowUntil = 0;
  /** When each broker that went down comes back (its last "down" step decides). */
  #downUntil = new Map<string, number>();
  #healed = false;
  #restarting: Promise<void> = Promise.resolve();
  #restartsPending = 0; // a run ends only with its last client process started
  #upAgain = false; // the network said "up again": the next ensureUp must not bounce
  #cleanStartPending = false;
  #ending = false;
  #slowDelay = 0;
  #tagCount = 0;
  messages = 0;
  faults = 0;
  /** Calls not settled yet, per client generation (a killed process's never settle). */
  #pending: number[] = [];

  constructor(readonly schedule: Schedule, options: RunOptions) {
    this.rng = new Rng(schedule.seed ^ 0x5eed);
    this.trace = options.trace ? [] : undefined;
    this.net = new SimNetwork(this.sched, this.rng.fork(1), { ...schedule.link });
    this.broker = new SimBroker(this.sched, this.rng.fork(2), "broker", schedule.broker);
    this.brokers = schedule.hosts.map((host, i) =>
      i === 0
        ? this.broker
        : new SimBroker(this.sched, new Rng(schedule.seed ^ 0xb20c), host, schedule.broker)
    );
    for (const broker of this.brokers) this.net.serve(broker.name, broker);
    const c = schedule.client;
    this.store = new SimStore(this.sched, c.storeTiming);
    this.checker = new Checker(
      {
        keepaliveMs: c.keepalive * 1000,
        responseTimeMs: c.responseTime * 1000,
        maxInflight: c.maxInflight,
        protocolVersion: c.protocolVersion,
        initialDelayMs: c.initialDelay * 1000,
        maxDelayMs: c.maxDelay * 1000,
        brokerReceiveMaximum: schedule.broker.receiveMaximum ?? 20,
        servers: schedule.hosts.length,
        bounceAfter: c.bounceAfter,
      },
      () => this.sched.now,
      (check) => void this.sched.after(0, check, "checker"),
    );
    if (this.trace) {
      this.checker.onPacket = (connection, out, packet) => {
        this.log(`${out ? "→" : "←"} #${connection} ${describePacket(packet)}`);
      };
      for (const broker of this.brokers) {
        broker.onFrame = (f) => {
          this.log(
            `   ${broker.name} ${f.toBroker ? "read" : "wrote"} #${f.connection} ${
              describePacket(f.packet)
            }`,
          );
        };
      }
    }
    this.net.onConnection = (conn) => {
      this.checker.attach(conn);
      this.log(
        `connection ${conn.id} opened${this.brokers.length > 1 ? ` to ${conn.endpoint.host}` : ""}`,
      );
    };
    for (const broker of this.brokers) this.#watch(broker);
  }

  /** Hooks a broker's core: accepted publishes, quiet-limit drops, messages routed to the client. */
  #watch(broker: SimBroker): void {
    broker.core.onPublish = (message, clientId) => {
      if (clientId === CLIENT_ID) this.checker.brokerAccepted(message);
    };
    broker.core.onDrop = (message, clientId, held) => {
      if (clientId !== CLIENT_ID) return;
      if (this.checker.holdsOrphans) {
        const record = this.checker.publishes.get(tagOf(message) ?? "");
        if (record !== undefined) this.checker.excuse(record);
        return;
      }
      this.checker.fail(
        "3.1.1 QoS 2 stays within the broker's quiet limit",
        `${tagOf(message)} dropped behind a PUBREC: ${held} QoS 2 messages already awaited PUBREL`,
      );
    };
    broker.core.onRoute = (record) => {
      if (record.clientId !== CLIENT_ID) return;
      const tag = tagOf(record);
      if (tag !== undefined && tag.startsWith("i")) {
        this.checker.routed(tag, record.qos, broker.name);
      }
    };
  }

  log(line: string): void {
    this.trace?.push(`${this.sched.now.toFixed(3).padStart(11)} ms  ${line}`);
  }

  async play(): Promise<void> {
    const s = this.schedule;
    this.#startClient();
    for (const step of s.steps) this.sched.at(step.at, () => this.#step(step), "workload");
    this.sched.budget = EVENT_BUDGET;
    const first = await this.sched.run({ until: s.healAt });
    if (first === "storm" || first === "budget") return this.#overBudget(first);
    this.#heal();
    const deadline = s.healAt + HEAL_LIMIT_MS;
    this.checker.lastProgress = this.sched.now;
    const stop = () =>
      this.#quiet() || this.checker.knownLimit !== undefined ||
      this.sched.now - this.checker.lastProgress > STALL_MS;
    const second = await this.sched.run({ until: deadline, stop });
    if (second === "storm" || second === "budget") return this.#overBudget(second);
    this.checker.checkDeadLinks();
    if (this.checker.knownLimit !== undefined) {
      this.log(`known limit met (README): ${this.checker.knownLimit}; end checks skipped`);
    } else {
      if (!this.#quiet()) this.#reportStuck();
      this.checker.checkEnd();
    }
    await this.#disconnect();
  }

  // ---- the client --------------------------------------------------------------------

  #startClient(): void {
    const s = this.schedule;
    const c = s.client;
    this.#generation++;
    this.#owner = `client#${this.#generation}`;
    this.checker.clientStarted();
    this.store.bind(this.#owner);
    const random = this.rng.fork(100 + this.#generation);
    const world: World = {
      clock: this.sched.clock(this.#owner),
      dial: this.net.dialer(this.#owner),
      random: () => random.float(),
      engineProbe: {
        afterEvent: (engine) => {
          this.engine = engine;
          this.checker.afterEvent(engine);
        },
        packet: (conn, packet) => this.checker.processed((conn as SimConnection).id, packet),
      },
      supervisorProbe: {
        dialing: (endpoint) => this.checker.dialing(endpoint.host),
        sleeping: (delay, attempt) => {
          this.log(`back-off ${delay.toFixed(1)} ms (attempt ${attempt})`);
          this.checker.sleeping(delay, attempt);
        },
      },
    };
    const net: NetInterface = {
      isUp: () => true,
      ensureUp: ({ bounce }) => {
        if (bounce) this.log("network bounced");
        if (bounce && this.#upAgain) {
          this.checker.fail("no bounce right after the network came back", "bounced after onUp");
        }
        this.#upAgain = false;
        return Promise.resolve();
      },
      onUp: (listener) => {
        this.#netListeners.add(listener);
        return () => this.#netListeners.delete(listener);
      },
    };
    const options = {
      servers: s.hosts.map((host) => `mqtt://${host}:1883`),
      clientId: CLIENT_ID,
      protocolVersion: c.protocolVersion,
      keepalive: c.keepalive,
      responseTime: c.responseTime,
      maxInflight: c.maxInflight,
      maxInflightQos2: c.maxInflightQos2,
      clean: c.clean,
      reconnect: { initialDelay: c.initialDelay, maxDelay: c.maxDelay, bounceAfter: c.bounceAfter },
      logger: this.#logger(),
      net,
      will: { topic: "will/sim", payload: "gone", qos: 1 as const },
      onMessage: (topic: string, payload: Uint8Array, _retained: boolean, qos: 0 | 1 | 2) =>
        this.#received({ topic, payload, qos }),
      onConnectionChange: (up: boolean) => {
        this.log(`connection ${up ? "up" : "down"}`);
        if (!up) return;
        this.checker.connected();
        if (this.#cleanStartPending) {
          this.#cleanStartPending = false;
          this.checker.sessionDiscarded();
        }
      },
      ...(c.store ? { store: this.store } : {}),
      [WORLD]: world,
    };
    const client = this.client = new MQTTClient(options);
    if (c.connectFirst && this.#generation === 1) {
      const owner = this.#owner;
      client.connect().catch((error) => {
        this.checker.attemptSettled();
        this.log(`connect() failed: ${error.message}; start() in 1 ms`);
        // A caught failure must leave nothing running: a script could not exit otherwise.
        this.sched.after(1, () => {
          const left = this.sched.pending(owner);
          if (left > 0 && this.client === client) {
            this.checker.fail(
              "a failed connect() leaves no timer",
              `${left} client events pending`,
            );
          }
          if (this.client !== client || this.#ending) return;
          try {
            client.start();
          } catch (error) {
            this.log(`start() refused: ${(error as Error).message}`); // disconnected meanwhile
          }
        }, "workload");
      });
    } else {
      client.start();
    }
    const qos = c.subscribeQos;
    if (qos >= 0) this.#call(client.subscribe("in/#", qos as 0 | 1 | 2), "subscribe in/#");
  }

  #logger(): Logger {
    const trace = this.trace;
    if (trace === undefined) return { debug() {}, info() {}, warn() {}, error() {} };
    const owner = this.#owner;
    const line = (level: string) => (text: string) => this.log(`${owner} ${level}: ${text}`);
    return { debug: line("debug"), info: line("info"), warn: line("warn"), error: line("error") };
  }

  /** The application's handler: counts deliveries; a slow consumer takes its time. */
  #received(message: Pick<Message, "topic" | "payload" | "qos">): unknown {
    this.checker.appReceived(message);
    this.log(`app got ${tagOf(message) ?? message.topic} (QoS ${message.qos})`);
    if (this.sched.now < this.#slowUntil) {
      // Owned by the client process: a killed process's handlers never finish.
      return new Promise<void>((resolve) =>
        this.sched.after(this.#slowDelay, resolve, this.#owner)
      );
    }
    return undefined;
  }

  #call(promise: Promise<unknown>, what: string): void {
    const settled = this.#track();
    promise.then(settled, (error) => {
      settled();
      this.log(`${what} failed: ${error?.message ?? error}`);
    });
  }

  /** Counts a call of the current client; returns the function that uncounts it. */
  #track(): () => void {
    const generation = this.#generation;
    this.#pending[generation] = (this.#pending[generation] ?? 0) + 1;
    return () => {
      if (this.#pending[generation] > 0) this.#pending[generation]--;
    };
  }

  get #pendingCalls(): number {
    return this.#pending[this.#generation] ?? 0;
  }

  // ---- publishing ---------------------------------------------------------------------

  #payload(size: number): { tag: string; payload: Uint8Array } {
    const tag = `m${++this.#tagCount}`;
    const payload = new Uint8Array(Math.max(size, tag.length + 1));
    payload.set(encoder.encode(tag + " "));
    return { tag, payload };
  }

  #publish(qos: 0 | 1 | 2, sync: boolean, size: number, abortAfter?: number): Promise<void> {
    const { tag, payload } = this.#payload(size);
    this.messages++;
    const record = {
      tag,
      qos,
      sync,
      outcome: "pending" as "pending" | "resolved" | "rejected",
      excused: false,
      accepted: 0,
      acked: false,
      received: false,
    };
    this.checker.track(record);
    let signal: AbortSignal | undefined;
    if (abortAfter !== undefined) {
      const controller = new AbortController();
      signal = controller.signal;
      // The application's timer: it dies with the process, but is not the client's.
      const app = `${this.#owner}:app`;
      this.sched.after(abortAfter, () => controller.abort(new Error(`abort ${tag}`)), app);
    }
    const client = this.client;
    this.log(
      `publish ${tag} QoS ${qos} sync ${sync}${
        abortAfter !== undefined ? ` abort +${abortAfter}` : ""
      }`,
    );
    const done = client.publish(`out/${tag}`, payload, { qos, sync, signal });
    const settled = this.#track();
    return done.then(
      () => {
        settled();
        this.checker.settled(record, "resolved");
      },
      (error) => {
        settled();
        this.checker.settled(record, "rejected");
        // Withdrawn, refused, or a client that went away with it unstored: it need not arrive.
        if (error?.stored !== true) this.checker.excuse(record);
        this.log(`publish ${tag} rejected: ${error?.message ?? error}`);
      },
    );
  }

  async #stream(count: number, qos: 0 | 1 | 2, size: number): Promise<void> {
    const client = this.client;
    for (let i = 0; i < count; i++) {
      if (this.client !== client) return; // the process restarted: this producer is gone
      await this.#publish(qos, i === count - 1, size).catch(() => {});
    }
  }

  // ---- steps --------------------------------------------------------------------------

  #step(step: Step): void {
    this.log(`step ${JSON.stringify(step)}`);
    // Broker faults and injected traffic go to the broker the client dialled last.
    const broker = this.#brokerNow();
    switch (step.kind) {
      case "publish":
        void this.#publish(step.qos, step.sync, step.size, step.abortAfter);
        return;
      case "stream":
        void this.#stream(step.count, step.qos, step.size);
        return;
      case "subscribe":
        this.#call(this.client.subscribe(step.filter, step.qos), `subscribe ${step.filter}`);
        return;
      case "unsubscribe":
        this.#call(this.client.unsubscribe(step.filter), `unsubscribe ${step.filter}`);
        return;
      case "inject":
        for (let i = 0; i < step.count; i++) {
          const tag = `i${++this.#tagCount}`;
          this.messages++;
          const message: PublishPacket = {
            cmd: "publish",
            topic: this.rng.chance(0.5) ? "in/a" : "in/b",
            payload: encoder.encode(`${tag} `),
            qos: step.qos,
            retain: false,
            dup: false,
          };
          // With two brokers, now and then to the other one, where the client may hold a session.
          const other = this.brokers.length > 1 && this.rng.chance(0.25);
          (other ? this.brokers.find((b) => b !== broker)! : broker).inject(message);
        }
        return;
    }
    this.faults++;
    this.checker.counts.faults++;
    switch (step.kind) {
      case "cut":
        for (const conn of this.net.live()) conn.cut();
        return;
      case "blackhole":
        for (const conn of this.net.live()) {
          conn.blackhole();
          this.checker.blackholed(conn.id);
        }
        this.#checkDeadLinksLater();
        return;
      case "dials":
        for (const host of this.schedule.hosts) {
          this.net.dialMode.set(host, step.mode);
          this.sched.after(step.durationMs, () => {
            if (!this.#healed) this.net.dialMode.delete(host);
          }, "workload");
        }
        return;
      case "brokerDown":
        this.#down([step.host], step.mode, step.durationMs);
        return;
      case "bothDown":
        this.#down(this.schedule.hosts, step.mode, step.durationMs);
        return;
      case "refuse":
        broker.refuse = { code: step.code, count: step.count };
        return;
      case "restart":
        if (!step.persistence) this.checker.brokerForgot();
        broker.restart(step.persistence);
        return;
      case "acks": {
        const f = broker.faults;
        f.withhold = step.withhold;
        f.delayMs = step.delayMs;
        f.duplicate = step.duplicate;
        this.sched.after(step.durationMs, () => {
          Object.assign(f, { withhold: false, delayMs: 0, duplicate: false });
        }, "workload");
        return;
      }
      case "link": {
        Object.assign(this.net.profile, {
          latencyMs: step.latencyMs,
          jitterMs: step.jitterMs,
          bytesPerMs: step.bytesPerMs,
        });
        // Back to the schedule's own link, unless the run has healed meanwhile (it did that).
        this.sched.after(step.durationMs, () => {
          if (!this.#healed) Object.assign(this.net.profile, this.schedule.link);
        }, "workload");
        return;
      }
      case "garbage":
        broker.garbageAfterConnack = true;
        for (const conn of this.net.live()) conn.cut(); // the next connection gets it
        return;
      case "wrongFirst":
        broker.wrongFirstPacket = true;
        for (const conn of this.net.live()) conn.cut();
        return;
      case "slowConsumer":
        this.#slowUntil = this.sched.now + step.durationMs;
        this.#slowDelay = step.delayMs;
        return;
      case "netUp":
        this.checker.netCameUp();
        this.#upAgain = this.#netListeners.size > 0;
        for (const listener of this.#netListeners) listener();
        return;
      case "restartClient":
        // One restart at a time: a second one waits for the first to finish.
        this.#restartsPending++;
        this.#restarting = this.#restarting.then(() => this.#restartClient(step.crash)).finally(
          () => this.#restartsPending--,
        );
        return;
    }
  }

  /** The broker of the client's newest connection (the first before any). */
  #brokerNow(): SimBroker {
    const host = this.net.connections.at(-1)?.endpoint.host;
    return this.brokers.find((b) => b.name === host) ?? this.broker;
  }

  /**
   * `hosts` go down for `durationMs`: their dials are refused (the host is up,
   * the broker is not) or unanswered (the host is gone), and their live
   * connections are reset, or left half-open when the host is gone.
   */
  #down(hosts: string[], mode: "refuse" | "blackhole", durationMs: number): void {
    const until = this.sched.now + durationMs;
    for (const host of hosts) {
      this.net.dialMode.set(host, mode);
      this.#downUntil.set(host, Math.max(until, this.#downUntil.get(host) ?? 0));
      this.sched.after(durationMs, () => {
        if (!this.#healed && this.sched.now >= this.#downUntil.get(host)!) {
          this.log(`${host} up again`);
          this.net.dialMode.delete(host);
        }
      }, "workload");
      for (const conn of this.net.live()) {
        if (conn.endpoint.host !== host) continue;
        if (mode === "refuse") conn.cut();
        else {
          conn.blackhole();
          this.checker.blackholed(conn.id);
        }
      }
    }
    if (mode === "blackhole") this.#checkDeadLinksLater();
  }

  #checkDeadLinksLater(): void {
    const bound = this.schedule.client.keepalive * 1000 + this.schedule.client.responseTime * 1000;
    const check = () => {
      const again = this.checker.checkDeadLinks();
      if (again !== undefined) this.sched.at(again, check, "workload");
    };
    this.sched.after(bound + 2, check, "workload");
  }

  /** The client process ends (gracefully, or killed) and a new one starts with the same store. */
  async #restartClient(crash: boolean): Promise<void> {
    const old = this.client;
    const oldOwner = this.#owner;
    this.checker.stopping = true;
    if (crash) {
      // A killed process: its timers never fire, its sockets are closed by the OS,
      // its callers never hear back.
      this.sched.cancelAll(oldOwner); // also: it schedules nothing from now on
      this.sched.cancelAll(`${oldOwner}:disk`); // a write in flight never completes
      this.sched.cancelAll(`${oldOwner}:app`); // nor does its own abort timer fire
      this.net.kill(oldOwner);
      this.store.crash(); // what was not durable is gone; the OS releases the lock
      this.#pending[this.#generation] = 0;
      this.log("client process killed");
    } else {
      this.log("client disconnect() for a restart");
      await old.disconnect();
    }
    if (crash && this.schedule.client.store) {
      const kept = new Set<string>();
      for (const { record } of this.store.image(CLIENT_ID)?.publishes.values() ?? []) {
        const tag = tagOf(record);
        if (tag !== undefined) kept.add(tag);
      }
      const released = new Set<string>();
      for (const { record, released: r } of this.store.image(CLIENT_ID)?.publishes.values() ?? []) {
        if (r) released.add(tagOf(record) ?? "");
      }
      for (const record of this.checker.publishes.values()) {
        if (kept.has(record.tag)) {
          // Its acknowledgement arrived but was not durable: the new process re-sends it
          // (a duplicate, which at least once allows; for QoS 2 the broker drops it).
          record.acked = false;
          if (!released.has(record.tag)) record.received = false;
        }
        // Accepted by a call that never resolved, and not durable: gone with the process.
        if (record.accepted === 0 && record.outcome !== "resolved" && !kept.has(record.tag)) {
          this.checker.excuse(record);
        }
      }
      this.checker.processCrashedWithStore();
    }
    // disconnect() does not wait for a handler still running (README): its QoS 2
    // message was not acknowledged, and the next process gets it again.
    if (!crash && this.schedule.client.store) this.checker.processCrashedWithStore();
    if (!this.schedule.client.store) {
      for (const record of this.checker.publishes.values()) {
        // Without a store, what had not reached the broker went with the old process.
        if (record.accepted === 0) this.checker.excuse(record);
      }
      if (!this.schedule.client.clean) this.checker.processLostState();
    }
    this.checker.stopping = false;
    this.#netListeners.clear();
    // A new process with clean: true starts a clean session: the broker drops the old one.
    if (this.schedule.client.clean) this.#cleanStartPending = true;
    this.checker.processStarted();
    this.#startClient();
  }

  // ---- the end ------------------------------------------------------------------------

  #heal(): void {
    this.#healed = true;
    this.log("heal: faults off");
    this.net.dialMode.clear();
    Object.assign(this.net.profile, this.schedule.link);
    for (const broker of this.brokers) {
      Object.assign(broker.faults, { withhold: false, delayMs: 0, duplicate: false });
      broker.refuse = undefined;
      broker.garbageAfterConnack = false;
      broker.wrongFirstPacket = false;
    }
    this.#slowUntil = 0;
    if (this.schedule.client.keepalive === 0) {
      // With keepalive 0 nothing probes an idle half-open link, by the user's choice:
      // healing resets it, as a real network's keepalive or a broker would in time.
      for (const conn of this.net.connections) {
        if (!conn.alive && !conn.clientClosed && !conn.brokerClosed) conn.cut();
      }
    }
  }

  /** Everything settled: no call pending, nothing in flight, every routed message delivered. */
  #quiet(): boolean {
    return this.#restartsPending === 0 && this.#pendingCalls === 0 &&
      this.client.inflightCount === 0 &&
      this.checker.waiting.size === 0 && this.checker.undelivered.size === 0;
  }

  #overBudget(why: string): void {
    if (why !== "budget") return; // a storm is reported by runSchedule
    this.checker.fail(
      "a run ends within its event budget",
      `${EVENT_BUDGET.toLocaleString("en")} events at ${(this.sched.now / 1000).toFixed(1)} s; ` +
        `${
          this.client.isConnected() ? "connected" : "not connected"
        }; ${this.engine?.state.describe()}`,
    );
  }

  #reportStuck(): void {
    const missing = [...this.checker.waiting].map((r) => r.tag);
    const undelivered = [...this.checker.undelivered];
    this.checker.fail(
      "everything arrives once the network heals",
      `${
        ((this.sched.now - this.schedule.healAt) / 1000).toFixed(0)
      } s after healing (nothing arrived ` +
        `for ${
          ((this.sched.now - this.checker.lastProgress) / 1000).toFixed(0)
        } s): ${this.#pendingCalls} calls pending, ` +
        `${missing.length} publishes not at the broker (${missing.slice(0, 5).join(", ")}), ` +
        `${undelivered.length} incoming not delivered (${undelivered.slice(0, 5).join(", ")}), ` +
        `connected: ${this.client.isConnected()}; ${this.engine?.state.describe()}`,
    );
  }

  async #disconnect(): Promise<void> {
    this.#ending = true;
    this.checker.stopping = true;
    let done = false;
    this.client.disconnect().then(() => done = true, (error) => {
      done = true;
      this.checker.fail("disconnect() resolves", String(error));
    });
    await this.sched.run({ stop: () => done, until: this.sched.now + 60_000 });
    if (!done) this.checker.fail("disconnect() resolves", "still pending after 60 s");
    await this.sched.run({ until: this.sched.now + 120_000 });
    const left = this.sched.pending(this.#owner);
    if (left > 0) {
      this.checker.fail("after disconnect() no timer remains", `${left} client events pending`);
    }
    for (const conn of this.net.connections) {
      if (!conn.clientClosed) {
        this.checker.fail("after disconnect() no connection remains", `connection ${conn.id} open`);
      }
    }
  }
}
