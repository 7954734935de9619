// MQTT.js (npm `mqtt`, from ui/node_modules) over secure WebSocket, trusting
// only the CA file given: publishes one QoS 1 message and exits 0 once it is
// acknowledged, 1 on any error (an untrusted certificate among them).
// Usage: node mqttjs_wss.mjs wss://host:port/mqtt ca.pem topic   (cwd: ui/)
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(`${process.cwd()}/package.json`);
const mqtt = require("mqtt");
const [url, caFile, topic] = process.argv.slice(2);
const fail = (why) => {
  console.error(`mqttjs_wss: ${why}`);
  process.exit(1);
};
setTimeout(() => fail("no acknowledgement within 20 s"), 20_000).unref();
const client = mqtt.connect(url, {
  ca: readFileSync(caFile),
  rejectUnauthorized: true,
  reconnectPeriod: 0,
  connectTimeout: 10_000,
  protocolVersion: 5,
});
client.on("error", (e) => fail(e.message));
client.on("connect", () => {
  client.publish(topic, "from MQTT.js", { qos: 1 }, (e) => {
    if (e) fail(e.message);
    client.end(false, {}, () => process.exit(0));
  });
});
