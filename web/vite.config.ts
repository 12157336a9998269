import { defineConfig } from "vitest/config";
import react from "@vitejs/plugin-react";

// `npm run dev` serves the UI with hot reload and forwards the API and the
// WebSocket to a running gateway (SWITCHBOARD_GATEWAY, default :5055).
const gateway = process.env.SWITCHBOARD_GATEWAY ?? "http://127.0.0.1:5055";

export default defineConfig({
  plugins: [react()],
  server: {
    port: 5173,
    proxy: {
      "/api": gateway,
      "/ws": { target: gateway, ws: true },
    },
  },
  test: {
    include: ["src/**/*.test.ts", "src/**/*.test.tsx"],
    // highlight.js ships its styles as CSS files; the tests need none.
    css: false,
  },
});
