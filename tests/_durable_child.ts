/**
 * The child process of tests/durable_client_test.ts: an MQTTClient with a
 * FileStore publishing a numbered stream to a broker, until killed or done.
 *
 *     deno run --allow-net=127.0.0.1 --allow-read=DIR --allow-write=DIR \
 *       tests/_durable_child.ts DIR PORT CLIENT_ID FIRST [LAST]
 *
 * Message `seq` (FIRST, FIRST+1, ...) goes to `dur/q1` at QoS 1 when seq is
 * odd, to `dur/q2` at QoS 2 when even; its payload is the decimal seq. Every
 * call is `sync: false` (it resolves once its record is durable and the
 * message is windowed) except LAST's, which resolves once acknowledged.
 * One line on stdout per event, written synchronously so that a `kill -9`
 * cannot reorder or half-print them:
 *
 * - `C`: connected;
 * - `A <seq>`: about to call publish() for seq (it may be in the store from now on);
 * - `P <seq>`: that publish() resolved;
 * - `W <cmd> <id> <dup 0|1> [<seq>]`: the client wrote a PUBLISH or PUBREL
 *   (printed once the bytes were handed to the socket; PUBREL without seq);
 * - `DONE`: LAST resolved and the client disconnected.
 *
 * Without LAST it streams until killed.
 *
 * @module
 */

import { PacketDecoder } from "../codec/decode.ts";
import { FileStore, MQTTClient, silentLogger } from "../mod.ts";
import type { ByteConn, DialOptions } from "../mod.ts";
import { dial } from "../transport/tcp.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function say(line: string): void {
  const bytes = encoder.encode(line + "\n");
  let offset = 0;
  while (offset < bytes.length) offset += Deno.stdout.writeSync(bytes.subarray(offset));
}

/** The default dialer, printing every PUBLISH and PUBREL the client writes. */
async function tappedDial(options: DialOptions): Promise<ByteConn> {
  const conn = await dial(options);
  const frames = new PacketDecoder({ protocolVersion: 4 });
  return {
    read: (buffer) => conn.read(buffer),
    async write(bytes) {
      const wrote = await conn.write(bytes);
      frames.push(bytes.slice(0, wrote), (p) => {
        if (p.cmd === "publish" && p.qos > 0) {
          say(`W publish ${p.messageId} ${p.dup ? 1 : 0} ${decoder.decode(p.payload)}`);
        } else if (p.cmd === "pubrel") {
          say(`W pubrel ${p.messageId} 0`);
        }
      });
      return wrote;
    },
    close: () => conn.close(),
  };
}

/** QoS of message `seq`: 1 when odd, 2 when even. */
export function qosOf(seq: number): 1 | 2 {
  return seq % 2 === 1 ? 1 : 2;
}

if (import.meta.main) {
  const [dir, port, clientId, first, last] = Deno.args;
  const client = new MQTTClient({
    server: "127.0.0.1",
    port: Number(port),
    clientId,
    clean: false,
    store: new FileStore(dir),
    dial: tappedDial,
    logger: silentLogger,
    responseTime: 2,
    reconnect: { initialDelay: 0.02, maxDelay: 0.2 },
  });
  await client.connect();
  say("C");
  const end = last === undefined ? Infinity : Number(last);
  for (let seq = Number(first); seq <= end; seq++) {
    const qos = qosOf(seq);
    say(`A ${seq}`);
    await client.publish(`dur/q${qos}`, String(seq), { qos, sync: seq === end });
    say(`P ${seq}`);
  }
  await client.disconnect();
  say("DONE");
}
