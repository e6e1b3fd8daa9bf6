import assert from "node:assert/strict";
import {
  AlwaysUpNetwork,
  CommandNetInterface,
  consoleLogger,
  RecordingNetInterface,
} from "../mod.ts";

async function recorder() {
  const file = await Deno.makeTempFile({ prefix: "mqtt_net_" });
  const log = (word: string) => ["sh", "-c", `echo ${word} >> ${file}`];
  const lines = async () => (await Deno.readTextFile(file)).split("\n").filter(Boolean);
  return { file, log, lines };
}

Deno.test("CommandNetInterface: ensureUp runs nothing while check says up", async () => {
  const r = await recorder();
  const net = new CommandNetInterface({ up: r.log("up"), down: r.log("down"), check: ["true"] });
  assert.equal(await net.isUp(), true);
  await net.ensureUp({ bounce: false });
  assert.deepEqual(await r.lines(), []);
  await Deno.remove(r.file);
});

Deno.test("CommandNetInterface: bounce runs down then up and tells listeners", async () => {
  const r = await recorder();
  const net = new CommandNetInterface({ up: r.log("up"), down: r.log("down"), check: ["true"] });
  let told = 0;
  const off = net.onUp(() => told++);
  await net.ensureUp({ bounce: true });
  assert.deepEqual(await r.lines(), ["down", "up"]);
  assert.equal(told, 1);
  off();
  await net.ensureUp({ bounce: true });
  assert.equal(told, 1, "an unregistered listener is not told");
  await Deno.remove(r.file);
});

Deno.test("CommandNetInterface: a down network is brought up; a failing up command rejects", async () => {
  const r = await recorder();
  const net = new CommandNetInterface({ up: r.log("up"), check: ["false"] });
  assert.equal(await net.isUp(), false);
  await net.ensureUp({ bounce: false });
  assert.deepEqual(await r.lines(), ["up"]);
  const broken = new CommandNetInterface({ up: ["false"], check: ["false"] });
  await assert.rejects(broken.ensureUp({ bounce: false }), /network command failed: false/);
  assert.throws(() => new CommandNetInterface({ up: [] }), TypeError);
  await Deno.remove(r.file);
});

Deno.test("AlwaysUpNetwork is up and has nothing to bounce", async () => {
  const net = new AlwaysUpNetwork();
  assert.equal(net.isUp(), true);
  await net.ensureUp({ bounce: true });
  net.onUp(() => {})();
});

Deno.test("RecordingNetInterface records calls and tells listeners only on a transition to up", async () => {
  const net = new RecordingNetInterface();
  let told = 0;
  net.onUp(() => told++);
  net.setUp(true); // already up: no transition
  assert.equal(told, 0);
  net.setUp(false);
  assert.equal(net.isUp(), false);
  await assert.rejects(net.ensureUp({ bounce: true }), /down/);
  net.setUp(true);
  assert.equal(told, 1);
  assert.deepEqual(net.calls.map((c) => [c.method, c.bounce]), [["isUp", undefined], [
    "ensureUp",
    true,
  ]]);
});

Deno.test("consoleLogger drops messages below its level and prefixes the rest", () => {
  const seen: string[] = [];
  const original = {
    debug: console.debug,
    info: console.info,
    warn: console.warn,
    error: console.error,
  };
  console.debug =
    console.info =
    console.warn =
    console.error =
      (line: string) => seen.push(line);
  try {
    const logger = consoleLogger("warn");
    logger.debug("d");
    logger.info("i");
    logger.warn("w");
    logger.error("e");
  } finally {
    Object.assign(console, original);
  }
  assert.deepEqual(seen, ["mqtt_async warn: w", "mqtt_async error: e"]);
});
