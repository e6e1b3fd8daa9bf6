/**
 * Our QoS 1 stream rate for several maxInflight values, to choose the default
 * by measurement. Default: 100 B messages through a proxy adding 10 ms each
 * way (20 ms RTT). One process per run, the values interleaved over rounds.
 *
 *   deno run -A bench/inflight_sweep.ts [--delay=10] [--rate=0] [--n=5000] [--rounds=2]
 *     [--values=16,32,64,128,256] [--size=100]
 *
 * `--rate` caps the delay line's bandwidth (Mbit/s each way; 0: none).
 *
 * @module
 */
import { CLIENTS, runCell, SCENARIOS, startBroker } from "./lib.ts";

const arg = (name: string) => Deno.args.find((a) => a.startsWith(`--${name}=`))?.split("=")[1];
const delayMs = Number(arg("delay") ?? 10);
const rateMbit = Number(arg("rate") ?? 0);
const n = Number(arg("n") ?? 5000);
const rounds = Number(arg("rounds") ?? 2);
const size = Number(arg("size") ?? 100);
const values = (arg("values") ?? "16,32,64,128,256").split(",").map(Number);
const scenario = { ...SCENARIOS.find((s) => s.id === "stream-100B")!, delayMs, rateMbit, size };
const ours = CLIENTS.find((c) => c.id === "ours")!;

const broker = await startBroker();
const rates = new Map<number, number[]>(values.map((v) => [v, []]));
try {
  for (let round = 0; round < rounds; round++) {
    for (const maxInflight of round % 2 ? [...values].reverse() : values) {
      const r = await runCell(broker, scenario, ours, { n, maxInflight });
      rates.get(maxInflight)!.push(r.msgsPerSec);
      console.error(`round ${round + 1} maxInflight ${maxInflight}: ${Math.round(r.msgsPerSec)}`);
    }
  }
} finally {
  await broker.close();
}
const link = rateMbit > 0 ? `, ${rateMbit} Mbit/s` : "";
console.log(
  `QoS 1 stream, ${size} B × ${n}, RTT ≈ ${2 * delayMs} ms${link}, median of ${rounds}\n`,
);
console.log("| maxInflight | msgs/s | msgs/s per in-flight slot |\n| ---: | ---: | ---: |");
for (const [v, list] of rates) {
  const sorted = [...list].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  const med = sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
  console.log(`| ${v} | ${Math.round(med).toLocaleString("en-US")} | ${(med / v).toFixed(1)} |`);
}
