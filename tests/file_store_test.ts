/**
 * FileStore: round trips against SessionImage, properties, locking, torn and
 * corrupt logs, compaction and its crash windows, group commit.
 */

import assert from "node:assert/strict";
import type { PublishProperties } from "../codec/packets.ts";
import { FileStore } from "../store/file.ts";
import { SessionImage, type StoredPublish, type StoreOp } from "../store/store.ts";
import { crc32 } from "../store/_crc32.ts";
import { frameEnd } from "../store/_log.ts";
import { events, prng } from "./_file_store_child.ts";

const CLIENT = "client/ü 1";
const CLIENT_DIR = "c-" + [...new TextEncoder().encode(CLIENT)]
  .map((b) => b.toString(16).padStart(2, "0")).join("");

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "file_store_test_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function put(id: number, payload: number | Uint8Array = 10, extra: Partial<StoredPublish> = {}) {
  const bytes = typeof payload === "number"
    ? new Uint8Array(payload).map((_, i) => (id + i) & 0xff)
    : payload;
  return {
    op: "put" as const,
    record: { id, qos: 1 as const, topic: `t/${id}`, payload: bytes, retain: false, ...extra },
  };
}

function imageOf(ops: readonly StoreOp[]): SessionImage {
  const image = new SessionImage();
  for (const op of ops) image.apply(op);
  return image;
}

async function reopen(dir: string, options = {}) {
  const store = new FileStore(dir, options);
  const session = await store.open(CLIENT);
  const recovery = store.recovery!;
  await store.close();
  return { session, recovery };
}

async function files(dir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const entry of Deno.readDir(dir)) names.push(entry.name);
  return names.sort();
}

async function dirSize(dir: string): Promise<number> {
  let total = 0;
  for await (const entry of Deno.readDir(dir)) {
    if (!entry.isFile) continue;
    // A compaction may delete files meanwhile.
    total += await Deno.stat(`${dir}/${entry.name}`).then((s) => s.size, () => 0);
  }
  return total;
}

/** Record boundaries of a log file: the end of each record, header first. */
function recordEnds(bytes: Uint8Array): number[] {
  const ends: number[] = [];
  let pos = 0;
  while (pos < bytes.length) {
    const end = frameEnd(bytes, pos);
    assert.ok(end > 0, `a sound record at ${pos}`);
    ends.push(end);
    pos = end;
  }
  return ends;
}

Deno.test("crc32: check value and zlib agreement", async () => {
  const zlib = await import("node:zlib");
  assert.equal(crc32(new TextEncoder().encode("123456789")), 0xcbf43926);
  const random = prng(7);
  for (let n = 0; n < 300; n++) {
    const bytes = new Uint8Array(n).map(() => Math.floor(random() * 256));
    assert.equal(crc32(bytes), zlib.crc32(bytes), `length ${n}`);
  }
});

Deno.test("FileStore: a fresh store opens empty; reopening gives what SessionImage gives", async () => {
  await withDir(async (dir) => {
    const store = new FileStore(dir);
    assert.deepEqual(await store.open(CLIENT), { publishes: [], incoming: [], lastId: 0 });
    const ops: StoreOp[] = [
      put(1),
      put(2, 0, { qos: 2, retain: true }),
      { op: "incoming", id: 7 },
      { op: "released", id: 2 },
      put(3, 300),
      { op: "delete", id: 1 },
      { op: "incoming", id: 9 },
      { op: "incomingDone", id: 7 },
      { op: "released", id: 99 }, // unknown id: ignored, as SessionImage does
      put(65535, 1, { qos: 2 }),
      { op: "delete", id: 65535 }, // lastId stays 65535
      { op: "incoming", id: 7 }, // again: after 9 now
    ];
    for (const op of ops) store.append([op]);
    await store.commit();
    await store.close();
    const { session, recovery } = await reopen(dir);
    assert.deepEqual(session, imageOf(ops).session());
    assert.equal(session.lastId, 65535);
    assert.deepEqual(session.incoming, [9, 7]);
    assert.equal(recovery.records, ops.length);
    assert.deepEqual(await files(dir), [CLIENT_DIR]);
    assert.deepEqual(await files(`${dir}/${CLIENT_DIR}`), ["000000000001.log", "lock"]);
    // The real client id is inside the file.
    const log = await Deno.readFile(`${dir}/${CLIENT_DIR}/000000000001.log`);
    assert.ok(new TextDecoder().decode(log.subarray(0, 40)).includes(CLIENT));
  });
});

Deno.test("FileStore: random streams, rolls, compactions and reopens match SessionImage", async () => {
  await withDir(async (dir) => {
    const source = events(4242);
    const all: StoreOp[] = [];
    const random = prng(99);
    let rolls = 0;
    for (let round = 0; round < 6; round++) {
      const store = new FileStore(dir, { segmentSize: 4096 });
      assert.deepEqual(await store.open(CLIENT), imageOf(all).session(), `round ${round}`);
      const pending: Promise<void>[] = [];
      for (let i = 0; i < 400; i++) {
        const event = source.next().value!;
        store.append(event);
        all.push(...event);
        if (random() < 0.3) pending.push(store.commit());
        if (i % 50 === 0) await new Promise((resolve) => setTimeout(resolve, 0));
      }
      await Promise.all(pending);
      if (round % 2 === 0) await store.commit();
      await store.close(); // commits the rest
      rolls += store.stats.rolls;
    }
    assert.ok(rolls > 3, `${rolls} rolls`);
    const { session, recovery } = await reopen(dir);
    assert.deepEqual(session, imageOf(all).session());
    assert.ok(recovery.snapshot > 0, "compacted on the way");
  });
});

Deno.test("FileStore: MQTT 5 properties round-trip exactly", async () => {
  await withDir(async (dir) => {
    const properties: PublishProperties = {
      payloadFormatIndicator: true,
      messageExpiryInterval: 4_000_000_000,
      topicAlias: 3,
      responseTopic: "reply/ü",
      correlationData: new Uint8Array([0, 255, 1, 128, 0]),
      userProperties: [["b", "1"], ["a", "x"], ["b", "2"], ["", ""]],
      subscriptionIdentifier: [5, 268_435_455],
      contentType: "application/json",
    };
    const ops: StoreOp[] = [
      put(1, 5, { properties }),
      put(2, 0, { properties: {} }),
      put(3, 4, { properties: { correlationData: new Uint8Array(0) } }),
      put(4, 70_000, { topic: "ü/ü".repeat(1000), qos: 2, retain: true }),
    ];
    const store = new FileStore(dir);
    await store.open(CLIENT);
    store.append(ops);
    await store.close();
    const { session } = await reopen(dir);
    assert.deepEqual(session, imageOf(ops).session());
    const first = session.publishes[0].properties!;
    assert.deepEqual(first.userProperties, [["b", "1"], ["a", "x"], ["b", "2"], ["", ""]]);
    assert.ok(first.correlationData instanceof Uint8Array);
    assert.deepEqual(session.publishes[1].properties, {});
    assert.equal("properties" in session.publishes[3], false);
  });
});

Deno.test("FileStore: one client per session; clear error; free again after close", async () => {
  await withDir(async (dir) => {
    const first = new FileStore(dir);
    await first.open(CLIENT);
    const second = new FileStore(dir);
    await assert.rejects(second.open(CLIENT), (error: Error) => {
      assert.match(error.message, /another client holds the session of "client\/ü 1"/);
      assert.ok(error.message.includes(`${dir}/${CLIENT_DIR}`), error.message);
      return true;
    });
    // The same instance cannot open a second session either.
    await assert.rejects(first.open("other"), /already open for client "client\/ü 1"/);
    // Another client id in the same directory is another session.
    const other = new FileStore(dir);
    await other.open("other");
    await other.close();
    first.append([put(1)]);
    await first.close();
    assert.throws(() => first.append([put(2)]), /not open/);
    await assert.rejects(first.commit(), /not open/);
    const session = await second.open(CLIENT);
    assert.equal(session.publishes.length, 1);
    await second.close();
    // The same instance again.
    assert.equal((await first.open(CLIENT)).publishes.length, 1);
    await first.close();
  });
});

Deno.test("FileStore: cut at every byte of the tail: the whole records before the cut, then appends", async () => {
  await withDir(async (dir) => {
    const ops: StoreOp[] = [
      put(1),
      put(2, 20, { qos: 2, properties: { userProperties: [["k", "v"]] } }),
      { op: "incoming", id: 4 },
      put(3, 12),
      { op: "released", id: 2 },
      put(5, 30, { properties: { correlationData: new Uint8Array([9, 9]) } }),
      { op: "delete", id: 1 },
      { op: "incomingDone", id: 4 },
    ];
    const store = new FileStore(dir);
    await store.open(CLIENT);
    for (const op of ops) {
      store.append([op]);
      await store.commit();
    }
    await store.close();
    const log = await Deno.readFile(`${dir}/${CLIENT_DIR}/000000000001.log`);
    const ends = recordEnds(log); // ends[0]: the header
    assert.equal(ends.length, ops.length + 1);
    const from = ends[ends.length - 5]; // the last 4 records, every byte
    let cases = 0;
    for (let cut = from; cut < log.length; cut++) {
      const copy = `${dir}/cut`;
      await Deno.mkdir(`${copy}/${CLIENT_DIR}`, { recursive: true });
      await Deno.writeFile(`${copy}/${CLIENT_DIR}/000000000001.log`, log.subarray(0, cut));
      const whole = ends.filter((end) => end <= cut).length - 1;
      const expected = ops.slice(0, whole);
      const store = new FileStore(copy);
      const session = await store.open(CLIENT);
      assert.deepEqual(session, imageOf(expected).session(), `cut at ${cut}`);
      assert.equal(store.recovery!.truncatedBytes, cut - ends[whole], `cut at ${cut}`);
      assert.deepEqual(store.recovery!.corrupt, []);
      const more = put(77, 3);
      store.append([more]);
      await store.close();
      const again = await reopen(copy);
      assert.deepEqual(again.session, imageOf([...expected, more]).session(), `cut at ${cut}`);
      assert.equal(again.recovery.truncatedBytes, 0);
      await Deno.remove(copy, { recursive: true });
      cases++;
    }
    assert.ok(cases > 80, `${cases} cuts`);
  });
});

Deno.test("FileStore: a cut inside the header of a new segment drops that segment", async () => {
  await withDir(async (dir) => {
    const store = new FileStore(dir);
    await store.open(CLIENT);
    store.append([put(1)]);
    await store.close();
    const clientDir = `${dir}/${CLIENT_DIR}`;
    const header = (await Deno.readFile(`${clientDir}/000000000001.log`)).subarray(0, 20);
    for (const cut of [0, 5, 19]) {
      await Deno.writeFile(`${clientDir}/000000000002.log`, header.subarray(0, cut));
      const { session, recovery } = await reopen(dir);
      assert.deepEqual(session, imageOf([put(1)]).session());
      assert.deepEqual(recovery.removed, [`${clientDir}/000000000002.log`]);
    }
  });
});

Deno.test("FileStore: every bit flip in the tail record drops it alone", async () => {
  await withDir(async (dir) => {
    const ops: StoreOp[] = [put(1), { op: "incoming", id: 3 }, put(2, 4, { qos: 2 })];
    const store = new FileStore(dir);
    await store.open(CLIENT);
    store.append(ops);
    await store.close();
    const path = `${dir}/${CLIENT_DIR}/000000000001.log`;
    const log = await Deno.readFile(path);
    const ends = recordEnds(log);
    const start = ends[ends.length - 2];
    const expected = imageOf(ops.slice(0, -1)).session();
    for (let pos = start; pos < log.length; pos++) {
      for (let bit = 0; bit < 8; bit++) {
        const copy = log.slice();
        copy[pos] ^= 1 << bit;
        await Deno.writeFile(path, copy);
        const { session, recovery } = await reopen(dir);
        assert.deepEqual(session, expected, `byte ${pos} bit ${bit}`);
        assert.deepEqual(recovery.corrupt, [], `byte ${pos} bit ${bit}`);
        assert.equal((await Deno.stat(path)).size, start);
      }
    }
  });
});

Deno.test("FileStore: a bad record before the tail: the prefix opens, the rest is kept as *.corrupt", async () => {
  await withDir(async (dir) => {
    const ops: StoreOp[] = [put(1), put(2), put(3), { op: "delete", id: 1 }, put(4)];
    const store = new FileStore(dir);
    await store.open(CLIENT);
    store.append(ops);
    await store.close();
    const clientDir = `${dir}/${CLIENT_DIR}`;
    const path = `${clientDir}/000000000001.log`;
    const log = await Deno.readFile(path);
    const ends = recordEnds(log);
    const copy = log.slice();
    copy[ends[2] + 12] ^= 0x10; // in the body of put(3): the records after it are sound
    await Deno.writeFile(path, copy);
    const first = new FileStore(dir);
    const session = await first.open(CLIENT);
    assert.deepEqual(session, imageOf(ops.slice(0, 2)).session());
    const recovery = first.recovery!;
    assert.equal(recovery.corrupt.length, 1);
    assert.match(
      recovery.corrupt[0],
      new RegExp(`000000000001\\.log\\.${ends[2]}-\\d+\\.corrupt$`),
    );
    assert.deepEqual(await Deno.readFile(recovery.corrupt[0]), copy.subarray(ends[2]));
    first.append([put(9)]);
    await first.close();
    const { session: after } = await reopen(dir);
    assert.deepEqual(after, imageOf([...ops.slice(0, 2), put(9)]).session());
  });
});

Deno.test("FileStore: damage in an earlier segment sets the later ones aside", async () => {
  await withDir(async (dir) => {
    const ops: StoreOp[] = [];
    for (let id = 1; id <= 120; id++) ops.push(put(id, 100)); // all live: no compaction
    const store = new FileStore(dir, { segmentSize: 4096 });
    await store.open(CLIENT);
    for (const op of ops) {
      store.append([op]);
      await store.commit();
    }
    await store.close();
    assert.equal(store.stats.compactions, 0);
    const clientDir = `${dir}/${CLIENT_DIR}`;
    const logs = (await files(clientDir)).filter((name) => name.endsWith(".log"));
    assert.ok(logs.length >= 3, logs.join());
    const second = `${clientDir}/${logs[1]}`;
    const bytes = await Deno.readFile(second);
    const ends = recordEnds(bytes);
    const before = await Deno.readFile(`${clientDir}/${logs[0]}`);
    const inFirst = recordEnds(before).length - 1;
    bytes[ends[3] + 20] ^= 1; // the fourth record of the second segment
    await Deno.writeFile(second, bytes);
    const { session, recovery } = await reopen(dir, { segmentSize: 4096 });
    assert.deepEqual(session, imageOf(ops.slice(0, inFirst + 3)).session());
    assert.equal(recovery.corrupt.length, 1 + logs.length - 2);
    const names = await files(clientDir);
    assert.deepEqual(names.filter((n) => n.endsWith(".log")), logs.slice(0, 2));
  });
});

Deno.test("FileStore: 200 000 put/delete pairs stay in bounded space", async () => {
  await withDir(async (dir) => {
    const segmentSize = 512 * 1024;
    const store = new FileStore(dir, { segmentSize });
    await store.open(CLIENT);
    const clientDir = `${dir}/${CLIENT_DIR}`;
    const payload = new Uint8Array(100).fill(1);
    const ops: StoreOp[] = [];
    let largest = 0;
    for (let i = 1; i <= 200_000; i++) {
      const id = (i % 60_000) + 1;
      store.append([{ op: "put", record: { id, qos: 1, topic: "a/b", payload, retain: false } }]);
      if (i > 50) store.append([{ op: "delete", id: ((i - 50) % 60_000) + 1 }]);
      if (i % 1000 === 0) {
        await store.commit();
        largest = Math.max(largest, await dirSize(clientDir));
      }
    }
    for (let i = 199_951; i <= 200_000; i++) ops.push(put((i % 60_000) + 1));
    await store.close();
    const written = store.stats.bytes;
    assert.ok(written > 25_000_000, `${written} bytes went through the log`);
    assert.ok(store.stats.compactions > 10, `${store.stats.compactions} compactions`);
    // The current segment, the ones a compaction is replacing (one or two, more only when the
    // disk is slow), the snapshots: nothing that grows with the 27 MB written.
    console.log(`largest: ${largest} bytes, ${store.stats.compactions} compactions`);
    assert.ok(largest <= 4 * segmentSize, `the directory reached ${largest} bytes`);
    const { session, recovery } = await reopen(dir, { segmentSize });
    assert.equal(session.publishes.length, 50);
    assert.deepEqual(
      session.publishes.map((p) => p.id),
      ops.map((op) => (op as ReturnType<typeof put>).record.id),
    );
    assert.equal(session.lastId, (200_000 % 60_000) + 1);
    assert.ok(recovery.snapshot > 0);
    assert.ok(await dirSize(clientDir) <= 2 * segmentSize);
  });
});

Deno.test("FileStore: lastId survives compaction when its publish is gone", async () => {
  await withDir(async (dir) => {
    const options = { segmentSize: 4096 };
    const store = new FileStore(dir, options);
    await store.open(CLIENT);
    const ops: StoreOp[] = [put(500, 3000), { op: "delete", id: 500 }];
    store.append(ops);
    await store.commit();
    // No put after it: only incoming ids, until segment 1 is compacted away.
    for (let i = 0; store.stats.compactions === 0 || store.stats.rolls < 2; i++) {
      assert.ok(i < 5000);
      const more: StoreOp[] = [{ op: "incoming", id: i % 100 + 1 }];
      if (i >= 50) more.push({ op: "incomingDone", id: (i - 50) % 100 + 1 });
      ops.push(...more);
      store.append(more);
      await store.commit();
      await new Promise((resolve) => setTimeout(resolve, 0));
    }
    await store.close();
    const { session, recovery } = await reopen(dir, options);
    assert.ok(recovery.snapshot >= 1, "segment 1 is in the snapshot");
    assert.ok(!(await files(`${dir}/${CLIENT_DIR}`)).includes("000000000001.log"));
    assert.equal(session.lastId, 500);
    assert.deepEqual(session, imageOf(ops).session());
  });
});

async function logFiles(clientDir: string): Promise<Map<string, Uint8Array>> {
  const copy = new Map<string, Uint8Array>();
  for (const name of await files(clientDir)) {
    if (name.endsWith(".log")) copy.set(name, await Deno.readFile(`${clientDir}/${name}`));
  }
  return copy;
}

Deno.test("FileStore: a crash at any step of a compaction recovers the same session", async () => {
  await withDir(async (dir) => {
    const options = { segmentSize: 4096 };
    const clientDir = `${dir}/${CLIENT_DIR}`;
    const ops: StoreOp[] = [];
    const store = new FileStore(dir, options);
    await store.open(CLIENT);
    // Everything live: segments roll, nothing is worth compacting.
    for (let id = 1; id <= 60; id++) {
      ops.push(put(id, 150));
      store.append([ops.at(-1)!]);
      await store.commit();
    }
    assert.ok(store.stats.rolls >= 2);
    assert.equal(store.stats.compactions, 0);
    // Nearly everything deleted: the next roll compacts, in the background.
    let atRoll: Map<string, Uint8Array> | undefined; // the segments just before that roll
    for (let id = 1; store.stats.compactions === 0; id++) {
      assert.ok(id < 1000, "a compaction happened");
      ops.push(id <= 58 ? { op: "delete", id } : put(id, 150));
      if (id > 58) ops.push({ op: "delete", id });
      const copy = await logFiles(clientDir);
      const rolls = store.stats.rolls;
      store.append(ops.slice(id <= 58 ? -1 : -2));
      await store.commit();
      if (store.stats.rolls > rolls) atRoll = copy;
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
    await store.close();
    const expected = imageOf(ops).session();
    const snap = (await files(clientDir)).find((name) => name.endsWith(".snap"))!;
    const covered = Number(snap.slice(0, 12));
    const snapBytes = await Deno.readFile(`${clientDir}/${snap}`);
    const old = [...atRoll!].filter(([name]) => Number(name.slice(0, 12)) <= covered);
    assert.ok(old.length >= 3, "the snapshot replaced several segments");
    assert.deepEqual((await reopen(dir, options)).session, expected);

    // 1. Killed after the rename, before the old segments were deleted.
    for (const [name, bytes] of old) await Deno.writeFile(`${clientDir}/${name}`, bytes);
    const one = await reopen(dir, options);
    assert.deepEqual(one.session, expected);
    assert.equal(one.recovery.snapshot, covered);
    assert.equal(one.recovery.removed.length, old.length);
    for (const name of await files(clientDir)) {
      assert.ok(!name.endsWith(".log") || Number(name.slice(0, 12)) > covered, name);
    }

    // 2. Killed while writing the snapshot: a half-written .tmp beside the old segments.
    await Deno.remove(`${clientDir}/${snap}`);
    for (const [name, bytes] of old) await Deno.writeFile(`${clientDir}/${name}`, bytes);
    await Deno.writeFile(`${clientDir}/${snap}.tmp`, snapBytes.subarray(0, snapBytes.length >> 1));
    const two = await reopen(dir, options);
    assert.deepEqual(two.session, expected);
    assert.equal(two.recovery.snapshot, 0);
    assert.deepEqual(two.recovery.removed, [`${clientDir}/${snap}.tmp`]);

    // 3. A snapshot under its final name but not whole (never written so): not trusted.
    await Deno.writeFile(`${clientDir}/${snap}`, snapBytes.subarray(0, snapBytes.length - 3));
    const three = await reopen(dir, options);
    assert.deepEqual(three.session, expected);
    assert.equal(three.recovery.snapshot, 0);
    assert.equal(three.recovery.corrupt.length, 1);

    // 4. The snapshot alone (its segments gone, as after a finished compaction).
    await Deno.writeFile(`${clientDir}/${snap}`, snapBytes);
    for (const [name] of old) await Deno.remove(`${clientDir}/${name}`);
    const four = await reopen(dir, options);
    assert.deepEqual(four.session, expected);
    assert.equal(four.recovery.snapshot, covered);
  });
});

Deno.test("FileStore: a roll just as a compaction ends never brings back an older snapshot", async () => {
  // A compaction ends with the deletion of what its snapshot replaced. A roll
  // right after that last deletion (sweeping it over the microtasks that
  // follow) asks for the next compaction. That request must run, or be
  // dropped; it must never wait to run after a newer snapshot, which it would
  // then replace, deleting the newer one whose segments are gone already.
  const realRemove = Deno.remove;
  for (let delay = 0; delay < 16; delay++) {
    await withDir(async (dir) => {
      const options = { segmentSize: 4096 };
      const clientDir = `${dir}/${CLIENT_DIR}`;
      const ops: StoreOp[] = [];
      const store = new FileStore(dir, options);
      await store.open(CLIENT);
      let id = 0;
      // A record as large as a segment, gone at once: each one rolls, and
      // every roll finds the finished segments worth compacting.
      const big = () => {
        id++;
        const more: StoreOp[] = [put(id, 4000), { op: "delete", id }];
        ops.push(...more);
        store.append(more);
        return store.commit();
      };
      let release!: () => void;
      const gate = new Promise<void>((resolve) => release = resolve);
      let rolled: Promise<void> | undefined;
      try {
        Deno.remove = (path: string | URL, opts?: Deno.RemoveOptions) => {
          if (String(path) !== `${clientDir}/000000000001.log` || rolled !== undefined) {
            return realRemove(path, opts);
          }
          // The first compaction's last step, segment 1 going, held until no
          // commit is in flight; then the roll, `delay` microtasks after it.
          const done = gate.then(() => realRemove(path, opts));
          rolled = done.then(async () => {
            for (let i = 0; i < delay; i++) await null;
            await big(); // rolls segment 2 and asks for its compaction
          });
          return done;
        };
        await big(); // segment 1
        await big(); // rolls: compacts segment 1 in the background
        assert.equal(store.stats.rolls, 1);
        for (let i = 0; rolled === undefined; i++) {
          assert.ok(i < 10_000, "the compaction of segment 1 gets to its end");
          await new Promise((resolve) => setTimeout(resolve, 1));
        }
        release();
        await rolled;
        assert.equal(store.stats.rolls, 2);
      } finally {
        Deno.remove = realRemove;
        release();
      }
      await big(); // rolls segment 3 and compacts it
      const keep = put(60_000, 10);
      ops.push(keep);
      store.append([keep]);
      await store.close();
      assert.equal(store.stats.rolls, 3);
      assert.equal(store.stats.compactionErrors, 0);
      const { session, recovery } = await reopen(dir, options);
      assert.deepEqual(session, imageOf(ops).session(), `delay ${delay}`);
      assert.deepEqual(recovery.corrupt, [], `delay ${delay}`);
      assert.equal(recovery.snapshot, 3, `delay ${delay}: the newest snapshot`);
    });
  }
});

Deno.test("FileStore: concurrent commits share writes and syncs (group commit)", async () => {
  await withDir(async (dir) => {
    const store = new FileStore(dir);
    await store.open(CLIENT);
    const path = `${dir}/${CLIENT_DIR}/000000000001.log`;
    const commits: Promise<void>[] = [];
    const sizes: number[] = []; // bytes appended when each commit was called
    let appended = 0;
    const order: number[] = [];
    for (let i = 1; i <= 1000; i++) {
      const op = put(i % 65535 + 1, 100);
      store.append([op]);
      appended += 8 + 8 + 2 + String(i % 65535 + 1).length + 100; // frame, fields, topic, payload
      sizes.push(appended);
      const n = i - 1;
      commits.push(
        store.commit().then(() => {
          order.push(n);
          // Resolved: its records are in the file.
          assert.ok(Deno.statSync(path).size >= sizes[n], `commit ${n}`);
        }),
      );
      if (i % 100 === 0) await new Promise((resolve) => setTimeout(resolve, 0));
    }
    await Promise.all(commits);
    assert.deepEqual(order, [...order].sort((a, b) => a - b), "in order");
    assert.equal(store.stats.commits, 1000);
    assert.ok(store.stats.logSyncs <= 20, `${store.stats.logSyncs} syncs for 1000 commits`);
    assert.equal(store.stats.logSyncs, store.stats.writes);
    // Nothing new: resolves at once, no sync.
    const syncs = store.stats.syncs;
    await store.commit();
    assert.equal(store.stats.syncs, syncs);
    await store.close();
  });
});

Deno.test("FileStore: a failed write breaks the store until reopened", async () => {
  await withDir(async (dir) => {
    const store = new FileStore(dir, { segmentSize: 4096 });
    await store.open(CLIENT);
    store.append([put(1, 5000)]);
    await store.commit();
    // The next write rolls to segment 2: a directory under its name makes that fail.
    await Deno.mkdir(`${dir}/${CLIENT_DIR}/000000000002.log`);
    store.append([put(2)]);
    const first = store.commit();
    const second = store.commit();
    await assert.rejects(
      first,
      /writing the log failed .*broken until it is closed and opened again/,
    );
    await assert.rejects(second, /broken/);
    await assert.rejects(store.commit(), /broken/);
    assert.throws(() => store.append([put(3)]), /broken/);
    await assert.rejects(store.close(), /broken/);
    await Deno.remove(`${dir}/${CLIENT_DIR}/000000000002.log`);
    const session = await store.open(CLIENT);
    assert.deepEqual(session.publishes.map((p) => p.id), [1]);
    store.append([put(2)]);
    await store.close();
    assert.deepEqual((await reopen(dir)).session.publishes.map((p) => p.id), [1, 2]);
  });
});
