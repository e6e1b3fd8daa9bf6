/**
 * The web example's server: serves the page (`index.html`, `app.js`), the
 * browser bundle of the library, and bridges WebSocket `/mqtt` to a broker's
 * plain TCP port, so the page talks MQTT to its own origin.
 *
 * ```sh
 * deno bundle --platform browser mod.ts -o dist/mqtt_async.js
 * deno run --allow-net --allow-read examples/web/server.ts --broker 127.0.0.1:1883 --port 8080
 * # then open http://127.0.0.1:8080/
 * ```
 *
 * Flags: `--broker host:port` (default 127.0.0.1:1883), `--hostname`
 * (default 127.0.0.1), `--port` (default 8080, 0 for a free one), `--bundle`
 * (default `dist/mqtt_async.js` of the repository).
 *
 * @module
 */

import { intFlag, parseFlags, parseServer, usageError } from "../_args.ts";
import { WebSocketBridge } from "./_bridge.ts";

const USAGE = "usage: deno run --allow-net --allow-read examples/web/server.ts " +
  "[--broker host:port] [--hostname 127.0.0.1] [--port 8080] [--bundle dist/mqtt_async.js]";

/** The bundle the server serves unless told otherwise: `dist/mqtt_async.js` of the repository. */
export const DEFAULT_BUNDLE: URL = new URL("../../dist/mqtt_async.js", import.meta.url);

/** Settings of {@linkcode startWebServer}. */
export interface WebServerOptions {
  /** Where to listen. Default 127.0.0.1. */
  hostname?: string;
  /** Port to listen on; 0 picks a free one. Default 8080. */
  port?: number;
  /** The broker's host. Default 127.0.0.1. */
  brokerHostname?: string;
  /** The broker's plain MQTT port. Default 1883. */
  brokerPort?: number;
  /** The library bundle to serve as `/mqtt_async.js`. Default {@linkcode DEFAULT_BUNDLE}. */
  bundle?: string | URL;
}

/** A running web example server. */
export interface WebServer extends AsyncDisposable {
  /** The page's address, e.g. `http://127.0.0.1:8080/`. */
  readonly url: string;
  /** The port it listens on. */
  readonly port: number;
  /** The WebSocket bridge behind `/mqtt` (tests cut its connections). */
  readonly bridge: WebSocketBridge;
  /** Ends every bridged connection and stops serving. */
  close(): Promise<void>;
}

const PAGE_FILES: Record<string, { file: URL; type: string }> = {
  "/": { file: new URL("./index.html", import.meta.url), type: "text/html; charset=utf-8" },
  "/index.html": {
    file: new URL("./index.html", import.meta.url),
    type: "text/html; charset=utf-8",
  },
  "/app.js": { file: new URL("./app.js", import.meta.url), type: "text/javascript; charset=utf-8" },
};

async function fileResponse(file: string | URL, type: string): Promise<Response> {
  try {
    const body = await Deno.readFile(file);
    return new Response(body, { headers: { "content-type": type, "cache-control": "no-store" } });
  } catch (error) {
    const missing = error instanceof Deno.errors.NotFound;
    const text = missing ? `${file} not found` : `cannot read ${file}`;
    return new Response(`${text}\n`, { status: missing ? 404 : 500 });
  }
}

/**
 * Serves the web example and bridges `/mqtt` to the broker; resolves once
 * it listens.
 *
 * @example
 * ```ts ignore
 * import { startWebServer } from "./examples/web/server.ts";
 * await using server = await startWebServer({ port: 0, brokerPort: 1883 });
 * console.log(`open ${server.url}`);
 * ```
 */
export async function startWebServer(options: WebServerOptions = {}): Promise<WebServer> {
  const bridge = new WebSocketBridge({
    brokerHostname: options.brokerHostname ?? "127.0.0.1",
    brokerPort: options.brokerPort ?? 1883,
  });
  const bundle = options.bundle ?? DEFAULT_BUNDLE;
  const listening = Promise.withResolvers<Deno.NetAddr>();
  const server = Deno.serve({
    hostname: options.hostname ?? "127.0.0.1",
    port: options.port ?? 8080,
    onListen: (addr) => listening.resolve(addr),
  }, (request) => {
    const bridged = bridge.handle(request);
    if (bridged) return bridged;
    const { pathname } = new URL(request.url);
    if (request.method !== "GET" && request.method !== "HEAD") {
      return new Response("method not allowed\n", { status: 405 });
    }
    const page = PAGE_FILES[pathname];
    if (page) return fileResponse(page.file, page.type);
    if (pathname === "/mqtt_async.js") {
      return fileResponse(bundle, "text/javascript; charset=utf-8");
    }
    if (pathname === "/favicon.ico") return new Response(null, { status: 204 });
    return new Response("not found\n", { status: 404 });
  });
  const addr = await listening.promise;
  const host = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
  let closed: Promise<void> | undefined;
  const close = () =>
    closed ??= (async () => {
      await bridge.close();
      await server.shutdown();
    })();
  return {
    url: `http://${host}:${addr.port}/`,
    port: addr.port,
    bridge,
    close,
    [Symbol.asyncDispose]: close,
  };
}

async function main(): Promise<void> {
  const flags = parseFlags(
    Deno.args,
    { values: ["--broker", "--hostname", "--port", "--bundle"] },
    USAGE,
  );
  const broker = parseServer(flags.get("--broker") ?? "127.0.0.1:1883", USAGE);
  const port = intFlag(flags, "--port", 8080, 0, 65_535, USAGE);
  const bundleFlag = flags.get("--bundle");
  const bundle = bundleFlag ?? DEFAULT_BUNDLE;
  try {
    await Deno.stat(bundle);
  } catch {
    usageError(
      `the library bundle ${bundleFlag ?? "dist/mqtt_async.js"} is missing: build it with ` +
        "`deno bundle --platform browser mod.ts -o dist/mqtt_async.js`",
      USAGE,
    );
  }
  const server = await startWebServer({
    hostname: flags.get("--hostname") ?? "127.0.0.1",
    port,
    brokerHostname: broker.hostname,
    brokerPort: broker.port ?? 1883,
    bundle,
  });
  console.log(
    `web example on ${server.url} (MQTT over WebSocket at /mqtt, bridged to ` +
      `${broker.hostname}:${broker.port ?? 1883}); Ctrl-C stops it`,
  );
  const stop = () => {
    server.close().then(() => Deno.exit(0));
  };
  Deno.addSignalListener("SIGINT", stop);
}

if (import.meta.main) await main();
