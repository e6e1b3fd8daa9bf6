/**
 * MQTT 5 enhanced authentication (§4.12): AUTH exchanges while connecting
 * and re-authentication on a live connection. The state only keeps track of
 * the exchange; the application's `auth.onChallenge` answers challenges,
 * asynchronously, through the client.
 *
 * @module
 */

import type { AuthPacket } from "../codec/packets.ts";
import { ConnectionLostError, ProtocolError } from "../errors.ts";
import type { Actions, Pending } from "./actions.ts";
import { CONNECTING, type Context, UP } from "./_context.ts";
import { packetFrame } from "./_frames.ts";

/** Continue authentication. */
const CONTINUE = 0x18;
/** Re-authenticate (client to server only). */
const REAUTHENTICATE = 0x19;

/** The enhanced-authentication exchanges of one session; see the module doc. */
export class Auth {
  readonly #ctx: Context;
  /** The caller of a re-authentication under way. */
  #reauth: Pending | undefined = undefined;

  /** Authentication state sharing `ctx`. */
  constructor(ctx: Context) {
    this.#ctx = ctx;
  }

  /** The authentication method from the settings, if enhanced authentication is on. */
  get method(): string | undefined {
    return this.#ctx.config.connectProperties?.authenticationMethod;
  }

  /** Whether a re-authentication waits for the broker. */
  get reauthenticating(): boolean {
    return this.#reauth !== undefined;
  }

  /** An AUTH packet arrived (while connecting or on the live link). */
  packet(packet: AuthPacket, out: Actions): void {
    const method = this.method;
    const ctx = this.#ctx;
    if (method === undefined) {
      out.close = new ProtocolError(
        "broker sent AUTH, but the CONNECT named no authentication method",
      );
      return;
    }
    const theirs = packet.properties?.authenticationMethod;
    if (theirs !== method) {
      out.close = new ProtocolError(
        `broker sent AUTH for method ${JSON.stringify(theirs)}, not ${JSON.stringify(method)}`,
        { rule: "MQTT-3.15.2-1" },
      );
      return;
    }
    const code = packet.reasonCode;
    if (code === CONTINUE && (ctx.phase === CONNECTING || this.#reauth !== undefined)) {
      out.authChallenge = { data: packet.properties?.authenticationData, epoch: ctx.epoch };
    } else if (code === 0 && ctx.phase === UP && this.#reauth !== undefined) {
      const call = this.#reauth;
      this.#reauth = undefined;
      out.log("info", "re-authentication succeeded");
      out.resolve(call, undefined);
    } else {
      out.close = new ProtocolError(
        `unexpected AUTH with reason 0x${code.toString(16)} from broker` +
          (ctx.phase === UP ? " (no re-authentication under way)" : " before CONNACK"),
      );
    }
  }

  /**
   * The application answered the challenge of connection `epoch` with
   * `data`: AUTH (continue) goes out, unless that connection is gone.
   */
  answer(epoch: number, data: Uint8Array, now: number, out: Actions): void {
    const ctx = this.#ctx;
    if (epoch !== ctx.epoch) return;
    if (ctx.phase !== CONNECTING && !(ctx.phase === UP && this.#reauth !== undefined)) return;
    this.#send(CONTINUE, data, now, out);
  }

  /** A re-authentication call: AUTH (re-authenticate) with `data` goes out. */
  reauthenticate(call: Pending, data: Uint8Array | undefined, now: number, out: Actions): void {
    if (this.method === undefined) {
      out.reject(call, new TypeError("reauthenticate() needs the auth option (a method)"));
    } else if (this.#ctx.phase !== UP) {
      out.reject(call, new ConnectionLostError("not connected: cannot re-authenticate now"));
    } else if (this.#reauth !== undefined) {
      out.reject(call, new Error("a re-authentication is already under way"));
    } else {
      this.#reauth = call;
      this.#send(REAUTHENTICATE, data, now, out);
    }
  }

  /** The connection ended: a re-authentication under way fails with `error`. */
  down(error: Error | undefined, out: Actions): void {
    const call = this.#reauth;
    if (call === undefined) return;
    this.#reauth = undefined;
    out.reject(
      call,
      error ?? new ConnectionLostError("connection lost during re-authentication"),
    );
  }

  /** The caller of a re-authentication under way, removed (the client shuts down). */
  takeCaller(): Pending | undefined {
    const call = this.#reauth;
    this.#reauth = undefined;
    return call;
  }

  #send(reasonCode: number, data: Uint8Array | undefined, now: number, out: Actions): void {
    const packet: AuthPacket = {
      cmd: "auth",
      reasonCode,
      properties: {
        authenticationMethod: this.method,
        ...(data !== undefined ? { authenticationData: data } : {}),
      },
    };
    this.#ctx.emit(out, packetFrame(packet, 5), true, now);
  }
}
