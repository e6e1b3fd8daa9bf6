/**
 * The QoS 0 subscriber: counts arrivals on one topic (no MQTT library) and
 * reports the time of the first and the last. Gives up 5 s after the last
 * arrival (or 60 s before the first), reporting how many it got.
 *
 * @module
 */
import { config, emit, epochMs } from "./common.ts";
import { mqttConnect, readFrames, subscribeFrame, writeAll } from "./wire.ts";

const cfg = config();
const conn = await mqttConnect(cfg.host, cfg.port, cfg.clientId);
let count = 0, tFirst = 0, tLast = 0, subscribed = false, finished = false;
let idle = setTimeout(() => finish(), 60_000);

function finish(): void {
  clearTimeout(idle);
  if (finished) return;
  finished = true;
  emit({ type: "result", count, tFirst, tLast });
  try {
    conn.close();
  } catch { /* already closed */ }
}

const reading = readFrames(conn, (type) => {
  if (type === 9 && !subscribed) {
    subscribed = true;
    emit({ type: "ready" });
  } else if (type === 3) {
    tLast = epochMs();
    if (count++ === 0) tFirst = tLast;
    if (count === cfg.n) return finish();
    if ((count & 1023) === 0) {
      clearTimeout(idle);
      idle = setTimeout(() => finish(), 5_000);
    }
  }
});
await writeAll(conn, subscribeFrame(cfg.topic, 0));
await reading;
finish();
