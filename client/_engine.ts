/**
 * The client's engine: it feeds every event (packet, call, timer, closed
 * connection, flushed write, delivered message) to the session state and
 * applies the actions that come back. `#apply` is the one place that writes,
 * settles calls, hands messages to the dispatcher, closes connections and
 * sets the timer.
 *
 * @module
 */

import { errorText } from "../_bytes.ts";
import {
  Actions,
  type AuthChallenge,
  type HandshakeOutcome,
  type Pending,
} from "../core/actions.ts";
import { MQTTError } from "../errors.ts";
import type { Packet } from "../codec/packets.ts";
import type { Clock, TimerHandle } from "../core/clock.ts";
import { type OutgoingPublish, Request } from "../core/records.ts";
import { MqttState, type SessionConfig, type StateSnapshot, UP } from "../core/state.ts";
import type { Logger } from "../logger.ts";
import { MQTTProto } from "../proto.ts";
import type { Connection } from "../transport/connection.ts";
import type { Dispatcher } from "./_dispatch.ts";
import type { SessionStore } from "../store/store.ts";

/** What the engine reports after every event, for the simulator's invariants. */
export interface EngineProbe {
  /** Called after each event's actions were applied. */
  afterEvent(engine: Engine): void;
  /** Called with each packet the state is about to handle, and its connection. */
  packet?(conn: Connection, packet: Packet): void;
}

/** Settings of an {@linkcode Engine}. */
export interface EngineOptions {
  /** The session's settings. */
  session: SessionConfig;
  /** Time and timers. */
  clock: Clock;
  /** Where log lines go. */
  logger: Logger;
  /** Largest frame accepted from the broker. */
  maxPacketSize: number;
  /** Where incoming messages go. */
  dispatcher: Dispatcher;
  /** Told when the live link comes up, or goes down (with the connection's error). */
  onLinkChange(up: boolean, error?: Error): void;
  /** Observes every event (the simulator). */
  probe?: EngineProbe;
  /** Where the session is kept durably; absent: in the state only. */
  store?: SessionStore;
  /** v5: answers the broker's AUTH challenges (enhanced authentication). */
  onAuthChallenge?: (data: Uint8Array | undefined) => Uint8Array | Promise<Uint8Array>;
}

/** See the module doc. */
export class Engine {
  readonly state: MqttState;
  readonly #clock: Clock;
  readonly #logger: Logger;
  readonly #maxPacketSize: number;
  readonly #dispatcher: Dispatcher;
  readonly #onLinkChange: (up: boolean, error?: Error) => void;
  readonly #store: SessionStore | undefined;
  readonly #onAuthChallenge: EngineOptions["onAuthChallenge"];
  #committing = false; // a store commit is under way
  #commitAgain = false; // changes were appended during it
  readonly #probe: EngineProbe | undefined;
  readonly #shared = new Actions();
  #depth = 0; // apply() nesting: a nested event gets its own Actions

  #proto: MQTTProto | undefined; // the connection being established or live
  #live = false; // #proto is past its CONNACK
  #handshake: ((outcome: HandshakeOutcome) => void) | undefined;
  #idleWaiter: (() => void) | undefined; // disconnect() waiting for the polite end
  /** The polite end under way: everything queued, DISCONNECT last, then close. */
  #ending: Promise<void> | undefined;
  #stopped = false;

  #timer: TimerHandle | undefined;
  /** When the armed timer fires (Infinity: none armed). */
  timerAt = Infinity;
  #timerGeneration = 0; // a deferred firing cannot be cancelled: stale ones are ignored

  /** An engine with empty session state. */
  constructor(options: EngineOptions) {
    this.state = new MqttState(options.session);
    this.#clock = options.clock;
    this.#logger = options.logger;
    this.#maxPacketSize = options.maxPacketSize;
    this.#dispatcher = options.dispatcher;
    this.#onLinkChange = options.onLinkChange;
    this.#probe = options.probe;
    this.#store = options.store;
    this.#onAuthChallenge = options.onAuthChallenge;
  }

  /** Whether a session is established on a live connection. */
  get connected(): boolean {
    return this.#live;
  }

  /** The live connection (for dispatch back-pressure). */
  get proto(): MQTTProto | undefined {
    return this.#live ? this.#proto : undefined;
  }

  /** How things stand, for invariants and tests. */
  inspect(): StateSnapshot & { timerAt: number } {
    return { ...this.state.inspect(), timerAt: this.timerAt };
  }

  // ---- connections ------------------------------------------------------------------

  /**
   * Speaks MQTT on `conn` (to `server`, which tells a move to another
   * server): writes CONNECT and resolves with how the handshake ended. On
   * "connected" the connection is the live link; on "redial" it is ending
   * politely; on "failed" it is closed.
   */
  handshake(conn: Connection, server = ""): Promise<HandshakeOutcome> {
    if (this.#stopped) {
      conn.close();
      return Promise.resolve({ kind: "failed", error: new Error("client stopped") });
    }
    const outcome = new Promise<HandshakeOutcome>((resolve) => this.#handshake = resolve);
    const proto: MQTTProto = new MQTTProto(conn, {
      onPacket: (packet) => {
        if (proto !== this.#proto) return;
        this.#probe?.packet?.(conn, packet);
        const out = this.#actions();
        this.state.onPacket(packet, this.#clock.now(), out);
        this.#apply(out);
      },
      onClose: (error) => this.#onClose(proto, error),
      onFlushed: (bytes) => {
        if (proto !== this.#proto) return;
        const out = this.#actions();
        this.state.onFlushed(bytes, this.#clock.now(), out);
        this.#apply(out);
      },
    }, {
      protocolVersion: this.state.config.protocolVersion,
      maxPacketSize: this.#maxPacketSize,
      highWaterMark: this.state.config.highWaterMark,
      clock: this.#clock,
    });
    this.#proto = proto;
    this.#live = false;
    const out = this.#actions();
    this.state.onConnecting(this.#clock.now(), out, server);
    this.#apply(out);
    return outcome;
  }

  /** Closes the connection under way or live (the client is disconnecting or aborting). */
  abortConnection(reason: Error): void {
    this.#proto?.close(reason);
  }

  #onClose(proto: MQTTProto, error: Error | undefined): void {
    if (proto !== this.#proto) return;
    const wasLive = this.#live;
    this.#proto = undefined;
    this.#live = false;
    const out = this.#actions();
    this.state.onClose(error, this.#clock.now(), out);
    if (wasLive && !this.state.closing) {
      this.#logger.warn(`connection lost: ${error?.message ?? "closed"}`);
    }
    this.#apply(out);
    if (wasLive) this.#onLinkChange(false, error);
    this.#wakeIdle();
  }

  // ---- calls ---------------------------------------------------------------------------

  /** A validated publish call. */
  publish(record: OutgoingPublish): void {
    const out = this.#actions();
    this.state.onPublish(record, this.#clock.now(), out);
    this.#apply(out);
  }

  /** A validated subscribe or unsubscribe call. */
  request(request: Request): void {
    const out = this.#actions();
    this.state.onRequest(request, this.#clock.now(), out);
    this.#apply(out);
  }

  /** A re-authentication call (v5). */
  reauthenticate(call: Pending, data: Uint8Array | undefined): void {
    const out = this.#actions();
    this.state.onReauthenticate(call, data, this.#clock.now(), out);
    this.#apply(out);
  }

  /** A call's signal aborted. */
  abort(call: OutgoingPublish | Request, reason: Error): void {
    const out = this.#actions();
    this.state.onAbort(call, reason, this.#clock.now(), out);
    this.#apply(out);
  }

  /** The application finished with a delivered message. */
  delivered(ticket: number): void {
    if (ticket === 0 || this.#stopped) return;
    const out = this.#actions();
    this.state.onDelivered(ticket, this.#clock.now(), out);
    this.#apply(out);
  }

  /**
   * disconnect(): waits (up to responseTime) for written publishes to be
   * answered, writes DISCONNECT and ends the connection politely.
   */
  async disconnect(): Promise<void> {
    const out = this.#actions();
    this.state.onDisconnect(this.#clock.now(), out);
    this.#apply(out);
    while (!this.state.disconnected && this.#proto !== undefined) {
      await new Promise<void>((resolve) => this.#idleWaiter = resolve);
    }
    // The DISCONNECT is queued behind everything written before it, QoS 0
    // publishes whose callers were already answered among them: the polite
    // end writes it all (within responseTime) before stop() closes the socket.
    // Closing at once lost the tail of a QoS 0 burst, and then the DISCONNECT.
    await this.#ending;
  }

  #wakeIdle(): void {
    const wake = this.#idleWaiter;
    this.#idleWaiter = undefined;
    wake?.();
  }

  /** Stops the timer and the connection, and returns every caller still waiting. */
  stop(): (OutgoingPublish | Request | Pending)[] {
    this.#stopped = true;
    this.#clearTimer();
    const proto = this.#proto;
    this.#proto = undefined;
    this.#live = false;
    proto?.close();
    this.#handshake?.({ kind: "failed", error: new Error("client stopped") });
    this.#handshake = undefined;
    this.#wakeIdle();
    return this.state.takeCallers();
  }

  // ---- the one place that acts ------------------------------------------------------

  #actions(): Actions {
    if (this.#depth === 0) {
      this.#shared.reset();
      return this.#shared;
    }
    return new Actions();
  }

  #apply(out: Actions): void {
    this.#depth++;
    try {
      const proto = this.#proto;
      for (const line of out.logs) this.#logger[line.level](line.text);
      if (out.storeOps.length > 0) this.#persist(out);
      if (out.writes.length > 0 && proto !== undefined) proto.sendFrames(out.writes, out.urgent);
      const handshake = out.handshake;
      if (handshake?.kind === "connected" && proto !== undefined) this.#live = true;
      const calls = out.settleCalls;
      for (let i = 0; i < calls.length; i++) {
        const error = out.settleErrors[i];
        if (error === undefined) calls[i].resolve(out.settleValues[i]);
        else calls[i].reject(error);
      }
      if (out.deliveries.length > 0) {
        this.#dispatcher.push(out.deliveries, out.deliveryTickets, proto);
      }
      this.#setTimer(out.deadline);
      const close = out.close;
      const end = out.endGracefully;
      if (handshake !== undefined) {
        const resolve = this.#handshake;
        this.#handshake = undefined;
        resolve?.(handshake);
      }
      // Closing reports back (onClose) as a new event: everything above is done.
      if (out.authChallenge !== undefined && close === undefined && proto !== undefined) {
        this.#challenge(out.authChallenge, proto);
      }
      if (close !== undefined) proto?.close(close);
      else if (end && proto !== undefined) this.#endPolitely(proto);
      if (handshake?.kind === "connected" && proto !== undefined && !proto.isClosed) {
        this.#onLinkChange(true);
      }
    } finally {
      this.#depth--;
    }
    this.#probe?.afterEvent(this);
  }

  /**
   * Asks the application (`auth.onChallenge`) to answer an AUTH challenge;
   * its answer goes out on the same connection, if that is still open. No
   * hook, a hook that throws or answers something other than bytes: the
   * connection is closed with an error naming it.
   */
  #challenge(challenge: AuthChallenge, proto: MQTTProto): void {
    const hook = this.#onAuthChallenge;
    if (hook === undefined) {
      proto.close(
        new MQTTError("the broker sent an AUTH challenge, but auth.onChallenge is not set"),
      );
      return;
    }
    Promise.resolve().then(() => hook(challenge.data)).then(
      (answer) => {
        if (proto !== this.#proto || this.#stopped) return;
        if (!(answer instanceof Uint8Array)) {
          throw new TypeError("auth.onChallenge must return a Uint8Array");
        }
        const out = this.#actions();
        this.state.onAuthAnswer(challenge.epoch, answer, this.#clock.now(), out);
        this.#apply(out);
      },
    ).catch((error) => {
      if (proto !== this.#proto) return;
      proto.close(
        new MQTTError(`authentication failed: auth.onChallenge: ${errorText(error)}`, {
          cause: error,
        }),
      );
    });
  }

  /** Hands the event's changes to the store; reports durability back as an event. */
  #persist(out: Actions): void {
    const store = this.#store!;
    try {
      store.append(out.storeOps);
    } catch (error) {
      this.#logger.error(`session store failed: ${errorText(error)}`);
      return;
    }
    if (!this.state.config.gated) return;
    if (this.#committing) {
      this.#commitAgain = true;
      return;
    }
    this.#commit();
  }

  #commit(): void {
    const store = this.#store!;
    const seq = this.state.seq;
    this.#committing = true;
    this.#commitAgain = false;
    store.commit().then(
      () => {
        this.#committing = false;
        if (this.#stopped) return;
        const out = this.#actions();
        this.state.onDurable(seq, this.#clock.now(), out);
        this.#apply(out);
        if (this.#commitAgain && !this.#committing) this.#commit();
      },
      (error) => {
        this.#committing = false;
        // Nothing waiting on the store goes out: a publish that cannot be kept
        // is not reported as kept. The next change tries again.
        this.#logger.error(`session store commit failed: ${errorText(error)}`);
      },
    );
  }

  /** Opens the store (if any) and loads what it kept into the state. */
  async openStore(clientId: string): Promise<void> {
    const store = this.#store;
    if (store === undefined) return;
    const session = await store.open(clientId);
    this.state.restore(session.publishes, session.incoming, session.lastId);
    if (session.publishes.length > 0 || session.incoming.length > 0) {
      this.#logger.info(
        `resumed from the store: ${session.publishes.length} publishes to re-send, ` +
          `${session.incoming.length} incoming QoS 2 awaiting PUBREL`,
      );
    }
  }

  /** Commits and releases the store (disconnect()). */
  async closeStore(): Promise<void> {
    await this.#store?.close().catch((error) => {
      this.#logger.error(`session store close failed: ${errorText(error)}`);
    });
  }

  #endPolitely(proto: MQTTProto): void {
    // A broker that stopped reading must not hold the end forever.
    const limit = this.state.config.responseTimeMs;
    const timer = this.#clock.setTimer(() => proto.close(), limit);
    this.#ending = proto.end().then(() => this.#clock.clearTimer(timer));
  }

  // ---- the one timer ----------------------------------------------------------------

  /** Makes the timer fire at `deadline` or earlier; clears it when nothing is pending. */
  #setTimer(deadline: number): void {
    if (this.#stopped) return;
    if (deadline === Infinity) {
      if (this.timerAt !== Infinity) this.#clearTimer();
      return;
    }
    if (this.timerAt <= deadline) return; // fires early: onTimer re-arms
    this.#clearTimer();
    this.timerAt = deadline;
    const generation = this.#timerGeneration;
    const fire = () => this.#fire(generation);
    const delay = deadline - this.#clock.now();
    if (delay <= 0) {
      // Due now: on the next macrotask, once this read's calls had their turn.
      this.#clock.defer(fire);
    } else {
      this.#timer = this.#clock.setTimer(fire, delay);
    }
  }

  #clearTimer(): void {
    if (this.#timer !== undefined) this.#clock.clearTimer(this.#timer);
    this.#timer = undefined;
    this.#timerGeneration++;
    this.timerAt = Infinity;
  }

  #fire(generation: number): void {
    if (this.#stopped || generation !== this.#timerGeneration) return; // cleared meanwhile
    this.#timer = undefined;
    this.#timerGeneration++;
    this.timerAt = Infinity;
    const out = this.#actions();
    try {
      this.state.onTimer(this.#clock.now(), out);
    } catch (error) {
      this.#logger.error(`timer failed: ${errorText(error)}`);
    }
    this.#apply(out);
  }

  /** Whether the live link is up as the state sees it (for assertions). */
  get stateUp(): boolean {
    return this.state.phase === UP;
  }
}

export { Request };
