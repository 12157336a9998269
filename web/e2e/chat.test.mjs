// The chat page in a real headless Chromium against the real stack.

import assert from "node:assert/strict";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { Stack, answerTo, artifacts, completedReply, exchange, launchBrowser, say } from "./stack.mjs";

let browser;
before(async () => {
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
});

describe("the chat page", () => {
  it("sends a message and shows the reply streaming in until it is complete", async () => {
    const stack = await Stack.start({ name: "round-trip" });
    try {
      const { page, user } = await stack.open(browser);
      assert.match(user, /^g-[0-9a-f]{32}$/);
      const text = "hello from the browser";
      await say(page, text);
      const item = exchange(page, text);
      // The answer is seen part-way, then whole.
      await item.locator('[data-testid="reply"][data-complete="false"]').waitFor();
      assert.equal(await completedReply(page, text), answerTo(text));
      // The composer is ready for the next message.
      assert.equal(await page.getByLabel("Message").inputValue(), "");
      await page.screenshot({ path: path.join(artifacts, "conversation.png"), fullPage: true });
    } finally {
      await stack.stop();
    }
  });

  it("stops a streaming answer with the Stop button", async () => {
    const stack = await Stack.start({ name: "stop", chunkDelayMs: 150 });
    try {
      const { page } = await stack.open(browser);
      const text = Array.from({ length: 40 }, (_, n) => `word${n}`).join(" ");
      await say(page, text);
      const item = exchange(page, text);
      await item.locator('[data-testid="reply"][data-complete="false"]').waitFor();
      await item.getByTestId("status").getByText("processing").waitFor();
      await item.getByTestId("stop").click();
      await item.getByTestId("status").getByText("stopped").waitFor();
      const shown = (await item.getByTestId("reply").locator(".text").textContent()).trim();
      const full = answerTo(text);
      assert.ok(shown.length > 0 && shown.length < full.length, `a part of the answer stays: ${shown}`);
      assert.ok(full.startsWith(shown), `what was streamed is kept as it was: ${shown}`);
      assert.equal(await item.getByTestId("stop").count(), 0, "no Stop button once stopped");
      await page.screenshot({ path: path.join(artifacts, "stopped.png"), fullPage: true });
    } finally {
      await stack.stop();
    }
  });

  it("shares a room by link: one order for both, presence, read receipts, the assistant", async () => {
    const stack = await Stack.start({ name: "rooms", chunkDelayMs: 10 });
    try {
      const alice = await stack.open(browser);
      await alice.page.getByLabel("New room name").fill("Team");
      await alice.page.getByRole("button", { name: "Create" }).click();
      const link = await alice.page.getByTestId("invite-link").inputValue();
      assert.match(link, /#join=/);
      // Bob follows the link: he joins and the room opens.
      const bob = await stack.open(browser, link);
      await bob.page.getByRole("heading", { name: "Team" }).waitFor();
      const bobInput = bob.page.getByLabel("Message to the room");
      await bobInput.fill("hello from bob");
      await bobInput.press("Enter");
      // Alice sees it (presence refreshed by reopening the room).
      await alice.page.getByTestId("room-message").getByText("hello from bob").waitFor();
      await alice.page.getByRole("button", { name: "# Team" }).click();
      await alice.page.locator(`[data-testid="member"][data-online="true"]`, { hasText: bob.user }).waitFor();
      // Alice answers; Bob has the room open, so it is read.
      const aliceInput = alice.page.getByLabel("Message to the room");
      await aliceInput.fill("@assistant hi both");
      await aliceInput.press("Enter");
      await bob.page.getByTestId("room-message").getByText("@assistant hi both").waitFor();
      await alice.page.getByTestId("receipt").getByText("read by 1").waitFor();
      // The assistant answers in the room: both see the whole answer there.
      for (const { page } of [alice, bob]) {
        const answer = page.locator('[data-testid="room-answer"][data-complete="true"]');
        await answer.waitFor();
        assert.equal((await answer.locator(".text").textContent()).trim(), answerTo("@assistant hi both"));
      }
      const order = async (page) => page.getByTestId("room-message").locator(".text").allTextContents();
      assert.deepEqual(await order(alice.page), await order(bob.page), "one order for both");
      await alice.page.screenshot({ path: path.join(artifacts, "room.png"), fullPage: true });
      // Bob leaves: the room is gone from his list.
      await bob.page.getByRole("button", { name: "Leave" }).click();
      await bob.page.getByRole("button", { name: "# Team" }).waitFor({ state: "detached" });
    } finally {
      await stack.stop();
    }
  });

  it("shows an answer restarted after its responder crashed once, as the new attempt only", async () => {
    // Slow pieces, so the answer is on screen part-way when the responder dies.
    const stack = await Stack.start({ name: "restarted-answer", chunkDelayMs: 300 });
    try {
      const { page } = await stack.open(browser);
      const text = "tell me a story";
      await say(page, text);
      const item = exchange(page, text);
      await item.locator('[data-testid="reply"][data-complete="false"]').waitFor();
      const before = (await item.getByTestId("reply").locator(".text").textContent()).trim();
      assert.ok(before.length > 0 && answerTo(text).startsWith(before), before);
      await stack.killResponder();
      // Its successor writes another answer, as a model would.
      const again = "Once more: {text} — a different answer.";
      stack.startResponder({ template: again, chunkDelayMs: 20 });
      assert.equal(await completedReply(page, text), again.replace("{text}", text));
      assert.equal(await item.getByTestId("restarted").count(), 1, "the page says the answer restarted, once");
      assert.equal(await item.getByTestId("reply").count(), 1, "one answer on screen");
      await page.screenshot({ path: path.join(artifacts, "restarted-answer.png"), fullPage: true });
    } finally {
      await stack.stop();
    }
  });

  it("gives two people two identities that each see only their own replies", async () => {
    const stack = await Stack.start({ name: "two-users" });
    try {
      const alice = await stack.open(browser);
      const bob = await stack.open(browser);
      assert.notEqual(alice.user, bob.user);
      await say(alice.page, "alice asks");
      await say(bob.page, "bob asks");
      assert.equal(await completedReply(alice.page, "alice asks"), answerTo("alice asks"));
      assert.equal(await completedReply(bob.page, "bob asks"), answerTo("bob asks"));
      const aliceSees = await alice.page.locator("ol.messages").textContent();
      const bobSees = await bob.page.locator("ol.messages").textContent();
      assert.ok(!aliceSees.includes("bob asks"), aliceSees);
      assert.ok(!bobSees.includes("alice asks"), bobSees);
    } finally {
      await stack.stop();
    }
  });

  it("keeps its identity and conversation across a reload", async () => {
    const stack = await Stack.start({ name: "reload" });
    try {
      const { page, user } = await stack.open(browser);
      await say(page, "before the reload");
      await completedReply(page, "before the reload");
      await page.reload();
      await page.getByTestId("connection").getByText("connected", { exact: true }).waitFor();
      assert.equal((await page.getByTestId("user-id").textContent()).trim(), user);
      assert.equal(await completedReply(page, "before the reload"), answerTo("before the reload"));
    } finally {
      await stack.stop();
    }
  });

  it("reconnects by itself when the gateway restarts and still gets every reply", async () => {
    // Slow answers, so one is still streaming when the gateway goes away.
    const stack = await Stack.start({ name: "gateway-restart", chunkDelayMs: 150 });
    try {
      const { page } = await stack.open(browser);
      const connection = page.getByTestId("connection");

      await say(page, "sent before the restart");
      // Accepted by RabbitMQ (queued, or already picked up by the responder).
      await exchange(page, "sent before the restart").getByTestId("status").getByText(/queued|processing/).waitFor();
      await stack.stopGateway();
      await connection.getByText("reconnecting…").waitFor();

      // Typed while offline: shown at once, sent when the connection is back.
      await say(page, "typed while offline");
      await exchange(page, "typed while offline").getByTestId("status").getByText("sending…").waitFor();
      await page.getByTestId("send-state").getByText("1 waiting").waitFor();

      await stack.startGateway();
      await connection.getByText("connected", { exact: true }).waitFor({ timeout: 30_000 });
      assert.equal(await completedReply(page, "sent before the restart"), answerTo("sent before the restart"));
      assert.equal(await completedReply(page, "typed while offline"), answerTo("typed while offline"));
      await page.screenshot({ path: path.join(artifacts, "after-gateway-restart.png"), fullPage: true });
    } finally {
      await stack.stop();
    }
  });
});
