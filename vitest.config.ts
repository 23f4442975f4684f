import { defineConfig } from 'vitest/config';

export const HEAVY = ['test/reliability/soak.test.ts', 'test/operator/scale.test.ts'];

export default defineConfig({
  test: {
    include: ['**/*.test.ts'],
    // Load tests (500-client soak, 5,000 long-pollers) measure memory and latency: they run after the
    // rest, one at a time (`npm run test:heavy`), so they do not share two cores with other test files.
    exclude: ['node_modules/**', 'dist/**', ...(process.env.DBGUARD_HEAVY ? [] : HEAVY)],
    globalSetup: ['test/support/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Two cores: tests that start proxies and pound one PostgreSQL server do better with few workers.
    maxWorkers: 2,
    // every-test-ran fails `make test` when a collected test was skipped (DBGUARD_REQUIRE_EVERY_TEST=1)
    reporters: ['default', './test/support/every-test-ran.ts'],
  },
});
