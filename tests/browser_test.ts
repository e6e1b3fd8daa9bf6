/**
 * The web example in a real headless Chromium, driven over the Chrome
 * DevTools Protocol with Deno's own WebSocket: the library's browser bundle
 * loads without errors, the page connects over MQTT over WebSocket (through
 * the example server's bridge to a real mosquitto), shows a message the test
 * publishes, publishes from its publish box to the test's subscriber, and
 * after the bridge cuts its WebSocket reconnects and still receives.
 *
 * Chromium is `/usr/bin/chromium` (or `MQTT_CHROMIUM_BIN`). Without it the
 * test is skipped with a notice, unless `MQTT_REQUIRE_BROWSER=1`, which makes
 * a missing browser fail it (as `MQTT_REQUIRE_BROKER=1` does for mosquitto).
 *
 * Run: deno test --allow-net --allow-env --allow-read --allow-write --allow-run
 * --allow-sys=hostname tests/browser_test.ts
 */

import assert from "node:assert/strict";
import { startWebServer, type WebServer } from "../examples/web/server.ts";
import { closeAll, quickClient, type TestClient, text, Watch, within } from "./helpers.ts";
import {
  type Mosquitto,
  MOSQUITTO_MISSING,
  mosquittoAvailable,
  startMosquitto,
} from "./mosquitto.ts";

const REPO = new URL("..", import.meta.url);
const STEP_MS = 10_000;

function env(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined;
  }
}

function isFile(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

const CHROMIUM = env("MQTT_CHROMIUM_BIN") || "/usr/bin/chromium";
const CHROMIUM_MISSING = `Chromium not found at ${CHROMIUM}: install it (apt-get install -y ` +
  "chromium) or set MQTT_CHROMIUM_BIN to run the browser test";
const browserAvailable = isFile(CHROMIUM);
const browserRequired = env("MQTT_REQUIRE_BROWSER") === "1";
const brokerAvailable = mosquittoAvailable();
const brokerRequired = env("MQTT_REQUIRE_BROKER") === "1";
const skip = (!browserAvailable && !browserRequired) || (!brokerAvailable && !brokerRequired);
if (!browserAvailable && !browserRequired) {
  console.warn(`${CHROMIUM_MISSING} (set MQTT_REQUIRE_BROWSER=1 to fail instead of skipping)`);
} else if (!brokerAvailable && !brokerRequired) {
  console.warn(`${MOSQUITTO_MISSING} (set MQTT_REQUIRE_BROKER=1 to fail instead of skipping)`);
}

// ---------------------------------------------------------------------------
// Chromium and the DevTools protocol.

/** A running headless Chromium with its own fresh profile. */
class Chromium {
  #exited = false;

  private constructor(
    readonly child: Deno.ChildProcess,
    readonly profile: string,
    readonly devtoolsUrl: string,
    readonly logDone: Promise<void>,
    readonly stderr: { text: string },
  ) {
    child.status.then(() => this.#exited = true);
  }

  /** The last part of what Chromium wrote on stderr. */
  get log(): string {
    return this.stderr.text;
  }

  /** Starts Chromium; resolves once its DevTools endpoint listens. */
  static async launch(): Promise<Chromium> {
    const profile = await Deno.makeTempDir({ prefix: "mqtt_async_chromium_" });
    let child: Deno.ChildProcess;
    try {
      child = new Deno.Command(CHROMIUM, {
        args: [
          "--headless",
          "--no-sandbox", // running as root
          "--disable-gpu",
          "--disable-quic",
          "--no-first-run",
          "--no-default-browser-check",
          "--disable-background-networking",
          "--disable-component-update",
          "--disable-sync",
          "--no-proxy-server",
          `--user-data-dir=${profile}`,
          "--remote-debugging-port=0",
          "about:blank",
        ],
        stdin: "null",
        stdout: "null",
        stderr: "piped",
      }).spawn();
    } catch (error) {
      await Deno.remove(profile, { recursive: true }).catch(() => {});
      throw error;
    }
    const listening = Promise.withResolvers<string>();
    const stderr = { text: "" };
    const logDone = (async () => {
      const decoder = new TextDecoder();
      try {
        for await (const chunk of child.stderr) {
          stderr.text = (stderr.text + decoder.decode(chunk, { stream: true })).slice(-64 * 1024);
          const match = /DevTools listening on (ws:\/\/\S+)/.exec(stderr.text);
          if (match) listening.resolve(match[1]);
        }
      } catch {
        // The pipe closes with the process.
      }
    })();
    // Rejecting after the endpoint was found changes nothing.
    child.status.then((status) =>
      listening.reject(new Error(`chromium exited (code ${status.code}) before DevTools listened`))
    );
    try {
      const url = await within(listening.promise, 30_000, "Chromium's DevTools endpoint");
      return new Chromium(child, profile, url, logDone, stderr);
    } catch (error) {
      try {
        child.kill("SIGKILL");
      } catch { /* exited */ }
      await child.status;
      await logDone;
      await Deno.remove(profile, { recursive: true }).catch(() => {});
      const message = error instanceof Error ? error.message : String(error);
      throw new Error(`${message}\n--- chromium stderr ---\n${stderr.text}`);
    }
  }

  /** Stops Chromium (SIGTERM, SIGKILL after 5 s) and removes its profile. */
  async close(): Promise<void> {
    if (!this.#exited) {
      try {
        this.child.kill("SIGTERM");
      } catch { /* exited meanwhile */ }
      try {
        await within(this.child.status, 5000, "Chromium to exit");
      } catch {
        try {
          this.child.kill("SIGKILL");
        } catch { /* exited meanwhile */ }
      }
    }
    await this.child.status;
    await this.logDone;
    await Deno.remove(this.profile, { recursive: true }).catch(() => {});
  }
}

interface CdpEvent {
  method: string;
  params: Record<string, unknown>;
  sessionId?: string;
}

/** A DevTools protocol client on one WebSocket (flat sessions). */
class Cdp {
  readonly #ws: WebSocket;
  readonly #pending = new Map<
    number,
    { resolve(value: Record<string, unknown>): void; reject(error: Error): void; method: string }
  >();
  readonly #listeners = new Set<(event: CdpEvent) => void>();
  readonly closed: Promise<void>;
  #nextId = 1;

  private constructor(ws: WebSocket) {
    this.#ws = ws;
    this.closed = new Promise((resolve) => {
      ws.addEventListener("close", () => {
        for (const { reject, method } of this.#pending.values()) {
          reject(new Error(`DevTools connection closed during ${method}`));
        }
        this.#pending.clear();
        resolve();
      });
    });
    ws.addEventListener("message", (event) => this.#receive(String(event.data)));
  }

  static async connect(url: string): Promise<Cdp> {
    const ws = new WebSocket(url);
    const opened = new Promise<void>((resolve, reject) => {
      ws.addEventListener("open", () => resolve(), { once: true });
      ws.addEventListener("close", () => reject(new Error(`cannot open ${url}`)), { once: true });
    });
    const cdp = new Cdp(ws);
    try {
      await within(opened, STEP_MS, "the DevTools WebSocket");
    } catch (error) {
      ws.close();
      await cdp.closed;
      throw error;
    }
    return cdp;
  }

  #receive(data: string): void {
    const message = JSON.parse(data);
    if (typeof message.id === "number") {
      const call = this.#pending.get(message.id);
      if (!call) return;
      this.#pending.delete(message.id);
      if (message.error) call.reject(new Error(`${call.method}: ${message.error.message}`));
      else call.resolve(message.result ?? {});
      return;
    }
    for (const listener of this.#listeners) listener(message as CdpEvent);
  }

  /** Listens to every event; returns the way to stop. */
  on(listener: (event: CdpEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Sends a command (to a session, when given); rejects on error or after `ms`. */
  send(
    method: string,
    params: Record<string, unknown> = {},
    sessionId?: string,
    ms = STEP_MS,
  ): Promise<Record<string, unknown>> {
    const id = this.#nextId++;
    const answer = new Promise<Record<string, unknown>>((resolve, reject) => {
      this.#pending.set(id, { resolve, reject, method });
    });
    this.#ws.send(JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) }));
    return within(answer, ms, `DevTools ${method}`).finally(() => this.#pending.delete(id));
  }

  async close(): Promise<void> {
    try {
      this.#ws.close();
    } catch { /* closed */ }
    await within(this.closed, STEP_MS, "the DevTools WebSocket to close");
  }
}

/** One page, attached, with its errors collected. */
class Page {
  readonly errors: string[] = [];
  readonly #loaded = new Watch();
  readonly #onError = new Set<() => void>();
  #loads = 0;

  private constructor(readonly cdp: Cdp, readonly sessionId: string) {
    cdp.on((event) => {
      if (event.sessionId !== sessionId) return;
      const p = event.params;
      if (event.method === "Runtime.exceptionThrown") {
        const details = p.exceptionDetails as Record<string, unknown>;
        const exception = details.exception as { description?: string } | undefined;
        this.#error(`exception: ${exception?.description ?? details.text}`);
      } else if (event.method === "Runtime.consoleAPICalled" && p.type === "error") {
        const args = (p.args as { value?: unknown; description?: string }[])
          .map((a) => a.value ?? a.description).join(" ");
        this.#error(`console.error: ${args}`);
      } else if (event.method === "Page.loadEventFired") {
        this.#loads++;
        this.#loaded.changed();
      }
    });
  }

  #error(text: string): void {
    this.errors.push(text);
    for (const notify of [...this.#onError]) notify();
  }

  /** A new tab, attached, with Runtime and Page events on. */
  static async open(cdp: Cdp): Promise<Page> {
    const { targetId } = await cdp.send("Target.createTarget", { url: "about:blank" });
    const { sessionId } = await cdp.send("Target.attachToTarget", { targetId, flatten: true });
    const page = new Page(cdp, sessionId as string);
    await page.send("Runtime.enable");
    await page.send("Page.enable");
    return page;
  }

  send(method: string, params: Record<string, unknown> = {}, ms?: number) {
    return this.cdp.send(method, params, this.sessionId, ms);
  }

  /** Navigates and resolves once the load event fired. */
  async goto(url: string): Promise<void> {
    const before = this.#loads;
    const result = await this.send("Page.navigate", { url });
    if (result.errorText) throw new Error(`cannot load ${url}: ${result.errorText}`);
    await this.#loaded.until(() => this.#loads > before, STEP_MS, () => `the load of ${url}`);
  }

  /** Evaluates `expression` (awaiting a promise); its value, or the page's exception. */
  async evaluate(expression: string, ms = STEP_MS): Promise<unknown> {
    const result = await this.send(
      "Runtime.evaluate",
      { expression, awaitPromise: true, returnByValue: true },
      ms + 2000,
    );
    const details = result.exceptionDetails as
      | { text?: string; exception?: { description?: string } }
      | undefined;
    if (details) {
      throw new Error(`in the page: ${details.exception?.description ?? details.text}`);
    }
    return (result.result as { value?: unknown }).value;
  }

  /**
   * Resolves once `condition` (a JavaScript expression) is true in the page,
   * re-checked on every DOM change; rejects after `ms` naming `what` and
   * showing the page's status line.
   */
  async until(condition: string, what: string, ms = STEP_MS): Promise<void> {
    // A page error fails the wait at once.
    let fail!: (error: Error) => void;
    const failed = new Promise<never>((_, reject) => fail = reject);
    const onError = () => fail(new Error(`the page reported an error while waiting for ${what}`));
    this.#onError.add(onError);
    if (this.errors.length > 0) onError();
    try {
      await Promise.race([this.#until(condition, what, ms), failed]);
    } catch (error) {
      if (error instanceof Error && this.errors.length > 0) {
        error.message += `\n--- page errors ---\n${this.errors.join("\n")}`;
      }
      throw error;
    } finally {
      this.#onError.delete(onError);
    }
  }

  async #until(condition: string, what: string, ms: number): Promise<void> {
    await this.evaluate(
      `new Promise((resolve, reject) => {
        const check = () => {
          if (!(${condition})) return false;
          observer.disconnect();
          clearTimeout(timer);
          resolve(true);
          return true;
        };
        const observer = new MutationObserver(check);
        const timer = setTimeout(() => {
          observer.disconnect();
          const status = document.getElementById("status");
          reject(new Error("timed out after ${ms} ms waiting for " + ${JSON.stringify(what)} +
            "; status: " + status?.textContent + " (" + status?.dataset.connections + ")"));
        }, ${ms});
        observer.observe(document, {
          subtree: true, childList: true, characterData: true, attributes: true,
        });
        check();
      })`,
      ms,
    );
  }

  assertNoErrors(): void {
    assert.deepEqual(this.errors, [], `the page reported errors:\n${this.errors.join("\n")}`);
  }
}

// ---------------------------------------------------------------------------

/** Builds the browser bundle the way the `bundle` task does, into `dir`. */
async function buildBundle(dir: string): Promise<string> {
  const out = `${dir}/mqtt_async.js`;
  const result = await new Deno.Command(Deno.execPath(), {
    args: ["bundle", "--platform", "browser", "mod.ts", "-o", out],
    cwd: REPO,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(120_000),
  }).output();
  if (!result.success) {
    const decoder = new TextDecoder();
    throw new Error(
      `deno bundle failed:\n${decoder.decode(result.stdout)}${decoder.decode(result.stderr)}`,
    );
  }
  const { size } = await Deno.stat(out);
  assert.ok(size > 10_000, `the bundle is suspiciously small (${size} bytes)`);
  return out;
}

const PAGE_CONNECTED = (n: number) =>
  `document.getElementById("status").dataset.state === "connected" && ` +
  `Number(document.getElementById("status").dataset.connections) >= ${n}`;

const PAGE_SHOWS = (payload: string) =>
  `[...document.querySelectorAll("#messages .payload")].some((e) => e.textContent.trim() === ${
    JSON.stringify(payload)
  })`;

Deno.test({
  name: "browser: the web example connects, receives, publishes and reconnects after a cut",
  ignore: skip,
  async fn() {
    if (!browserAvailable) throw new Error(CHROMIUM_MISSING);
    if (!brokerAvailable) throw new Error(MOSQUITTO_MISSING);
    const dir = await Deno.makeTempDir({ prefix: "mqtt_async_web_" });
    let broker: Mosquitto | undefined;
    let server: WebServer | undefined;
    let chromium: Chromium | undefined;
    let cdp: Cdp | undefined;
    let page: Page | undefined;
    const clients: TestClient[] = [];
    try {
      const bundle = await buildBundle(dir);
      broker = await startMosquitto();
      server = await startWebServer({
        port: 0,
        brokerHostname: broker.hostname,
        brokerPort: broker.port,
        bundle,
      });
      chromium = await Chromium.launch();
      cdp = await Cdp.connect(chromium.devtoolsUrl);
      page = await Page.open(cdp);
      await page.goto(server.url);

      // The page connects (and subscribes to demo/#).
      await page.until(PAGE_CONNECTED(1), "the page to connect");
      page.assertNoErrors();

      // A message from the test reaches the page.
      const got: string[] = [];
      const arrived = new Watch();
      const tester = quickClient(broker, {
        clientId: "browser-test",
        clean: true,
        onMessage: (topic, payload) => {
          got.push(`${topic} ${text(payload)}`);
          arrived.changed();
        },
      });
      clients.push(tester);
      await within(tester.connect(), STEP_MS, "the test client's connect()");
      await tester.subscribe("demo/from-page", 1);
      const toPage = `to the page ${crypto.randomUUID()}`;
      await tester.publish("demo/from-test", toPage, { qos: 1 });
      await page.until(PAGE_SHOWS(toPage), "the test's message in the page");

      // The publish box reaches the test's subscriber.
      const fromPage = `from the page ${crypto.randomUUID()}`;
      await page.evaluate(`(async () => {
        document.getElementById("topic").value = "demo/from-page";
        document.getElementById("payload").value = ${JSON.stringify(fromPage)};
        await mqttDemo.publishFromBox();
        return true;
      })()`);
      await arrived.until(
        () => got.includes(`demo/from-page ${fromPage}`),
        STEP_MS,
        () => `the page's message at the test (got ${JSON.stringify(got)})`,
      );

      // The bridge cuts the page's WebSocket: the page reconnects and receives again.
      const sessions = server.bridge.stats.sessions;
      server.bridge.cutAll();
      await page.until(PAGE_CONNECTED(2), "the page to reconnect after the cut");
      assert.ok(server.bridge.stats.sessions > sessions, "a new WebSocket session");
      const afterCut = `after the cut ${crypto.randomUUID()}`;
      await tester.publish("demo/from-test", afterCut, { qos: 1 });
      await page.until(PAGE_SHOWS(afterCut), "a message after the reconnect");
      page.assertNoErrors();
    } catch (error) {
      if (error instanceof Error && chromium) {
        const tail = chromium.log.trimEnd().split("\n").filter((line) => !/dbus/i.test(line))
          .slice(-20).join("\n");
        error.message += `\n--- chromium stderr (last lines) ---\n${tail}`;
      }
      throw error;
    } finally {
      await closeAll(clients);
      await cdp?.close().catch(() => {});
      await chromium?.close();
      await server?.close();
      await broker?.close();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
