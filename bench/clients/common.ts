/**
 * Helpers shared by the Deno benchmark clients: the protocol with the
 * orchestrator (one JSON config argument; JSON lines on stdout; lines such as
 * "go" on stdin) and the process's own CPU and memory counters from /proc.
 *
 * @module
 */

/** What the orchestrator asks a client to do. */
export interface ClientConfig {
  /**
   * "qos0" | "sync" | "stream" | "replay" publish; "inbound" subscribes to
   * `topic` at `qos` and counts `n` arrivals (another process publishes).
   */
  kind: "qos0" | "sync" | "stream" | "replay" | "inbound";
  /** QoS of "stream" (1 or 2, default 1) and "inbound" (0 or 1). */
  qos?: 0 | 1 | 2;
  /** Messages to publish. */
  n: number;
  /** Payload bytes. */
  size: number;
  host: string;
  port: number;
  topic: string;
  clientId: string;
  /** Our client only: its maxInflight (default: the library's). */
  maxInflight?: number;
  /** Our client only: "file" for a FileStore in a temp dir (default: the memory store). */
  store?: "memory" | "file";
  /** Our client only, "stream": calls kept outstanding (default: await each). */
  group?: number;
  /** Our client only, "inbound": count in `onMessage` ("handler", default) or a `messages()` loop ("iter"). */
  mode?: "handler" | "iter";
  /** "stream": messages to stream to `${topic}/warmup` before reporting ready, untimed. */
  warmup?: number;
}

/** The parsed JSON config from the first argument. */
export function config(): ClientConfig {
  return JSON.parse(Deno.args[0]);
}

const encoder = new TextEncoder();

/** Writes one JSON line to stdout for the orchestrator. */
export function emit(record: Record<string, unknown>): void {
  Deno.stdout.writeSync(encoder.encode(JSON.stringify(record) + "\n"));
}

/** A wall-clock time in ms with sub-ms resolution, comparable across processes. */
export function epochMs(): number {
  return performance.timeOrigin + performance.now();
}

const TICK_US = 1e6 / 100; // USER_HZ is 100 on Linux

/**
 * User + system CPU time in µs of this process, or of process `pid`
 * (/proc/<pid>/stat, 10 ms resolution).
 */
export function cpuUs(pid: number | "self" = "self"): number {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // fields[0] is field 3 (state); utime and stime are fields 14 and 15.
  return (Number(fields[11]) + Number(fields[12])) * TICK_US;
}

/** A field of /proc/self/status in kB (VmRSS now, VmHWM peak). */
export function statusKb(field: "VmRSS" | "VmHWM"): number {
  const match = Deno.readTextFileSync("/proc/self/status").match(new RegExp(`${field}:\\s+(\\d+)`));
  return match ? Number(match[1]) : 0;
}

const stdinLines = (async function* () {
  let buffered = "";
  for await (const chunk of Deno.stdin.readable.pipeThrough(new TextDecoderStream())) {
    buffered += chunk;
    let newline;
    while ((newline = buffered.indexOf("\n")) >= 0) {
      yield buffered.slice(0, newline);
      buffered = buffered.slice(newline + 1);
    }
  }
})();

/** Waits for the orchestrator to write `line` on stdin. */
export async function waitFor(line: string): Promise<void> {
  for (;;) {
    const next = await stdinLines.next();
    if (next.done) throw new Error(`stdin closed while waiting for "${line}"`);
    if (next.value.trim() === line) return;
  }
}

/**
 * The measured section: reports ready (with idle RSS), waits for "go", runs
 * `body` (which returns the start and end of the timed part), then emits the result.
 */
export async function measure(
  body: () => Promise<{ t0: number; t1: number; extra?: Record<string, unknown> }>,
): Promise<void> {
  const idleRssKb = statusKb("VmRSS");
  emit({ type: "ready", idleRssKb });
  await waitFor("go");
  const cpu0 = cpuUs();
  const { t0, t1, extra } = await body();
  const cpu1 = cpuUs();
  emit({
    type: "result",
    t0,
    t1,
    cpuUs: cpu1 - cpu0,
    idleRssKb,
    peakRssKb: statusKb("VmHWM"),
    ...extra,
  });
}
