import { defineConfig } from "vitest/config";

// The browser suite (`npm run test:browser`): one file, one server, in order.
export default defineConfig({
  test: {
    include: ["tests/browser/**/*.e2e.test.ts"],
    testTimeout: 60_000,
    hookTimeout: 30_000,
    fileParallelism: false,
    sequence: { concurrent: false },
  },
});
