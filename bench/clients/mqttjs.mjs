// Benchmark client: MQTT.js 5 on Node. `npm install --prefix bench/node` provides it.
import { createRequire } from "node:module";
import { run } from "./mqttjs_core.mjs";

const require = createRequire(new URL("../node/package.json", import.meta.url));
await run(require("mqtt"), JSON.parse(process.argv[2]));
