import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['{shared,coordinator,site-agent,demo}/src/**/*.test.ts', 'test/**/*.test.ts'],
    exclude: ['**/node_modules/**', '**/dist/**'],
    // Forks, not worker threads: the WASM backend and native addons (sharp, better-sqlite3)
    // each want their own process.
    pool: 'forks',
    testTimeout: 30_000,
    hookTimeout: 60_000,
  },
});
