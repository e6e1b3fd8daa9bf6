/**
 * The store's append+commit path: MemoryStore against FileStore, QoS 1
 * messages of 100 B, each a "put" when accepted and a "delete" when
 * acknowledged (50 messages in flight).
 *
 * ```sh
 * deno run --allow-read --allow-write bench/file_store_bench.ts              # 100 000 messages
 * deno run --allow-read --allow-write bench/file_store_bench.ts --n=20000 --dir=/var/tmp
 * ```
 *
 * Two loads:
 *
 * - `batch B`: B puts (and the deletes of the B before) appended, then one
 *   commit awaited; fsyncs per 1 000 messages is then 1 000 / B (B = 1 and
 *   10 run 2 000 commits only).
 * - `stream`: the engine's pattern: every message is an event that appends
 *   its records and commits when no commit is in flight (otherwise the next
 *   commit, started when that one resolves, carries it); the producer yields
 *   one turn of the event loop every 10 messages, as a client reading
 *   acknowledgements from a socket would, and is otherwise as fast as it can. This is where group commit shows: the fsyncs per
 *   1 000 messages follow from how many messages arrive during one fsync.
 *
 * records/s counts the store records (2 per message); fsyncs/1k msgs counts
 * the log's data syncs (`stats.logSyncs`) and, in brackets, every sync
 * (directory and compaction ones included). The directory is a fresh
 * temporary one (under --dir when given), removed at the end. Not a test.
 */

import { FileStore } from "../store/file.ts";
import { MemoryStore } from "../store/memory.ts";
import type { SessionStore, StoreOp } from "../store/store.ts";

const flags = new Map(
  Deno.args.filter((a) => a.startsWith("--")).map((a) => {
    const [key, value] = a.slice(2).split("=");
    return [key, value ?? "true"] as const;
  }),
);
const N = Number(flags.get("n") ?? 100_000);
const BASE = flags.get("dir");
const WINDOW = 50;
const payload = new Uint8Array(100).fill(0x61);

function putOp(i: number): StoreOp {
  return {
    op: "put",
    record: { id: (i % 65_000) + 1, qos: 1, topic: "gateway/7/sensor", payload, retain: false },
  };
}

function deleteOp(i: number): StoreOp {
  return { op: "delete", id: (i % 65_000) + 1 };
}

interface Result {
  n: number;
  seconds: number;
  records: number;
  logSyncs: number;
  syncs: number;
}

type Load = (store: SessionStore, n: number) => Promise<number>;

function batch(size: number): Load {
  return async (store, n) => {
    let records = 0;
    for (let start = 0; start < n; start += size) {
      const ops: StoreOp[] = [];
      for (let i = start; i < start + size && i < n; i++) {
        ops.push(putOp(i));
        if (i >= WINDOW) ops.push(deleteOp(i - WINDOW));
      }
      store.append(ops);
      records += ops.length;
      await store.commit();
    }
    return records;
  };
}

/** One turn of the event loop (I/O completions run), without the timers' 4 ms clamp. */
const channel = new MessageChannel();
let woken: (() => void) | undefined;
channel.port1.onmessage = () => woken?.();
function turn(): Promise<void> {
  return new Promise((resolve) => {
    woken = resolve;
    channel.port2.postMessage(0);
  });
}

const stream: Load = async (store, n) => {
  let records = 0;
  let committing = false;
  let again = false;
  let producing = true;
  let finished!: () => void;
  const idle = new Promise<void>((resolve) => finished = resolve);
  const commit = () => {
    committing = true;
    again = false;
    store.commit().then(() => {
      committing = false;
      if (again) commit();
      else if (!producing) finished();
    });
  };
  for (let i = 0; i < n; i++) {
    const ops = i >= WINDOW ? [putOp(i), deleteOp(i - WINDOW)] : [putOp(i)];
    store.append(ops);
    records += ops.length;
    if (committing) again = true;
    else commit();
    if (i % 10 === 9) await turn();
  }
  producing = false;
  if (!committing) finished();
  await idle;
  return records;
};

async function measure(kind: "memory" | "file", load: Load, n: number): Promise<Result> {
  const dir = await Deno.makeTempDir({ prefix: "file_store_bench_", dir: BASE });
  try {
    const store = kind === "memory" ? new MemoryStore() : new FileStore(dir);
    await store.open("bench");
    const started = performance.now();
    const records = await load(store, n);
    const seconds = (performance.now() - started) / 1000;
    await store.close();
    const stats = store instanceof FileStore ? store.stats : undefined;
    return { n, seconds, records, logSyncs: stats?.logSyncs ?? 0, syncs: stats?.syncs ?? 0 };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function row(load: string, kind: string, r: Result): string {
  const rate = Math.round(r.records / r.seconds).toLocaleString("en-US");
  const msgs = Math.round(r.n / r.seconds).toLocaleString("en-US");
  const perK = kind === "memory"
    ? "-"
    : `${(r.logSyncs * 1000 / r.n).toFixed(1)} (${(r.syncs * 1000 / r.n).toFixed(1)})`;
  const note = r.n === N ? "" : ` ${r.n.toLocaleString("en-US")} msgs`;
  return `| ${load.padEnd(10)} | ${kind.padEnd(6)} | ${rate.padStart(11)} | ${msgs.padStart(9)} | ${
    perK.padStart(15)
  } |${note}`;
}

console.log(
  `${N.toLocaleString("en-US")} QoS 1 messages of 100 B (put + delete), ${WINDOW} in flight`,
);
console.log("| load       | store  |   records/s |    msgs/s | fsyncs/1k msgs  |");
console.log("| ---------- | ------ | ----------: | --------: | --------------: |");
for (const size of [1, 10, 100, 1000]) {
  for (const kind of ["memory", "file"] as const) {
    // One sync per commit: shorter runs say the same.
    const n = kind === "file" && size < 100 ? Math.min(N, size * 2000) : N;
    console.log(row(`batch ${size}`, kind, await measure(kind, batch(size), n)));
  }
}
for (const kind of ["memory", "file"] as const) {
  console.log(row("stream", kind, await measure(kind, stream, N)));
}
channel.port1.close();
