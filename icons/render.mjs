// Renders ui/public/favicon.svg (Vigil's mark) into the RGBA PNGs the desktop
// app and its .deb use, with Debian's chromium (playwright-core from ui/).
// The PNGs are committed; run this only when the mark changes:
//   cd ui && node ../icons/render.mjs
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(`${process.cwd()}/package.json`);
const { chromium } = require("playwright-core");
const svg = readFileSync(new URL("../ui/public/favicon.svg", import.meta.url), "utf8");
const sizes = { "32x32.png": 32, "128x128.png": 128, "128x128@2x.png": 256, "icon.png": 512 };

const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: ["--no-sandbox"] });
const page = await browser.newPage();
for (const [name, size] of Object.entries(sizes)) {
  await page.setViewportSize({ width: size, height: size });
  await page.setContent(
    `<html><body style="margin:0;background:transparent">${svg.replace("<svg ", `<svg width="${size}" height="${size}" `)}</body></html>`,
  );
  await page.screenshot({ path: new URL(name, import.meta.url).pathname, omitBackground: true });
  console.log(name);
}
await browser.close();
