import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";
import react from "@vitejs/plugin-react";

const gen = fileURLToPath(new URL("../sdk/ts/src/gen", import.meta.url));

// The app is served by the agent under /ui/ (ui/embed.go), so every asset
// URL is relative to that base. The API code is generated into the SDK
// (sdk/ts/src/gen) and imported from there; dedupe makes its imports of
// @bufbuild/protobuf resolve to this package's copy, not the root
// workspace's, so that one registry and one runtime serve both.
export default defineConfig({
  base: "/ui/",
  plugins: [react()],
  resolve: {
    alias: { "@gen": gen },
    dedupe: ["@bufbuild/protobuf", "react", "react-dom"],
  },
  build: {
    outDir: "dist",
    emptyOutDir: true,
    sourcemap: false,
    assetsDir: "assets",
    chunkSizeWarningLimit: 900,
  },
  server: { fs: { allow: [".", gen] } },
  test: {
    environment: "jsdom",
    setupFiles: ["./src/test/setup.ts"],
    include: ["src/**/*.test.{ts,tsx}"],
  },
});
