import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { App } from "./App";
import { ChatClient, browserEnv } from "./lib/client";
import "./styles.css";

const client = new ChatClient(browserEnv());
client.start();
window.addEventListener("pagehide", () => client.stop());
// Back/forward cache: a restored page must connect again.
window.addEventListener("pageshow", (e) => {
  if (e.persisted) client.start();
});

const root = document.getElementById("root");
if (!root) throw new Error("#root is missing from index.html");
createRoot(root).render(
  <StrictMode>
    <App client={client} />
  </StrictMode>,
);
