import assert from "node:assert/strict";
import { FaultProxy } from "./fault_proxy.ts";

/** A tiny TCP echo server; closes its side when the peer half-closes. */
class EchoServer implements AsyncDisposable {
  readonly listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  readonly port = (this.listener.addr as Deno.NetAddr).port;
  readonly conns = new Set<Deno.Conn>();
  readonly #tasks = new Set<Promise<void>>();
  readonly #loop: Promise<void>;
  /** Connections the echo server saw end (EOF or error). */
  ended = 0;

  constructor() {
    this.#loop = (async () => {
      for (;;) {
        let conn: Deno.Conn;
        try {
          conn = await this.listener.accept();
        } catch {
          return;
        }
        this.conns.add(conn);
        const task = this.#echo(conn);
        this.#tasks.add(task);
        task.finally(() => this.#tasks.delete(task));
      }
    })();
  }

  async #echo(conn: Deno.Conn): Promise<void> {
    const buffer = new Uint8Array(4096);
    try {
      for (;;) {
        const n = await conn.read(buffer);
        if (n === null) break;
        let offset = 0;
        while (offset < n) offset += await conn.write(buffer.subarray(offset, n));
      }
    } catch {
      // Reset: treat as end.
    }
    this.ended++;
    this.conns.delete(conn);
    try {
      conn.close();
    } catch {
      // Already closed by close().
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.listener.close();
    for (const conn of this.conns) {
      try {
        conn.close();
      } catch {
        // Already closed.
      }
    }
    await this.#loop;
    while (this.#tasks.size > 0) await Promise.all([...this.#tasks]);
  }
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Reads exactly `length` bytes, or throws if the stream ends first. */
async function readExactly(conn: Deno.Conn, length: number): Promise<Uint8Array> {
  const out = new Uint8Array(length);
  let offset = 0;
  while (offset < length) {
    const n = await conn.read(out.subarray(offset));
    if (n === null) throw new Error(`stream ended after ${offset} of ${length} bytes`);
    offset += n;
  }
  return out;
}

/** Resolves to "eof" if the peer closes (or resets) within `ms`, else "open". */
async function endsWithin(conn: Deno.Conn, ms: number): Promise<"eof" | "open" | "data"> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<"open">((resolve) => {
    timer = setTimeout(() => resolve("open"), ms);
  });
  const read = conn.read(new Uint8Array(16)).then(
    (n) => (n === null ? "eof" as const : "data" as const),
    () => "eof" as const,
  );
  const result = await Promise.race([read, timeout]);
  clearTimeout(timer);
  if (result === "open") {
    // Settle the pending read so no op leaks: closing the conn ends it.
    conn.close();
    await read;
  }
  return result;
}

async function connect(proxy: FaultProxy): Promise<Deno.Conn> {
  return await Deno.connect({ hostname: proxy.hostname, port: proxy.port });
}

Deno.test("proxy forwards bytes both ways and counts connections", async () => {
  await using echo = new EchoServer();
  await using proxy = await FaultProxy.start({
    targetHostname: "127.0.0.1",
    targetPort: echo.port,
  });
  const conn = await connect(proxy);
  await proxy.waitForConnections(1);
  await conn.write(encoder.encode("hello"));
  assert.equal(decoder.decode(await readExactly(conn, 5)), "hello");
  const big = crypto.getRandomValues(new Uint8Array(60_000));
  const received = readExactly(conn, big.length);
  let offset = 0;
  while (offset < big.length) offset += await conn.write(big.subarray(offset));
  assert.deepEqual(await received, big);
  assert.equal(proxy.connectionCount, 1);
  assert.equal(proxy.openConnections, 1);
  conn.close();
});

Deno.test("cutAll closes both sides of every connection", async () => {
  await using echo = new EchoServer();
  await using proxy = await FaultProxy.start({
    targetHostname: "127.0.0.1",
    targetPort: echo.port,
  });
  const a = await connect(proxy);
  const b = await connect(proxy);
  await a.write(encoder.encode("x"));
  await b.write(encoder.encode("y"));
  await readExactly(a, 1);
  await readExactly(b, 1);
  assert.equal(proxy.openConnections, 2);
  assert.equal(echo.ended, 0);
  proxy.cutAll();
  assert.equal(await endsWithin(a, 2000), "eof");
  assert.equal(await endsWithin(b, 2000), "eof");
  a.close();
  b.close();
  // The server side sees its connections end too.
  const deadline = Date.now() + 2000;
  while (echo.ended < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  assert.equal(echo.ended, 2);
  while (proxy.openConnections > 0 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 10));
  }
  assert.equal(proxy.openConnections, 0);
});

Deno.test("blackhole stops forwarding but keeps sockets open; switching it off delivers in order", async () => {
  await using echo = new EchoServer();
  await using proxy = await FaultProxy.start({
    targetHostname: "127.0.0.1",
    targetPort: echo.port,
  });
  const conn = await connect(proxy);
  await conn.write(encoder.encode("a"));
  assert.equal(decoder.decode(await readExactly(conn, 1)), "a");

  proxy.blackhole(true);
  await conn.write(encoder.encode("bc"));
  // Nothing comes back, and the connection is not closed either.
  const pendingBuffer = new Uint8Array(16);
  const pending = conn.read(pendingBuffer);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const quiet = await Promise.race([
    pending.then(() => "data"),
    new Promise<string>((resolve) => timer = setTimeout(() => resolve("silent"), 300)),
  ]);
  clearTimeout(timer);
  assert.equal(quiet, "silent");
  assert.equal(proxy.openConnections, 1);
  assert.equal(echo.ended, 0);

  // New connections are accepted while blackholed but get nothing through.
  const late = await connect(proxy);
  await proxy.waitForConnections(2);
  await late.write(encoder.encode("z"));

  proxy.blackhole(false);
  const n = await pending;
  assert.ok(n !== null);
  let got = decoder.decode(pendingBuffer.subarray(0, n));
  if (got.length < 2) got += decoder.decode(await readExactly(conn, 2 - got.length));
  assert.equal(got, "bc");
  assert.equal(decoder.decode(await readExactly(late, 1)), "z");
  conn.close();
  late.close();
});

Deno.test("refuse closes new connections on accept, existing ones keep working", async () => {
  await using echo = new EchoServer();
  await using proxy = await FaultProxy.start({
    targetHostname: "127.0.0.1",
    targetPort: echo.port,
  });
  const before = await connect(proxy);
  await proxy.waitForConnections(1);
  proxy.refuse(true);
  const refused = await connect(proxy);
  await proxy.waitForConnections(2);
  assert.equal(await endsWithin(refused, 2000), "eof");
  refused.close();
  await before.write(encoder.encode("ok"));
  assert.equal(decoder.decode(await readExactly(before, 2)), "ok");
  proxy.refuse(false);
  const after = await connect(proxy);
  await after.write(encoder.encode("yes"));
  assert.equal(decoder.decode(await readExactly(after, 3)), "yes");
  assert.equal(proxy.connectionCount, 3);
  before.close();
  after.close();
});

Deno.test("delay adds at least the one-way delay per direction and preserves byte order", async () => {
  await using echo = new EchoServer();
  await using proxy = await FaultProxy.start({
    targetHostname: "127.0.0.1",
    targetPort: echo.port,
    delayMs: 50,
  });
  const conn = await connect(proxy);
  const start = performance.now();
  await conn.write(encoder.encode("p"));
  await readExactly(conn, 1);
  const rtt = performance.now() - start;
  assert.ok(rtt >= 100, `round trip ${rtt.toFixed(1)} ms is shorter than 2 x 50 ms`);

  // Many small writes while the delay changes (shrinking delays must not reorder).
  const total = 200;
  const expected: number[] = [];
  const received = readExactly(conn, total * 2);
  for (let i = 0; i < total; i++) {
    const chunk = new Uint8Array([i >> 8, i & 0xff]);
    expected.push(...chunk);
    await conn.write(chunk);
    if (i === 50) proxy.setDelay(0);
    if (i === 100) proxy.setDelay(30);
    if (i === 150) proxy.setDelay(1);
    if (i % 20 === 0) await new Promise((r) => setTimeout(r, 1));
  }
  assert.deepEqual(await received, new Uint8Array(expected));
  assert.throws(() => proxy.setDelay(-1), RangeError);
  conn.close();
});

Deno.test("waitForConnections times out, and close() ends pending waits and all work", async () => {
  await using echo = new EchoServer();
  const proxy = await FaultProxy.start({ targetHostname: "127.0.0.1", targetPort: echo.port });
  await assert.rejects(proxy.waitForConnections(1, 50), /timed out/);
  const waiting = assert.rejects(proxy.waitForConnections(5, 5000), /closed/);
  const conn = await connect(proxy);
  await conn.write(encoder.encode("q"));
  await readExactly(conn, 1);
  await proxy.close();
  await waiting;
  assert.equal(await endsWithin(conn, 2000), "eof");
  conn.close();
  assert.equal(proxy.openConnections, 0);
});
