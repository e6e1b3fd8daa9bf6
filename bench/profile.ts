/**
 * Profiles our client in one scenario: runs bench/clients/ours.ts under
 * `deno run --cpu-prof` against a private mosquitto, then prints the
 * self-time table of bench/cpuprof_summary.ts.
 *
 *   deno run -A bench/profile.ts [--scenario=stream-100B] [--n=200000] [--top=30]
 *
 * Any scenario of lib.ts works, inbound ones too (the raw publisher is not profiled).
 *
 * @module
 */
import { CLIENTS, runCell, SCENARIOS, startBroker } from "./lib.ts";
import { summarize } from "./cpuprof_summary.ts";

const arg = (name: string) => Deno.args.find((a) => a.startsWith(`--${name}=`))?.split("=")[1];
const scenario = SCENARIOS.find((s) => s.id === (arg("scenario") ?? "stream-100B"));
if (!scenario) throw new Error(`no scenario ${arg("scenario")}`);
const n = Number(arg("n") ?? 200_000);
const top = Number(arg("top") ?? 30);
const dir = await Deno.makeTempDir({ prefix: "mqtt_async_prof_" });
const broker = await startBroker({ nodelay: scenario.broker === "nodelay" });
try {
  const result = await runCell(broker, scenario, CLIENTS.find((c) => c.id === "ours")!, {
    n,
    extraDenoFlags: ["--cpu-prof", `--cpu-prof-dir=${dir}`],
  });
  console.log(
    `${scenario.title}, N = ${n}: ${Math.round(result.msgsPerSec)} msgs/s, ` +
      `${result.cpuUsPerMsg.toFixed(1)} µs CPU/msg (profiler on)\n`,
  );
} finally {
  await broker.close();
}
for (const entry of Deno.readDirSync(dir)) {
  const profile = JSON.parse(Deno.readTextFileSync(`${dir}/${entry.name}`));
  console.log(`${entry.name}: ${profile.samples.length} samples\n`);
  console.log("| self % | total % | function |\n| ---: | ---: | --- |");
  for (const r of summarize(profile).slice(0, top)) {
    console.log(`| ${r.self.toFixed(1)} | ${r.total.toFixed(1)} | \`${r.name}\` |`);
  }
  console.log(`\nprofile kept in ${dir}/${entry.name}`);
}
