// The page as a reader and an attacker meet it, in a real headless Chromium
// against the real stack: Markdown rendered safely, a Content-Security-Policy,
// a phone-sized screen, and an automated accessibility check (axe-core).

import assert from "node:assert/strict";
import { createRequire } from "node:module";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { Stack, artifacts, exchange, launchBrowser, say, waitFor } from "./stack.mjs";

const require = createRequire(import.meta.url);
let browser;
before(async () => {
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
});

/** Waits for the complete reply to `text`; returns its bubble. */
async function replyTo(page, text) {
  const reply = exchange(page, text).getByTestId("reply");
  await reply.and(page.locator('[data-complete="true"]')).waitFor({ timeout: 20_000 });
  return reply;
}

/** Whether the page scrolls sideways (its layout broke out of the screen). */
const overflows = (page) => page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth);

/** axe-core's serious and critical violations on the page as it is now (axe injected). */
async function axeSerious(page) {
  const results = await page.evaluate(() => window.axe.run(document, { resultTypes: ["violations"] }));
  return results.violations
    .filter((v) => v.impact === "serious" || v.impact === "critical")
    .map((v) => `${v.id} (${v.impact}): ${v.help} — ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`);
}

describe("the page, safe and accessible", () => {
  it("renders an answer's Markdown and runs, loads and breaks nothing hostile", async () => {
    const stack = await Stack.start({ name: "markdown", chunkDelayMs: 5 });
    try {
      const response = await fetch(stack.url);
      const policy = response.headers.get("content-security-policy") ?? "";
      assert.match(policy, /script-src 'self'(;|$)/, policy);
      assert.match(policy, /frame-ancestors 'none'/, policy);
      const { page } = await stack.open(browser);
      // Any dialog or navigation of the page is a hostile input that worked.
      const dialogs = [];
      page.on("dialog", (dialog) => {
        dialogs.push(dialog.message());
        void dialog.dismiss();
      });
      const loaded = page.url();
      const navigations = [];
      page.on("framenavigated", (frame) => {
        if (frame === page.mainFrame()) navigations.push(frame.url());
      });
      // The mock answers with the message inside its template: what a user
      // types reaches the answer's Markdown as a model's text would.
      const text = [
        "**bold** `code` [docs](https://example.com)",
        '<img src=x onerror="window.__pwned=1;alert(1)">',
        "<script>window.__pwned=2;alert(2)</script>",
        "[click](javascript:window.__pwned=3;alert(3))",
        "[data](data:text/html,<script>window.__pwned=4</script>)",
        "![pixel](https://tracker.example/p.png)",
        "x".repeat(600),
        "\u202Eevil\u202C",
      ].join(" ");
      await say(page, text);
      const reply = await replyTo(page, text);
      assert.equal(await reply.locator("strong").textContent(), "bold");
      assert.equal(await reply.locator("code").first().textContent(), "code");
      const docs = reply.locator('a[href="https://example.com"]');
      assert.equal(await docs.getAttribute("target"), "_blank");
      assert.match(await docs.getAttribute("rel"), /noopener/);
      assert.equal(await reply.locator("img, script, iframe, object").count(), 0);
      const hrefs = await reply.locator("a").evaluateAll((links) => links.map((a) => a.getAttribute("href")));
      assert.ok(hrefs.every((h) => /^https:\/\//.test(h)), `only web links: ${hrefs}`);
      // The user's own message is shown as typed, as text.
      const mine = exchange(page, text).getByTestId("my-message");
      assert.equal(await mine.locator("img, script").count(), 0);
      // What were links stays inert when clicked.
      await reply.getByText("click", { exact: true }).click();
      await reply.getByText("data", { exact: true }).click();
      assert.equal(await page.evaluate(() => window.__pwned), undefined, "no hostile script ran");
      assert.deepEqual(dialogs, [], "no dialog opened");
      assert.deepEqual(navigations, [], "the page went nowhere");
      assert.equal(page.url(), loaded);
      assert.equal(await overflows(page), false, "a 600-character word wraps inside its bubble");
      await page.screenshot({ path: path.join(artifacts, "markdown.png"), fullPage: true });
    } finally {
      await stack.stop();
    }
  });

  it("renders a table and a highlighted code block as they stream, without a flicker, and copies the code", async () => {
    // One word a chunk, slowly: the Markdown is re-rendered dozens of times part-way.
    const stack = await Stack.start({ name: "markdown-stream", chunkDelayMs: 25 });
    try {
      const { page, context } = await stack.open(browser);
      await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: stack.url });
      // Watch the answer as it streams: what it holds at every frame.
      await page.evaluate(() => {
        window.__samples = [];
        const sample = () => {
          const reply = document.querySelector('[data-testid="reply"]');
          if (reply) {
            window.__samples.push({
              tables: reply.querySelectorAll("table").length,
              blocks: reply.querySelectorAll("pre").length,
              overflow: document.documentElement.scrollWidth > window.innerWidth,
            });
          }
          if (reply?.getAttribute("data-complete") !== "true") requestAnimationFrame(sample);
        };
        requestAnimationFrame(sample);
      });
      const text = [
        "here is a table and some code:",
        "",
        "| language | typing |",
        "|---|---|",
        "| Rust | static |",
        "| Python | dynamic |",
        "",
        "```rust",
        "fn main() {",
        '    println!("hello");',
        "}",
        "```",
        "",
        "and that is all.",
      ].join("\n");
      await say(page, text);
      const reply = await replyTo(page, text);
      assert.deepEqual(
        await reply.locator("th").allTextContents(),
        ["language", "typing"],
        "a table, with its header",
      );
      assert.deepEqual(await reply.locator("td").allTextContents(), ["Rust", "static", "Python", "dynamic"]);
      const code = reply.locator("pre code");
      assert.match(await code.getAttribute("class"), /language-rust/);
      assert.ok((await code.locator(".hljs-keyword").count()) > 0, "highlighted");
      assert.equal(await reply.locator("pre").count(), 1);
      // Streaming: once a table or a code block is on screen it stays, and nothing overflows.
      const samples = await page.evaluate(() => window.__samples);
      assert.ok(samples.length >= 10, `sampled part-way (${samples.length} frames)`);
      for (let i = 1; i < samples.length; i++) {
        assert.ok(samples[i].tables >= samples[i - 1].tables, `the table never went away (frame ${i})`);
        assert.ok(samples[i].blocks >= samples[i - 1].blocks, `the code block never went away (frame ${i})`);
      }
      assert.ok(samples.some((s) => s.blocks === 1 && s.tables === 1), "both seen part-way");
      assert.ok(samples.every((s) => !s.overflow), "the layout held at every frame");
      // The code block's own Copy button copies the code, not the answer.
      await reply.getByRole("button", { name: "Copy the code" }).click();
      await waitFor("the code is on the clipboard", async () =>
        (await page.evaluate(() => navigator.clipboard.readText())) === 'fn main() {\n    println!("hello");\n}\n',
      );
      await page.screenshot({ path: path.join(artifacts, "markdown-table-code.png"), fullPage: true });
    } finally {
      await stack.stop();
    }
  });

  it("fits a 375 px phone and passes axe-core with no serious or critical violation", async () => {
    const stack = await Stack.start({ name: "a11y", chunkDelayMs: 5 });
    try {
      // axe is injected as a script: let it past the page's own policy.
      const { page } = await stack.open(browser, stack.url, {
        viewport: { width: 375, height: 740 },
        bypassCSP: true,
      });
      await say(page, "hello, small screen");
      await replyTo(page, "hello, small screen");
      assert.equal(await overflows(page), false, "nothing scrolls sideways at 375 px");
      await page.addScriptTag({ path: require.resolve("axe-core/axe.min.js") });
      // Light, then the dark theme the page takes from the system setting.
      for (const colorScheme of ["light", "dark"]) {
        await page.emulateMedia({ colorScheme });
        const serious = await axeSerious(page);
        assert.deepEqual(serious, [], `${colorScheme}: ${serious.join("\n")}`);
        await page.screenshot({ path: path.join(artifacts, `phone-375-${colorScheme}.png`), fullPage: true });
      }
      // The side list folds away on a phone, behind the Menu button.
      const side = page.getByRole("complementary", { name: "Conversations and rooms" });
      assert.equal(await side.isVisible(), false);
      await page.getByRole("button", { name: "Menu" }).click();
      await side.waitFor();
      assert.equal(await overflows(page), false, "the open side list fits too");
      const serious = await axeSerious(page);
      assert.deepEqual(serious, [], `side list open: ${serious.join("\n")}`);
      await page.screenshot({ path: path.join(artifacts, "phone-375-menu.png"), fullPage: true });
      await page.getByTestId("new-conversation").click();
      await side.waitFor({ state: "hidden" });
    } finally {
      await stack.stop();
    }
  });

  it("copies, regenerates and edits, and announces each answer once, when whole", async () => {
    const stack = await Stack.start({ name: "actions", chunkDelayMs: 5 });
    try {
      const { page, context } = await stack.open(browser);
      await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: stack.url });
      const text = "what can I do with an answer?";
      await say(page, text);
      const reply = await replyTo(page, text);
      const answer = (await reply.locator(".text").textContent()).trim();
      // Screen readers hear the answer once it is whole, not chunk by chunk.
      assert.equal(await page.locator("ol.messages[aria-live]").count(), 0, "the list is not a live region");
      const announcer = page.getByTestId("announcer");
      assert.equal(await announcer.getAttribute("aria-live"), "polite");
      assert.equal((await announcer.textContent()).trim(), `The assistant answered: ${answer}`);
      // Copy: the answer's text is on the clipboard.
      await reply.getByTestId("copy").click();
      await reply.getByTestId("copy").getByText("Copied").waitFor();
      assert.equal(await page.evaluate(() => navigator.clipboard.readText()), answer);
      // Regenerate: the same question again, as a new message, answered too.
      await reply.getByTestId("regenerate").click();
      await page.locator("li.exchange").nth(1).locator('[data-testid="reply"][data-complete="true"]').waitFor();
      assert.equal(await exchange(page, text).count(), 2, "asked twice, both kept");
      // Edit: my last message back in the composer, with the keyboard.
      await exchange(page, text).nth(1).getByTestId("edit").focus();
      await page.keyboard.press("Enter");
      await waitFor("the message is back in the composer", async () => (await page.getByLabel("Message").inputValue()) === text);
      assert.equal(await page.evaluate(() => document.activeElement?.id), "message-input");
      await page.screenshot({ path: path.join(artifacts, "actions.png"), fullPage: true });
    } finally {
      await stack.stop();
    }
  });
});
