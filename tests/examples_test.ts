/**
 * Runs every example as users do, `deno run` in a subprocess with the
 * permissions its header documents, against the broker it starts in-process
 * (or one this test starts), and checks its exit code and key output lines.
 * Every subprocess is killed after 30 s.
 */

import assert from "node:assert/strict";
import { FakeBroker } from "../testing.ts";
import { hasOpenssl, makePki, removePki } from "./pki.ts";

const ROOT = new URL("../", import.meta.url);
/** What the examples' headers document for the embedded broker. */
const PERMS = ["--allow-net=127.0.0.1,localhost", "--allow-sys=hostname"];
const EXAMPLES = ["hello_world", "stream", "pub", "sub", "flaky_network", "iterate", "outbox"];
const KILL_AFTER_MS = 30_000;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
  /** stdout split into lines, without the trailing empty one. */
  lines: string[];
}

/** Runs `deno <args>` in the repository root; kills it after 30 s or when `signal` aborts. */
async function deno(args: string[], signal?: AbortSignal): Promise<Run> {
  const killer = new AbortController();
  const stop = () => killer.abort();
  signal?.addEventListener("abort", stop, { once: true });
  const timer = setTimeout(() => killer.abort(), KILL_AFTER_MS);
  try {
    const output = await new Deno.Command(Deno.execPath(), {
      args,
      cwd: ROOT,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
      signal: killer.signal,
    }).output();
    const decoder = new TextDecoder();
    const stdout = decoder.decode(output.stdout);
    const stderr = decoder.decode(output.stderr);
    if (killer.signal.aborted) {
      const why = signal?.aborted ? "by the test" : `after ${KILL_AFTER_MS} ms`;
      throw new Error(`deno ${args.join(" ")} was killed ${why}\n${stdout}${stderr}`);
    }
    return { code: output.code, stdout, stderr, lines: stdout.split("\n").filter((l) => l !== "") };
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener("abort", stop);
  }
}

/** `deno run <perms> examples/<name>.ts <flags>`. */
function example(
  name: string,
  flags: string[] = [],
  perms: string[] = PERMS,
  signal?: AbortSignal,
): Promise<Run> {
  return deno(["run", "--no-prompt", ...perms, `examples/${name}.ts`, ...flags], signal);
}

/** Asserts a 0 exit, showing the output when it is not. */
function assertSuccess(run: Run): void {
  assert.equal(
    run.code,
    0,
    `exit code ${run.code}\n--- stdout\n${run.stdout}--- stderr\n${run.stderr}`,
  );
}

function matching(run: Run, pattern: RegExp): string[] {
  return run.lines.filter((line) => pattern.test(line));
}

Deno.test("hello_world publishes 5 QoS 1 messages and receives all 5 back", async () => {
  const run = await example("hello_world");
  assertSuccess(run);
  for (let n = 0; n < 5; n++) {
    assert.equal(matching(run, new RegExp(`^publish ${n}$`)).length, 1, run.stdout);
    assert.equal(
      matching(
        run,
        new RegExp(`^received test/mqtt_async Hello World #${n}! retained=false qos=1$`),
      )
        .length,
      1,
      run.stdout,
    );
  }
  assert.equal(matching(run, /^publish /).length, 5);
  assert.equal(matching(run, /^received /).length, 5);
  assert.match(run.stdout, /all 5 messages came back/);
});

Deno.test("deno task demo runs hello_world with the permissions deno.json grants", async () => {
  const run = await deno(["task", "demo"]);
  assertSuccess(run);
  assert.equal(matching(run, /^received test\/mqtt_async Hello World #\d! /).length, 5, run.stdout);
});

Deno.test("stream prints a msgs/s line for sync: true and for sync: false", async () => {
  const run = await example("stream", ["-n", "300"]);
  assertSuccess(run);
  const sync = matching(
    run,
    /^sync: true: 300 QoS 1 messages of 64 bytes in [\d.]+ s: \d+ msgs\/s$/,
  );
  const streaming = matching(
    run,
    /^sync: false: 300 QoS 1 messages of 64 bytes in [\d.]+ s: \d+ msgs\/s$/,
  );
  assert.equal(sync.length, 1, run.stdout);
  assert.equal(streaming.length, 1, run.stdout);
  assert.ok(run.stdout.indexOf("sync: true") < run.stdout.indexOf("sync: false"));
});

Deno.test("pub without -h shows the round trip through its embedded broker", async () => {
  const plain = await example("pub");
  assertSuccess(plain);
  assert.match(plain.stdout, /no -h given: using an embedded broker on 127\.0\.0\.1:\d+/);
  assert.match(plain.stdout, /^published test\/pub hello from pub\.ts \(qos 0, retain false\)$/m);
  assert.match(plain.stdout, /^received test\/pub hello from pub\.ts \(qos 0, retained false\)$/m);

  const qos1 = await example("pub", ["-t", "a/b", "-m", "hi there", "-q", "1", "-r"]);
  assertSuccess(qos1);
  assert.match(qos1.stdout, /^published a\/b hi there \(qos 1, retain true\)$/m);
  assert.match(qos1.stdout, /^received a\/b hi there \(qos 1, retained false\)$/m);
});

Deno.test("sub without -h receives the sample messages it publishes to itself", async () => {
  const run = await example("sub", ["-v", "-C", "3", "-t", "x/#", "-t", "y/+/z", "-q", "1"]);
  assertSuccess(run);
  assert.match(run.stdout, /publishing 3 sample message\(s\) to myself/);
  assert.deepEqual(matching(run, /sample message \d/), [
    "x/sample sample message 1 from sub.ts",
    "y/sample/z sample message 2 from sub.ts",
    "x/sample sample message 3 from sub.ts",
  ]);

  const quiet = await example("sub"); // default filter, one sample, payload only
  assertSuccess(quiet);
  assert.deepEqual(matching(quiet, /sample message \d/), ["sample message 1 from sub.ts"]);
});

Deno.test("sub exits 1 naming the filter when the broker refuses the subscription", async () => {
  const run = await example("sub", ["-t", "reject/this"]); // the fake broker refuses reject/...
  assert.equal(run.code, 1, run.stdout + run.stderr);
  assert.match(run.stderr, /sub failed: .*reject\/this/);
});

Deno.test("pub -h and sub -h talk to each other across processes through one broker", async () => {
  await using broker = await FakeBroker.start({ mode: "broker" });
  const where = ["-h", broker.hostname, "-p", String(broker.port)];
  const killSub = new AbortController();
  const sub = example(
    "sub",
    [...where, "-t", "cross/#", "-t", "other", "-q", "1", "-v", "-C", "2"],
    PERMS,
    killSub.signal,
  );
  try {
    await broker.waitFor(() => broker.framesOf("suback", "toClient").length >= 2, {
      timeoutMs: 20_000,
      what: "sub.ts to subscribe to both filters",
    });
  } catch (error) {
    killSub.abort();
    await sub.catch(() => {});
    throw error;
  }
  const pub1 = await example("pub", [...where, "-t", "cross/1", "-m", "first", "-q", "1"]);
  assertSuccess(pub1);
  assert.match(pub1.stdout, /^published cross\/1 first \(qos 1, retain false\)$/m);
  assert.doesNotMatch(pub1.stdout, /embedded/);
  const pub2 = await example("pub", [...where, "-t", "other", "-m", "second message"]);
  assertSuccess(pub2);
  const received = await sub;
  assertSuccess(received);
  assert.deepEqual(received.lines, ["cross/1 first", "other second message"]);
});

Deno.test("pub and sub read --cafile and verify the broker's certificate", {
  ignore: !hasOpenssl(),
}, async () => {
  const pki = await makePki("mqtt_examples_tls_");
  const { dir, caFile } = pki;
  try {
    await using broker = await FakeBroker.start({ mode: "broker" });
    await using proxy = tlsProxy(pki.serverCert, pki.serverKey, broker.port);
    const where = ["-h", "127.0.0.1", "-p", String(proxy.port)];
    const perms = [...PERMS, `--allow-read=${dir}`];

    const trusted = await example("pub", [
      ...where,
      "--cafile",
      caFile,
      "-t",
      "tls/t",
      "-m",
      "secret",
      "-q",
      "1",
    ], perms);
    assertSuccess(trusted);
    assert.match(trusted.stdout, /^published tls\/t secret \(qos 1, retain false\)$/m);
    await broker.waitFor(() =>
      broker.framesOf("publish", "toBroker").some((f) =>
        f.packet?.cmd === "publish" && f.packet.topic === "tls/t"
      )
    );

    // With the system's CAs only, the self-made certificate is not trusted: no connection.
    const untrusted = await example(
      "pub",
      [...where, "--tls-use-os-certs", "-t", "t", "-m", "x"],
      perms,
    );
    assert.equal(untrusted.code, 1, untrusted.stdout + untrusted.stderr);
    assert.match(untrusted.stderr, /pub failed: TLS handshake with 127\.0\.0\.1:\d+ failed/);

    const halfPair = await example(
      "pub",
      [...where, "-t", "t", "-m", "x", "--cert", caFile],
      perms,
    );
    assert.equal(halfPair.code, 2, "--cert without --key is a usage error");
    const noCa = await example(
      "sub",
      [...where, "--cafile", `${dir}/missing.pem`, "-t", "t"],
      perms,
    );
    assert.equal(noCa.code, 1, noCa.stderr);
    assert.match(noCa.stderr, /cannot read --cafile/);
  } finally {
    removePki(pki);
  }
});

Deno.test("flaky_network loses the broker, publishes while down, and gets every message", async () => {
  const run = await example("flaky_network", ["--outage", "1200"]);
  assertSuccess(run);
  const events = run.lines.map((line) => line.replace(/^\d+\.\d\ds /, ""));
  const index = (text: string) => events.indexOf(text);
  assert.ok(index("network: bounce") >= 0, run.stdout);
  assert.ok(index("network: up again") >= 0, run.stdout);
  assert.equal(events.filter((e) => e === "connection: up").length, 2, run.stdout);
  assert.ok(events.filter((e) => e === "connection: down").length >= 1, run.stdout);
  assert.ok(index("publishing message 4 while down (the call waits)") > index("connection: up"));
  // The calls made while down resolve only after the network came back.
  assert.ok(
    index("published message 4 (PUBACK after the reconnect)") > index("network: up again"),
    run.stdout,
  );
  // Each message at least once (one whose PUBACK died with the connection may come twice).
  const arrived = new Set(events.map((e) => /^received flaky\/(\d) message \1\b/.exec(e)?.[1]));
  arrived.delete(undefined);
  assert.deepEqual([...arrived].sort(), ["1", "2", "3", "4", "5", "6"], run.stdout);
  assert.ok(events.includes("all 6 messages arrived, in order"), run.stdout);
});

Deno.test("iterate consumes N messages with for await and stops", async () => {
  const run = await example("iterate", ["-n", "7"]);
  assertSuccess(run);
  const readings = matching(run, /^\d+\/7 sensors\/\w+\/temp = [\d.]+ \(qos 1\)$/);
  assert.equal(readings.length, 7, run.stdout);
  assert.ok(readings[0].startsWith("1/7 sensors/kitchen/temp"));
  assert.match(run.stdout, /got all 7 readings/);
});

Deno.test("every example prints a usage line and exits 2 on an unknown flag", async () => {
  for (const name of EXAMPLES) {
    const run = await example(name, ["--no-such-flag"]);
    assert.equal(run.code, 2, `${name}: ${run.stdout}${run.stderr}`);
    assert.match(run.stderr, /unknown flag --no-such-flag/, name);
    assert.match(run.stderr, new RegExp(`^usage: deno run .*examples/${name}\\.ts`, "m"), name);
  }
});

Deno.test("every example prints its usage on --help and exits 0", async () => {
  for (const name of EXAMPLES) {
    const run = await example(name, ["--help"]);
    assertSuccess(run);
    assert.match(run.stdout, new RegExp(`^usage: deno run .*examples/${name}\\.ts`), name);
  }
});

Deno.test("bad flag values exit 2 with the usage line", async () => {
  for (
    const [name, flags] of [
      ["stream", ["-n", "lots"]],
      ["hello_world", ["--server", "host:99999"]],
      ["pub", ["-q", "2"]],
      ["pub", ["-p", "1883"]], // -p without -h
      ["pub", ["-h", "127.0.0.1"]], // -t and -m are required with -h
      ["sub", ["-C", "0"]],
      ["iterate", ["-n"]],
      ["outbox", ["--wait", "never"]],
      ["outbox", ["-q", "1"]], // always QoS 1
    ] as const
  ) {
    const run = await example(name, [...flags]);
    assert.equal(run.code, 2, `${name} ${flags.join(" ")}: ${run.stdout}${run.stderr}`);
    assert.match(run.stderr, /^usage: /m);
  }
});

// ---- TLS helpers ---------------------------------------------------------------

/** Terminates TLS on 127.0.0.1 and forwards the plain bytes to the broker's port. */
function tlsProxy(
  cert: string,
  key: string,
  brokerPort: number,
): { port: number } & AsyncDisposable {
  const listener = Deno.listenTls({ hostname: "127.0.0.1", port: 0, cert, key });
  const pipes: Promise<unknown>[] = [];
  const open = new Set<Deno.Conn>();
  const loop = (async () => {
    for await (const client of listener) {
      open.add(client);
      pipes.push(
        (async () => {
          let upstream: Deno.TcpConn | undefined;
          try {
            upstream = await Deno.connect({ hostname: "127.0.0.1", port: brokerPort });
            open.add(upstream);
            await Promise.allSettled([
              client.readable.pipeTo(upstream.writable),
              upstream.readable.pipeTo(client.writable),
            ]);
          } finally {
            for (const conn of [client, upstream]) {
              if (!conn) continue;
              open.delete(conn);
              try {
                conn.close();
              } catch { /* already closed by its pipe */ }
            }
          }
        })().catch(() => {}),
      );
    }
  })().catch(() => {});
  return {
    port: listener.addr.port,
    async [Symbol.asyncDispose]() {
      listener.close();
      await loop;
      for (const conn of open) {
        try {
          conn.close();
        } catch { /* already closed */ }
      }
      await Promise.all(pipes);
    },
  };
}

// ---- outbox: the durable store ---------------------------------------------------

/** The permissions outbox.ts documents, for the outbox directory `dir`. */
function outboxPerms(dir: string): string[] {
  return [...PERMS, `--allow-read=${dir}`, `--allow-write=${dir}`];
}

Deno.test("outbox without -h: readings queued during an outage survive a restart", async () => {
  const dir = await Deno.makeTempDir({ prefix: "mqtt_async_outbox_" });
  try {
    const run = await example("outbox", ["--dir", dir, "-n", "6"], outboxPerms(dir));
    assertSuccess(run);
    for (const i of [3, 4, 5, 6]) {
      assert.equal(
        matching(run, new RegExp(`^queued reading ${i} while the broker is unreachable$`)).length,
        1,
        run.stdout,
      );
      assert.equal(
        matching(run, new RegExp(`^  in the outbox: run \\S+ reading ${i}: `)).length,
        1,
        run.stdout,
      );
    }
    assert.match(run.stdout, /^outbox .*: 4 reading\(s\) wait in the outbox$/m);
    for (let i = 1; i <= 7; i++) {
      assert.ok(
        matching(run, new RegExp(`^monitor received run \\S+ reading ${i}: `)).length >= 1,
        `reading ${i} never arrived\n${run.stdout}`,
      );
    }
    assert.match(
      run.stdout,
      /^all 7 readings arrived, 4 of them from the outbox after the restart$/m,
    );
    // The outbox is empty afterwards: a second demo finds nothing from the first.
    const again = await example("outbox", ["--dir", dir, "-n", "2"], outboxPerms(dir));
    assertSuccess(again);
    assert.match(again.stdout, /: 0 reading\(s\) from an earlier run$/m);
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});

Deno.test("outbox -h: after kill -9, the next run sends the outbox first, same ids, DUP", async () => {
  const dir = await Deno.makeTempDir({ prefix: "mqtt_async_outbox_" });
  try {
    // Run 1: a broker that takes the readings and never acknowledges them; killed.
    const ids = new Map<string, number>(); // reading payload -> packet id
    {
      await using silent = await FakeBroker.start();
      const child = new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "--no-prompt",
          ...outboxPerms(dir),
          "examples/outbox.ts",
          ...["-h", silent.hostname, "-p", String(silent.port), "--dir", dir, "-n", "3"],
        ],
        cwd: ROOT,
        stdin: "null",
        stdout: "null",
        stderr: "null",
      }).spawn();
      try {
        const conn = await silent.accept({ timeoutMs: 20_000 });
        await conn.handshake();
        conn.autoPingresp();
        await silent.waitFor(() => silent.framesOf("publish", "toBroker").length >= 3, {
          timeoutMs: 10_000,
          what: "3 readings (written only once durable)",
        });
      } finally {
        child.kill("SIGKILL");
        await child.status;
      }
      for (const f of silent.framesOf("publish", "toBroker")) {
        const p = f.packet as { payload: Uint8Array; messageId?: number };
        ids.set(new TextDecoder().decode(p.payload), p.messageId!);
      }
    }
    assert.equal(ids.size, 3);

    // Run 2: a working broker; the outbox goes first.
    await using broker = await FakeBroker.start({ mode: "broker" });
    const run = await example(
      "outbox",
      ["-h", broker.hostname, "-p", String(broker.port), "--dir", dir, "-n", "2"],
      outboxPerms(dir),
    );
    assertSuccess(run);
    assert.match(run.stdout, /: 3 reading\(s\) from an earlier run, to be sent first$/m);
    assert.deepEqual(
      matching(run, /^ {2}in the outbox: /).map((l) => l.replace("  in the outbox: ", "")),
      [...ids.keys()],
    );
    assert.match(run.stdout, /^all 2 readings delivered; the outbox is empty$/m);
    const sent = broker.framesOf("publish", "toBroker").map((f) => {
      const p = f.packet as { payload: Uint8Array; messageId?: number; dup: boolean };
      return { text: new TextDecoder().decode(p.payload), id: p.messageId, dup: p.dup };
    });
    assert.equal(sent.length, 5, JSON.stringify(sent));
    assert.deepEqual(
      sent.slice(0, 3),
      [...ids].map(([text, id]) => ({ text, id, dup: true })),
      "the killed run's readings, re-sent first with their ids and DUP",
    );
    assert.deepEqual(sent.slice(3).map((s) => [/ reading (\d):/.exec(s.text)?.[1], s.dup]), [
      ["1", false],
      ["2", false],
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});
