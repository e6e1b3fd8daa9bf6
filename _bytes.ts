/**
 * Byte and error helpers shared inside the library: one copy of each.
 *
 * @module
 */

/** The largest remaining length MQTT can express (four length bytes). */
export const MAX_REMAINING_LENGTH = 268_435_455;

/** `chunks` joined into one new array. */
export function concat(chunks: readonly Uint8Array[]): Uint8Array {
  let length = 0;
  for (const chunk of chunks) length += chunk.length;
  const out = new Uint8Array(length);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}

/** An error's message, or the thrown value as text. */
export function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** How many bytes the remaining-length field takes for `remaining` (1..4). */
export function remainingLengthSize(remaining: number): number {
  return remaining < 128 ? 1 : remaining < 16_384 ? 2 : remaining < 2_097_152 ? 3 : 4;
}

/**
 * Total length of the frame starting at `offset` of `bytes` (fixed header,
 * remaining length and body); `undefined` while its header is incomplete,
 * `-1` when the remaining length runs over four bytes (malformed).
 */
export function frameLength(bytes: Uint8Array, offset: number): number | undefined {
  let remaining = 0;
  let multiplier = 1;
  for (let i = 1; i <= 4; i++) {
    if (offset + i >= bytes.length) return undefined;
    const digit = bytes[offset + i];
    remaining += (digit & 0x7f) * multiplier;
    if ((digit & 0x80) === 0) return 1 + i + remaining;
    multiplier *= 128;
  }
  return -1;
}
