/**
 * FileStore against `kill -9`: child processes (tests/_file_store_child.ts)
 * stream ops and report what their commits made durable; the parent kills
 * them at a random moment and checks the store holds exactly a prefix of the
 * op stream that includes everything reported durable.
 *
 * FILE_STORE_SEED=<n> reruns the crash test with the same op streams, segment
 * sizes and kill delays (where exactly a kill lands still depends on timing);
 * FILE_STORE_RUNS=<n> changes the number of runs (default 24).
 */

import assert from "node:assert/strict";
import { isDeepStrictEqual } from "node:util";
import { FileStore } from "../store/file.ts";
import { SessionImage, type StoredSession } from "../store/store.ts";
import { CLIENT_ID, events, prng } from "./_file_store_child.ts";

const CHILD = new URL("./_file_store_child.ts", import.meta.url).pathname;

interface Child {
  process: Deno.ChildProcess;
  /** Complete stdout lines so far. */
  lines: string[];
  /** Resolves when a line satisfying `test` has arrived. */
  waitFor(test: (line: string) => boolean): Promise<void>;
  /** Everything, once the process ended. */
  done: Promise<{ code: number; signal: Deno.Signal | null; stderr: string }>;
}

function spawn(args: string[], dir: string): Child {
  const command = new Deno.Command(Deno.execPath(), {
    args: ["run", `--allow-read=${dir}`, `--allow-write=${dir}`, CHILD, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  });
  const process = command.spawn();
  const lines: string[] = [];
  const watchers: { test: (line: string) => boolean; resolve: () => void }[] = [];
  const read = (async () => {
    let partial = "";
    const decoder = new TextDecoder();
    for await (const chunk of process.stdout) {
      partial += decoder.decode(chunk, { stream: true });
      const parts = partial.split("\n");
      partial = parts.pop()!;
      for (const line of parts) {
        lines.push(line);
        for (const w of watchers.splice(0)) {
          if (w.test(line)) w.resolve();
          else watchers.push(w);
        }
      }
    }
  })();
  const stderr = new Response(process.stderr).text();
  const done = (async () => {
    const status = await process.status;
    await read;
    return { code: status.code, signal: status.signal, stderr: await stderr };
  })();
  return {
    process,
    lines,
    done,
    waitFor(test) {
      if (lines.some(test)) return Promise.resolve();
      return new Promise<void>((resolve, reject) => {
        watchers.push({ test, resolve });
        done.then((d) => reject(new Error(`child ended before the line: ${d.stderr}`)));
      });
    },
  };
}

/**
 * The length k >= `durable` of the prefix of `seed`'s op stream whose image
 * `session` is; throws when there is none within `limit` ops after it.
 */
function matchingPrefix(seed: number, session: StoredSession, durable: number, limit: number) {
  const image = new SessionImage();
  const source = events(seed);
  let applied = 0;
  let pending: ReturnType<typeof source.next>["value"] = [];
  let next = 0; // index in pending
  const step = () => {
    while (next >= pending.length) {
      pending = source.next().value!;
      next = 0;
    }
    image.apply(pending[next++]);
    applied++;
  };
  while (applied < durable) step();
  for (;;) {
    if (
      image.lastId === session.lastId &&
      image.publishes.size === session.publishes.length &&
      image.incoming.size === session.incoming.length &&
      isDeepStrictEqual(image.session(), session)
    ) {
      return applied;
    }
    if (applied >= durable + limit) {
      throw new Error(
        `the store holds no prefix of the op stream of at least ${durable} ops ` +
          `(looked up to ${applied}): ${session.publishes.length} publishes, lastId ${session.lastId}`,
      );
    }
    step();
  }
}

function env(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined; // no --allow-env
  }
}

async function sizeOf(dir: string): Promise<number> {
  let total = 0;
  for await (const entry of Deno.readDir(dir)) {
    const path = `${dir}/${entry.name}`;
    total += entry.isDirectory ? await sizeOf(path) : (await Deno.stat(path)).size;
  }
  return total;
}

Deno.test("FileStore: every commit reported durable survives kill -9 (prefix, nothing torn)", async () => {
  const seed = Number(env("FILE_STORE_SEED") ?? Date.now() % 1_000_000);
  const runs = Number(env("FILE_STORE_RUNS") ?? 24);
  const random = prng(seed);
  const root = await Deno.makeTempDir({ prefix: "file_store_crash_" });
  let interrupted = 0; // runs whose kill left a compaction's files behind
  let snapshots = 0;
  let durableOps = 0;
  let committed = 0; // runs where a commit completed before the kill
  const started = performance.now();
  try {
    for (let run = 0; run < runs; run++) {
      const runSeed = Math.floor(random() * 2 ** 31);
      const compacting = run % 2 === 0; // small segments: rolls and compactions all the time
      const segment = compacting ? 4096 : 1 << 20;
      const delay = 40 + Math.floor(random() * 240);
      const dir = `${root}/run${run}`;
      await Deno.mkdir(dir);
      const context = `seed ${seed}, run ${run} (child seed ${runSeed}, segment ${segment}, ` +
        `kill after ${delay} ms); rerun with FILE_STORE_SEED=${seed}`;
      const child = spawn(["stream", dir, String(runSeed), String(segment)], dir);
      try {
        await child.waitFor((line) => line === "R");
        await new Promise((resolve) => setTimeout(resolve, delay));
        child.process.kill("SIGKILL");
        const end = await child.done;
        assert.equal(end.signal, "SIGKILL", `${context}: the child ended by itself: ${end.stderr}`);
        let durable = 0;
        for (const line of child.lines) {
          if (line.startsWith("D ")) durable = Math.max(durable, Number(line.slice(2)));
        }
        durableOps += durable;
        if (durable > 0) committed++;

        const store = new FileStore(dir, { segmentSize: segment });
        const session = await store.open(CLIENT_ID);
        const recovery = store.recovery!;
        const obsolete = (path: string) =>
          path.endsWith(".log") && Number(path.slice(-16, -4)) <= recovery.snapshot;
        if (recovery.snapshot > 0) snapshots++;
        // A .tmp snapshot, or segments a finished snapshot had replaced: killed mid-compaction.
        if (recovery.removed.some((path) => /\.tmp$|\.snap$/.test(path) || obsolete(path))) {
          interrupted++;
        }
        assert.deepEqual(recovery.corrupt, [], `${context}: a kill is no corruption`);
        let prefix: number;
        try {
          prefix = matchingPrefix(runSeed, session, durable, 200_000);
        } catch (error) {
          throw new Error(`${context}: ${(error as Error).message}`);
        }
        // The store goes on: what is appended now survives another reopen.
        const extra = {
          id: 65535,
          qos: 1 as const,
          topic: "after/crash",
          payload: new Uint8Array([1, 2, 3]),
          retain: false,
        };
        store.append([{ op: "put", record: extra }]);
        await store.close();
        const again = new FileStore(dir, { segmentSize: segment });
        const reopened = await again.open(CLIENT_ID);
        await again.close();
        const image = new SessionImage();
        for (const p of session.publishes) {
          const { released, ...record } = p;
          image.apply({ op: "put", record });
          if (released) image.apply({ op: "released", id: p.id });
        }
        for (const id of session.incoming) image.apply({ op: "incoming", id });
        image.apply({ op: "put", record: extra });
        assert.deepEqual(
          reopened,
          image.session(),
          `${context}: after reopening (prefix ${prefix})`,
        );
      } finally {
        try {
          child.process.kill("SIGKILL");
        } catch {
          // already ended
        }
        await child.done;
      }
      await Deno.remove(dir, { recursive: true });
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  console.log(
    `seed ${seed}: ${runs} kills in ${seconds} s, ${durableOps} ops reported durable; ` +
      `${committed} runs committed, ${snapshots} recoveries from a snapshot, ` +
      `${interrupted} killed mid-compaction`,
  );
  assert.ok(
    committed >= runs / 2,
    `seed ${seed}: only ${committed} runs committed before the kill`,
  );
  assert.ok(snapshots > 0, `seed ${seed}: no run recovered from a snapshot`);
});

Deno.test("FileStore: a lock left by a kill -9'd process does not block; a live one refuses", async () => {
  const dir = await Deno.makeTempDir({ prefix: "file_store_lock_" });
  try {
    const child = spawn(["hold", dir], dir);
    try {
      await child.waitFor((line) => line === "R");
      const store = new FileStore(dir);
      await assert.rejects(store.open(CLIENT_ID), (error: Error) => {
        assert.match(error.message, /another client holds the session/);
        assert.ok(error.message.includes(dir), error.message);
        assert.ok(error.message.includes(`process ${child.process.pid}`), error.message);
        return true;
      });
      child.process.kill("SIGKILL");
      const end = await child.done;
      assert.equal(end.signal, "SIGKILL");
      const session = await store.open(CLIENT_ID);
      assert.deepEqual(session, { publishes: [], incoming: [], lastId: 0 });
      await store.close();
    } finally {
      try {
        child.process.kill("SIGKILL");
      } catch {
        // already ended
      }
      await child.done;
    }
    assert.ok(await sizeOf(dir) > 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
