/**
 * Runs the Eclipse Paho MQTT test broker (vendored under
 * `tests/vendor/paho_testing/`, see its README) as a conformance checker: a
 * private broker on 127.0.0.1 and a free port, serving MQTT 3.1.1 and 5 on the
 * same port, with every packet logged (DEBUG), started and stopped by its
 * process handle (never by name).
 *
 * The broker is strict: it asserts on malformed or illegal client packets and
 * logs why. {@link parseBrokerLog} sorts its log into client protocol
 * violations and other notes; {@link PahoBroker.violations} applies it to the
 * running broker.
 *
 * The vendored files are unmodified. The broker is started through a small
 * launcher (the `LAUNCHER` below, passed to `python3 -c`) that runs
 * `startbroker.py` after two changes at run time:
 *
 * - upstream logs each `[MQTT-x.y.z-n]` statement only the first time it
 *   occurs (its coverage filter), which would hide a violation whose tag was
 *   already logged, e.g. a QoS 2 PUBLISH re-sent with DUP 0 after a correct
 *   re-send with DUP 1 (both `[MQTT-3.3.1-2]`): the launcher keeps the
 *   coverage bookkeeping and lets every record through;
 * - the MQTT 5 broker sends no topic aliases unless
 *   {@link PahoBrokerOptions.serverTopicAliases} asks for them (upstream
 *   defects, see there).
 *
 * The broker is started with `python3 -B` (no `__pycache__` in the vendored
 * tree) and its config file in a temp dir (`-p/--port` is parsed but ignored
 * upstream; a `listener <port> 127.0.0.1` line is what sets the port). It
 * stops on SIGTERM (its handler shuts the listeners and brokers down), and
 * exits by itself when the test process is gone.
 *
 * Needs `python3` (3.6 or later; standard library only). Set `MQTT_PYTHON_BIN`
 * to use another interpreter (or a missing one, to see the tests skip). Set
 * `MQTT_REQUIRE_BROKER=1` to make a missing interpreter fail the tests instead.
 *
 * @module
 */

/** How to configure the broker. */
export interface PahoBrokerOptions {
  /**
   * Lines added to the broker's config file before the listener, e.g.
   * `receive_maximum 10`, `topic_alias_maximum 0`, `maximum_packet_size 1024`.
   * The defaults are the broker's own: MQTT 5 Receive Maximum 2, Topic Alias
   * Maximum 2, Maximum Packet Size 256 (strict limits a client must honour).
   */
  extraConfig?: string;
  /**
   * Let the broker send topic aliases to MQTT 5 clients that accept them.
   * Default false, because upstream gets them wrong in two ways: it re-sends
   * a session's stored PUBLISH on a new connection with an alias set on the
   * old one (a correct client refuses it, MQTT-3.3.2-7: mappings do not carry
   * over to another connection, and reconnects forever), and it crashes
   * publishing a will to such a client (IndexError in `publishArrived`). So
   * by default the launcher removes the Topic Alias Maximum from CONNECT
   * before the broker acts on it (its DEBUG line still shows it).
   */
  serverTopicAliases?: boolean;
}

/** One line (or block) of the broker's log that matters to a conformance check. */
export interface BrokerFinding {
  /** The log text: one line, or an ERROR line with its traceback, or a traceback. */
  text: string;
  /** Why it was classified so. */
  reason: string;
}

/** The broker's log, sorted. */
export interface BrokerReport {
  /** Client protocol violations the broker detected. */
  violations: BrokerFinding[];
  /**
   * Errors and events that are not client violations: a connection closed
   * without DISCONNECT, the broker failing to write to a closed socket, a
   * PUBREL legitimately re-sent after a reconnect, anything after shutdown.
   */
  notes: BrokerFinding[];
}

/** A running (or stopped) private Paho test broker. */
export interface PahoBroker extends AsyncDisposable {
  /** Where it listens: always the loopback address. */
  readonly hostname: "127.0.0.1";
  /** Its port, for MQTT 3.1.1 and MQTT 5 alike; the same across `restart()`. */
  readonly port: number;
  /** The broker's process id while it runs. */
  readonly pid: number | undefined;
  /** Everything the broker logged so far (stderr: its logger and tracebacks), across restarts. */
  log(): string;
  /** What it printed on stdout (upstream prints a few lines at shutdown). */
  stdout(): string;
  /** The log sorted into violations and notes ({@link parseBrokerLog}). */
  report(): BrokerReport;
  /** The log entries that show a client protocol violation; empty when the client behaved. */
  violations(): string[];
  /** How many complete log lines match `pattern` so far. */
  countLog(pattern: RegExp): number;
  /**
   * Resolves with the number of log lines matching `pattern` once it reaches
   * `count` (default 1); rejects after `ms`, or when the broker exits first.
   * Event-driven: checked whenever the broker writes to its log.
   */
  waitForLog(pattern: RegExp, ms: number, count?: number): Promise<number>;
  /** SIGTERM, wait for exit (SIGKILL after 3 s). Keeps the temp dir. */
  stop(): Promise<void>;
  /**
   * Stop, then start again on the same port; resolves once it accepts
   * connections. The broker keeps no state across a restart (no persistence).
   */
  restart(): Promise<void>;
  /** Stop and remove the temp dir. */
  close(): Promise<void>;
}

/** The message a missing interpreter produces (as a skip notice or, with MQTT_REQUIRE_BROKER=1, a failure). */
export const PAHO_MISSING =
  "python3 not found: install it (apt-get install -y python3) to run the Paho conformance tests";

const HOSTNAME = "127.0.0.1";
const READY_TIMEOUT_MS = 15_000;
const KILL_AFTER_MS = 3_000;
const BIND_ATTEMPTS = 5;
const PROBE_CLIENT_ID = "paho-broker-probe";

const VENDOR_DIR = decodeURIComponent(
  new URL("./vendor/paho_testing/interoperability", import.meta.url).pathname,
);
const START_SCRIPT = `${VENDOR_DIR}/startbroker.py`;

/**
 * Runs the vendored `startbroker.py` unmodified, after two changes at run
 * time: the coverage filter's deduplication is switched off (see the module
 * doc) and, unless asked for, the MQTT 5 broker sends no topic aliases (see
 * {@link PahoBrokerOptions.serverTopicAliases}). It also exits when its stdin
 * closes, so a killed test run leaves no broker behind. argv: vendor dir,
 * script, config file, "1" to allow server topic aliases.
 */
const LAUNCHER = `
import os, runpy, sys, threading
vendor, script, config, server_topic_aliases = sys.argv[1:5]
sys.path.insert(0, vendor)

def exit_with_parent():
  sys.stdin.buffer.read()  # EOF: the test process is gone (or done); never outlive it
  os._exit(3)
threading.Thread(target=exit_with_parent, daemon=True).start()

import mqtt.brokers.coverage as coverage
first_only = coverage.Filters.filter
def every_record(self, record):
  first_only(self, record)  # keep the coverage bookkeeping
  return True               # but log every occurrence, not only the first per tag
coverage.Filters.filter = every_record

if server_topic_aliases != "1":
  from mqtt.brokers.V5.MQTTBrokers import MQTTBrokers as V5Brokers
  upstream_connect = V5Brokers.connect
  def connect_without_server_topic_aliases(self, sock, packet):
    # As if the client had sent no Topic Alias Maximum: the broker sends no topic aliases.
    if hasattr(packet.properties, "TopicAliasMaximum"):
      delattr(packet.properties, "TopicAliasMaximum")
    return upstream_connect(self, sock, packet)
  V5Brokers.connect = connect_without_server_topic_aliases

sys.argv = [script, "-c", config]
runpy.run_path(script, run_name="__main__")
`;

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

function pythonPath(): string | undefined {
  const override = env("MQTT_PYTHON_BIN");
  if (override !== undefined && override !== "") return isFile(override) ? override : undefined;
  const dirs = (env("PATH") ?? "").split(":").filter((d) => d !== "");
  for (const dir of [...dirs, "/usr/bin", "/usr/local/bin"]) {
    if (isFile(`${dir}/python3`)) return `${dir}/python3`;
  }
  return undefined;
}

/**
 * Whether the broker can run: a `python3` (`MQTT_PYTHON_BIN` if set, else on
 * PATH) and the vendored broker.
 */
export function pahoAvailable(): boolean {
  return pythonPath() !== undefined && isFile(START_SCRIPT);
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

async function readFully(conn: Deno.Conn, n: number): Promise<Uint8Array> {
  const out = new Uint8Array(n);
  let got = 0;
  while (got < n) {
    const read = await conn.read(out.subarray(got));
    if (read === null) throw new Error(`connection closed after ${got} of ${n} bytes`);
    got += read;
  }
  return out;
}

/**
 * Readiness probe: a complete, legal MQTT 3.1.1 session (CONNECT, CONNACK,
 * DISCONNECT), so the probe itself never shows up as a finding.
 */
async function probe(port: number): Promise<boolean> {
  let conn: Deno.Conn;
  try {
    conn = await Deno.connect({ hostname: HOSTNAME, port });
  } catch {
    return false;
  }
  const timer = setTimeout(() => conn.close(), 2000);
  try {
    const id = new TextEncoder().encode(PROBE_CLIENT_ID);
    const connect = new Uint8Array([
      0x10,
      12 + id.length,
      0,
      4,
      ...new TextEncoder().encode("MQTT"),
      4, // protocol level 3.1.1
      0x02, // clean session
      0,
      0, // keepalive off
      0,
      id.length,
      ...id,
    ]);
    await conn.write(connect);
    const connack = await readFully(conn, 4);
    if (connack[0] !== 0x20 || connack[3] !== 0) return false;
    await conn.write(new Uint8Array([0xe0, 0]));
    return true;
  } catch {
    return false;
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch {
      // Closed by the timer.
    }
  }
}

// ---- the log parser ---------------------------------------------------------------

const RECORD = /^(DEBUG|INFO|WARNING|ERROR|CRITICAL) \d{8} \d{6} ?(.*)$/;
const TRACEBACK_START = "Traceback (most recent call last):";
const CHAINED =
  /^(During handling of the above exception|The above exception was the direct cause)/;
/** DISCONNECT reasons the broker sends that do not blame the client. */
const BLAMELESS_DISCONNECTS = new Set([
  "Normal disconnection",
  "Session taken over",
  "Server shutting down",
]);

interface Entry {
  /** The level of a logger record, or "TRACEBACK" for a bare traceback block. */
  level: string;
  message: string;
  /** Record line plus any continuation lines (a traceback after logger.exception). */
  text: string;
}

/** Splits the log into records (with their continuation lines) and bare tracebacks. */
function entries(log: string): Entry[] {
  const out: Entry[] = [];
  const lines = log.split("\n");
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    const record = RECORD.exec(line);
    if (record) {
      let text = line;
      i++;
      // logger.exception: an ERROR record followed by its traceback. (A traceback after
      // another record is a separate traceback.print_exc().)
      if (record[1] === "ERROR" && lines[i] === TRACEBACK_START) {
        const block: string[] = [];
        const end = takeTraceback(lines, i, block);
        if (!isSendFailure(block.join("\n"))) {
          text += "\n" + block.join("\n");
          i = end;
        }
      }
      out.push({ level: record[1], message: record[2], text });
    } else if (line === TRACEBACK_START) {
      const block: string[] = [];
      i = takeTraceback(lines, i, block);
      out.push({
        level: "TRACEBACK",
        message: block[block.length - 1] ?? "",
        text: block.join("\n"),
      });
    } else {
      if (line.trim() !== "") out.push({ level: "OTHER", message: line, text: line });
      i++;
    }
  }
  return out;
}

/** A traceback from the broker writing to a socket that is already closed. */
function isSendFailure(traceback: string): boolean {
  return /\bin respond\b/.test(traceback) &&
    /^(OSError|BrokenPipeError|ConnectionError|Connection\w+Error)\b/m.test(traceback);
}

/** Appends the traceback starting at `lines[i]` to `block`; returns the index after it. */
function takeTraceback(lines: string[], i: number, block: string[]): number {
  while (i < lines.length) {
    const line = lines[i];
    if (RECORD.test(line)) break;
    block.push(line);
    i++;
    const isFrameOrHeader = line === TRACEBACK_START || line.startsWith(" ") || line === "";
    if (!isFrameOrHeader) {
      // The exception line; a chained exception continues after a blank line.
      const next = lines.slice(i, i + 2).find((l) => l !== "");
      if (next === undefined || !CHAINED.test(next)) break;
    }
  }
  return i;
}

/**
 * Sorts the Paho broker's log (its stderr, run at DEBUG) into client protocol
 * violations and notes. What counts as a violation:
 *
 * - every ERROR record: the broker's assertions on decoding a client packet
 *   (e.g. `[MQTT-2.1.2-1] QoS must be 1 in subscribe`, `QoS in Publish must be
 *   0, 1, or 2`, `[MQTT-3.3.2-2][MQTT-4.7.1-1] wildcards not allowed in topic
 *   name`, `[MQTT-3.1.4-1] server must validate connect packet ...` with its
 *   traceback, `[MQTT-3.3.1-2] duplicate QoS 2 message id N found with DUP 0`,
 *   `Puback received for msgid N, but no message found`, and the empty ERROR
 *   of an assertion without a message), except: `[MQTT5-3.1.2-24] Packet too
 *   big to send to client` (the broker dropping its own packet) and `Pubrec
 *   received for msgid N, but no message found` when it answers a PUBREL that
 *   this client already had accepted on an earlier connection (a re-send
 *   after a reconnect, which MQTT requires);
 * - a bare traceback (`traceback.print_exc()`: MQTT 5 `MalformedPacket`),
 *   except one raised while the broker writes to a socket that is gone;
 * - a keepalive timeout: `[MQTT-3.1.2-22]` / `[MQTT5-3.1.2-22] keepalive
 *   timeout for client ...` (the client sent nothing for 1.5 keepalives);
 * - `[MQTT-3.1.3-8] Reject 0-length clientid with cleansession false`;
 * - a DISCONNECT the broker sends (MQTT 5) with a reason other than Normal
 *   disconnection, Session taken over, Server shutting down: `out: (fd)
 *   Disconnects(... ReasonCode: Packet too large` / `Malformed packet` /
 *   `Protocol error` / ...;
 * - a connection the broker closed without having read a CONNECT from it: the
 *   broker closes silently when the first packet is not a CONNECT or the
 *   protocol name and level are not MQTT 4 or 5 (e.g. `MQIsdp` 3). (A client
 *   that opens TCP and closes it without sending anything looks the same; our
 *   readiness probe sends a complete session for that reason.)
 *
 * Not violations: a packet the client sent on a connection just before it
 * dropped, read by the broker after a new connection of the same client took
 * the session over (3.1.1: `[MQTT-3.1.0-1] Connect was not first packet on
 * socket`; MQTT 5: a `KeyError` in `disconnect()` logged as
 * `WebSocketTCPHandler`), which is a race inside the broker.
 *
 * Everything after the broker was told to stop is a note.
 */
export function parseBrokerLog(log: string): BrokerReport {
  const violations: BrokerFinding[] = [];
  const notes: BrokerFinding[] = [];
  const violation = (text: string, reason: string) => violations.push({ text, reason });
  const note = (text: string, reason: string) => notes.push({ text, reason });

  // Per socket: whether a CONNECT was read, its client id, and whether the broker has handed
  // the session to a newer connection (takeover) while this one may still have packets queued.
  const sockets = new Map<
    string,
    { connected: boolean; clientId?: string; takenOver?: boolean }
  >();
  let stray: string | undefined; // a packet read on a taken-over socket, awaiting its error
  // Per client id: packet ids of QoS 2 PUBRELs accepted, with the connection they came on.
  const released = new Map<string, Map<number, number>>();
  const connectionOf = new Map<string, number>(); // client id -> connection counter
  let connections = 0;
  let lastIn: { fd: string; packet: string } | undefined;
  // A PUBREL just read; recorded as accepted unless the broker says it did not know the id.
  let pendingRel: { clientId: string; id: number; connection: number } | undefined;
  const commitRel = () => {
    if (pendingRel === undefined) return;
    const { clientId, id, connection } = pendingRel;
    const ids = released.get(clientId) ?? new Map<number, number>();
    released.set(clientId, ids);
    ids.set(id, connection);
    pendingRel = undefined;
  };
  let stopping = false;

  for (const entry of entries(log)) {
    const { level, message, text } = entry;
    if (stopping) {
      if (level === "ERROR" || level === "TRACEBACK" || level === "CRITICAL") {
        note(text, "during shutdown");
      }
      continue;
    }
    if (level === "INFO" && message.startsWith("Signal handler called with signal")) {
      stopping = true;
      continue;
    }

    const started = /^Starting communications for socket (-?\d+)/.exec(message);
    if (level === "INFO" && started) {
      sockets.set(started[1], { connected: false });
      continue;
    }
    const finished = /^Finishing communications for socket (-?\d+)/.exec(message);
    if (level === "INFO" && finished) {
      const socket = sockets.get(finished[1]);
      if (socket !== undefined && !socket.connected) {
        violation(
          text,
          "the broker closed the connection without reading a CONNECT: the first packet was " +
            "not a CONNECT, or the protocol name/level was not MQTT 4 or 5",
        );
      }
      sockets.delete(finished[1]);
      continue;
    }

    if (level === "DEBUG") {
      const io = /^(in|out): \((-?\d+)\) (\w+)\((.*)$/.exec(message);
      if (io === null) continue;
      const [, direction, fd, packet, rest] = io;
      if (direction === "in") {
        commitRel();
        lastIn = { fd, packet: `${packet}(${rest}` };
        if (packet !== "Connects" && sockets.get(fd)?.takenOver) stray = fd;
        if (packet === "Connects") {
          const clientId = /ClientId=([^,]*),/.exec(rest)?.[1] ?? "";
          sockets.set(fd, { connected: true, clientId });
          connectionOf.set(clientId, ++connections);
        } else if (packet === "Pubrels") {
          const id = packetId(rest);
          const clientId = sockets.get(fd)?.clientId;
          if (id !== undefined && clientId !== undefined) {
            pendingRel = { clientId, id, connection: connectionOf.get(clientId) ?? 0 };
          }
        } else if (packet === "Publishes") {
          const id = packetId(rest);
          const clientId = sockets.get(fd)?.clientId;
          if (id !== undefined && clientId !== undefined) released.get(clientId)?.delete(id);
        }
      } else if (packet === "Disconnects") {
        const reason = /ReasonCode: ([^,]*)/.exec(rest)?.[1]?.trim() ?? "?";
        if (!BLAMELESS_DISCONNECTS.has(reason)) {
          violation(text, `the broker disconnected the client with reason "${reason}"`);
        }
      }
      continue;
    }

    if (level === "INFO") {
      const takeover = /\[MQTT5?-3\.1\.4-[23]\] Disconnecting old client (.*)$/.exec(message);
      if (takeover) {
        // The newest CONNECT (just read) took the session from the older connections.
        for (const [fd, socket] of sockets) {
          if (socket.clientId === takeover[1] && fd !== lastIn?.fd) socket.takenOver = true;
        }
        continue;
      }
      if (/\[MQTT5?-3\.1\.2-22\] keepalive timeout/.test(message)) {
        violation(text, "keepalive timeout: the client sent nothing for 1.5 keepalive intervals");
      } else if (message.includes("[MQTT-3.1.3-8]")) {
        violation(text, "zero-length client id with CleanSession 0");
      } else if (message.includes("[MQTT-4.8.0-1] 'transient error'")) {
        note(text, "a connection ended without DISCONNECT (or mid-packet)");
      }
      continue;
    }

    if (level === "TRACEBACK") {
      if (isSendFailure(text)) {
        note(text, "the broker could not write to a socket that was already closed");
      } else {
        violation(text, "the broker raised while handling a client packet");
      }
      continue;
    }

    if (level === "ERROR" || level === "CRITICAL" || level === "WARNING") {
      if (message.includes("[MQTT5-3.1.2-24] Packet too big to send to client")) {
        note(text, "the broker dropped a packet larger than the client's Maximum Packet Size");
        continue;
      }
      if (message.startsWith("SNI callback not supported") || message === "startBroker") {
        note(text, "broker set-up");
        continue;
      }
      // A packet on a socket the broker no longer has a session for: 3.1.1 says so, MQTT 5
      // trips over it (KeyError in disconnect(), logged by the listener).
      const sessionless = /Connect was not first packet on socket/.test(message) ||
        (message === "WebSocketTCPHandler" && /^KeyError/m.test(text) &&
          /in handlePacket\n\s+self\.disconnect\(sock, packet\)/.test(text));
      if (sessionless && stray !== undefined) {
        stray = undefined;
        note(
          text,
          "a packet the client sent on its old connection, read by the broker after a newer " +
            "connection had taken the session over (a race in the broker, not the client)",
        );
        continue;
      }
      const unknownRel = /^Pubrec received for msgid (\d+), but no message found/.exec(message);
      if (unknownRel && lastIn?.packet.startsWith("Pubrels(")) {
        // The broker's PUBREL handler (it says "Pubrec"): the id is not in flight. A re-send
        // is legitimate if this client had this PUBREL accepted on an earlier connection.
        const id = Number(unknownRel[1]);
        pendingRel = undefined;
        const clientId = sockets.get(lastIn.fd)?.clientId;
        const earlier = clientId === undefined ? undefined : released.get(clientId)?.get(id);
        const current = clientId === undefined ? undefined : connectionOf.get(clientId);
        if (earlier !== undefined && current !== undefined && earlier < current) {
          note(text, "a PUBREL re-sent after a reconnect; the broker had completed it already");
        } else {
          violation(text, "PUBREL for a packet id the broker has not received a QoS 2 PUBLISH for");
        }
        continue;
      }
      if (level === "WARNING") continue;
      violation(text, "the broker rejected a client packet");
    }
  }
  return { violations, notes };
}

function packetId(rest: string): number | undefined {
  const match = /(?:PacketId|MsgId)=(\d+)/.exec(rest);
  return match ? Number(match[1]) : undefined;
}

// ---- the process ------------------------------------------------------------------

/** `pattern` for testing single lines: no global or sticky state. */
function lineMatcher(pattern: RegExp): RegExp {
  return new RegExp(pattern.source, pattern.flags.replace(/[gy]/g, ""));
}

class StartError extends Error {}

class PahoProcess implements PahoBroker {
  readonly hostname: "127.0.0.1" = HOSTNAME;
  #port = 0;
  readonly #python: string;
  readonly #dir: string;
  readonly #options: PahoBrokerOptions;
  #child: Deno.ChildProcess | undefined;
  #exited: Promise<Deno.CommandStatus> | undefined;
  #hasExited = false;
  #readers: Promise<void>[] = [];
  #log = "";
  #lines: string[] = []; // the complete lines of #log
  #partial = ""; // the last, incomplete line of #log
  #stdout = "";
  #closed = false;
  readonly #waiters = new Set<() => void>();

  constructor(python: string, dir: string, options: PahoBrokerOptions) {
    this.#python = python;
    this.#dir = dir;
    this.#options = options;
  }

  get port(): number {
    return this.#port;
  }

  get pid(): number | undefined {
    return this.#child?.pid;
  }

  log(): string {
    return this.#log;
  }

  stdout(): string {
    return this.#stdout;
  }

  report(): BrokerReport {
    return parseBrokerLog(this.#log);
  }

  violations(): string[] {
    return this.report().violations.map((v) => v.text);
  }

  countLog(pattern: RegExp): number {
    const line = lineMatcher(pattern);
    return this.#lines.reduce((n, l) => n + (line.test(l) ? 1 : 0), 0);
  }

  waitForLog(pattern: RegExp, ms: number, count = 1): Promise<number> {
    const line = lineMatcher(pattern);
    let seen = 0;
    let scanned = 0; // lines of #lines already counted: each check reads only new ones
    const scan = () => {
      for (; scanned < this.#lines.length; scanned++) if (line.test(this.#lines[scanned])) seen++;
      return seen;
    };
    return new Promise((resolve, reject) => {
      const check = () => {
        const n = scan();
        if (n >= count) {
          done();
          resolve(n);
        } else if (this.#hasExited || this.#child === undefined) {
          done();
          reject(
            new Error(`broker is not running; saw ${n} of ${count} lines matching ${pattern}`),
          );
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(
          new Error(
            `timed out after ${ms} ms waiting for ${count} broker log lines matching ${pattern} ` +
              `(saw ${scan()})`,
          ),
        );
      }, ms);
      const done = () => {
        clearTimeout(timer);
        this.#waiters.delete(check);
      };
      this.#waiters.add(check);
      check();
    });
  }

  #changed(): void {
    for (const check of [...this.#waiters]) check();
  }

  /** Picks a free port and starts; retries with another port when it was taken meanwhile. */
  async startFresh(): Promise<void> {
    for (let attempt = 1;; attempt++) {
      this.#port = freePort();
      try {
        await this.#start();
        return;
      } catch (error) {
        if (!(error instanceof StartError) || attempt >= BIND_ATTEMPTS) throw error;
      }
    }
  }

  async #start(): Promise<void> {
    if (this.#closed) throw new Error("Paho broker handle is closed");
    const config = `${this.#dir}/broker.conf`;
    const lines = ["loglevel DEBUG"];
    if (this.#options.extraConfig) lines.push(this.#options.extraConfig);
    lines.push(`listener ${this.#port} ${HOSTNAME}`);
    await Deno.writeTextFile(config, lines.join("\n") + "\n");
    const child = new Deno.Command(this.#python, {
      // -B: write no __pycache__ into the vendored tree; -u: unbuffered stdout.
      args: [
        "-B",
        "-u",
        "-c",
        LAUNCHER,
        VENDOR_DIR,
        START_SCRIPT,
        config,
        this.#options.serverTopicAliases ? "1" : "0",
      ],
      cwd: this.#dir,
      stdin: "piped", // never written: its EOF ends an orphaned broker
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#child = child;
    this.#hasExited = false;
    this.#exited = child.status.then((status) => {
      this.#hasExited = true;
      this.#changed();
      return status;
    });
    this.#readers = [
      this.#collect(
        child.stderr,
        (text) => this.#appendLog(text),
        // A last line without newline is complete once the process is gone.
        () => this.#partial !== "" && this.#appendLog("\n"),
      ),
      this.#collect(child.stdout, (text) => this.#stdout += text),
    ];

    const logStart = this.#log.length;
    const listening = new RegExp(
      `Starting TCP listener on address '${HOSTNAME}' port ${this.#port}`,
    );
    const deadline = Date.now() + READY_TIMEOUT_MS;
    try {
      // The broker logs this line just before it binds: wait for it, then probe.
      await this.waitForLog(listening, READY_TIMEOUT_MS, this.countLog(listening) + 1);
      while (!(await probe(this.#port))) {
        if (this.#hasExited) throw new Error("exited");
        if (Date.now() > deadline) throw new Error("timeout");
        await delay(20);
      }
    } catch {
      await this.stop();
      const output = this.#log.slice(logStart) + this.#stdout;
      // A taken port makes upstream give up quietly (it swallows the OSError) and exit.
      throw new StartError(
        `the Paho broker did not accept connections on port ${this.#port} within ` +
          `${READY_TIMEOUT_MS} ms:\n${output}`,
      );
    }
  }

  #appendLog(text: string): void {
    this.#log += text;
    const lines = (this.#partial + text).split("\n");
    this.#partial = lines.pop() ?? "";
    for (const line of lines) this.#lines.push(line);
  }

  async #collect(
    stream: ReadableStream<Uint8Array>,
    append: (text: string) => void,
    onEnd?: () => void,
  ): Promise<void> {
    const decoder = new TextDecoder();
    try {
      for await (const chunk of stream) {
        append(decoder.decode(chunk, { stream: true }));
        this.#changed();
      }
    } catch {
      // The stream ends with the process.
    }
    append(decoder.decode());
    onEnd?.();
    this.#changed();
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
    await child.stdin.close().catch(() => {});
    await Promise.all(this.#readers);
    this.#child = undefined;
    this.#changed();
  }

  async restart(): Promise<void> {
    await this.stop();
    for (let attempt = 1;; attempt++) {
      try {
        await this.#start();
        return;
      } catch (error) {
        if (!(error instanceof StartError) || attempt >= BIND_ATTEMPTS) throw error;
        await delay(100);
      }
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    await this.stop();
    this.#closed = true;
    await Deno.remove(this.#dir, { recursive: true }).catch(() => {});
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/**
 * Starts a private Paho test broker on 127.0.0.1 on a free port (MQTT 3.1.1
 * and 5 on the same port), its config in a new temp dir, and resolves once it
 * completed an MQTT handshake (15 s at most). Close it with `close()` or
 * `await using`.
 */
export async function startPahoBroker(options: PahoBrokerOptions = {}): Promise<PahoBroker> {
  const python = pythonPath();
  if (python === undefined || !isFile(START_SCRIPT)) throw new Error(PAHO_MISSING);
  const dir = await Deno.makeTempDir({ prefix: "mqtt_async_paho_" });
  try {
    const broker = new PahoProcess(python, dir, options);
    await broker.startFresh();
    return broker;
  } catch (error) {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    throw error;
  }
}

/** The last `n` lines of the broker's log, for failure messages. */
export function logTail(broker: PahoBroker, n = 40): string {
  return broker.log().trimEnd().split("\n").slice(-n).join("\n");
}

let warnedMissing = false;

/**
 * Registers a `Deno.test` that gets a fresh Paho broker and closes it
 * afterwards. Without python3 the test is ignored (with a notice), unless
 * `MQTT_REQUIRE_BROKER=1`, in which case it fails saying what is missing. On
 * failure the broker's violations and the end of its log are attached to the
 * error message, and with `MQTT_PAHO_LOG_DIR=<dir>` the whole log is written there.
 */
export function pahoTest(
  name: string,
  fn: (broker: PahoBroker) => Promise<void>,
  options: PahoBrokerOptions & { sanitizeOps?: boolean; sanitizeResources?: boolean } = {},
): void {
  const { sanitizeOps, sanitizeResources, ...brokerOptions } = options;
  const available = pahoAvailable();
  const required = env("MQTT_REQUIRE_BROKER") === "1";
  if (!available && !required && !warnedMissing) {
    warnedMissing = true;
    console.warn(`${PAHO_MISSING} (set MQTT_REQUIRE_BROKER=1 to fail instead of skipping)`);
  }
  Deno.test({
    name,
    ignore: !available && !required,
    sanitizeOps,
    sanitizeResources,
    async fn() {
      if (!available) throw new Error(PAHO_MISSING);
      const broker = await startPahoBroker(brokerOptions);
      try {
        await fn(broker);
      } catch (error) {
        if (error instanceof Error) {
          const found = broker.violations();
          if (found.length > 0) {
            const more = found.length > 10 ? `\n... and ${found.length - 10} more` : "";
            error.message += `\n--- Paho broker violations ---\n${
              found.slice(0, 10).join("\n")
            }${more}`;
          }
          error.message += `\n--- Paho broker log (last lines) ---\n${logTail(broker)}`;
          const dir = env("MQTT_PAHO_LOG_DIR");
          if (dir) {
            const file = `${dir}/${name.replace(/[^\w.-]+/g, "_")}.log`;
            await Deno.writeTextFile(file, broker.log()).catch(() => {});
            error.message += `\n(the whole log is in ${file})`;
          }
        }
        throw error;
      } finally {
        await broker.close();
      }
    },
  });
}
