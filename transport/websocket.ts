/**
 * MQTT over WebSocket (`ws://`, `wss://`) with nothing but the web-standard
 * `WebSocket` API, so the same code runs in Deno and in browsers (no `Deno.*`
 * here, nothing touched at import time).
 *
 * - The client asks for the `"mqtt"` subprotocol (MQTT 3.1.1 and 5, section
 *   6) and refuses a server that does not select it.
 * - Every batch of frames the client writes goes out as one binary message.
 *   Incoming message boundaries mean nothing: a message may hold part of a
 *   packet or several packets; the bytes are handed on in order and the
 *   packet decoder reassembles them. A text message breaks the protocol
 *   (MQTT-6.0.0-1) and fails the connection.
 * - Back-pressure: a WebSocket has no "drained" event, so `write()` sends at
 *   once and then, while `bufferedAmount` is above the high-water mark
 *   (default 64 KiB), re-checks it on a short timer (every 5 ms by default)
 *   and resolves once it is at or below the mark. The client awaits each
 *   write before the next, so at most one batch sits above the mark.
 *   Reading cannot be paused (the API has no way to), so incoming messages
 *   queue in memory until read.
 * - TLS for `wss://` is the platform's, always verified: a browser uses its
 *   trust store; Deno's `WebSocket` takes no per-connection CA, so the
 *   client's `tls` option does not apply to `wss://`. To trust a private CA
 *   in Deno, start it with `--cert ca.pem` or `DENO_CERT=ca.pem`, or add the
 *   CA to the system store and set `DENO_TLS_CA_STORE=system`.
 *
 * @module
 */

import { concat, errorText } from "../_bytes.ts";
import { ConnectionLostError } from "../errors.ts";
import type { Connection, Dialer, Endpoint } from "./connection.ts";

/** The WebSocket subprotocol MQTT requires (MQTT 5 and 3.1.1, section 6). */
export const MQTT_SUBPROTOCOL = "mqtt";

/** Settings of {@linkcode webSocketDialer}; the defaults suit every use. */
export interface WebSocketDialerOptions {
  /**
   * `write()` resolves once the socket's `bufferedAmount` is at or below
   * this many bytes. Default 64 KiB.
   */
  highWaterMark?: number;
  /** How often a waiting `write()` re-checks `bufferedAmount`, in ms. Default 5. */
  pollIntervalMs?: number;
  /**
   * The `WebSocket` class to use. Default: `globalThis.WebSocket`, looked
   * up at each dial (tests may replace it).
   */
  WebSocket?: new (url: string, protocols?: string | string[]) => WebSocket;
}

const DEFAULT_HIGH_WATER = 64 * 1024;
const DEFAULT_POLL_MS = 5;
const OPEN = 1; // WebSocket.OPEN, without touching the global at import time

/** The URL a WebSocket endpoint stands for, e.g. `ws://127.0.0.1:8080/mqtt`. */
export function webSocketUrl(endpoint: Endpoint): string {
  const host = endpoint.host.includes(":") ? `[${endpoint.host}]` : endpoint.host;
  const path = endpoint.path.startsWith("/") ? endpoint.path : `/${endpoint.path}`;
  return `${endpoint.scheme}://${host}:${endpoint.port}${path}`;
}

/**
 * A dialer for `ws://` and `wss://` endpoints, on the web-standard
 * `WebSocket` (see the module doc for framing, back-pressure and TLS). A
 * failed dial rejects with a {@linkcode ConnectionLostError} naming the URL;
 * aborting the dial's signal closes the socket and rejects the same way.
 *
 * @example
 * ```ts ignore
 * import { webSocketDialer } from "./transport/websocket.ts";
 * const dial = webSocketDialer();
 * const conn = await dial(
 *   { scheme: "ws", host: "127.0.0.1", port: 8080, path: "/mqtt" },
 *   { signal: AbortSignal.timeout(5000) },
 * );
 * conn.close();
 * ```
 */
export function webSocketDialer(options: WebSocketDialerOptions = {}): Dialer {
  const highWaterMark = options.highWaterMark ?? DEFAULT_HIGH_WATER;
  const pollMs = options.pollIntervalMs ?? DEFAULT_POLL_MS;
  return (endpoint, { signal }) => {
    const url = webSocketUrl(endpoint);
    const WebSocketClass = options.WebSocket ?? globalThis.WebSocket;
    if (typeof WebSocketClass !== "function") {
      return Promise.reject(
        new ConnectionLostError(`cannot connect to ${url}: this platform has no WebSocket`),
      );
    }
    return open(url, WebSocketClass, signal, highWaterMark, pollMs);
  };
}

function open(
  url: string,
  WebSocketClass: NonNullable<WebSocketDialerOptions["WebSocket"]>,
  signal: AbortSignal,
  highWaterMark: number,
  pollMs: number,
): Promise<Connection> {
  return new Promise<Connection>((resolve, reject) => {
    if (signal.aborted) {
      reject(aborted(url, signal.reason));
      return;
    }
    let ws: WebSocket;
    try {
      ws = new WebSocketClass(url, [MQTT_SUBPROTOCOL]);
    } catch (error) {
      reject(
        new ConnectionLostError(`cannot connect to ${url}: ${errorText(error)}`, { cause: error }),
      );
      return;
    }
    ws.binaryType = "arraybuffer";
    const conn = new WebSocketConnection(ws, url, highWaterMark, pollMs);
    const settle = () => {
      signal.removeEventListener("abort", onAbort);
      ws.removeEventListener("open", onOpen);
      conn.onEndBeforeOpen = undefined;
    };
    const onAbort = () => {
      settle();
      conn.close();
      reject(aborted(url, signal.reason));
    };
    const onOpen = () => {
      settle();
      if (ws.protocol !== MQTT_SUBPROTOCOL) {
        conn.close();
        const chosen = ws.protocol ? `"${ws.protocol}"` : "none";
        reject(
          new ConnectionLostError(
            `cannot connect to ${url}: the server did not accept the "${MQTT_SUBPROTOCOL}" ` +
              `WebSocket subprotocol (it chose ${chosen})`,
          ),
        );
        return;
      }
      resolve(conn);
    };
    conn.onEndBeforeOpen = (detail) => {
      settle();
      reject(new ConnectionLostError(`cannot connect to ${url}: ${detail}`));
    };
    signal.addEventListener("abort", onAbort, { once: true });
    ws.addEventListener("open", onOpen);
  });
}

function aborted(url: string, reason: unknown): ConnectionLostError {
  return new ConnectionLostError(`connecting to ${url} was aborted: ${errorText(reason)}`, {
    cause: reason,
  });
}

interface Reader {
  resolve(chunk: Uint8Array | null): void;
  reject(error: Error): void;
}

interface WriteWaiter {
  resolve(): void;
  reject(error: Error): void;
  timer: ReturnType<typeof setTimeout> | undefined;
}

/** Codes of a close that ends the stream normally: read() then returns null. */
const NORMAL_CLOSE = new Set([1000, 1001, 1005]);

/** One WebSocket as a {@linkcode Connection}. */
class WebSocketConnection implements Connection {
  readonly #ws: WebSocket;
  readonly #url: string;
  readonly #highWaterMark: number;
  readonly #pollMs: number;
  #chunks: Uint8Array[] = [];
  #readers: Reader[] = [];
  readonly #writers = new Set<WriteWaiter>();
  #opened = false;
  #ended = false; // no more data will come: a normal close, or close() here
  #error: ConnectionLostError | undefined; // why the connection failed
  #errorDetail = ""; // the last error event's message, for the close report
  #closedHere = false;
  /** Set while the dial waits for "open": called instead when the socket ends first. */
  onEndBeforeOpen: ((detail: string) => void) | undefined;

  constructor(ws: WebSocket, url: string, highWaterMark: number, pollMs: number) {
    this.#ws = ws;
    this.#url = url;
    this.#highWaterMark = highWaterMark;
    this.#pollMs = pollMs;
    ws.addEventListener("open", this.#onOpen);
    ws.addEventListener("message", this.#onMessage);
    ws.addEventListener("error", this.#onError);
    ws.addEventListener("close", this.#onClose);
  }

  read(): Promise<Uint8Array | null> {
    if (this.#chunks.length > 0) return Promise.resolve(this.#take());
    if (this.#error) return Promise.reject(this.#error);
    if (this.#ended) return Promise.resolve(null);
    return new Promise((resolve, reject) => this.#readers.push({ resolve, reject }));
  }

  write(bytes: Uint8Array): Promise<void> {
    if (this.#error) return Promise.reject(this.#error);
    if (this.#ended || this.#ws.readyState !== OPEN) {
      return Promise.reject(new ConnectionLostError(`WebSocket ${this.#url} is closed`));
    }
    try {
      this.#ws.send(bytes as Uint8Array<ArrayBuffer>);
    } catch (error) {
      return Promise.reject(
        new ConnectionLostError(`WebSocket ${this.#url}: send failed: ${errorText(error)}`, {
          cause: error,
        }),
      );
    }
    if (this.#ws.bufferedAmount <= this.#highWaterMark) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const waiter: WriteWaiter = { resolve, reject, timer: undefined };
      this.#writers.add(waiter);
      this.#poll(waiter);
    });
  }

  close(): void {
    if (this.#closedHere) return;
    this.#closedHere = true;
    if (!this.#error) this.#ended = true;
    this.#settleReaders();
    this.#failWriters(this.#error ?? new ConnectionLostError(`WebSocket ${this.#url} was closed`));
    try {
      this.#ws.close(1000);
    } catch { /* closing already */ }
  }

  /** Everything queued, as one chunk (several messages read at once are joined). */
  #take(): Uint8Array {
    const chunks = this.#chunks;
    this.#chunks = [];
    return chunks.length === 1 ? chunks[0] : concat(chunks);
  }

  #poll(waiter: WriteWaiter): void {
    waiter.timer = setTimeout(() => {
      waiter.timer = undefined;
      if (!this.#writers.has(waiter)) return;
      if (this.#ws.bufferedAmount <= this.#highWaterMark) {
        this.#writers.delete(waiter);
        waiter.resolve();
      } else {
        this.#poll(waiter);
      }
    }, this.#pollMs);
  }

  #failWriters(error: Error): void {
    for (const waiter of this.#writers) {
      clearTimeout(waiter.timer);
      waiter.reject(error);
    }
    this.#writers.clear();
  }

  /** Hands queued bytes, then the end or the error, to waiting readers. */
  #settleReaders(): void {
    while (this.#readers.length > 0) {
      const reader = this.#readers.shift()!;
      if (this.#chunks.length > 0) reader.resolve(this.#take());
      else if (this.#error) reader.reject(this.#error);
      else if (this.#ended) reader.resolve(null);
      else {
        this.#readers.unshift(reader);
        return;
      }
    }
  }

  #fail(error: ConnectionLostError): void {
    if (this.#error || this.#ended) return;
    this.#error = error;
    this.#settleReaders();
    this.#failWriters(error);
  }

  readonly #onOpen = (): void => {
    this.#opened = true;
  };

  readonly #onMessage = (event: MessageEvent): void => {
    if (this.#ended || this.#error) return;
    const data: unknown = event.data;
    if (!(data instanceof ArrayBuffer)) {
      this.#fail(
        new ConnectionLostError(
          `WebSocket ${this.#url} sent a non-binary message; MQTT allows binary messages only ` +
            "(MQTT-6.0.0-1)",
        ),
      );
      try {
        this.#ws.close(1000);
      } catch { /* closing already */ }
      return;
    }
    if (data.byteLength === 0) return;
    this.#chunks.push(new Uint8Array(data));
    this.#settleReaders();
  };

  readonly #onError = (event: Event): void => {
    const message = (event as ErrorEvent).message;
    if (typeof message === "string" && message !== "") this.#errorDetail = message;
  };

  readonly #onClose = (event: CloseEvent): void => {
    const detail = this.#describeClose(event);
    const beforeOpen = this.onEndBeforeOpen;
    if (!this.#opened && beforeOpen) {
      this.#ended = true;
      beforeOpen(detail);
      return;
    }
    if (event.wasClean && NORMAL_CLOSE.has(event.code)) {
      if (!this.#error) this.#ended = true;
      this.#settleReaders();
      this.#failWriters(this.#error ?? new ConnectionLostError(`WebSocket ${this.#url} closed`));
    } else {
      this.#fail(new ConnectionLostError(`WebSocket ${this.#url} ${detail}`));
      this.#ended = true;
    }
  };

  #describeClose(event: CloseEvent): string {
    const why = event.reason ? `: ${event.reason}` : "";
    const error = this.#errorDetail ? ` (${this.#errorDetail})` : "";
    if (!this.#opened) {
      // Browsers do not say why (refused, unreachable, 404, subprotocol, TLS);
      // Deno does, in the error event.
      const code = event.code && event.code !== 1006 ? ` (close code ${event.code}${why})` : "";
      const cause = this.#errorDetail
        ? `: ${this.#errorDetail}`
        : ` (the server may be down, or refused the upgrade or the "${MQTT_SUBPROTOCOL}" ` +
          "subprotocol, or its TLS certificate is not trusted)";
      return `WebSocket did not open${code}${cause}`;
    }
    return event.wasClean
      ? `closed by the server with code ${event.code}${why}`
      : `closed abnormally (code ${event.code}${why})${error}`;
  }
}
