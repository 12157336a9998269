// Several conversations with the assistant, and the whole page driven with
// the keyboard only, in a real headless Chromium against the real stack.

import assert from "node:assert/strict";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { Stack, answerTo, artifacts, completedReply, exchange, launchBrowser, say, waitFor } from "./stack.mjs";

let browser;
before(async () => {
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
});

/** Every `send` frame the page writes on its WebSockets, as parsed JSON. */
function sentFrames(page) {
  const frames = [];
  page.on("websocket", (ws) =>
    ws.on("framesent", ({ payload }) => {
      const frame = JSON.parse(String(payload));
      if (frame.type === "send") frames.push(frame);
    }),
  );
  return frames;
}

/** The conversations in the side list, top (most recent) first. */
const listed = (page) => page.getByTestId("conversation").locator(".side-item, .rename").allTextContents();

/** What has keyboard focus: its accessible name (label or text) and element id. */
const focused = (page) =>
  page.evaluate(() => {
    const el = document.activeElement;
    const name = el?.getAttribute("aria-label") || el?.labels?.[0]?.textContent || el?.textContent || "";
    return { name: name.trim(), id: el?.id ?? "", tag: el?.tagName ?? "" };
  });

/**
 * Moves keyboard focus with Tab (then Shift+Tab) until the focused element's
 * name is `name`: proof that a keyboard reaches it.
 */
async function tabTo(page, name) {
  for (const key of ["Tab", "Shift+Tab"]) {
    for (let i = 0; i < 40; i++) {
      if ((await focused(page)).name === name) return;
      await page.keyboard.press(key);
    }
  }
  throw new Error(`Tab never reaches “${name}”; focus is on ${JSON.stringify(await focused(page))}`);
}

describe("conversations", () => {
  it("keeps several, each with its own context, across a reload; renames and deletes", async () => {
    const stack = await Stack.start({ name: "conversations", chunkDelayMs: 5 });
    try {
      const { page } = await stack.open(browser);
      // Watch the page's socket from its start: the same page, loaded again.
      const frames = sentFrames(page);
      await page.reload();
      await page.getByTestId("connection").getByText("connected", { exact: true }).waitFor();
      await say(page, "my name is Ada");
      assert.equal(await completedReply(page, "my name is Ada"), answerTo("my name is Ada"));
      // A second conversation starts empty, with no context from the first.
      await page.getByTestId("new-conversation").click();
      await page.getByTestId("conversation-title").getByText("New conversation").waitFor();
      assert.equal(await page.getByTestId("my-message").count(), 0);
      await say(page, "what is my name?");
      await completedReply(page, "what is my name?");
      assert.deepEqual(await listed(page), ["what is my name?", "my name is Ada"]);
      // Typed and not sent: each conversation keeps its own while switching.
      await page.getByLabel("Message").fill("half a thought");
      await page.getByRole("button", { name: "my name is Ada" }).click();
      assert.equal(await page.getByLabel("Message").inputValue(), "", "the other conversation's composer is its own");
      await page.getByRole("button", { name: "what is my name?" }).click();
      assert.equal(await page.getByLabel("Message").inputValue(), "half a thought");
      await page.getByLabel("Message").fill("");
      // Back to the first: its history, and its context goes with a new message.
      await page.getByRole("button", { name: "my name is Ada" }).click();
      await say(page, "and again?");
      await completedReply(page, "and again?");
      const context = (text) => {
        const frame = frames.find((f) => f.text === text);
        assert.ok(frame, `the page sent “${text}”`);
        return frame.context ?? [];
      };
      assert.deepEqual(context("what is my name?"), [], "a new conversation sends no context");
      assert.deepEqual(context("and again?"), [
        { role: "user", text: "my name is Ada" },
        { role: "assistant", text: answerTo("my name is Ada") },
      ]);
      // Rename the one on screen.
      await page.getByRole("button", { name: "Rename “my name is Ada”" }).click();
      await page.getByLabel("Conversation title").fill("About Ada");
      await page.getByLabel("Conversation title").press("Enter");
      await page.getByTestId("conversation-title").getByText("About Ada").waitFor();
      // A reload keeps both, their names and their messages.
      await page.reload();
      await page.getByTestId("connection").getByText("connected", { exact: true }).waitFor();
      assert.deepEqual(await listed(page), ["About Ada", "what is my name?"]);
      assert.equal(await exchange(page, "and again?").count(), 1);
      await page.getByRole("button", { name: "what is my name?" }).click();
      assert.equal(await completedReply(page, "what is my name?"), answerTo("what is my name?"));
      assert.equal(await exchange(page, "my name is Ada").count(), 0, "each conversation shows its own");
      await page.screenshot({ path: path.join(artifacts, "conversations.png"), fullPage: true });
      // Delete it (asked to confirm): the other takes the screen.
      await page.getByRole("button", { name: "Delete “what is my name?”" }).click();
      await page.getByRole("button", { name: "Yes, delete “what is my name?”" }).click();
      await page.getByTestId("conversation-title").getByText("About Ada").waitFor();
      assert.deepEqual(await listed(page), ["About Ada"]);
      await page.reload();
      await page.getByTestId("connection").getByText("connected", { exact: true }).waitFor();
      assert.deepEqual(await listed(page), ["About Ada"], "deleted for good");
    } finally {
      await stack.stop();
    }
  });

  it("works with the keyboard alone: send, stop, new, switch, rename, rooms, delete", async () => {
    // Slow answers, so there is time to reach Stop.
    const stack = await Stack.start({ name: "keyboard", chunkDelayMs: 120 });
    try {
      const { page } = await stack.open(browser);
      const { keyboard } = page;
      // The composer has focus from the start: type and Enter sends.
      assert.equal((await focused(page)).id, "message-input");
      await keyboard.type("first by keyboard");
      await keyboard.press("Enter");
      assert.equal(await completedReply(page, "first by keyboard"), answerTo("first by keyboard"));
      // A new conversation, and focus is back in its composer.
      await tabTo(page, "+ New conversation");
      await keyboard.press("Enter");
      await page.getByTestId("conversation-title").getByText("New conversation").waitFor();
      await waitFor("focus is in the composer", async () => (await focused(page)).id === "message-input");
      const long = Array.from({ length: 40 }, (_, n) => `w${n}`).join(" ");
      await keyboard.type(long);
      await keyboard.press("Enter");
      // Stop the streaming answer.
      const item = exchange(page, long);
      await item.getByTestId("status").getByText("processing").waitFor();
      await tabTo(page, "Stop");
      await keyboard.press("Enter");
      await item.getByTestId("status").getByText("stopped").waitFor();
      // Switch back to the first, and rename it.
      await tabTo(page, "first by keyboard");
      await keyboard.press("Enter");
      await page.getByTestId("conversation-title").getByText("first by keyboard").waitFor();
      await tabTo(page, "Rename “first by keyboard”");
      await keyboard.press("Enter");
      await waitFor("the title field has focus", async () => (await focused(page)).name === "Conversation title");
      await keyboard.type("Keyboard notes");
      await keyboard.press("Enter");
      await page.getByTestId("conversation-title").getByText("Keyboard notes").waitFor();
      assert.equal((await focused(page)).name, "Keyboard notes", "focus back on the renamed conversation");
      // Escape leaves a rename without changing anything.
      await tabTo(page, "Rename “Keyboard notes”");
      await keyboard.press("Enter");
      await keyboard.type("not this");
      await keyboard.press("Escape");
      await page.getByTestId("conversation-title").getByText("Keyboard notes").waitFor();
      // A room: create it, write in it, and come back.
      await tabTo(page, "New room name");
      await keyboard.type("Keys");
      await keyboard.press("Enter");
      await page.getByRole("heading", { name: "Keys" }).waitFor();
      await tabTo(page, "Message to the room");
      await keyboard.type("hello room");
      await keyboard.press("Enter");
      await page.getByTestId("room-message").getByText("hello room").waitFor();
      await tabTo(page, "Keyboard notes");
      await keyboard.press("Enter");
      await page.getByTestId("conversation-title").getByText("Keyboard notes").waitFor();
      await tabTo(page, "# Keys");
      await keyboard.press("Enter");
      await page.getByRole("heading", { name: "Keys" }).waitFor();
      await tabTo(page, "Keyboard notes");
      await keyboard.press("Enter");
      // Delete, confirmed with the keyboard (focus lands on the confirmation).
      await tabTo(page, "Delete “Keyboard notes”");
      await keyboard.press("Enter");
      assert.equal((await focused(page)).name, "Yes, delete “Keyboard notes”");
      await keyboard.press("Enter");
      await waitFor("one conversation is left", async () => (await listed(page)).length === 1);
      assert.deepEqual(await listed(page), [long.slice(0, 47) + "…"]);
      await page.screenshot({ path: path.join(artifacts, "keyboard.png"), fullPage: true });
    } finally {
      await stack.stop();
    }
  });
});
