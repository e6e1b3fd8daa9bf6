/**
 * The scripted fake broker, for this repository's tests. It lives in the
 * public module `testing.ts` so users can script their own tests with it.
 *
 * @module
 */
export * from "../testing.ts";
