/**
 * The durable store: the session in an append-only log on disk, so that what
 * a commit reported durable survives `kill -9`, a power cut or a redeploy.
 *
 * **Layout.** One directory per store; in it one subdirectory per client id,
 * named `c-` + the hex of the id's UTF-8 bytes (ids over 100 bytes: `h-` + the
 * hex SHA-256 of them). Hex is safe on every file system, case-insensitive ones
 * included; the real id is written in every file's header and checked on open.
 * A client directory holds:
 *
 * - `lock`: the lock file (see below); it also holds the holder's pid, for
 *   the error message only;
 * - `NNNNNNNNNNNN.log`: log segments, numbered from 1;
 * - `NNNNNNNNNNNN.snap`: a snapshot: the whole session as it stood at the end
 *   of segment `NNNNNNNNNNNN`, which replaces that segment and all before it;
 * - `*.tmp`: a snapshot being written (deleted on open);
 * - `*.corrupt`: what recovery cut off after a corrupt record (kept for
 *   inspection, never read again).
 *
 * **Records** (see `store/_log.ts`): `crc:u32 length:u32 body`, the CRC-32
 * covering the length and the body. Every file starts with a header record
 * (format version, file type, number, client id); a snapshot ends with an END
 * record counting its records, so a snapshot is only ever taken whole.
 *
 * **Group commit.** {@linkcode FileStore.append} only encodes the records into
 * memory. {@linkcode FileStore.commit} writes everything appended so far with
 * one write and one `fdatasync`; at most one write+sync is in flight, and the
 * commits called meanwhile are answered by the next one, which carries
 * everything appended in between. A new segment's first write is followed by
 * an fsync of the directory, so its name is durable before anything in it is
 * reported durable.
 *
 * **Rolling and compaction.** When a write would take the current segment
 * past `segmentSize` bytes, it goes to a new segment instead (a segment is
 * larger only when one write is). At that moment, when the snapshot and the
 * finished segments take at least twice the bytes of the live session, a
 * compaction starts in the background: the live session (as
 * at the end of the finished segment; the records it is made of were encoded
 * at append time and are reused, so taking it is a list copy) is written to
 * `N.snap.tmp`, synced, renamed to `N.snap`, the directory synced, and only
 * then are the segments up to N and the previous snapshot deleted. Commits go
 * on meanwhile (appends never wait for anything); a roll during a compaction
 * queues the next one, to start when it ends. At every instant a crash
 * leaves either the old snapshot with its segments, or the new snapshot (with
 * obsolete files that recovery deletes).
 *
 * **Recovery** (in {@linkcode FileStore.open}): the newest whole snapshot,
 * then the segments after it, in order, each record checked by length and
 * CRC. A bad record stops the replay there: the session is always a prefix
 * of what was appended, as the {@linkcode SessionStore} contract requires. A
 * bad record in the last segment with nothing valid where its length points
 * is a torn write (a crash mid-write): the file is truncated back to the last
 * good record and synced. Otherwise (a bad record followed by a good one, or
 * in an earlier segment, or a missing segment) the disk was damaged: the bytes
 * from the bad record on are copied to `<segment>.<offset>-<time>.corrupt`, the
 * later segments renamed to `*.corrupt`, and the store opens with the prefix
 * (see {@linkcode FileStore.recovery}). After a power cut, a write whose pages
 * reached the disk out of order can look like that too: its `*.corrupt` copy
 * then holds only what no commit had reported durable.
 *
 * **Locking.** `lock` is locked with `Deno.FsFile.tryLock(true)` (`flock` on
 * Unix, `LockFileEx` on Windows), which never blocks and which the kernel
 * releases when the holder dies, even by `kill -9`: a stale lock cannot
 * exist, and no pid check (which would need more permissions) is needed. An
 * in-process registry of open client directories makes a second open in the
 * same process fail the same way whatever the platform's lock semantics.
 * The lock is advisory and local: do not share a store directory over NFS.
 *
 * **Memory.** The store keeps the encoded record of every unfinished publish
 * (about one copy of the payloads in flight), to write snapshots without
 * reading the log back.
 *
 * **Permissions**: `--allow-read` and `--allow-write` on the directory only.
 *
 * @module
 */

import {
  claimedEnd,
  concat,
  decodeHeader,
  decodePut,
  DELETE,
  encodeEnd,
  encodeHeader,
  encodeId,
  encodePut,
  END,
  FORMAT_VERSION,
  frameEnd,
  ID_RECORD,
  INCOMING,
  INCOMING_DONE,
  LAST_ID,
  LOG_FILE,
  PUT,
  readU32,
  recordId,
  RELEASED,
  SNAPSHOT_FILE,
  writeAll,
} from "./_log.ts";
import type {
  RestoredPublish,
  SessionStore,
  StoredPublish,
  StoredSession,
  StoreOp,
} from "./store.ts";

export type {
  RestoredPublish,
  SessionStore,
  StoredPublish,
  StoredSession,
  StoreOp,
} from "./store.ts";
export type { PublishProperties, QoS, UserProperties } from "../codec/packets.ts";

/** Settings of a {@linkcode FileStore}. */
export interface FileStoreOptions {
  /**
   * Bytes past which the log rolls over to a new segment file; compaction is
   * considered at each roll. Default 4 MiB; at least 4 KiB.
   */
  segmentSize?: number;
}

/**
 * Counters of a {@linkcode FileStore}'s work since it was constructed, for
 * tests and benchmarks (e.g. fsyncs per message).
 */
export interface FileStoreStats {
  /** Records appended. */
  records: number;
  /** `commit()` calls. */
  commits: number;
  /** Writes to the log (one per group commit). */
  writes: number;
  /** Bytes written to the log (snapshots not included). */
  bytes: number;
  /** Syncs of the log in the commit path (`fdatasync`, one per write). */
  logSyncs: number;
  /** Every sync issued: the log's, snapshots' and the directory's. */
  syncs: number;
  /** Segments started. */
  rolls: number;
  /** Snapshots completed (each replaced older segments). */
  compactions: number;
  /** Compactions that failed (the old segments stay; the next roll tries again). */
  compactionErrors: number;
}

/** What {@linkcode FileStore.open} found and repaired on disk. */
export interface FileStoreRecovery {
  /** Segment number of the snapshot loaded (0: none). */
  snapshot: number;
  /** Log segments replayed after it. */
  segments: number;
  /** Records replayed from the segments. */
  records: number;
  /** Bytes of a torn tail (a write cut short by a crash) dropped by truncation. */
  truncatedBytes: number;
  /** Paths of the files recovery wrote or renamed as `*.corrupt` (damage, not a torn tail). */
  corrupt: string[];
  /** Paths of obsolete, unfinished or empty files it deleted. */
  removed: string[];
}

/** A live outgoing publish: its PUT record as written, reused by snapshots. */
interface Live {
  bytes: Uint8Array;
  released: boolean;
  /** Decoded, during recovery only. */
  record?: StoredPublish;
}

interface Segment {
  number: number;
  size: number;
}

interface ActiveSegment extends Segment {
  /** Open for appending; undefined until its first write creates it. */
  file: Deno.FsFile | undefined;
  /** Records after the header. */
  records: number;
  /** Its directory entry is durable. */
  linked: boolean;
}

interface Waiter {
  target: number;
  resolve: () => void;
  reject: (error: Error) => void;
}

const DEFAULT_SEGMENT_SIZE = 4 * 1024 * 1024;
const LOG_NAME = /^(\d{12})\.log$/;
const SNAP_NAME = /^(\d{12})\.snap$/;
const encoder = new TextEncoder();

/** Client directories open in this process. */
const held = new Set<string>();

function hex(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += b.toString(16).padStart(2, "0");
  return s;
}

/** The directory name of a client id: hex of its bytes, or of their SHA-256 when long. */
async function clientDirName(clientId: string): Promise<string> {
  const bytes = encoder.encode(clientId);
  if (bytes.length <= 100) return `c-${hex(bytes)}`;
  return `h-${hex(new Uint8Array(await crypto.subtle.digest("SHA-256", bytes)))}`;
}

function pad(n: number): string {
  return String(n).padStart(12, "0");
}

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * A {@linkcode SessionStore} on disk: an append-only, checksummed log with
 * group commit, rolled into segments and compacted in the background. See
 * the module documentation for the format, the recovery rules and the lock.
 *
 * @example
 * ```ts ignore
 * import { FileStore, MQTTClient } from "./mod.ts";
 * // deno run --allow-net --allow-read=./outbox --allow-write=./outbox gateway.ts
 * const client = new MQTTClient({
 *   server: "127.0.0.1",
 *   clientId: "gateway-7",
 *   clean: false,
 *   store: new FileStore("./outbox"),
 * });
 * // Resolves once the broker has it; from the moment it was accepted, a crash
 * // or a restart no longer loses it: the next client resumes it.
 * await client.publish("sensors/7", "21.5", { qos: 1 });
 * await client.disconnect();
 * ```
 */
export class FileStore implements SessionStore {
  /** False: changes are durable once a commit that follows them resolves. */
  readonly durableOnAppend = false;
  /** Counters for tests and benchmarks; see {@linkcode FileStoreStats}. */
  readonly stats: FileStoreStats = {
    records: 0,
    commits: 0,
    writes: 0,
    bytes: 0,
    logSyncs: 0,
    syncs: 0,
    rolls: 0,
    compactions: 0,
    compactionErrors: 0,
  };
  /** What the last {@linkcode FileStore.open} found and repaired (undefined before one). */
  recovery: FileStoreRecovery | undefined;
  /** The last compaction error, if any (compaction errors do not break the store). */
  compactionError: Error | undefined;

  readonly #dir: string;
  readonly #segmentSize: number;
  #phase: "closed" | "opening" | "open" | "closing" = "closed";
  #clientId = "";
  #clientDir = "";
  #lock: Deno.FsFile | undefined;

  #active: ActiveSegment | undefined;
  #sealed: Segment[] = []; // finished segments after the base snapshot
  #base = 0; // number of the snapshot the segments continue (0: none)
  #baseSize = 0;

  // The session as of the last record handed to a write (what a snapshot takes).
  #puts = new Map<number, Live>();
  #incoming = new Set<number>();
  #lastId = 0;
  #liveBytes = 0; // bytes a snapshot of it takes, without header and END

  #pending: Uint8Array[] = []; // encoded, not yet handed to a write
  #pendingBytes = 0;
  #appended = 0; // records appended since open
  #durable = 0; // of them, durable
  #waiters: Waiter[] = [];
  #flushing: Promise<void> | undefined;
  #compacting: Promise<void> | undefined;
  #queued: { number: number; parts: Uint8Array[]; total: number } | undefined;
  #broken: Error | undefined;

  /**
   * A store in `dir` (created when missing). Nothing is read until
   * {@linkcode FileStore.open}.
   */
  constructor(dir: string, options: FileStoreOptions = {}) {
    if (typeof dir !== "string" || dir === "") {
      throw new TypeError(`FileStore: dir must be a non-empty path, got ${String(dir)}`);
    }
    const segmentSize = options.segmentSize ?? DEFAULT_SEGMENT_SIZE;
    if (!Number.isInteger(segmentSize) || segmentSize < 4096) {
      throw new RangeError(`FileStore: segmentSize must be an integer >= 4096, got ${segmentSize}`);
    }
    this.#dir = dir.replace(/(.)[\\/]+$/, "$1");
    this.#segmentSize = segmentSize;
  }

  /** The store directory. */
  get dir(): string {
    return this.#dir;
  }

  /**
   * Opens the session of `clientId`: takes its lock, recovers its files
   * (repairing a torn tail) and returns what they hold. Rejects when this
   * store is already open, or when another client (in this process or
   * another) holds the session.
   */
  async open(clientId: string): Promise<StoredSession> {
    if (this.#phase !== "closed") {
      throw new Error(
        `FileStore ${this.#dir}: already open for client "${this.#clientId}"; ` +
          `one client per store instance at a time`,
      );
    }
    if (typeof clientId !== "string") throw new TypeError("FileStore: clientId must be a string");
    this.#phase = "opening";
    this.#clientId = clientId;
    let registered = false;
    try {
      const clientDir = `${this.#dir}/${await clientDirName(clientId)}`;
      if (held.has(clientDir)) throw FileStore.#heldError(clientId, clientDir, "this process");
      held.add(clientDir);
      registered = true;
      this.#clientDir = clientDir;
      await Deno.mkdir(clientDir, { recursive: true });
      const lockPath = `${clientDir}/lock`;
      const lock = await Deno.open(lockPath, { read: true, write: true, create: true });
      let locked = false;
      try {
        locked = await lock.tryLock(true);
      } finally {
        if (!locked) lock.close();
      }
      if (!locked) {
        const pid = await Deno.readTextFile(lockPath).then((s) => s.trim(), () => "");
        throw FileStore.#heldError(
          clientId,
          clientDir,
          pid === String(Deno.pid)
            ? "this process"
            : /^\d+$/.test(pid)
            ? `process ${pid}`
            : "another process",
        );
      }
      this.#lock = lock;
      await lock.truncate(0);
      await writeAll(lock, encoder.encode(`${Deno.pid}\n`));
      await this.#recover();
      const session = this.#session();
      this.#phase = "open";
      return session;
    } catch (error) {
      this.#active?.file?.close();
      this.#release();
      if (registered) held.delete(this.#clientDir);
      this.#reset();
      this.#phase = "closed";
      this.#clientId = "";
      throw error;
    }
  }

  static #heldError(clientId: string, clientDir: string, holder: string): Error {
    return new Error(
      `FileStore: another client holds the session of "${clientId}" in ${clientDir} ` +
        `(locked by ${holder}); a session is open in one client at a time`,
    );
  }

  /** Encodes the changes into memory, in order; they are written by the next commit. */
  append(ops: readonly StoreOp[]): void {
    if (this.#phase !== "open" && this.#phase !== "closing") {
      throw new Error(`FileStore ${this.#dir}: not open`);
    }
    if (this.#broken) throw this.#broken;
    const chunks: Uint8Array[] = [];
    let bytes = 0;
    for (const op of ops) {
      let chunk: Uint8Array;
      switch (op.op) {
        case "put":
          chunk = encodePut(op.record);
          break;
        case "released":
          chunk = encodeId(RELEASED, op.id);
          break;
        case "delete":
          chunk = encodeId(DELETE, op.id);
          break;
        case "incoming":
          chunk = encodeId(INCOMING, op.id);
          break;
        case "incomingDone":
          chunk = encodeId(INCOMING_DONE, op.id);
          break;
        default:
          throw new TypeError(`FileStore: unknown store op ${JSON.stringify(op)}`);
      }
      chunks.push(chunk);
      bytes += chunk.length;
    }
    for (const chunk of chunks) this.#pending.push(chunk);
    this.#pendingBytes += bytes;
    this.#appended += chunks.length;
    this.stats.records += chunks.length;
  }

  /**
   * Resolves once every change appended before the call is on disk (written
   * and synced). Calls made while a write is in flight share the next one.
   * Rejects when a write or sync failed: the store is then broken until it
   * is closed and opened again.
   */
  commit(): Promise<void> {
    this.stats.commits++;
    if (this.#phase !== "open" && this.#phase !== "closing") {
      return Promise.reject(new Error(`FileStore ${this.#dir}: not open`));
    }
    if (this.#broken) return Promise.reject(this.#broken);
    const target = this.#appended;
    if (target <= this.#durable) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      this.#waiters.push({ target, resolve, reject });
      this.#flushing ??= this.#flush();
    });
  }

  /**
   * Commits what was appended, waits for a compaction under way, closes the
   * files and releases the lock. The store may then be opened again. Rejects
   * (after releasing everything) when the final commit failed.
   */
  async close(): Promise<void> {
    if (this.#phase !== "open") return;
    this.#phase = "closing";
    let failure: unknown;
    for (;;) {
      try {
        while (!this.#broken && this.#appended > this.#durable) await this.commit();
      } catch (error) {
        failure ??= error;
      }
      await this.#flushing;
      await this.#compacting;
      // Appended, or a write or a compaction started, while waiting? Wait for
      // that too: no compaction may go on touching files after the close.
      // From here on nothing awaits.
      if (this.#flushing !== undefined || this.#compacting !== undefined) continue;
      if (this.#broken || this.#appended <= this.#durable) break;
    }
    failure ??= this.#broken;
    this.#active?.file?.close();
    this.#release();
    held.delete(this.#clientDir);
    this.#reset();
    this.#phase = "closed";
    if (failure !== undefined) throw failure;
  }

  #release(): void {
    try {
      this.#lock?.close(); // closing the descriptor releases the lock
    } catch {
      // already closed
    }
    this.#lock = undefined;
  }

  #reset(): void {
    this.#active = undefined;
    this.#sealed = [];
    this.#base = 0;
    this.#baseSize = 0;
    this.#puts = new Map();
    this.#incoming = new Set();
    this.#lastId = 0;
    this.#liveBytes = 0;
    this.#pending = [];
    this.#pendingBytes = 0;
    this.#appended = 0;
    this.#durable = 0;
    this.#waiters = [];
    this.#queued = undefined;
    this.#broken = undefined;
  }

  // ---- the commit path ---------------------------------------------------------------

  /** Writes and syncs batches while commits wait; one write+sync at a time. */
  async #flush(): Promise<void> {
    try {
      while (this.#waiters.length > 0) {
        const upTo = this.#appended;
        if (upTo > this.#durable) {
          await this.#writeBatch();
          this.#durable = upTo;
        }
        let n = 0;
        while (n < this.#waiters.length && this.#waiters[n].target <= this.#durable) n++;
        for (const waiter of this.#waiters.splice(0, n)) waiter.resolve();
      }
    } catch (error) {
      this.#broken = new Error(
        `FileStore ${this.#clientDir}: writing the log failed (${message(error)}); ` +
          `the store is broken until it is closed and opened again`,
        { cause: error },
      );
      for (const waiter of this.#waiters.splice(0)) waiter.reject(this.#broken);
    } finally {
      this.#flushing = undefined;
    }
  }

  /** Writes everything pending with one write and one sync (rolling first when due). */
  async #writeBatch(): Promise<void> {
    const chunks = this.#pending;
    const total = this.#pendingBytes;
    this.#pending = [];
    this.#pendingBytes = 0;
    let active = this.#active!;
    if (active.records > 0 && active.size + total > this.#segmentSize) active = this.#roll();
    for (const chunk of chunks) this.#apply(chunk, 0);
    let head: Uint8Array | undefined;
    if (active.file === undefined) {
      head = encodeHeader(LOG_FILE, active.number, this.#clientId);
      active.file = await Deno.open(this.#logPath(active.number), {
        write: true,
        append: true,
        createNew: true,
      });
    }
    const bytes = concat(head, chunks, total);
    await writeAll(active.file, bytes);
    active.size += bytes.length;
    active.records += chunks.length;
    this.stats.writes++;
    this.stats.bytes += bytes.length;
    await active.file.syncData();
    this.stats.logSyncs++;
    this.stats.syncs++;
    if (!active.linked) {
      await this.#syncDir();
      active.linked = true;
    }
  }

  /** Finishes the current segment (all of it synced) and starts the next; maybe compacts. */
  #roll(): ActiveSegment {
    const old = this.#active!;
    old.file?.close();
    this.#sealed.push({ number: old.number, size: old.size });
    const next: ActiveSegment = {
      number: old.number + 1,
      size: 0,
      file: undefined,
      records: 0,
      linked: false,
    };
    this.#active = next;
    this.stats.rolls++;
    let disk = this.#baseSize;
    for (const s of this.#sealed) disk += s.size;
    if (disk >= 2 * (this.#liveBytes + 64)) this.#compact(old.number);
    return next;
  }

  /** Applies the record `chunk[pos..]` to the session image. */
  #apply(chunk: Uint8Array, pos: number, record?: StoredPublish, end?: number): void {
    const id = recordId(chunk, pos);
    switch (chunk[pos + 8]) {
      case PUT: {
        const bytes = end === undefined ? chunk : chunk.slice(pos, end);
        const old = this.#puts.get(id);
        if (old) this.#liveBytes -= old.bytes.length + (old.released ? ID_RECORD : 0);
        this.#puts.set(id, { bytes, released: false, record });
        this.#liveBytes += bytes.length;
        this.#lastId = id;
        break;
      }
      case RELEASED: {
        const live = this.#puts.get(id);
        if (live && !live.released) {
          live.released = true;
          this.#liveBytes += ID_RECORD;
        }
        break;
      }
      case DELETE: {
        const live = this.#puts.get(id);
        if (live) {
          this.#puts.delete(id);
          this.#liveBytes -= live.bytes.length + (live.released ? ID_RECORD : 0);
        }
        break;
      }
      case INCOMING:
        if (!this.#incoming.has(id)) {
          this.#incoming.add(id);
          this.#liveBytes += ID_RECORD;
        }
        break;
      case INCOMING_DONE:
        if (this.#incoming.delete(id)) this.#liveBytes -= ID_RECORD;
        break;
      case LAST_ID:
        this.#lastId = id;
        break;
    }
  }

  // ---- compaction ---------------------------------------------------------------------

  /**
   * Takes the session as it stands (the end of segment `number`) and writes
   * it in the background; when a compaction is under way, this one waits for
   * it (a later one replaces an earlier one waiting: it covers more).
   */
  #compact(number: number): void {
    if (this.#broken) return;
    const parts: Uint8Array[] = [];
    let total = 0;
    for (const live of this.#puts.values()) {
      parts.push(live.bytes);
      total += live.bytes.length;
    }
    for (const [id, live] of this.#puts) {
      if (live.released) parts.push(encodeId(RELEASED, id));
    }
    for (const id of this.#incoming) parts.push(encodeId(INCOMING, id));
    parts.push(encodeId(LAST_ID, this.#lastId));
    total += (parts.length - this.#puts.size) * ID_RECORD;
    const end = encodeEnd(parts.length);
    parts.push(end);
    total += end.length;
    this.#queued = { number, parts, total };
    // One loop at a time takes the jobs. It looks for a waiting job and stops
    // in the same step (no await in between), so a job queued here is either
    // seen by the loop under way or starts a new one: it is never left behind
    // to run after a newer snapshot (which it would replace and delete).
    this.#compacting ??= this.#compactions();
  }

  /** Writes the snapshot waiting, then any queued meanwhile, until none waits. */
  async #compactions(): Promise<void> {
    try {
      for (let job = this.#queued; job !== undefined && !this.#broken; job = this.#queued) {
        this.#queued = undefined;
        await this.#writeSnapshot(job.number, job.parts, job.total);
      }
    } finally {
      this.#queued = undefined;
      this.#compacting = undefined;
    }
  }

  async #writeSnapshot(number: number, parts: Uint8Array[], total: number): Promise<void> {
    const path = this.#snapPath(number);
    const tmp = `${path}.tmp`;
    // Never replace a snapshot with an older one: the segments between them are gone.
    if (number <= this.#base) return;
    try {
      const bytes = concat(encodeHeader(SNAPSHOT_FILE, number, this.#clientId), parts, total);
      const file = await Deno.open(tmp, { write: true, create: true, truncate: true });
      try {
        await writeAll(file, bytes);
        await file.syncData();
        this.stats.syncs++;
      } finally {
        file.close();
      }
      await Deno.rename(tmp, path);
      await this.#syncDir();
      // The snapshot is durable: what it replaces may go (recovery deletes leftovers).
      const obsolete = this.#sealed.filter((s) => s.number <= number).map((s) => s.number);
      const oldBase = this.#base;
      this.#sealed = this.#sealed.filter((s) => s.number > number);
      this.#base = number;
      this.#baseSize = bytes.length;
      this.stats.compactions++;
      for (const n of obsolete) await Deno.remove(this.#logPath(n)).catch(() => {});
      if (oldBase > 0) await Deno.remove(this.#snapPath(oldBase)).catch(() => {});
    } catch (error) {
      this.stats.compactionErrors++;
      this.compactionError = error instanceof Error ? error : new Error(String(error));
      await Deno.remove(tmp).catch(() => {});
    }
  }

  // ---- recovery -------------------------------------------------------------------------

  async #recover(): Promise<void> {
    const dir = this.#clientDir;
    const report: FileStoreRecovery = {
      snapshot: 0,
      segments: 0,
      records: 0,
      truncatedBytes: 0,
      corrupt: [],
      removed: [],
    };
    this.recovery = report;
    const logs: number[] = [];
    const snaps: number[] = [];
    let changed = false;
    for await (const entry of Deno.readDir(dir)) {
      if (!entry.isFile) continue;
      const log = LOG_NAME.exec(entry.name);
      const snap = SNAP_NAME.exec(entry.name);
      if (log) logs.push(Number(log[1]));
      else if (snap) snaps.push(Number(snap[1]));
      else if (entry.name.endsWith(".tmp")) {
        await Deno.remove(`${dir}/${entry.name}`);
        report.removed.push(`${dir}/${entry.name}`);
        changed = true;
      }
    }
    snaps.sort((a, b) => b - a);
    logs.sort((a, b) => a - b);

    // The newest whole snapshot; older ones are obsolete, damaged ones kept aside.
    for (const n of snaps) {
      const path = this.#snapPath(n);
      if (report.snapshot === 0) {
        const bytes = await Deno.readFile(path);
        if (this.#loadSnapshot(bytes, n)) {
          report.snapshot = n;
          this.#base = n;
          this.#baseSize = bytes.length;
          continue;
        }
        this.#puts = new Map();
        this.#incoming = new Set();
        this.#lastId = 0;
        this.#liveBytes = 0;
        await this.#setAside(path, report);
      } else {
        await Deno.remove(path);
        report.removed.push(path);
      }
      changed = true;
    }

    // The segments after it, while they follow each other and are sound.
    let expected = this.#base + 1;
    let stopped = false;
    const kept: { number: number; size: number; records: number }[] = [];
    for (let i = 0; i < logs.length; i++) {
      const n = logs[i];
      const path = this.#logPath(n);
      if (n <= this.#base) {
        await Deno.remove(path);
        report.removed.push(path);
        changed = true;
        continue;
      }
      if (stopped || n !== expected) {
        stopped = true;
        await this.#setAside(path, report);
        changed = true;
        continue;
      }
      const bytes = await Deno.readFile(path);
      const { end, records } = this.#replay(bytes, n);
      report.records += records;
      if (end === 0 && bytes.length === 0) {
        await Deno.remove(path); // created, never written
        report.removed.push(path);
        changed = true;
        continue;
      }
      if (end < bytes.length) {
        const next = claimedEnd(bytes, end);
        const torn = i === logs.length - 1 &&
          !(next > end && next < bytes.length && frameEnd(bytes, next) > 0);
        if (torn) {
          report.truncatedBytes += bytes.length - end;
        } else {
          const copy = `${path}.${end}-${Date.now()}.corrupt`;
          const file = await Deno.open(copy, { write: true, createNew: true });
          try {
            await writeAll(file, bytes.subarray(end));
            await file.syncData(); // kept before the original is cut
          } finally {
            file.close();
          }
          report.corrupt.push(copy);
          stopped = true;
        }
        changed = true;
        if (end === 0) {
          await Deno.remove(path); // no sound header: nothing to keep (a copy is aside if damaged)
          report.removed.push(path);
          continue;
        }
        const file = await Deno.open(path, { write: true });
        try {
          await file.truncate(end);
          await file.syncData();
        } finally {
          file.close();
        }
      }
      kept.push({ number: n, size: end, records });
      report.segments++;
      expected = n + 1;
    }
    if (changed) await this.#syncDir();

    const last = kept.pop();
    this.#sealed = kept.map(({ number, size }) => ({ number, size }));
    if (last) {
      this.#active = {
        number: last.number,
        size: last.size,
        file: await Deno.open(this.#logPath(last.number), { write: true, append: true }),
        records: last.records,
        linked: true,
      };
    } else {
      this.#active = {
        number: this.#base + 1,
        size: 0,
        file: undefined,
        records: 0,
        linked: false,
      };
    }
  }

  /** Renames `path` to `*.corrupt`, out of the way of recovery. */
  async #setAside(path: string, report: FileStoreRecovery): Promise<void> {
    const to = `${path}.${Date.now()}.corrupt`;
    await Deno.rename(path, to);
    report.corrupt.push(to);
  }

  /** Checks a file's header record; throws when it belongs to another client or format. */
  #header(bytes: Uint8Array, fileType: number, number: number): number {
    const end = frameEnd(bytes, 0);
    if (end < 0) return 0;
    const header = decodeHeader(bytes, 0, end);
    if (!header) return 0;
    if (header.version !== FORMAT_VERSION) {
      throw new Error(
        `FileStore ${this.#clientDir}: file format version ${header.version} is not supported ` +
          `(this version reads ${FORMAT_VERSION})`,
      );
    }
    if (header.clientId !== this.#clientId) {
      throw new Error(
        `FileStore ${this.#clientDir}: the files belong to client "${header.clientId}", ` +
          `not "${this.#clientId}"`,
      );
    }
    return header.fileType === fileType && header.number === number ? end : 0;
  }

  /** Applies a segment's records; returns where the sound part ends (0: no valid header). */
  #replay(bytes: Uint8Array, number: number): { end: number; records: number } {
    let pos = this.#header(bytes, LOG_FILE, number);
    if (pos === 0) return { end: 0, records: 0 };
    let records = 0;
    while (pos < bytes.length) {
      const end = frameEnd(bytes, pos);
      if (end < 0 || !this.#replayRecord(bytes, pos, end, false)) break;
      pos = end;
      records++;
    }
    return { end: pos, records };
  }

  /** Applies one sound record; false when its content is not a record of the kind allowed. */
  #replayRecord(bytes: Uint8Array, pos: number, end: number, snapshot: boolean): boolean {
    const kind = bytes[pos + 8];
    if (kind === PUT) {
      let record: StoredPublish;
      try {
        record = decodePut(bytes, pos, end);
      } catch {
        return false;
      }
      this.#apply(bytes, pos, record, end);
      return true;
    }
    if (end - pos !== ID_RECORD) return false;
    const allowed = snapshot
      ? kind === RELEASED || kind === INCOMING || kind === LAST_ID
      : kind === RELEASED || kind === DELETE || kind === INCOMING || kind === INCOMING_DONE;
    if (!allowed) return false;
    this.#apply(bytes, pos);
    return true;
  }

  /** Loads a snapshot when it is whole and sound; false otherwise (the image is then dirty). */
  #loadSnapshot(bytes: Uint8Array, number: number): boolean {
    let pos = this.#header(bytes, SNAPSHOT_FILE, number);
    if (pos === 0) return false;
    let count = 0;
    while (pos < bytes.length) {
      const end = frameEnd(bytes, pos);
      if (end < 0) return false;
      if (bytes[pos + 8] === END) {
        return end === bytes.length && end - pos === 13 && readU32(bytes, pos + 9) === count;
      }
      if (!this.#replayRecord(bytes, pos, end, true)) return false;
      pos = end;
      count++;
    }
    return false; // no END: not whole
  }

  #session(): StoredSession {
    const publishes: RestoredPublish[] = [];
    for (const live of this.#puts.values()) {
      publishes.push({ ...live.record!, released: live.released });
      live.record = undefined;
    }
    return { publishes, incoming: [...this.#incoming], lastId: this.#lastId };
  }

  // ---- files ----------------------------------------------------------------------------

  #logPath(number: number): string {
    return `${this.#clientDir}/${pad(number)}.log`;
  }

  #snapPath(number: number): string {
    return `${this.#clientDir}/${pad(number)}.snap`;
  }

  /** Makes the directory's entries (created, renamed files) durable. */
  async #syncDir(): Promise<void> {
    if (Deno.build.os === "windows") return; // directories cannot be opened there; NTFS journals them
    const dir = await Deno.open(this.#clientDir, { read: true });
    try {
      await dir.sync();
      this.stats.syncs++;
    } finally {
      dir.close();
    }
  }
}
