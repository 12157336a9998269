// The real stack for browser tests: a gateway and a responder as separate
// processes (the binaries cargo built) against the RabbitMQ at AMQP_URL, on a
// free loopback port, under a unique broker prefix that is deleted at the end.

import { spawn, spawnSync } from "node:child_process";
import { createWriteStream, existsSync, mkdirSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
export const repo = path.resolve(here, "../..");
export const artifacts = path.join(repo, "test-artifacts", "e2e");
const bin = (name) => path.join(repo, "target", "debug", name);
const amqpUrl = process.env.AMQP_URL || "amqp://guest:guest@127.0.0.1:5672/%2f";

/** Answers of every test: short and easy to check. */
export const TEMPLATE = "Echo: {text} — that is all for now.";
export const answerTo = (text) => TEMPLATE.replace("{text}", text);

const WAIT_MS = 30_000;

async function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Polls until `check` resolves true; fails after WAIT_MS with `what`. */
export async function waitFor(what, check) {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    if (await check().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

export class Stack {
  /** @param {{chunkDelayMs?: number, name: string}} options */
  static async start({ chunkDelayMs = 40, name }) {
    mkdirSync(artifacts, { recursive: true });
    const stack = new Stack(name, await freePort(), chunkDelayMs);
    stack.startResponder();
    await stack.startGateway();
    return stack;
  }

  /** Starts the responder: the mock, one word a piece, `chunkDelayMs` apart, answering with `template`. */
  startResponder({ template = TEMPLATE, chunkDelayMs = this.chunkDelayMs } = {}) {
    this.responder = this.spawn("responder", {
      SWITCHBOARD_HEALTH__LISTEN: "",
      SWITCHBOARD_MOCK__TEMPLATE: template,
      SWITCHBOARD_MOCK__WORDS_PER_CHUNK: "1",
      SWITCHBOARD_MOCK__CHUNK_DELAY_MS: String(chunkDelayMs),
    });
  }

  /** SIGKILL, as a crash; waits for the process to be gone. */
  async killResponder() {
    const responder = this.responder;
    this.responder = null;
    responder.kill("SIGKILL");
    await responder.exited;
  }

  constructor(name, port, chunkDelayMs) {
    this.name = name;
    this.port = port;
    this.chunkDelayMs = chunkDelayMs;
    this.prefix = `e2e-${Math.random().toString(16).slice(2, 14)}.`;
    this.url = `http://127.0.0.1:${port}/`;
    this.gateway = null;
    this.responder = null;
    this.users = new Set();
  }

  spawn(service, env) {
    const log = createWriteStream(path.join(artifacts, `${this.name}.${service}.log`), { flags: "a" });
    const child = spawn(bin(service), [], {
      cwd: repo,
      env: {
        ...process.env,
        AMQP_URL: amqpUrl,
        SWITCHBOARD_AMQP__PREFIX: this.prefix,
        SWITCHBOARD_AMQP__RECONNECT_INITIAL_MS: "50",
        RUST_LOG: process.env.RUST_LOG ?? "info,lapin=warn",
        ...env,
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    child.stdout.pipe(log);
    child.stderr.pipe(log);
    child.exited = new Promise((resolve) => child.once("exit", resolve));
    return child;
  }

  async startGateway() {
    this.gateway = this.spawn("gateway", {
      SWITCHBOARD_HTTP__LISTEN: `127.0.0.1:${this.port}`,
      // Every page comes from 127.0.0.1.
      SWITCHBOARD_RATE_LIMIT__GUEST_BURST: "1000",
      SWITCHBOARD_HTTP__WEB_DIR: path.join(repo, "web", "dist"),
      SWITCHBOARD_ROOMS__DATABASE_URL: process.env.DATABASE_URL || "postgres://postgres@127.0.0.1:5432/test",
    });
    await waitFor("the gateway is ready", async () => (await fetch(`${this.url}readyz`)).ok);
  }

  /** SIGTERM, as Docker or Kubernetes would; waits for the process to exit. */
  async stopGateway() {
    const gateway = this.gateway;
    this.gateway = null;
    gateway.kill("SIGTERM");
    await gateway.exited;
  }

  async stop() {
    for (const child of [this.gateway, this.responder]) {
      if (child && child.exitCode === null) {
        child.kill("SIGTERM");
        await child.exited;
      }
    }
    const cleanup = spawnSync(bin("broker-cleanup"), [this.prefix, ...this.users], {
      env: { ...process.env, AMQP_URL: amqpUrl },
      encoding: "utf8",
    });
    if (cleanup.status !== 0) console.error("broker cleanup failed:", cleanup.stderr);
  }

  /** A new person (their own browser context) on the page, or on `url`;
   * `contextOptions` go to Playwright (a viewport, `bypassCSP`). */
  async open(browser, url = this.url, contextOptions = {}) {
    const context = await browser.newContext({ viewport: { width: 1024, height: 760 }, ...contextOptions });
    const page = await context.newPage();
    await page.goto(url);
    await page.getByTestId("connection").getByText("connected", { exact: true }).waitFor();
    const user = (await page.getByTestId("user-id").textContent()).trim();
    this.users.add(user);
    return { page, user, context };
  }
}

export async function launchBrowser() {
  const executablePath = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
  if (!existsSync(executablePath)) {
    throw new Error(
      `no Chromium at ${executablePath}: install Debian's chromium package or set CHROMIUM_PATH ` +
        "(the tests never download a browser)",
    );
  }
  return chromium.launch({
    executablePath,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--disable-quic",
      "--no-first-run",
    ],
  });
}

/** Sends `text` from the page the way a person does: type, press Enter. */
export async function say(page, text) {
  const input = page.getByLabel("Message");
  await input.fill(text);
  await input.press("Enter");
}

/** The exchange (my message and its reply) whose message text is `text`. */
export function exchange(page, text) {
  return page.locator("li.exchange").filter({ has: page.getByTestId("my-message").getByText(text, { exact: true }) });
}

/** Waits until the reply to `text` is complete and returns its text. */
export async function completedReply(page, text) {
  const item = exchange(page, text);
  await item.locator('[data-testid="reply"][data-complete="true"]').waitFor({ timeout: WAIT_MS });
  await item.getByTestId("status").getByText("answered").waitFor({ timeout: WAIT_MS });
  return (await item.getByTestId("reply").locator(".text").textContent()).trim();
}
