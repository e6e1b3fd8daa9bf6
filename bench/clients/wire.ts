/**
 * Just enough MQTT 3.1.1 framing for the raw benchmark clients: CONNECT,
 * SUBSCRIBE and PUBLISH encoders and a frame splitter. No MQTT library.
 *
 * @module
 */

const encoder = new TextEncoder();

function remainingLength(n: number): number[] {
  const out: number[] = [];
  do {
    let digit = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) digit |= 0x80;
    out.push(digit);
  } while (n > 0);
  return out;
}

function frame(header: number, body: number[] | Uint8Array): Uint8Array {
  const len = remainingLength(body.length);
  const out = new Uint8Array(1 + len.length + body.length);
  out[0] = header;
  out.set(len, 1);
  out.set(body, 1 + len.length);
  return out;
}

function str(s: string): number[] {
  const bytes = encoder.encode(s);
  return [bytes.length >> 8, bytes.length & 0xff, ...bytes];
}

/** CONNECT, MQTT 3.1.1, CleanSession as given, keepalive 60 s. */
export function connectFrame(clientId: string, clean = true): Uint8Array {
  return frame(0x10, [...str("MQTT"), 4, clean ? 0x02 : 0x00, 0, 60, ...str(clientId)]);
}

/** SUBSCRIBE (packet id 1) to one filter. */
export function subscribeFrame(filter: string, qos: 0 | 1): Uint8Array {
  return frame(0x82, [0, 1, ...str(filter), qos]);
}

/** PUBLISH QoS 0 (id ignored) or 1. */
export function publishFrame(topic: string, payload: Uint8Array, qos: 0 | 1, id = 0): Uint8Array {
  const t = str(topic);
  const body = new Uint8Array(t.length + (qos ? 2 : 0) + payload.length);
  body.set(t, 0);
  if (qos) body.set([id >> 8, id & 0xff], t.length);
  body.set(payload, t.length + (qos ? 2 : 0));
  return frame(0x30 | (qos << 1), body);
}

/** Writes all of `bytes`. */
export async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < bytes.length) offset += await conn.write(bytes.subarray(offset));
}

/** PUBACK for the QoS 1 PUBLISH `frame` (as readFrames hands it over). */
export function pubackFor(frame: Uint8Array): Uint8Array {
  let p = 1;
  while (frame[p] & 0x80) p++;
  p++; // past the remaining length
  const idAt = p + 2 + ((frame[p] << 8) | frame[p + 1]);
  return new Uint8Array([0x40, 2, frame[idAt], frame[idAt + 1]]);
}

/**
 * Reads `conn` and calls `onFrame(type, frame)` per complete frame (type is
 * the high nibble of the first byte), and `onRead()` after the frames of each
 * read. Resolves when the connection ends.
 */
export async function readFrames(
  conn: Deno.Conn,
  onFrame: (type: number, bytes: Uint8Array) => void,
  onRead?: () => void | Promise<void>,
): Promise<void> {
  const buffer = new Uint8Array(256 * 1024);
  let pending = new Uint8Array(0);
  for (;;) {
    let n: number | null;
    try {
      n = await conn.read(buffer);
    } catch {
      return;
    }
    if (n === null) return;
    let bytes = buffer.subarray(0, n);
    if (pending.length > 0) {
      const joined = new Uint8Array(pending.length + n);
      joined.set(pending);
      joined.set(bytes, pending.length);
      bytes = joined;
    }
    let offset = 0;
    for (;;) {
      let remaining = 0, multiplier = 1, i = 1, complete = false;
      for (; i <= 4 && offset + i < bytes.length; i++) {
        const digit = bytes[offset + i];
        remaining += (digit & 0x7f) * multiplier;
        multiplier *= 128;
        if ((digit & 0x80) === 0) {
          complete = true;
          break;
        }
      }
      if (!complete) break;
      const total = 1 + i + remaining;
      if (offset + total > bytes.length) break;
      onFrame(bytes[offset] >> 4, bytes.subarray(offset, offset + total));
      offset += total;
    }
    pending = bytes.slice(offset);
    if (onRead) await onRead();
  }
}

/** Connects and completes the CONNECT/CONNACK exchange; returns the open connection. */
export async function mqttConnect(
  host: string,
  port: number,
  clientId: string,
): Promise<Deno.TcpConn> {
  const conn = await Deno.connect({ hostname: host, port });
  conn.setNoDelay(true);
  await writeAll(conn, connectFrame(clientId));
  const buffer = new Uint8Array(4);
  let got = 0;
  while (got < 4) {
    const n = await conn.read(buffer.subarray(got));
    if (n === null) throw new Error("closed before CONNACK");
    got += n;
  }
  if (buffer[0] !== 0x20 || buffer[3] !== 0) throw new Error(`bad CONNACK ${buffer}`);
  return conn;
}
