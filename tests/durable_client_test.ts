/**
 * A publishing process killed with `kill -9`, on the wire against mosquitto:
 * child processes (tests/_durable_child.ts: an MQTTClient with a FileStore,
 * an explicit clientId, clean: false) stream numbered QoS 1 and QoS 2
 * messages; the parent kills each at a seeded random point, starts the next
 * on the same store directory, and a subscriber records what arrives.
 *
 * Pinned: every message whose publish() resolved in any child arrives (QoS 1
 * at least once, QoS 2 exactly once; no QoS 2 message ever twice); a resumed
 * child re-sends what the store held first, as PUBLISH with its original
 * packet id and DUP=1, or as PUBREL once released, and never a PUBLISH after
 * its PUBREL went out; after a clean end the store holds nothing.
 *
 * DURABLE_SEED=<n> reruns with the same kill points (counted in the child's
 * output lines; where exactly a kill lands still depends on timing).
 */

import assert from "node:assert/strict";
import { FileStore } from "../mod.ts";
import { FakeBroker } from "../testing.ts";
import {
  closeAll,
  connected,
  fakeConnected,
  proxyTo,
  quickClient,
  type TestClient,
  text,
  Watch,
  within,
} from "./helpers.ts";
import { brokerTest } from "./mosquitto.ts";
import { qosOf } from "./_durable_child.ts";
import { prng } from "./_file_store_child.ts";

const CHILD = new URL("./_durable_child.ts", import.meta.url).pathname;
const CLIENT_ID = "durable-gw";
const KILLS = 12;
/** A child is killed after a random number of output lines, up to this. */
const MAX_LINES_BEFORE_KILL = 600;
/** Messages the last child publishes before it disconnects cleanly. */
const LAST_RUN = 200;

function seedFromEnv(): number {
  try {
    const text = Deno.env.get("DURABLE_SEED");
    if (text) return Number(text);
  } catch { /* no --allow-env */ }
  return 20261202;
}

interface Child {
  lines: string[];
  watch: Watch;
  process: Deno.ChildProcess;
  done: Promise<{ code: number; signal: Deno.Signal | null; stderr: string }>;
}

function spawn(dir: string, port: number, first: number, last?: number): Child {
  const args = [
    "run",
    "--allow-net=127.0.0.1",
    `--allow-read=${dir}`,
    `--allow-write=${dir}`,
    CHILD,
    dir,
    String(port),
    CLIENT_ID,
    String(first),
    ...(last === undefined ? [] : [String(last)]),
  ];
  const process = new Deno.Command(Deno.execPath(), {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const lines: string[] = [];
  const watch = new Watch();
  const read = (async () => {
    const decoder = new TextDecoder();
    let partial = "";
    for await (const chunk of process.stdout) {
      partial += decoder.decode(chunk, { stream: true });
      const parts = partial.split("\n");
      partial = parts.pop()!;
      lines.push(...parts);
      watch.changed();
    }
  })();
  const stderr = new Response(process.stderr).text();
  const done = (async () => {
    const status = await process.status;
    await read;
    watch.changed();
    return { code: status.code, signal: status.signal, stderr: await stderr };
  })();
  return { lines, watch, process, done };
}

/** What one child's output says. */
interface Run {
  first: number;
  lines: string[];
  /** The highest seq whose publish() was called. */
  lastAttempted: number;
}

brokerTest(
  "kill -9 of a publishing client with a FileStore, many times: every resolved message " +
    "arrives (QoS 1 at least once, QoS 2 exactly once)",
  async (broker) => {
    const seed = seedFromEnv();
    const random = prng(seed);
    const clients: TestClient[] = [];
    const dir = await Deno.makeTempDir({ prefix: "mqtt_async_durable_" });
    const runs: Run[] = [];
    const children: Child[] = [];
    const proxy = await proxyTo(broker);
    let isolatedKills = 0;
    let resolvedWhileIsolated = 0;
    try {
      const arrived = new Map<number, number>(); // seq -> deliveries
      const arrivedWatch = new Watch();
      const misrouted: string[] = [];
      const sub = await connected(broker, clients, {
        clientId: "durable-sub",
        onMessage: (topic, payload, _retained, qos) => {
          const seq = Number(text(payload));
          if (topic !== `dur/q${qosOf(seq)}` || qos !== qosOf(seq)) {
            misrouted.push(`${seq} on ${topic} at QoS ${qos}`);
          }
          arrived.set(seq, (arrived.get(seq) ?? 0) + 1);
          arrivedWatch.changed();
        },
      });
      await sub.subscribe("dur/#", 2);

      let first = 1;
      for (let k = 0; k <= KILLS; k++) {
        const last = k === KILLS ? first + LAST_RUN - 1 : undefined;
        const child = spawn(dir, proxy.port, first, last);
        children.push(child);
        if (last === undefined) {
          const killAt = 1 + Math.floor(random() * MAX_LINES_BEFORE_KILL);
          const failed = async (error: Error) => {
            child.process.kill("SIGKILL");
            throw new Error(`${error.message}\n${(await child.done).stderr}`);
          };
          await child.watch.until(
            () => child.lines.length >= killAt,
            10_000,
            () => `child ${k} to print ${killAt} lines (has ${child.lines.length})`,
          ).catch(failed);
          // Every other kill: the network dies first, then a few more publishes
          // resolve (durable and windowed) that only the store holds at the kill.
          // A window already full of unacknowledged messages resolves none: then
          // the wait ends at its bound and the kill goes ahead (counted).
          const isolated = k % 2 === 1;
          if (isolated) {
            proxy.blackhole(true);
            const resolvedCount = () => child.lines.filter((l) => l.startsWith("P ")).length;
            const before = resolvedCount();
            const more = 1 + Math.floor(random() * 4);
            await child.watch.until(() => resolvedCount() >= before + more, 1_500, () => "")
              .catch(() => {});
            isolatedKills++;
            resolvedWhileIsolated += resolvedCount() - before;
          }
          child.process.kill("SIGKILL");
          const status = await within(child.done, 5000, `child ${k} to die`);
          assert.equal(status.signal, "SIGKILL", status.stderr);
          proxy.cutAll(); // what the isolated child wrote never reaches the broker
          proxy.blackhole(false);
        } else {
          const status = await within(child.done, 15_000, "the last child to finish");
          assert.equal(status.code, 0, status.stderr);
          assert.equal(child.lines.at(-1), "DONE");
        }
        const attempted = child.lines.filter((l) => l.startsWith("A ")).map((l) =>
          Number(l.slice(2))
        );
        const lastAttempted = Math.max(first - 1, ...attempted);
        runs.push({ first, lines: child.lines, lastAttempted });
        first = lastAttempted + 1;
      }
      const total = first - 1;

      // Everything resolved arrives.
      const resolved = new Set<number>();
      for (const run of runs) {
        for (const line of run.lines) {
          if (line.startsWith("P ")) resolved.add(Number(line.slice(2)));
        }
      }
      await arrivedWatch.until(
        () => [...resolved].every((seq) => arrived.has(seq)),
        5_000,
        () =>
          `every resolved message to arrive; missing: ${
            [...resolved].filter((s) => !arrived.has(s)).slice(0, 20)
          }`,
      );
      assert.deepEqual(misrouted, []);
      const twiceQos2 = [...arrived].filter(([seq, n]) => qosOf(seq) === 2 && n > 1);
      assert.deepEqual(twiceQos2, [], "QoS 2 messages delivered more than once [seq, times]");
      const unknown = [...arrived.keys()].filter((seq) => seq < 1 || seq > total);
      assert.deepEqual(unknown, [], "messages nobody published");
      for (let seq = total - LAST_RUN + 1; seq <= total; seq++) {
        assert.ok(resolved.has(seq), `the last child's ${seq} resolved`);
      }

      // On the wire: what each child re-sent.
      const idOf = new Map<number, number>(); // seq -> packet id of its first PUBLISH
      const seqOfId = new Map<number, number>(); // id -> seq, while it is held
      const releasedSeqs = new Set<number>();
      let dupPublishes = 0;
      let resentPubrels = 0;
      for (const [k, run] of runs.entries()) {
        let sawNew = false;
        const publishedHere = new Set<number>();
        for (const line of run.lines) {
          if (!line.startsWith("W ")) continue;
          const [, cmd, idText, dupText, seqText] = line.split(" ");
          const id = Number(idText);
          if (cmd === "publish") {
            const seq = Number(seqText);
            assert.ok(!releasedSeqs.has(seq), `child ${k}: PUBLISH of ${seq} after its PUBREL`);
            const old = seq < run.first;
            if (old) {
              assert.ok(!sawNew, `child ${k}: ${seq} from the store re-sent after a new message`);
              assert.equal(dupText, "1", `child ${k}: ${seq} from the store re-sent without DUP`);
              const known = idOf.get(seq);
              if (known !== undefined) {
                assert.equal(id, known, `child ${k}: ${seq} re-sent with another packet id`);
              }
              dupPublishes++;
            } else if (!idOf.has(seq)) {
              sawNew = true;
            }
            publishedHere.add(seq);
            if (!idOf.has(seq)) idOf.set(seq, id);
            seqOfId.set(id, seq);
          } else if (cmd === "pubrel") {
            const seq = seqOfId.get(id);
            if (seq === undefined) continue; // its PUBLISH line died with a killed child
            if (seq < run.first && !publishedHere.has(seq)) {
              // Released before the kill: its PUBREL is the re-send.
              assert.ok(!sawNew, `child ${k}: PUBREL of ${seq} re-sent after a new message`);
              resentPubrels++;
            }
            releasedSeqs.add(seq);
          }
        }
      }
      assert.ok(dupPublishes > 0, "no child re-sent a PUBLISH from the store");
      assert.ok(resolvedWhileIsolated > 0, "no publish resolved while its child was isolated");

      // A clean end leaves nothing behind.
      const store = new FileStore(dir);
      const session = await store.open(CLIENT_ID);
      await store.close();
      assert.deepEqual(session.publishes.map((p) => p.id), [], "the store still holds publishes");

      const deliveries = [...arrived.values()].reduce((a, b) => a + b, 0);
      const q1Dups = [...arrived].filter(([seq, n]) => qosOf(seq) === 1 && n > 1).length;
      console.log(
        `  seed ${seed}: ${KILLS} kills (${isolatedKills} while isolated, ` +
          `${resolvedWhileIsolated} publishes resolved meanwhile), ${total} messages (${resolved.size} resolved, ` +
          `${arrived.size} arrived, ${deliveries} deliveries, ${q1Dups} QoS 1 duplicates), ` +
          `${dupPublishes} DUP PUBLISHes and ${resentPubrels} PUBRELs re-sent from the store`,
      );
    } catch (error) {
      if (error instanceof Error) error.message += `\n(DURABLE_SEED=${seed})`;
      throw error;
    } finally {
      for (const child of children) {
        try {
          child.process.kill("SIGKILL");
        } catch { /* exited */ }
        await child.done.catch(() => {});
      }
      await closeAll(clients);
      await proxy.close();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
);

Deno.test(
  "a publish made right after start(), before the store is open, waits for it: " +
    "the stored message goes first with its id, the new one takes another id",
  async () => {
    const dir = await Deno.makeTempDir({ prefix: "mqtt_async_durable_early_" });
    try {
      // Run 1: a QoS 1 publish the broker never acknowledges stays in the store.
      let oldId: number;
      {
        await using broker = await FakeBroker.start();
        const { client, conn } = await fakeConnected(broker, { store: new FileStore(dir) });
        const unacked = client.publish("t", "old", { qos: 1 });
        const packet = await conn.next();
        assert.equal(packet.cmd, "publish");
        oldId = packet.messageId!;
        await client.disconnect();
        await assert.rejects(unacked, /stays in the store/);
      }
      const check = new FileStore(dir);
      const held = await check.open("test-client");
      await check.close();
      assert.deepEqual(held.publishes.map((p) => [p.id, text(p.payload)]), [[oldId, "old"]]);

      // Run 2: publish at once, while the store is still opening.
      await using broker = await FakeBroker.start({ mode: "broker" });
      const client = quickClient(broker, { store: new FileStore(dir) });
      try {
        client.start();
        const sentFrames = () =>
          broker.framesOf("publish", "toBroker").map((f) => {
            const p = f.packet as { messageId?: number; dup: boolean; payload: Uint8Array };
            return [text(p.payload), p.messageId, p.dup];
          });
        await within(client.publish("t", "new", { qos: 1 }), 3000, "the publish made at start")
          .catch((error) => {
            throw new Error(
              `${error.message}; PUBLISHes [payload, id, dup]: ${JSON.stringify(sentFrames())}; ` +
                `client log: ${JSON.stringify(client.log.filter((l) => !l.startsWith("debug")))}`,
            );
          });
        const sent = sentFrames();
        assert.equal(sent.length, 2, `PUBLISHes: ${JSON.stringify(sent)}`);
        assert.deepEqual(sent[0], ["old", oldId, true], "the stored message is re-sent first");
        assert.equal(sent[1][0], "new");
        assert.notEqual(sent[1][1], oldId, "the new message took the stored message's id");
        assert.deepEqual(client.log.filter((l) => l.startsWith("error")), []);
      } finally {
        await client.disconnect();
      }
    } finally {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
);
