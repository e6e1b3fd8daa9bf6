/**
 * MQTT over TCP and TLS with Deno's sockets: the default transport.
 *
 * @module
 */

import { errorText } from "../_bytes.ts";
import { ConnectionLostError } from "../errors.ts";
import type { Connection, Dialer } from "./connection.ts";

/** TLS settings: `true` for the system roots, or explicit certificates. */
export interface TlsOptions {
  /** Extra trusted CA certificates, PEM. Default: the system roots only. */
  caCerts?: string[];
  /** Client certificate for mutual TLS, PEM. */
  cert?: string;
  /** Client private key for mutual TLS, PEM. */
  key?: string;
  /** Name to verify the broker's certificate against. Default: the server name. */
  hostname?: string;
}

/** Where and how to open a connection. */
export interface DialOptions {
  /** Host name or IP. */
  hostname: string;
  /** TCP port. */
  port: number;
  /** TLS settings; absent or false for plain TCP. */
  tls?: TlsOptions | boolean;
  /** Aborts the attempt (closes a half-made connection). */
  signal?: AbortSignal;
}

/** The part of `Deno.Conn` a connection needs: what a custom `dial` returns. */
export interface ByteConn {
  /** Reads into `buffer`; the number of bytes, or null at end of stream. */
  read(buffer: Uint8Array): Promise<number | null>;
  /** Writes some of `bytes`; the number written. */
  write(bytes: Uint8Array): Promise<number>;
  /** Closes the socket. */
  close(): void;
}

const READ_SIZE = 64 * 1024;

/** A {@linkcode Connection} over a Deno socket (or anything with its read/write/close). */
export function fromByteConn(conn: ByteConn): Connection {
  const buffer = new Uint8Array(READ_SIZE);
  let closed = false;
  return {
    async read() {
      const n = await conn.read(buffer);
      // A copy of just what arrived: decoded payloads keep referring to it.
      return n === null ? null : buffer.slice(0, n);
    },
    async write(bytes) {
      let offset = 0;
      while (offset < bytes.length) {
        offset += await conn.write(offset === 0 ? bytes : bytes.subarray(offset));
      }
    },
    close() {
      if (closed) return;
      closed = true;
      try {
        conn.close();
      } catch { /* already closed */ }
    },
  };
}

/**
 * Opens a TCP (or TLS) connection to a broker with Deno's sockets.
 *
 * @example
 * ```ts ignore
 * import { dial } from "./transport/tcp.ts";
 * const conn = await dial({ hostname: "127.0.0.1", port: 1883 });
 * conn.close();
 * ```
 */
export async function dial(options: DialOptions): Promise<Deno.Conn> {
  const { hostname, port, signal } = options;
  const tls = options.tls === true ? {} : options.tls || undefined;
  if (tls?.cert && tls.key) return await dialMutualTls(hostname, port, tls, signal);
  let conn: Deno.TcpConn;
  try {
    conn = await Deno.connect({ hostname, port, signal });
  } catch (error) {
    throw new ConnectionLostError(
      `cannot connect to ${hostname}:${port}: ${errorText(error)}`,
      { cause: error },
    );
  }
  conn.setNoDelay(true); // small frames go out at once; we coalesce ourselves
  if (!tls) return conn;
  try {
    // startTls lets the verified name differ from the address dialled.
    const tlsConn = await Deno.startTls(conn, {
      hostname: tls.hostname ?? hostname,
      caCerts: tls.caCerts,
    });
    await tlsConn.handshake();
    return tlsConn;
  } catch (error) {
    try {
      conn.close();
    } catch { /* already closed by the failed handshake */ }
    throw new ConnectionLostError(
      `TLS handshake with ${hostname}:${port} failed: ${errorText(error)}`,
      { cause: error },
    );
  }
}

/**
 * Deno sends a client certificate only through `Deno.connectTls`, which
 * verifies the broker against the address it dials: `tls.hostname` must then
 * be absent or equal to the server (checked when the client is created).
 */
async function dialMutualTls(
  hostname: string,
  port: number,
  tls: TlsOptions,
  signal: AbortSignal | undefined,
): Promise<Deno.Conn> {
  signal?.throwIfAborted();
  let conn: Deno.TlsConn;
  try {
    conn = await Deno.connectTls({
      hostname,
      port,
      caCerts: tls.caCerts,
      cert: tls.cert!,
      key: tls.key!,
    });
  } catch (error) {
    throw new ConnectionLostError(
      `cannot connect to ${hostname}:${port} over TLS: ${errorText(error)}`,
      { cause: error },
    );
  }
  const onAbort = () => conn.close();
  signal?.addEventListener("abort", onAbort, { once: true });
  try {
    await conn.handshake();
    return conn;
  } catch (error) {
    try {
      conn.close();
    } catch { /* already closed */ }
    throw new ConnectionLostError(
      `TLS handshake with ${hostname}:${port} failed: ${errorText(error)}`,
      { cause: error },
    );
  } finally {
    signal?.removeEventListener("abort", onAbort);
  }
}

/**
 * The default dialer for `mqtt://` and `mqtts://` endpoints: TLS with the
 * given settings for `mqtts`, plain TCP otherwise; `dialConn` replaces the
 * socket opening (the `dial` option).
 */
export function tcpDialer(
  tls: TlsOptions | boolean | undefined,
  dialConn: (options: DialOptions) => Promise<ByteConn> = dial,
): Dialer {
  return async (endpoint, { signal }) => {
    const secure = endpoint.scheme === "mqtts";
    const conn = await dialConn({
      hostname: endpoint.host,
      port: endpoint.port,
      tls: secure ? (tls || true) : undefined,
      signal,
    });
    return fromByteConn(conn);
  };
}
