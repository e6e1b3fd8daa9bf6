/** Runs the configured scenario with the MQTT.js module `mqtt`. */
export function run(mqtt: unknown, cfg: unknown): Promise<void>;
