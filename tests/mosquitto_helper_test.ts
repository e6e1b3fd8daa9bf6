import assert from "node:assert/strict";
import { Buffer, generate, type Packet, parser } from "./oracle.ts";
import { brokerTest, MOSQUITTO_MISSING, mosquittoAvailable, startMosquitto } from "./mosquitto.ts";
import { makePki, removePki } from "./pki.ts";

/** A raw MQTT connection: frames out with `generate`, frames in with `parser`. */
class RawClient {
  readonly #packets: Packet[] = [];
  readonly #parser = parser({ protocolVersion: 4 });
  #wake: (() => void) | undefined;
  #ended = false;
  readonly #reading: Promise<void>;

  constructor(readonly conn: Deno.Conn) {
    this.#parser.on("packet", (packet: Packet) => {
      this.#packets.push(packet);
      this.#wake?.();
    });
    this.#reading = (async () => {
      const buffer = new Uint8Array(4096);
      try {
        for (;;) {
          const n = await conn.read(buffer);
          if (n === null) break;
          this.#parser.parse(Buffer.from(buffer.subarray(0, n)));
        }
      } catch {
        // Closed.
      }
      this.#ended = true;
      this.#wake?.();
    })();
  }

  static async connect(port: number, tls?: { caCerts: string[] }): Promise<RawClient> {
    const conn = tls
      ? await Deno.connectTls({ hostname: "127.0.0.1", port, caCerts: tls.caCerts })
      : await Deno.connect({ hostname: "127.0.0.1", port });
    return new RawClient(conn);
  }

  async send(packet: Packet): Promise<void> {
    const bytes = new Uint8Array(generate(packet));
    let offset = 0;
    while (offset < bytes.length) offset += await this.conn.write(bytes.subarray(offset));
  }

  /** The next frame from the broker; throws on end of stream or after 5 s. */
  async next(): Promise<Packet> {
    const deadline = Date.now() + 5000;
    while (this.#packets.length === 0) {
      if (this.#ended) throw new Error("connection ended before the expected frame");
      if (Date.now() > deadline) throw new Error("no frame from the broker within 5 s");
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
        timer = setTimeout(resolve, 100);
      });
      clearTimeout(timer);
      this.#wake = undefined;
    }
    return this.#packets.shift()!;
  }

  /** Sends CONNECT and returns the CONNACK return code. */
  async handshake(
    clientId: string,
    auth: { username?: string; password?: string } = {},
    clean = true,
  ): Promise<number> {
    await this.send({
      cmd: "connect",
      protocolId: "MQTT",
      protocolVersion: 4,
      clientId,
      clean,
      keepalive: 30,
      ...(auth.username !== undefined ? { username: auth.username } : {}),
      ...(auth.password !== undefined ? { password: Buffer.from(auth.password) } : {}),
    });
    const packet = await this.next();
    assert.equal(packet.cmd, "connack");
    return (packet as { returnCode: number }).returnCode;
  }

  async close(): Promise<void> {
    try {
      this.conn.close();
    } catch {
      // Already closed.
    }
    await this.#reading;
  }
}

/** Like brokerTest's rule: skip without mosquitto unless MQTT_REQUIRE_BROKER=1. */
const noBroker = !mosquittoAvailable() && Deno.env.get("MQTT_REQUIRE_BROKER") !== "1";

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

brokerTest("mosquitto starts on a free port and accepts a raw MQTT CONNECT", async (broker) => {
  assert.equal(broker.hostname, "127.0.0.1");
  assert.ok(broker.port > 0);
  assert.equal(broker.tlsPort, undefined);
  const client = await RawClient.connect(broker.port);
  assert.equal(await client.handshake("helper-test-1"), 0);
  await client.send({ cmd: "pingreq" });
  assert.equal((await client.next()).cmd, "pingresp");
  await client.close();
  assert.match(await broker.log(), /mosquitto version .* running/);
});

brokerTest("two brokers get different ports and separate dirs", async (a) => {
  await using b = await startMosquitto();
  assert.notEqual(a.port, b.port);
  assert.notEqual(a.dir, b.dir);
  const client = await RawClient.connect(b.port);
  assert.equal(await client.handshake("helper-second"), 0);
  await client.close();
});

brokerTest("restart keeps the port and persisted retained messages", async (broker) => {
  const port = broker.port;
  const publisher = await RawClient.connect(port);
  assert.equal(await publisher.handshake("helper-pub"), 0);
  await publisher.send({
    cmd: "publish",
    topic: "helper/retained",
    payload: "kept",
    qos: 1,
    messageId: 1,
    retain: true,
    dup: false,
  });
  assert.equal((await publisher.next()).cmd, "puback");
  await publisher.close();

  await broker.restart();
  assert.equal(broker.port, port);

  const subscriber = await RawClient.connect(port);
  assert.equal(await subscriber.handshake("helper-sub"), 0);
  await subscriber.send({
    cmd: "subscribe",
    messageId: 2,
    subscriptions: [{ topic: "helper/retained", qos: 1 }],
  });
  assert.equal((await subscriber.next()).cmd, "suback");
  const message = await subscriber.next();
  assert.equal(message.cmd, "publish");
  const publish = message as { topic: string; payload: Uint8Array; retain: boolean };
  assert.equal(publish.topic, "helper/retained");
  assert.equal(new TextDecoder().decode(publish.payload), "kept");
  assert.equal(publish.retain, true);
  await subscriber.close();
}, { persistence: true });

brokerTest(
  "users option accepts the right password and refuses a wrong one or none",
  async (broker) => {
    const good = await RawClient.connect(broker.port);
    assert.equal(await good.handshake("helper-good", { username: "alice", password: "s3cret" }), 0);
    await good.close();

    const bad = await RawClient.connect(broker.port);
    const code = await bad.handshake("helper-bad", { username: "alice", password: "wrong" });
    assert.ok(code === 4 || code === 5, `expected CONNACK 4 or 5, got ${code}`);
    await bad.close();

    const anonymous = await RawClient.connect(broker.port);
    const anonymousCode = await anonymous.handshake("helper-anon");
    assert.ok(anonymousCode === 4 || anonymousCode === 5, `expected 4 or 5, got ${anonymousCode}`);
    await anonymous.close();
  },
  { users: { alice: "s3cret", bob: "other" } },
);

brokerTest("stop keeps the dir and frees the port; close removes the dir", async (broker) => {
  const dir = broker.dir;
  assert.ok(await exists(`${dir}/mosquitto.conf`));
  assert.match(await Deno.readTextFile(`${dir}/mosquitto.conf`), /max_connections 10/);
  await broker.stop();
  assert.ok(await exists(`${dir}/mosquitto.conf`), "stop() must not remove the dir");
  await assert.rejects(Deno.connect({ hostname: "127.0.0.1", port: broker.port }));
  await broker.stop(); // idempotent
  await broker.restart();
  const client = await RawClient.connect(broker.port);
  assert.equal(await client.handshake("helper-after-stop"), 0);
  await client.close();
  await broker.close();
  assert.equal(await exists(dir), false, "close() must remove the dir");
  await broker.close(); // idempotent (brokerTest closes it once more)
}, { extraConfig: "max_connections 10" });

Deno.test({
  name: "tls option adds a TLS listener that verifies with the test's CA",
  ignore: noBroker,
}, async () => {
  const pki = await makePki("mqtt_async_certs_");
  try {
    await using broker = await startMosquitto({
      tls: { certFile: pki.serverCertFile, keyFile: pki.serverKeyFile },
    });
    assert.ok(broker.tlsPort !== undefined && broker.tlsPort !== broker.port);
    const client = await RawClient.connect(broker.tlsPort!, { caCerts: [pki.caCert] });
    assert.equal(await client.handshake("helper-tls"), 0);
    await client.close();
  } finally {
    removePki(pki);
  }
});

Deno.test("brokerTest skips without mosquitto, and fails when MQTT_REQUIRE_BROKER=1", async () => {
  const dir = await Deno.makeTempDir({ prefix: "mqtt_async_brokertest_" });
  try {
    const file = `${dir}/skip_test.ts`;
    const helper = new URL("./mosquitto.ts", import.meta.url).href;
    await Deno.writeTextFile(
      file,
      `import { brokerTest } from ${JSON.stringify(helper)};\n` +
        `brokerTest("needs a broker", async () => {});\n`,
    );
    const run = async (require: boolean) => {
      const out = await new Deno.Command(Deno.execPath(), {
        args: [
          "test",
          "--no-check",
          "--allow-env",
          "--allow-read",
          "--allow-run",
          "--allow-net",
          "--allow-write",
          file,
        ],
        cwd: dir,
        env: {
          NO_COLOR: "1",
          MQTT_MOSQUITTO_BIN: `${dir}/no-such-mosquitto`,
          MQTT_REQUIRE_BROKER: require ? "1" : "0",
        },
        stdout: "piped",
        stderr: "piped",
      }).output();
      const decoder = new TextDecoder();
      return {
        success: out.success,
        text: decoder.decode(out.stdout) + decoder.decode(out.stderr),
      };
    };
    const skipped = await run(false);
    assert.ok(skipped.success, skipped.text);
    assert.match(skipped.text, /needs a broker \.\.\. ignored/);
    assert.ok(skipped.text.includes(MOSQUITTO_MISSING), skipped.text);
    const required = await run(true);
    assert.equal(required.success, false, required.text);
    assert.match(required.text, /needs a broker \.\.\. FAILED/);
    assert.ok(required.text.includes(MOSQUITTO_MISSING), required.text);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
