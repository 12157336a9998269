import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { App } from "./App";
import { ChatClient, browserEnv } from "./lib/client";
import { inviteFromHash } from "./lib/rooms";
import { preloadMarkdown } from "./RichText";
import "./styles.css";

const client = new ChatClient(browserEnv());
client.start();
preloadMarkdown();
// A room invitation link (#join=<token>): join once connected, then forget it.
const invite = inviteFromHash(window.location.hash);
if (invite) {
  history.replaceState(null, "", window.location.pathname);
  const unsubscribe = client.subscribe(() => {
    if (client.getSnapshot().connection !== "connected") return;
    unsubscribe();
    void client.joinRoom(invite);
  });
}
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
