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

interface Pki {
  dir: string;
  caCert: string;
  clientCert: string;
  clientKey: string;
  serverCertFile: string;
  serverKeyFile: string;
  caFile: string;
}

async function openssl(dir: string, ...args: string[]): Promise<void> {
  const { success, stderr } = await new Deno.Command("openssl", { args, cwd: dir, stdout: "null" })
    .output();
  if (!success) throw new Error(`openssl ${args[0]} failed: ${new TextDecoder().decode(stderr)}`);
}

/** A private CA, a server certificate for 127.0.0.1/localhost and a client certificate. */
async function makePki(): Promise<Pki> {
  const dir = await Deno.makeTempDir({ prefix: "mqtt_tls_" });
  await openssl(
    dir,
    "req",
    "-x509",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-days",
    "2",
    "-subj",
    "/CN=test CA",
    "-keyout",
    "ca.key",
    "-out",
    "ca.crt",
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
  );
  await Deno.writeTextFile(
    `${dir}/server.ext`,
    "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
  );
  await openssl(
    dir,
    "req",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-subj",
    "/CN=localhost",
    "-keyout",
    "server.key",
    "-out",
    "server.csr",
  );
  await openssl(
    dir,
    "x509",
    "-req",
    "-in",
    "server.csr",
    "-CA",
    "ca.crt",
    "-CAkey",
    "ca.key",
    "-CAcreateserial",
    "-days",
    "2",
    "-extfile",
    "server.ext",
    "-out",
    "server.crt",
  );
  await Deno.writeTextFile(
    `${dir}/client.ext`,
    "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n",
  );
  await openssl(
    dir,
    "req",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-subj",
    "/CN=sensor-7",
    "-keyout",
    "client.key",
    "-out",
    "client.csr",
  );
  await openssl(
    dir,
    "x509",
    "-req",
    "-in",
    "client.csr",
    "-CA",
    "ca.crt",
    "-CAkey",
    "ca.key",
    "-CAcreateserial",
    "-days",
    "2",
    "-extfile",
    "client.ext",
    "-out",
    "client.crt",
  );
  // PKCS#8 for the client key, which Deno's TLS accepts.
  await openssl(dir, "pkcs8", "-topk8", "-nocrypt", "-in", "client.key", "-out", "client.pk8");
  return {
    dir,
    caCert: await Deno.readTextFile(`${dir}/ca.crt`),
    clientCert: await Deno.readTextFile(`${dir}/client.crt`),
    clientKey: await Deno.readTextFile(`${dir}/client.pk8`),
    serverCertFile: `${dir}/server.crt`,
    serverKeyFile: `${dir}/server.key`,
    caFile: `${dir}/ca.crt`,
  };
}

const pki = await makePkiIfPossible();

async function makePkiIfPossible(): Promise<Pki | undefined> {
  try {
    return await makePki();
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
  if (pki) Deno.removeSync(pki.dir, { recursive: true });
});
