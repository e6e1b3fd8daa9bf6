/**
 * Smoke test of the benchmark harness: one cheap scenario, tiny N, our client
 * and the raw limit; checks that a table comes out. No timing assertions.
 */
import assert from "node:assert/strict";
import { mosquittoAvailable } from "./mosquitto.ts";

Deno.test({
  name: "bench.ts --quick prints a results table",
  ignore: !mosquittoAvailable() && Deno.env.get("MQTT_REQUIRE_BROKER") !== "1",
  async fn() {
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--no-lock",
        new URL("../bench/bench.ts", import.meta.url).pathname,
        "--quick",
        "--only=sync-100B",
        "--clients=ours,raw",
        "--n=200",
        "--no-save",
      ],
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).output();
    const stdout = new TextDecoder().decode(out.stdout);
    const stderr = new TextDecoder().decode(out.stderr);
    assert.ok(out.success, `bench.ts failed:\n${stderr}`);
    assert.match(stdout, /### QoS 1 sync, 100 B/);
    assert.match(stdout, /\| mqtt_async \(Deno\) \| [\d,]+ \|/);
    assert.match(stdout, /\| raw limit \(Deno\) \| [\d,]+ \|/);
  },
});
