import { defineConfig } from "vitest/config"

// Two projects: `unit` (in-process only; test/unit/no-spawn.test.ts keeps processes out of it) and
// `integration` (anything that starts node, cara, Synapse or another child process). `npm test` runs both;
// `npm run test:unit` runs `vitest run --project unit`. The pool settings are the run's, shared by both.
export default defineConfig({
  test: {
    pool: "forks",
    testTimeout: 60_000,
    hookTimeout: 180_000,
    teardownTimeout: 30_000,
    fileParallelism: true,
    poolOptions: { forks: { maxForks: 2, minForks: 1 } },
    projects: [
      {
        extends: true,
        test: { name: "unit", include: ["test/unit/**/*.test.ts"] }
      },
      {
        extends: true,
        test: {
          name: "integration",
          include: ["test/integration/**/*.test.ts"],
          // One real Synapse per run, shared by the integration test files (each registers its own users).
          globalSetup: ["test/support/globalSetup.ts"]
        }
      }
    ]
  }
})
