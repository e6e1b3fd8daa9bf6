/**
 * TLS and mutual TLS against a real mosquitto with certificates made by
 * openssl for the test: the right CA works; the system roots, a wrong host
 * name and a missing client certificate are each refused within a bounded
 * time, with a message that names the cause.
 */

import assert from "node:assert/strict";
import { ConnectionLostError, MQTTClient } from "../mod.ts";
import { brokerTest } from "./mosquitto.ts";
import { captureLogger, within } from "./helpers.ts";
import { makePki, type Pki, removePki } from "./pki.ts";

const pki = await makePkiIfPossible();

async function makePkiIfPossible(): Promise<Pki | undefined> {
  try {
    return await makePki("mqtt_tls_");
  } catch (error) {
    if (Deno.env.get("MQTT_REQUIRE_BROKER") === "1") throw error;
    console.warn(`TLS tests need openssl: ${error}`);
    return undefined;
  }
}

function tlsClient(port: number, tls: MQTTClient["clientId"] extends string ? object : never) {
  return new MQTTClient({
    server: "127.0.0.1",
    port,
    clientId: "tls-client",
    tls: tls as never,
    responseTime: 3,
    logger: captureLogger(),
  });
}

const tlsListener = pki
  ? { certFile: pki.serverCertFile, keyFile: pki.serverKeyFile, caFile: pki.caFile }
  : undefined;

brokerTest("TLS with the right CA connects, publishes and receives", async (broker) => {
  const received: string[] = [];
  const client = new MQTTClient({
    server: "127.0.0.1",
    port: broker.tlsPort!,
    clientId: "tls-ok",
    tls: { caCerts: [pki!.caCert] },
    logger: captureLogger(),
    onMessage: (topic) => received.push(topic),
  });
  await within(client.connect(), 5000, "TLS connect");
  await client.subscribe("tls/#", 1);
  await client.publish("tls/hello", "over TLS", { qos: 1 });
  const deadline = Date.now() + 5000;
  while (received.length === 0 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 10));
  }
  assert.deepEqual(received, ["tls/hello"]);
  await client.disconnect();
}, { tls: tlsListener });

brokerTest("TLS with the name localhost verifies against the DNS SAN", async (broker) => {
  const client = tlsClient(broker.tlsPort!, { caCerts: [pki!.caCert], hostname: "localhost" });
  await within(client.connect(), 5000, "TLS connect");
  await client.disconnect();
}, { tls: tlsListener });

brokerTest(
  "TLS with the system roots refuses a private CA, naming the certificate problem",
  async (broker) => {
    const client = tlsClient(broker.tlsPort!, true as never);
    const start = performance.now();
    const error = await within(client.connect().catch((e) => e), 5000, "connect to fail");
    assert.ok(error instanceof ConnectionLostError, String(error));
    assert.match(error.message, /TLS handshake .* failed: .*(certificate|issuer|Unknown)/i);
    assert.ok(performance.now() - start < 5000);
    await client.disconnect();
  },
  { tls: tlsListener },
);

brokerTest("TLS refuses a certificate that does not match the host name", async (broker) => {
  const client = tlsClient(broker.tlsPort!, { caCerts: [pki!.caCert], hostname: "wrong.example" });
  const error = await within(client.connect().catch((e) => e), 5000, "connect to fail");
  assert.ok(error instanceof ConnectionLostError, String(error));
  assert.match(error.message, /TLS handshake .* failed: .*(name|NotValidForName|not valid)/i);
  await client.disconnect();
}, { tls: tlsListener });

const mtlsListener = pki ? { ...tlsListener!, requireCertificate: true } : undefined;

brokerTest("mTLS with a client certificate connects", async (broker) => {
  const client = tlsClient(broker.tlsPort!, {
    caCerts: [pki!.caCert],
    cert: pki!.clientCert,
    key: pki!.clientKey,
  });
  await within(client.connect(), 5000, "mTLS connect");
  await client.publish("mtls", "ok", { qos: 1 });
  await client.disconnect();
}, { tls: mtlsListener });

brokerTest("mTLS without a client certificate is refused within a bounded time", async (broker) => {
  const client = tlsClient(broker.tlsPort!, { caCerts: [pki!.caCert] });
  const start = performance.now();
  const error = await within(client.connect().catch((e) => e), 8000, "connect to fail");
  assert.ok(error instanceof Error, String(error));
  assert.match(error.message, /TLS|certificate|closed|CONNACK/i);
  assert.ok(performance.now() - start < 8000);
  console.log(
    `mTLS without certificate refused after ${
      (performance.now() - start).toFixed(0)
    } ms: ${error.message}`,
  );
  await client.disconnect();
}, { tls: mtlsListener });

addEventListener("unload", () => {
  if (pki) removePki(pki);
});
