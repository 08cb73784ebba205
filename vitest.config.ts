import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    pool: "forks",
    // One real Synapse per run, shared by the integration test files (each registers its own users).
    globalSetup: ["test/support/globalSetup.ts"],
    testTimeout: 60_000,
    hookTimeout: 180_000,
    teardownTimeout: 30_000,
    fileParallelism: true,
    poolOptions: { forks: { maxForks: 2, minForks: 1 } }
  }
})
