import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/build-cli.ts'],
    setupFiles: ['test/remove-temp-dirs.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // Two cores: run test files in parallel but not more than the machine has.
    maxWorkers: 2,
    pool: 'forks',
  },
});
