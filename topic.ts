/**
 * Topic names and topic filters: validation (MQTT 3.1.1 section 4.7) and
 * wildcard matching.
 *
 * @module
 */

const encoder = new TextEncoder();

/** The longest UTF-8 string MQTT can carry (two-byte length prefix). */
export const MAX_STRING_BYTES = 65_535;

/** A short description of a bad value for error messages: its type and, briefly, the value. */
export function show(value: unknown): string {
  if (typeof value === "string") {
    return JSON.stringify(value.length > 60 ? value.slice(0, 60) + "…" : value);
  }
  if (typeof value === "number" || typeof value === "boolean") return `${typeof value} ${value}`;
  if (value === null) return "null";
  if (value === undefined) return "undefined";
  if (value instanceof Uint8Array) return `Uint8Array(${value.length})`;
  return typeof value;
}

function checkString(value: unknown, what: string): asserts value is string {
  if (typeof value !== "string") {
    throw new TypeError(`${what} must be a string, got ${show(value)}`);
  }
  if (value.length === 0) throw new TypeError(`${what} must not be empty`);
  if (value.includes("\u0000")) {
    throw new TypeError(`${what} must not contain U+0000: ${show(value)}`);
  }
  // A JS string of n UTF-16 units encodes to at most 3n bytes: skip the encode when short.
  if (value.length * 3 > MAX_STRING_BYTES) {
    const bytes = encoder.encode(value).length;
    if (bytes > MAX_STRING_BYTES) {
      throw new RangeError(
        `${what} is ${bytes} UTF-8 bytes, over MQTT's limit of ${MAX_STRING_BYTES}`,
      );
    }
  }
}

/**
 * Throws unless `topic` is a valid topic name to publish to: a non-empty
 * string of at most 65 535 UTF-8 bytes, without `+`, `#` or U+0000.
 */
export function validateTopicName(topic: unknown, what = "topic"): asserts topic is string {
  checkString(topic, what);
  if (topic.includes("+") || topic.includes("#")) {
    throw new TypeError(
      `${what} must not contain the wildcards "+" or "#" when publishing: ${show(topic)}`,
    );
  }
}

/**
 * Throws unless `filter` is a valid subscription filter: `+` and `#` only as
 * whole levels, `#` only last. A shared subscription `$share/<group>/<filter>`
 * needs a non-empty group without wildcards or "/", and a valid filter.
 */
export function validateTopicFilter(
  filter: unknown,
  what = "topic filter",
): asserts filter is string {
  checkString(filter, what);
  let inner = filter;
  if (filter.startsWith(SHARE_PREFIX)) {
    const rest = filter.slice(SHARE_PREFIX.length);
    const slash = rest.indexOf("/");
    const group = slash < 0 ? rest : rest.slice(0, slash);
    if (group.length === 0) {
      throw new TypeError(`${what} has an empty shared subscription group: ${show(filter)}`);
    }
    if (group.includes("+") || group.includes("#")) {
      throw new TypeError(
        `${what} has wildcards in its shared subscription group: ${show(filter)}`,
      );
    }
    if (slash < 0 || slash === rest.length - 1) {
      throw new TypeError(`${what} is a shared subscription without a filter: ${show(filter)}`);
    }
    inner = rest.slice(slash + 1);
  }
  const levels = inner.split("/");
  for (let i = 0; i < levels.length; i++) {
    const level = levels[i];
    if (level.includes("#") && (level !== "#" || i !== levels.length - 1)) {
      throw new TypeError(`${what} may use "#" only as the whole last level: ${show(filter)}`);
    }
    if (level.includes("+") && level !== "+") {
      throw new TypeError(`${what} may use "+" only as a whole level: ${show(filter)}`);
    }
  }
}

const SHARE_PREFIX = "$share/";

/**
 * The filter that incoming topics are matched against: `<filter>` for a
 * shared subscription `$share/<group>/<filter>` (messages carry the plain
 * topic), the filter itself otherwise.
 */
export function matchingFilter(filter: string): string {
  if (!filter.startsWith(SHARE_PREFIX)) return filter;
  const slash = filter.indexOf("/", SHARE_PREFIX.length);
  return slash < 0 ? filter : filter.slice(slash + 1);
}

/**
 * Whether `topic` (a topic name) matches `filter` (which may contain `+` and
 * `#`). Topics starting with `$` do not match a filter starting with a
 * wildcard (MQTT-4.7.2-1). A shared subscription's filter matches as its
 * `<filter>` part.
 *
 * @example
 * ```ts
 * import { matchTopic } from "./mod.ts";
 * matchTopic("sensors/+/temp", "sensors/7/temp"); // true
 * matchTopic("sensors/#", "sensors"); // true
 * ```
 */
export function matchTopic(filter: string, topic: string): boolean {
  if (filter === topic) return true;
  if (filter.startsWith(SHARE_PREFIX)) filter = matchingFilter(filter);
  if (topic.startsWith("$") && (filter.startsWith("+") || filter.startsWith("#"))) return false;
  const f = filter.split("/");
  const t = topic.split("/");
  for (let i = 0; i < f.length; i++) {
    if (f[i] === "#") return true;
    if (i >= t.length) return false;
    if (f[i] !== "+" && f[i] !== t[i]) return false;
  }
  return f.length === t.length;
}
