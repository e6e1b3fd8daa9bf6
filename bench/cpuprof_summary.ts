/**
 * Aggregates a V8 .cpuprofile (from `deno run --cpu-prof`) by function:
 * self time and total (inclusive) time as % of samples, top N.
 *
 *   deno run --allow-read bench/cpuprof_summary.ts FILE.cpuprofile [--top=30]
 *
 * @module
 */

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface Profile {
  nodes: Node[];
  samples: number[];
}

/** Rows of `{ name, self, total }` in % of samples, sorted by self time. */
export function summarize(profile: Profile): { name: string; self: number; total: number }[] {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const label = (n: Node) => {
    const { functionName, url, lineNumber } = n.callFrame;
    const file = url.replace(/^.*\/(node_modules|npm\/registry\.npmjs\.org)\//, "npm:")
      .replace(/^file:\/\/.*\/work\/main\//, "").replace(/^.*\//, (m) => m);
    const where = url ? ` ${file.split("/").slice(-2).join("/")}:${lineNumber + 1}` : "";
    return `${functionName || "(anonymous)"}${where}`;
  };
  const self = new Map<string, number>();
  const total = new Map<string, number>();
  for (const sample of profile.samples) {
    const leaf = byId.get(sample)!;
    self.set(label(leaf), (self.get(label(leaf)) ?? 0) + 1);
    const seen = new Set<string>();
    for (let id: number | undefined = sample; id !== undefined; id = parent.get(id)) {
      const name = label(byId.get(id)!);
      if (seen.has(name)) continue;
      seen.add(name);
      total.set(name, (total.get(name) ?? 0) + 1);
    }
  }
  const n = profile.samples.length;
  return [...total.keys()]
    .map((name) => ({
      name,
      self: (100 * (self.get(name) ?? 0)) / n,
      total: (100 * total.get(name)!) / n,
    }))
    .sort((a, b) => b.self - a.self);
}

if (import.meta.main) {
  const file = Deno.args.find((a) => !a.startsWith("--"));
  if (!file) throw new Error("usage: cpuprof_summary.ts FILE.cpuprofile [--top=30]");
  const top = Number(Deno.args.find((a) => a.startsWith("--top="))?.slice(6) ?? 30);
  const profile: Profile = JSON.parse(await Deno.readTextFile(file));
  const rows = summarize(profile);
  console.log(`${profile.samples.length} samples\n`);
  console.log("| self % | total % | function |\n| ---: | ---: | --- |");
  for (const r of rows.slice(0, top)) {
    console.log(`| ${r.self.toFixed(1)} | ${r.total.toFixed(1)} | \`${r.name}\` |`);
  }
  console.log("\nBy inclusive time:\n\n| total % | function |\n| ---: | --- |");
  for (const r of [...rows].sort((a, b) => b.total - a.total).slice(0, top)) {
    console.log(`| ${r.total.toFixed(1)} | \`${r.name}\` |`);
  }
}
