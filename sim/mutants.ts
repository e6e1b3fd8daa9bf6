/**
 * `deno task sim:mutants`: proof that the simulator finds bugs. Each mutant
 * puts one known bug back into a copy of the library (the keepalive
 * regression, the bugs fixed so far, and some the simulator itself found)
 * and runs the simulator's default run on it until the first failure, or
 * until the time budget is spent. Prints a Markdown table for the README.
 *
 * ```sh
 * deno task sim:mutants                 # every mutant, up to 60 s each
 * deno task sim:mutants --seconds 20    # a shorter budget
 * deno task sim:mutants --only keepalive
 * ```
 *
 * @module
 */

interface Mutant {
  /** Short name. */
  name: string;
  /** The bug, as a user would meet it. */
  bug: string;
  /** File (relative to the repository) and the exact text replaced. */
  file: string;
  find: string;
  replace: string;
}

/** Each one is a bug this project had, or that the simulator found, written back in. */
export const MUTANTS: Mutant[] = [
  {
    name: "keepalive",
    bug:
      "the armed timer is kept while the deadline moves earlier (after a PINGRESP: idle clients dropped)",
    file: "client/_engine.ts",
    find: "if (this.timerAt <= deadline) return; // fires early: onTimer re-arms",
    replace: "if (this.timerAt !== Infinity) return;",
  },
  {
    name: "publish-in-connack-read",
    bug:
      "packets in the same read as the CONNACK are dropped (a resumed session's PUBLISH gets no PUBACK)",
    file: "proto.ts",
    find: "    if (!this.#closed) this.#events.onPacket(packet);",
    replace:
      '    if (this.#closed || this.#skipRest) return;\n    if (packet.cmd === "connack") this.#skipRest = true;\n    this.#events.onPacket(packet);',
  },
  {
    name: "bad-frame-in-connack-read",
    bug: "a connection closed during its handshake is ignored: the attempt never ends",
    file: "client/_engine.ts",
    find: "    if (proto !== this.#proto) return;\n    const wasLive = this.#live;",
    replace:
      "    if (proto !== this.#proto || !this.#live) return;\n    const wasLive = this.#live;",
  },
  {
    name: "qos0-behind-backed-up-socket",
    bug:
      "writes queued behind a backed-up socket wait for an acknowledgement (QoS 0 gets none: it stalls)",
    file: "core/state.ts",
    find: "    if (wasBlocked && this.writable()) this.#pump(now, out);",
    replace: "    void wasBlocked;",
  },
  {
    name: "connack-timer-after-refusal",
    bug: "a refused connect() leaves the CONNACK timer armed (a script that caught it cannot exit)",
    file: "client/_engine.ts",
    find: "      if (this.timerAt !== Infinity) this.#clearTimer();\n      return;",
    replace: "      return;",
  },
  {
    name: "bounce-after-up-again",
    bug:
      "the failure count survives the network's 'up again', so the network is bounced right after it came back",
    file: "client/_supervisor.ts",
    find:
      "        this.#netCameUp = false;\n        this.#failuresHere = 0;\n        this.#serversFailed = 0;",
    replace: "        this.#netCameUp = false;",
  },
  {
    name: "non-connack-first-packet",
    bug: "a first packet other than CONNACK is ignored instead of closing the connection",
    file: "core/state.ts",
    find: '    if (packet.cmd === "connack") return this.#onConnack(packet, now, out);',
    replace:
      '    if (packet.cmd !== "connack") return;\n    return this.#onConnack(packet, now, out);',
  },
  {
    name: "nan-window",
    bug:
      "found by the state tests: a 0 ms round trip makes the adaptive window NaN, and a NaN window never fills",
    file: "core/_window.ts",
    find: "effectiveRtt > 0 ? (2 * window * minRtt) / effectiveRtt : 2 * window",
    replace: "(2 * window * minRtt) / effectiveRtt",
  },
  {
    name: "deadline-rounding",
    bug:
      "found by the simulator: `now - sentAt >= limit` disagrees with the deadline by one rounding: a timer storm",
    file: "core/state.ts",
    find: "if (owed === undefined || now < this.#deadAt(owed)) return undefined;",
    replace:
      "if (owed === undefined) return undefined;\n    const since = owed === PING_OWED ? this.#liveness.pingSentAt : owed.sentAt;\n    if (now - Math.max(since, this.#progressAt) < this.#liveness.responseTimeMs) return undefined;",
  },
  {
    name: "dial-without-deadline",
    bug:
      "found by the simulator: a connection attempt with no deadline hangs for ever on an unanswered SYN",
    file: "client/_supervisor.ts",
    find: "    const limit = o.responseTimeMs;\n    const timer = o.clock.setTimer(",
    replace: "    const limit = Infinity;\n    const timer = o.clock.setTimer(",
  },
  {
    name: "silent-while-pinging",
    bug:
      "found by the simulator: with a PINGREQ out the client says nothing for responseTime (brokers drop it)",
    file: "core/_liveness.ts",
    find: "    if (this.pingSentAt !== Infinity) return this.lastSentAt + this.keepaliveMs;",
    replace: "    if (this.pingSentAt !== Infinity) return Infinity;",
  },
  {
    name: "slow-link-livelock",
    bug:
      "found by the simulator: on a slow link each PUBACK gets responseTime from its write, not from the one before: endless reconnects",
    file: "core/state.ts",
    find: "    return Math.max(sentAt, this.#progressAt) + this.#liveness.responseTimeMs;",
    replace: "    return sentAt + this.#liveness.responseTimeMs;",
  },
  {
    name: "resend-overtakes",
    bug:
      "found by the simulator (with the timed store): after a reconnect a QoS 1 re-send with room overtakes a QoS 2 one waiting for the QoS 2 window",
    file: "core/_outgoing.ts",
    find: "      r.dup = true;\n      this.#resends.push(r);",
    replace:
      "      r.dup = true;\n      if (this.#hasRoom(r.qos) && this.#ctx.writable()) this.#resendOne(r, this.#ctx.config.protocolVersion, now, out);\n      else this.#resends.push(r);",
  },
  {
    name: "failover-stuck",
    bug: "failover never moves on from a dead server (the count of failures is never reached)",
    file: "client/_supervisor.ts",
    find: "    if (this.#failuresHere >= o.bounceAfter) {",
    replace: "    if (this.#failuresHere >= o.bounceAfter * 100) {",
  },
  {
    name: "failover-not-sticky",
    bug: "failover is not sticky: after a lost connection the client tries the next server first",
    file: "client/_supervisor.ts",
    find: "    this.#redirect = undefined; // a redirect is for one connection",
    replace: "    this.#current = (this.#current + 1) % this.#o.endpoints.length;\n" +
      "    this.#redirect = undefined; // a redirect is for one connection",
  },
];

const COPY = ["core", "client", "codec", "store", "transport", "sim", "testing"];

async function copyTree(from: string, to: string): Promise<void> {
  await Deno.mkdir(to, { recursive: true });
  for await (const entry of Deno.readDir(from)) {
    const source = `${from}/${entry.name}`;
    const target = `${to}/${entry.name}`;
    if (entry.isDirectory) await copyTree(source, target);
    else if (entry.isFile && entry.name.endsWith(".ts")) await Deno.copyFile(source, target);
  }
}

/** A copy of the library with `mutant` applied, in a new temp dir. */
async function mutate(root: string, mutant: Mutant): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: `mqtt_async_mutant_${mutant.name}_` });
  for await (const entry of Deno.readDir(root)) {
    if (entry.isFile && entry.name.endsWith(".ts")) {
      await Deno.copyFile(`${root}/${entry.name}`, `${dir}/${entry.name}`);
    }
  }
  for (const sub of COPY) await copyTree(`${root}/${sub}`, `${dir}/${sub}`);
  const path = `${dir}/${mutant.file}`;
  const text = await Deno.readTextFile(path);
  const at = text.indexOf(mutant.find);
  if (at < 0 || text.indexOf(mutant.find, at + 1) >= 0) {
    throw new Error(
      `mutant ${mutant.name}: the text to replace is not in ${mutant.file} exactly once`,
    );
  }
  let mutated = text.slice(0, at) + mutant.replace + text.slice(at + mutant.find.length);
  if (mutant.name === "publish-in-connack-read") {
    mutated = mutated.replace("  #closed = false;\n", "  #closed = false;\n  #skipRest = false;\n");
  }
  await Deno.writeTextFile(path, mutated);
  return dir;
}

interface Outcome {
  mutant: Mutant;
  caught: boolean;
  seed?: number;
  rule?: string;
  schedules: number;
  seconds: number;
}

async function trial(
  root: string,
  mutant: Mutant,
  seconds: number,
  base: number,
): Promise<Outcome> {
  const dir = await mutate(root, mutant);
  const started = performance.now();
  try {
    const output = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        `${dir}/sim/main.ts`,
        "--seconds",
        String(seconds),
        "--base",
        String(base),
        "--stop-first",
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(output.stdout) + new TextDecoder().decode(output.stderr);
    const failed = /FAILED seed (\d+): ([^:]+):/.exec(text);
    const totals = /(\d+) schedules,/.exec(text);
    return {
      mutant,
      caught: failed !== null,
      seed: failed ? Number(failed[1]) : undefined,
      rule: failed?.[2],
      schedules: totals ? Number(totals[1]) : 0,
      seconds: (performance.now() - started) / 1000,
    };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

if (import.meta.main) {
  let seconds = 60;
  let only: string | undefined;
  let base = 1;
  for (let i = 0; i < Deno.args.length; i++) {
    if (Deno.args[i] === "--seconds") seconds = Number(Deno.args[++i]);
    else if (Deno.args[i] === "--only") only = Deno.args[++i];
    else if (Deno.args[i] === "--base") base = Number(Deno.args[++i]);
  }
  const root = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
  const rows: Outcome[] = [];
  for (
    const mutant of MUTANTS.filter((m) => only === undefined || only.split(",").includes(m.name))
  ) {
    const outcome = await trial(root, mutant, seconds, base);
    rows.push(outcome);
    console.error(
      `${mutant.name}: ${
        outcome.caught ? `caught by seed ${outcome.seed} (${outcome.rule})` : "NOT caught"
      } ` +
        `after ${outcome.schedules} schedules, ${outcome.seconds.toFixed(1)} s`,
    );
  }
  console.log("| bug put back | caught | by the invariant | schedules run | wall time |");
  console.log("| --- | --- | --- | ---: | ---: |");
  for (const r of rows) {
    console.log(
      `| ${r.mutant.bug} | ${r.caught ? `yes, seed ${r.seed}` : "**no**"} | ${r.rule ?? "–"} | ` +
        `${r.schedules} | ${r.seconds.toFixed(0)} s |`,
    );
  }
  Deno.exit(rows.every((r) => r.caught) ? 0 : 1);
}
