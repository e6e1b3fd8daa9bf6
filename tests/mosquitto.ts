/**
 * Runs a private mosquitto for tests: its own temp dir, config and free port on
 * 127.0.0.1, started and stopped by its process handle (never by name).
 *
 * Set `MQTT_MOSQUITTO_BIN` to the broker's path to use another binary (or a
 * missing one, to see the tests skip). Set `MQTT_REQUIRE_BROKER=1` (as CI does)
 * to make a missing broker fail the tests instead of skipping them.
 *
 * @module
 */

/** How to configure the broker. */
export interface MosquittoOptions {
  /** Keep a persistence database in the temp dir; it survives `restart()`. Default false. */
  persistence?: boolean;
  /** Accounts (user name to password). When given, anonymous clients are refused. */
  users?: Record<string, string>;
  /**
   * Lines appended to the plain listener's config (e.g. `max_inflight_messages 5`,
   * or `log_type all` to log every packet; the default logs connections and errors).
   */
  extraConfig?: string;
  /** An extra TLS listener with certificates the test made. */
  tls?: {
    certFile: string;
    keyFile: string;
    caFile?: string;
    requireCertificate?: boolean;
    port?: number;
  };
}

/** A running (or stopped) private mosquitto. */
export interface Mosquitto extends AsyncDisposable {
  /** Where it listens: always the loopback address. */
  readonly hostname: "127.0.0.1";
  /** The plain MQTT port; the same across `restart()`. */
  readonly port: number;
  /** The TLS port when `tls` was given. */
  readonly tlsPort?: number;
  /** The broker's process id while it runs (the benchmark reads its CPU time). */
  readonly pid: number | undefined;
  /** The temp dir holding config, password file and persistence database. */
  readonly dir: string;
  /** SIGTERM, wait for exit (SIGKILL after 3 s). Keeps the dir. */
  stop(): Promise<void>;
  /** Stop, then start again on the same port(s) and dir; resolves once it accepts connections. */
  restart(): Promise<void>;
  /** Stop and remove the temp dir. */
  close(): Promise<void>;
  /** Everything mosquitto logged so far, across restarts. */
  log(): Promise<string>;
}

/** The message a missing broker produces (as a skip notice or, in CI, a failure). */
export const MOSQUITTO_MISSING =
  "mosquitto not found: install it (apt-get install -y mosquitto) to run the real-broker tests";

const HOSTNAME = "127.0.0.1";
const READY_TIMEOUT_MS = 10_000;
const KILL_AFTER_MS = 3_000;
const BIND_ATTEMPTS = 5;
const LOG_LIMIT = 1 << 20;

function env(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined; // no --allow-env: behave as if unset
  }
}

function isFile(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

/** Finds an executable by name on PATH, then in the given fallback dirs. */
function findProgram(name: string, fallbackDirs: string[]): string | undefined {
  const dirs = (env("PATH") ?? "").split(":").filter((d) => d !== "");
  for (const dir of [...dirs, ...fallbackDirs]) {
    const candidate = `${dir}/${name}`;
    if (isFile(candidate)) return candidate;
  }
  return undefined;
}

function mosquittoPath(): string | undefined {
  const override = env("MQTT_MOSQUITTO_BIN");
  if (override !== undefined && override !== "") return isFile(override) ? override : undefined;
  return findProgram("mosquitto", ["/usr/sbin", "/usr/local/sbin", "/usr/bin"]);
}

/**
 * Whether a mosquitto binary is available: `MQTT_MOSQUITTO_BIN` if set,
 * else `mosquitto` on PATH or in /usr/sbin.
 */
export function mosquittoAvailable(): boolean {
  return mosquittoPath() !== undefined;
}

/** A port nobody listens on right now (it may be taken again before we use it). */
function freePort(): number {
  const listener = Deno.listen({ hostname: HOSTNAME, port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function canConnect(port: number): Promise<boolean> {
  try {
    const conn = await Deno.connect({ hostname: HOSTNAME, port });
    conn.close();
    return true;
  } catch {
    return false;
  }
}

async function writePasswordFile(path: string, users: Record<string, string>): Promise<void> {
  const mosquitto = mosquittoPath();
  const dirs = mosquitto ? [mosquitto.slice(0, mosquitto.lastIndexOf("/"))] : [];
  const passwd = findProgram("mosquitto_passwd", [...dirs, "/usr/bin", "/usr/sbin"]);
  if (passwd === undefined) throw new Error("mosquitto_passwd not found");
  let first = true;
  for (const [user, password] of Object.entries(users)) {
    // -c creates (truncates) the file: only for the first user.
    const args = first ? ["-b", "-c", path, user, password] : ["-b", path, user, password];
    first = false;
    const out = await new Deno.Command(passwd, { args, stdout: "piped", stderr: "piped" }).output();
    if (!out.success) {
      const text = new TextDecoder().decode(out.stderr) + new TextDecoder().decode(out.stdout);
      throw new Error(`mosquitto_passwd failed for user ${JSON.stringify(user)}: ${text}`);
    }
  }
}

function configText(
  dir: string,
  port: number,
  tlsPort: number | undefined,
  options: MosquittoOptions,
): string {
  const lines = [
    // mosquitto started as root drops to user "mosquitto", which cannot read our
    // 0700 temp dir; staying root keeps the config, password file and database
    // usable. When not started as root, this line changes nothing.
    "user root",
    "log_dest stderr",
    "log_timestamp true",
    `persistence ${options.persistence ? "true" : "false"}`,
  ];
  if (options.persistence) lines.push(`persistence_location ${dir}/`);
  if (options.users) {
    lines.push("allow_anonymous false", `password_file ${dir}/passwd`);
  } else {
    lines.push("allow_anonymous true");
  }
  lines.push(`listener ${port} ${HOSTNAME}`);
  if (options.extraConfig) lines.push(options.extraConfig);
  const tls = options.tls;
  if (tls && tlsPort !== undefined) {
    lines.push(
      `listener ${tlsPort} ${HOSTNAME}`,
      `certfile ${tls.certFile}`,
      `keyfile ${tls.keyFile}`,
    );
    if (tls.caFile) lines.push(`cafile ${tls.caFile}`);
    lines.push(`require_certificate ${tls.requireCertificate ? "true" : "false"}`);
  }
  return lines.join("\n") + "\n";
}

class BindError extends Error {}

class MosquittoProcess implements Mosquitto {
  readonly hostname: "127.0.0.1" = HOSTNAME;
  #port: number;
  #tlsPort: number | undefined;
  readonly dir: string;
  readonly #options: MosquittoOptions;
  readonly #binary: string;
  #child: Deno.ChildProcess | undefined;
  #exited: Promise<Deno.CommandStatus> | undefined;
  #hasExited = false;
  #logDone: Promise<void> | undefined;
  #log = "";
  #closed = false;

  constructor(binary: string, dir: string, options: MosquittoOptions) {
    this.#binary = binary;
    this.dir = dir;
    this.#options = options;
    this.#port = 0;
    this.#tlsPort = undefined;
  }

  get port(): number {
    return this.#port;
  }

  get tlsPort(): number | undefined {
    return this.#tlsPort;
  }

  get pid(): number | undefined {
    return this.#child?.pid;
  }

  /** Picks free ports and starts; retries with new ports when a port was taken meanwhile. */
  async startFresh(): Promise<void> {
    for (let attempt = 1;; attempt++) {
      this.#port = freePort();
      if (this.#options.tls) this.#tlsPort = this.#options.tls.port ?? freePort();
      try {
        await this.#start();
        return;
      } catch (error) {
        if (!(error instanceof BindError) || attempt >= BIND_ATTEMPTS) throw error;
      }
    }
  }

  async #start(): Promise<void> {
    if (this.#closed) throw new Error("mosquitto handle is closed");
    const configPath = `${this.dir}/mosquitto.conf`;
    await Deno.writeTextFile(
      configPath,
      configText(this.dir, this.#port, this.#tlsPort, this.#options),
    );
    const child = new Deno.Command(this.#binary, {
      args: ["-c", configPath],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    this.#child = child;
    this.#hasExited = false;
    this.#exited = child.status.then((status) => {
      this.#hasExited = true;
      return status;
    });
    this.#logDone = this.#collectLog(child.stderr);

    const deadline = Date.now() + READY_TIMEOUT_MS;
    const ports = [this.#port, ...(this.#tlsPort !== undefined ? [this.#tlsPort] : [])];
    let pending = ports;
    while (pending.length > 0) {
      if (this.#hasExited) {
        const status = await this.#exited;
        await this.#logDone;
        this.#child = undefined;
        const message = `mosquitto exited with code ${status.code} while starting:\n${this.#log}`;
        throw /address already in use/i.test(this.#log)
          ? new BindError(message)
          : new Error(message);
      }
      if (Date.now() > deadline) {
        await this.stop();
        throw new Error(
          `mosquitto did not accept connections on ${pending.join(", ")} within ` +
            `${READY_TIMEOUT_MS} ms:\n${this.#log}`,
        );
      }
      const still: number[] = [];
      for (const port of pending) if (!(await canConnect(port))) still.push(port);
      pending = still;
      if (pending.length > 0) await delay(20);
    }
  }

  async #collectLog(stream: ReadableStream<Uint8Array>): Promise<void> {
    const decoder = new TextDecoder();
    try {
      for await (const chunk of stream) {
        this.#log += decoder.decode(chunk, { stream: true });
        // Bound memory for long runs (benchmarks): keep the most recent part.
        if (this.#log.length > LOG_LIMIT) this.#log = this.#log.slice(-LOG_LIMIT / 2);
      }
    } catch {
      // The stream ends with the process; nothing to recover.
    }
    this.#log += decoder.decode();
  }

  async stop(): Promise<void> {
    const child = this.#child;
    if (child === undefined) return;
    if (!this.#hasExited) {
      try {
        child.kill("SIGTERM");
      } catch {
        // Already gone.
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      const killed = new Promise<"timeout">((resolve) => {
        timer = setTimeout(() => resolve("timeout"), KILL_AFTER_MS);
      });
      const result = await Promise.race([this.#exited, killed]);
      clearTimeout(timer);
      if (result === "timeout") {
        try {
          child.kill("SIGKILL");
        } catch {
          // Exited in between.
        }
      }
    }
    await this.#exited;
    await this.#logDone;
    this.#child = undefined;
  }

  async restart(): Promise<void> {
    await this.stop();
    // Same ports: mosquitto uses SO_REUSEADDR, so a just-closed port is free again;
    // retry briefly in case the kernel has not released it yet.
    for (let attempt = 1;; attempt++) {
      try {
        await this.#start();
        return;
      } catch (error) {
        if (!(error instanceof BindError) || attempt >= BIND_ATTEMPTS) throw error;
        await delay(100);
      }
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    await this.stop();
    this.#closed = true;
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }

  log(): Promise<string> {
    return Promise.resolve(this.#log);
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/**
 * Starts a private mosquitto on 127.0.0.1 on a free port, with its config in a
 * new temp dir, and resolves once it accepts TCP connections (10 s at most).
 * Close it with `close()` or `await using`.
 */
export async function startMosquitto(options: MosquittoOptions = {}): Promise<Mosquitto> {
  const binary = mosquittoPath();
  if (binary === undefined) throw new Error(MOSQUITTO_MISSING);
  const dir = await Deno.makeTempDir({ prefix: "mqtt_async_mosquitto_" });
  try {
    if (options.users) await writePasswordFile(`${dir}/passwd`, options.users);
    const broker = new MosquittoProcess(binary, dir, options);
    await broker.startFresh();
    return broker;
  } catch (error) {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    throw error;
  }
}

let warnedMissing = false;

/**
 * Registers a `Deno.test` that gets a fresh private mosquitto and closes it
 * afterwards. Without mosquitto the test is ignored (with a notice), unless
 * `MQTT_REQUIRE_BROKER=1`, in which case it fails saying mosquitto is missing.
 * On failure the broker's log is attached to the error message.
 */
export function brokerTest(
  name: string,
  fn: (broker: Mosquitto) => Promise<void>,
  options: MosquittoOptions & { sanitizeOps?: boolean; sanitizeResources?: boolean } = {},
): void {
  const { sanitizeOps, sanitizeResources, ...brokerOptions } = options;
  const available = mosquittoAvailable();
  const required = env("MQTT_REQUIRE_BROKER") === "1";
  if (!available && !required && !warnedMissing) {
    warnedMissing = true;
    console.warn(`${MOSQUITTO_MISSING} (set MQTT_REQUIRE_BROKER=1 to fail instead of skipping)`);
  }
  Deno.test({
    name,
    ignore: !available && !required,
    sanitizeOps,
    sanitizeResources,
    async fn() {
      if (!available) throw new Error(MOSQUITTO_MISSING);
      const broker = await startMosquitto(brokerOptions);
      try {
        await fn(broker);
      } catch (error) {
        if (error instanceof Error) {
          const tail = (await broker.log()).trimEnd().split("\n").slice(-30).join("\n");
          error.message += `\n--- mosquitto log (last lines) ---\n${tail}`;
        }
        throw error;
      } finally {
        await broker.close();
      }
    },
  });
}
