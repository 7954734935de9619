import { defineConfig } from "vitest/config";

// `npm run bench:browser`: the UI's performance targets (see bench/browser.perf.ts).
export default defineConfig({
  test: {
    include: ["bench/**/*.perf.ts"],
    fileParallelism: false,
    testTimeout: 900_000,
    hookTimeout: 60_000,
  },
});
