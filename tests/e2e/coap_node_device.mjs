// A CoAP device on node-coap (npm `coap`, from ui/node_modules): an
// observable heart rate in JSON, a battery level in text, and the
// /.well-known/core that lists them (node-coap does not write one itself).
// Usage: node coap_node_device.mjs PORT [BIND] [--multicast IFACE_ADDRESS]
// (cwd: ui/). Prints "ready PORT" once it serves.
import { createRequire } from "node:module";

const require = createRequire(`${process.cwd()}/package.json`);
const coap = require("coap");
const [port, bind = "127.0.0.1", ...rest] = process.argv.slice(2);
const multicast = rest[0] === "--multicast" ? rest[1] : null;

const CORE = '</heart>;rt="heart-rate";ct=50;obs;title="Heart rate",</battery>;rt="battery";ct=0';
let beat = 0;
const server = coap.createServer({
  type: bind.includes(":") ? "udp6" : "udp4",
  ...(multicast ? { multicastAddress: "224.0.1.187", multicastInterface: multicast } : {}),
});
server.on("request", (req, res) => {
  const path = req.url.split("?")[0];
  if (path === "/.well-known/core" && req.method === "GET") {
    res.setOption("Content-Format", "application/link-format");
    res.end(CORE);
  } else if (path === "/heart" && req.method === "GET") {
    res.setOption("Content-Format", "application/json");
    const body = () => JSON.stringify({ bpm: 60 + (beat % 40) });
    if (req.headers.Observe !== 0) return res.end(body());
    res.write(body());
    const timer = setInterval(() => res.write(body()), 200);
    res.on("finish", () => clearInterval(timer));
  } else if (path === "/battery" && req.method === "GET") {
    res.setOption("Content-Format", "text/plain");
    res.end("87");
  } else {
    res.code = "4.04";
    res.end();
  }
});
setInterval(() => beat++, 200);
server.listen(Number(port), bind, () => console.log(`ready ${port}`));
