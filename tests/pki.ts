/**
 * Throw-away certificates for the TLS tests, made by the `openssl` command:
 * one private CA, a server certificate it signed for 127.0.0.1 and localhost,
 * and a client certificate for mutual TLS.
 */

/** The files and PEM texts made by {@link makePki}; all of them live in `dir`. */
export interface Pki {
  /** The temporary directory holding every file; {@link removePki} deletes it. */
  dir: string;
  /** Path of the CA certificate (PEM): for `--cafile` or mosquitto's `cafile`. */
  caFile: string;
  /** The CA certificate (PEM): for `caCerts`. */
  caCert: string;
  /** Path of the server certificate, valid for IP:127.0.0.1 and DNS:localhost (PEM). */
  serverCertFile: string;
  /** Path of the server's private key (PEM). */
  serverKeyFile: string;
  /** The server certificate (PEM), as {@link serverCertFile} holds it. */
  serverCert: string;
  /** The server's private key (PEM), as {@link serverKeyFile} holds it. */
  serverKey: string;
  /** The client certificate, CN=sensor-7, for clientAuth (PEM). */
  clientCert: string;
  /** The client's private key in PKCS#8 (PEM), the form Deno's TLS accepts. */
  clientKey: string;
}

/** Whether an `openssl` command can be run here (for a test's `ignore`). */
export function hasOpenssl(): boolean {
  try {
    return new Deno.Command("openssl", { args: ["version"], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

async function openssl(dir: string, ...args: string[]): Promise<void> {
  const { success, stderr } = await new Deno.Command("openssl", { args, cwd: dir, stdout: "null" })
    .output();
  if (!success) throw new Error(`openssl ${args.join(" ")}: ${new TextDecoder().decode(stderr)}`);
}

/** Signs `name.csr` with the CA, adding the extensions in `name.ext`, into `name.crt`. */
async function sign(dir: string, name: string, extensions: string): Promise<void> {
  await Deno.writeTextFile(`${dir}/${name}.ext`, extensions);
  await openssl(
    dir,
    "x509",
    "-req",
    "-in",
    `${name}.csr`,
    "-CA",
    "ca.crt",
    "-CAkey",
    "ca.key",
    "-CAcreateserial",
    "-days",
    "2",
    "-extfile",
    `${name}.ext`,
    "-out",
    `${name}.crt`,
  );
}

/** A fresh RSA key `name.key` and a signing request `name.csr` for the subject `subject`. */
async function request(dir: string, name: string, subject: string): Promise<void> {
  await openssl(
    dir,
    "req",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-subj",
    subject,
    "-keyout",
    `${name}.key`,
    "-out",
    `${name}.csr`,
  );
}

/**
 * Makes a private CA, a server certificate it signed for IP:127.0.0.1 and
 * DNS:localhost, and a client certificate (with a PKCS#8 key) in a new
 * temporary directory named with `prefix`. Each call makes new keys; call
 * {@link removePki} when done. Throws if openssl is missing or fails, leaving
 * nothing behind.
 */
export async function makePki(prefix = "mqtt_pki_"): Promise<Pki> {
  const dir = await Deno.makeTempDir({ prefix });
  try {
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
    await request(dir, "server", "/CN=localhost");
    await sign(
      dir,
      "server",
      "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    );
    await request(dir, "client", "/CN=sensor-7");
    await sign(
      dir,
      "client",
      "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n",
    );
    // PKCS#8 for the client key, which Deno's TLS accepts.
    await openssl(dir, "pkcs8", "-topk8", "-nocrypt", "-in", "client.key", "-out", "client.pk8");
    return {
      dir,
      caFile: `${dir}/ca.crt`,
      caCert: await Deno.readTextFile(`${dir}/ca.crt`),
      serverCertFile: `${dir}/server.crt`,
      serverKeyFile: `${dir}/server.key`,
      serverCert: await Deno.readTextFile(`${dir}/server.crt`),
      serverKey: await Deno.readTextFile(`${dir}/server.key`),
      clientCert: await Deno.readTextFile(`${dir}/client.crt`),
      clientKey: await Deno.readTextFile(`${dir}/client.pk8`),
    };
  } catch (error) {
    await Deno.remove(dir, { recursive: true });
    throw error;
  }
}

/** Deletes everything {@link makePki} made. Synchronous, so an `unload` handler can call it. */
export function removePki(pki: Pki): void {
  Deno.removeSync(pki.dir, { recursive: true });
}
