// The console is built into a directory given by `--outDir` (xtask passes
// target/console); the server embeds that directory's files.
import { defineConfig } from 'vite';

export default defineConfig({
  base: '/',
  build: {
    target: 'es2022',
    assetsDir: 'assets',
    sourcemap: false,
    emptyOutDir: true,
    reportCompressedSize: true,
    modulePreload: { polyfill: false },
  },
});
