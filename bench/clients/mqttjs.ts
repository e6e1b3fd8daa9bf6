/**
 * Benchmark client: MQTT.js 5 on Deno (npm:mqtt@5), same logic as on Node.
 *
 * @module
 */
// deno-lint-ignore no-import-prefix -- a benchmark-only dependency, kept out of deno.json
import mqtt from "npm:mqtt@5";
// @ts-types="./mqttjs_core.d.ts"
import { run } from "./mqttjs_core.mjs";

await run(mqtt, JSON.parse(Deno.args[0]));
