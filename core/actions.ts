/**
 * What the session state asks its owner to do after an event: frames to
 * write, calls to settle, messages to deliver, records to store, whether to
 * close, how the handshake ended, and the next deadline. One object is reused
 * for every event on the hot path; nothing in it is kept across events.
 *
 * @module
 */

import type { Message } from "../messages.ts";

/** A caller waiting for the outcome of an operation. */
export interface Pending {
  /** Fulfils the caller's promise. */
  resolve(value: unknown): void;
  /** Rejects the caller's promise. */
  reject(error: Error): void;
}

/** How a CONNECT attempt ended, as far as the session is concerned. */
export type HandshakeOutcome =
  | { kind: "connected"; sessionPresent: boolean }
  /** The clean-session dance's first leg is done: close politely and dial again. */
  | { kind: "redial" }
  /** The broker answered with a refusal, or the attempt failed. */
  | { kind: "failed"; error: Error };

/** An AUTH challenge (reason 0x18) from the broker, for the application to answer. */
export interface AuthChallenge {
  /** The broker's Authentication Data, if any. */
  data: Uint8Array | undefined;
  /** The connection the challenge came on. */
  epoch: number;
}

/** A log line the state wants written. */
export interface LogLine {
  /** Severity. */
  level: "debug" | "info" | "warn" | "error";
  /** Text (never a password). */
  text: string;
}

export type { StoredPublish, StoreOp } from "../store/store.ts";
import type { StoreOp } from "../store/store.ts";

/** The actions of one event; read them, then the next event resets them. */
export class Actions {
  /** Frames to write on the connection, in order. */
  writes: Uint8Array[] = [];
  /** Some frame's sender waits for an answer: write without waiting for the next macrotask. */
  urgent = false;
  /** Callers to settle: `settleErrors[i]` undefined means resolve with `settleValues[i]`. */
  settleCalls: Pending[] = [];
  /** Values to resolve with, parallel to `settleCalls`. */
  settleValues: unknown[] = [];
  /** Errors to reject with, parallel to `settleCalls`. */
  settleErrors: (Error | undefined)[] = [];
  /** Incoming messages to hand to the application, in order. */
  deliveries: Message[] = [];
  /** Ticket per delivery to report back through `onDelivered` (0: nothing owed). */
  deliveryTickets: number[] = [];
  /** Changes for the durable store, in order. */
  storeOps: StoreOp[] = [];
  /** Close the connection with this reason. */
  close: Error | undefined = undefined;
  /** Write everything queued, then close (a polite DISCONNECT). */
  endGracefully = false;
  /** The handshake under way ended. */
  handshake: HandshakeOutcome | undefined = undefined;
  /** Log lines, rare. */
  logs: LogLine[] = [];
  /** When the state must next hear from its timer (Infinity: nothing pending). */
  deadline = Infinity;
  /**
   * v5: the broker sent an AUTH challenge; the application's answer goes to
   * the state with `epoch` (the connection it belongs to).
   */
  authChallenge: AuthChallenge | undefined = undefined;

  /**
   * Empties everything for the next event. A used list is replaced, not
   * truncated: `length = 0` is a runtime call in V8 (about 57 ns against
   * 15 ns for a fresh array here), and most events use two or three lists.
   */
  reset(): void {
    if (this.writes.length > 0) this.writes = [];
    this.urgent = false;
    if (this.settleCalls.length > 0) {
      this.settleCalls = [];
      this.settleValues = [];
      this.settleErrors = [];
    }
    if (this.deliveries.length > 0) {
      this.deliveries = [];
      this.deliveryTickets = [];
    }
    if (this.storeOps.length > 0) this.storeOps = [];
    this.close = undefined;
    this.endGracefully = false;
    this.handshake = undefined;
    if (this.logs.length > 0) this.logs = [];
    this.deadline = Infinity;
    this.authChallenge = undefined;
  }

  /** Queues a frame. */
  write(frame: Uint8Array, urgent: boolean): void {
    this.writes.push(frame);
    if (urgent) this.urgent = true;
  }

  /** Queues a caller's fulfilment. */
  resolve(call: Pending, value: unknown): void {
    this.settleCalls.push(call);
    this.settleValues.push(value);
    this.settleErrors.push(undefined);
  }

  /** Queues a caller's rejection. */
  reject(call: Pending, error: Error): void {
    this.settleCalls.push(call);
    this.settleValues.push(undefined);
    this.settleErrors.push(error);
  }

  /** Queues a message for the application. */
  deliver(message: Message, ticket: number): void {
    this.deliveries.push(message);
    this.deliveryTickets.push(ticket);
  }

  /** Queues a log line. */
  log(level: LogLine["level"], text: string): void {
    this.logs.push({ level, text });
  }
}
