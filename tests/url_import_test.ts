/**
 * Import by URL, as users will: the repository is served over HTTP and a
 * program in a directory without deno.json (so without this repository's
 * import map or lock file) imports `mod.ts` and `testing.ts` from that URL,
 * runs a broker-mode FakeBroker, and does a QoS 1 round trip.
 *
 * The permissions are exactly what such a program needs in Deno 2:
 * `--allow-import=host:port` for a host outside Deno's default import
 * allow-list (plain http is fine, there is no separate "insecure" flag),
 * `--allow-net=127.0.0.1` for the broker, `--allow-env` for mqtt-packet's
 * npm dependencies, `--allow-sys=hostname` for the default client id.
 */

import assert from "node:assert/strict";

const ROOT = new URL("../", import.meta.url);
const KILL_AFTER_MS = 30_000;

/** Serves the repository read-only under a fresh path prefix; records each path asked for. */
function serveRepository(
  prefix: string,
): { server: Deno.HttpServer<Deno.NetAddr>; asked: string[] } {
  const asked: string[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (request) => {
    const path = decodeURIComponent(new URL(request.url).pathname);
    asked.push(path);
    if (!path.startsWith(prefix) || path.split("/").includes("..")) {
      return new Response("not found", { status: 404 });
    }
    const file = new URL(path.slice(prefix.length), ROOT);
    if (!file.href.startsWith(ROOT.href)) return new Response("not found", { status: 404 });
    try {
      const body = await Deno.readFile(file);
      const type = path.endsWith(".ts") ? "application/typescript" : "application/octet-stream";
      return new Response(body, { headers: { "content-type": type } });
    } catch {
      return new Response("not found", { status: 404 });
    }
  });
  return { server, asked };
}

const PROGRAM = (base: string) => `
import { MQTTClient, silentLogger } from "${base}mod.ts";
import { FakeBroker } from "${base}testing.ts";

await using broker = await FakeBroker.start({ mode: "broker" });
let received: (text: string) => void;
const arrived = new Promise<string>((resolve) => received = resolve);
const client = new MQTTClient({
  server: broker.hostname,
  port: broker.port,
  logger: silentLogger,
  onMessage: (topic, payload, _retained, qos) =>
    received(\`\${topic} \${new TextDecoder().decode(payload)} qos=\${qos}\`),
});
await client.connect();
await client.subscribe("url/test", 1);
await client.publish("url/test", "over http", { qos: 1 });
const timer = setTimeout(() => {
  console.error("no message within 10 s");
  Deno.exit(1);
}, 10_000);
console.log(await arrived);
clearTimeout(timer);
await client.disconnect();
console.log("ok");
`;

Deno.test("a program outside the repository imports mod.ts and testing.ts by URL", async () => {
  // A fresh path per run: Deno caches remote modules by URL, and ports get reused.
  const prefix = `/run-${crypto.randomUUID()}/`;
  const { server, asked } = serveRepository(prefix);
  const dir = await Deno.makeTempDir({ prefix: "mqtt_url_import_" });
  const killer = new AbortController();
  const timer = setTimeout(() => killer.abort(), KILL_AFTER_MS);
  try {
    const host = `127.0.0.1:${server.addr.port}`;
    await Deno.writeTextFile(`${dir}/main.ts`, PROGRAM(`http://${host}${prefix}`));
    const output = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--no-config",
        "--no-lock",
        "--no-prompt",
        `--allow-import=${host}`,
        "--allow-net=127.0.0.1",
        "--allow-env",
        "--allow-sys=hostname",
        "main.ts",
      ],
      cwd: dir,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
      signal: killer.signal,
    }).output();
    const stdout = new TextDecoder().decode(output.stdout);
    const stderr = new TextDecoder().decode(output.stderr);
    const report = `exit ${output.code}${killer.signal.aborted ? " (killed after 30 s)" : ""}\n` +
      `--- stdout\n${stdout}--- stderr\n${stderr}`;
    assert.equal(output.code, 0, report);
    assert.deepEqual(stdout.trim().split("\n"), ["url/test over http qos=1", "ok"], report);
    // The modules really came over HTTP from this server.
    for (const file of ["mod.ts", "testing.ts", "client.ts", "codec/decode.ts"]) {
      assert.ok(asked.includes(prefix + file), `${file} was not fetched: ${asked.join(", ")}`);
    }
  } finally {
    clearTimeout(timer);
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("mod.ts and testing.ts have no dependency outside the repository (no npm:, no node:)", async () => {
  // `deno info --no-config` resolves the graph as a remote importer would: no deno.json imports.
  const offenders: string[] = [];
  for (const root of ["mod.ts", "testing.ts"]) {
    const output = await new Deno.Command(Deno.execPath(), {
      args: ["info", "--json", "--no-config", "--no-lock", root],
      cwd: ROOT,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).output();
    assert.equal(output.code, 0, new TextDecoder().decode(output.stderr));
    const graph = JSON.parse(new TextDecoder().decode(output.stdout)) as {
      modules: {
        specifier: string;
        error?: string;
        dependencies?: { specifier: string; code?: { error?: string } }[];
      }[];
    };
    for (const module of graph.modules) {
      if (module.error) offenders.push(`${module.specifier}: ${module.error}`);
      if (!module.specifier.startsWith(ROOT.href)) {
        offenders.push(`the graph reaches ${module.specifier}`);
        continue;
      }
      const name = module.specifier.slice(ROOT.href.length);
      for (const dependency of module.dependencies ?? []) {
        if (!/^\.\.?\//.test(dependency.specifier)) {
          offenders.push(`${name} imports "${dependency.specifier}"`);
        }
        if (dependency.code?.error) offenders.push(`${name}: ${dependency.code.error}`);
      }
    }
  }
  assert.deepEqual(offenders, [], "the library must load by URL, in a browser, with no permission");
});
