/**
 * Authentication against a real mosquitto with a password file and
 * `allow_anonymous false`, and secrets that never reach the log.
 */

import assert from "node:assert/strict";
import { ConnectionRefusedError, MQTTClient } from "../mod.ts";
import { brokerTest } from "./mosquitto.ts";
import { captureLogger, until, within } from "./helpers.ts";

const users = { gateway: "correct horse battery staple" };
const WRONG = "Tr0ub4dor&3-wrong";

brokerTest("the right credentials connect", async (broker) => {
  const client = new MQTTClient({
    server: broker.hostname,
    port: broker.port,
    clientId: "auth-ok",
    user: "gateway",
    password: users.gateway,
    logger: captureLogger(),
  });
  await within(client.connect(), 5000, "connect");
  await client.publish("auth/ok", "hi", { qos: 1 });
  await client.disconnect();
}, { users });

brokerTest("wrong credentials: connect() rejects naming the reason", async (broker) => {
  for (const [user, password] of [["gateway", WRONG], ["nobody", WRONG]]) {
    const client = new MQTTClient({
      server: broker.hostname,
      port: broker.port,
      user,
      password,
      logger: captureLogger(),
    });
    const error = await within(client.connect().catch((e) => e), 5000, "connect to fail");
    assert.ok(error instanceof ConnectionRefusedError, String(error));
    assert.match(error.message, /not authorized|bad user name or password/);
    await client.disconnect();
  }
}, { users });

brokerTest("no credentials at all: refused as not authorized", async (broker) => {
  const client = new MQTTClient({
    server: broker.hostname,
    port: broker.port,
    logger: captureLogger(),
  });
  const error = await within(client.connect().catch((e) => e), 5000, "connect to fail");
  assert.ok(error instanceof ConnectionRefusedError, String(error));
  assert.equal(error.code, 5);
  await client.disconnect();
}, { users });

brokerTest(
  "start() against a refusing broker retries no more than once per back-off cap, and the password never reaches the log",
  async (broker) => {
    const logger = captureLogger();
    const refusals: number[] = [];
    const cap = 0.4;
    const client = new MQTTClient({
      server: broker.hostname,
      port: broker.port,
      clientId: "auth-retry",
      user: "gateway",
      password: WRONG,
      clean: true,
      logger: {
        ...logger,
        error: (message) => {
          logger.error(message);
          if (message.includes("refused")) refusals.push(performance.now());
        },
      },
      reconnect: { initialDelay: 0.01, maxDelay: cap },
    });
    client.start();
    await until(() => refusals.length >= 4, 10_000, "4 refused attempts");
    await client.disconnect();
    const gaps = refusals.slice(1).map((t, i) => t - refusals[i]);
    assert.ok(
      gaps.every((gap) => gap >= cap * 1000 - 10),
      `attempts ${gaps.map((g) => g.toFixed(0)).join(", ")} ms apart; the cap is ${cap * 1000} ms`,
    );
    assert.ok(
      logger.lines.some((l) => l.includes("connecting to")),
      "connection lines were captured",
    );
    const leaked = logger.lines.filter((l) => l.includes(WRONG) || l.includes(users.gateway));
    assert.deepEqual(leaked, [], "the password appeared in the log");
  },
  { users },
);

brokerTest(
  "a full connect/publish/disconnect cycle at debug level never logs the password",
  async (broker) => {
    const logger = captureLogger();
    const client = new MQTTClient({
      server: broker.hostname,
      port: broker.port,
      user: "gateway",
      password: users.gateway,
      logger,
    });
    await client.connect();
    await client.subscribe("auth/#", 1);
    await client.publish("auth/x", "y", { qos: 1 });
    await client.disconnect();
    assert.ok(logger.lines.length > 0);
    assert.ok(!logger.lines.some((l) => l.includes(users.gateway)));
  },
  { users },
);
