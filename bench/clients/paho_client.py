"""Benchmark client: Eclipse paho-mqtt (Python), as its docs suggest using it.

The network loop runs in paho's own thread (loop_start); publishes come from
the main thread. In-flight and queued messages are unlimited (0), as for the
other clients; reconnect delays are paho's defaults. Speaks the orchestrator's
protocol: one JSON argument, JSON lines on stdout, "go" on stdin. Kinds:
"stream" (QoS 1, every publish fired, then every PUBACK awaited) and
"replay". Needs paho-mqtt 1.x (Debian: python3-paho-mqtt).
"""

import json
import sys
import threading
import time

import paho.mqtt.client as mqtt

cfg = json.loads(sys.argv[1])
payload = b"x" * cfg["size"]
TIMEOUT = 170


def epoch_ms():
    return time.time() * 1000


def emit(record):
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


acked = 0
ack_lock = threading.Condition()
connected = threading.Event()
disconnected = threading.Event()
connack_at = []


def on_connect(client, userdata, flags, rc):
    connack_at.append(epoch_ms())
    disconnected.clear()
    connected.set()


def on_disconnect(client, userdata, rc):
    connected.clear()
    disconnected.set()


def on_publish(client, userdata, mid):
    global acked
    with ack_lock:
        acked += 1
        ack_lock.notify_all()


def wait_acked(count):
    deadline = time.monotonic() + TIMEOUT
    with ack_lock:
        while acked < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{acked} of {count} acknowledged")
            ack_lock.wait(left)


def stream(topic, n):
    """Fires n QoS 1 publishes; returns once all of them are acknowledged."""
    base = acked
    for _ in range(n):
        client.publish(topic, payload, qos=1)
    wait_acked(base + n)


client = mqtt.Client(client_id=cfg["clientId"], protocol=mqtt.MQTTv311)
client.max_inflight_messages_set(0)
client.max_queued_messages_set(0)
client.on_connect = on_connect
client.on_disconnect = on_disconnect
client.on_publish = on_publish
client.connect(cfg["host"], cfg["port"])
client.loop_start()
if not connected.wait(30):
    raise SystemExit("no CONNACK")
if cfg["kind"] == "stream" and cfg.get("warmup"):
    stream(cfg["topic"] + "/warmup", cfg["warmup"])

idle_rss = status_kb("VmRSS")
emit({"type": "ready", "idleRssKb": idle_rss})
for line in sys.stdin:
    if line.strip() == "go":
        break
cpu0 = time.process_time()
kind = cfg["kind"]
if kind == "stream":
    t0 = epoch_ms()
    stream(cfg["topic"], cfg["n"])
    t1 = epoch_ms()
elif kind == "replay":
    # The orchestrator has cut the link and refuses connections.
    disconnected.wait(TIMEOUT)
    base = acked
    for _ in range(cfg["n"]):
        client.publish(cfg["topic"], payload, qos=1)
    emit({"type": "queued"})
    if not connected.wait(TIMEOUT):
        raise SystemExit("no reconnect")
    t0 = connack_at[-1]
    wait_acked(base + cfg["n"])
    t1 = epoch_ms()
else:
    raise SystemExit(f"paho client: kind {kind} is not measured")
cpu_us = (time.process_time() - cpu0) * 1e6
emit(
    {
        "type": "result",
        "t0": t0,
        "t1": t1,
        "cpuUs": cpu_us,
        "idleRssKb": idle_rss,
        "peakRssKb": status_kb("VmHWM"),
    }
)
client.disconnect()
client.loop_stop()
