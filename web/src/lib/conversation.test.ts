import { describe, expect, it } from "vitest";
import * as c from "./conversation";

const reply = (seq: number, text: string, final = false) =>
  ({ type: "reply", id: "r1", in_reply_to: "m1", seq, text, final }) as const;

describe("message status", () => {
  it("goes sending → queued → answered", () => {
    let s = c.submitted(c.emptyConversation, "m1", "hello", 1);
    expect(s.messages.m1?.status).toBe("sending");
    s = c.accepted(s, "m1");
    expect(s.messages.m1?.status).toBe("queued");
    s = c.progressed(s, "m1", "processing");
    expect(s.messages.m1?.status).toBe("processing");
    s = c.replied(s, reply(0, "Hi "));
    expect(s.messages.m1?.status).toBe("processing");
    s = c.replied(s, reply(1, "there", true));
    expect(s.messages.m1?.status).toBe("answered");
    // A late status changes nothing.
    expect(c.progressed(s, "m1", "processing")).toBe(s);
  });

  it("stops: cancelling, then cancelled by the final chunk, whatever order chunks come in", () => {
    let s = c.accepted(c.submitted(c.emptyConversation, "m1", "hello", 1), "m1");
    expect(c.canStop(s.messages.m1!)).toBe(true);
    s = c.progressed(s, "m1", "cancelling");
    expect(s.messages.m1?.status).toBe("cancelling");
    expect(c.canStop(s.messages.m1!)).toBe(false);
    // The cancelled final chunk (seq 2) before chunk 1.
    s = c.replied(s, reply(0, "Hi "));
    s = c.replied(s, { ...reply(2, "", true), cancelled: true });
    expect(s.messages.m1?.status).toBe("cancelling");
    s = c.replied(s, reply(1, "the"));
    expect(s.messages.m1?.status).toBe("cancelled");
    expect(s.messages.m1?.reply?.text).toBe("Hi the");
    expect(c.isStreaming(s.messages.m1!)).toBe(false);
  });

  it("goes back to processing when there was nothing to cancel", () => {
    let s = c.accepted(c.submitted(c.emptyConversation, "m1", "hello", 1), "m1");
    s = c.progressed(s, "m1", "cancelling");
    s = c.notCancelled(s, "m1");
    expect(s.messages.m1?.status).toBe("processing");
    const done = c.replied(s, reply(0, "all", true));
    expect(c.notCancelled(done, "m1")).toBe(done);
  });

  it("keeps a retryable refusal pending and marks any other failed", () => {
    const s = c.submitted(c.emptyConversation, "m1", "hello", 1);
    const later = c.refused(s, "m1", { code: "broker_unavailable", message: "later", retryable: true });
    expect(later.messages.m1?.status).toBe("sending");
    expect(c.pending(later).map((m) => m.id)).toEqual(["m1"]);
    const failed = c.refused(s, "m1", { code: "text_too_long", message: "long", retryable: false });
    expect(failed.messages.m1?.status).toBe("failed");
    expect(c.pending(failed)).toEqual([]);
    const again = c.retried(failed, "m1");
    expect(again.messages.m1?.status).toBe("sending");
    expect(again.messages.m1?.error).toBeNull();
  });

  it("never goes backwards", () => {
    let s = c.submitted(c.emptyConversation, "m1", "hello", 1);
    s = c.replied(s, reply(0, "done", true));
    expect(s.messages.m1?.status).toBe("answered");
    expect(c.accepted(s, "m1").messages.m1?.status).toBe("answered");
    expect(c.refused(s, "m1", { code: "x", message: "x", retryable: false }).messages.m1?.status).toBe("answered");
  });
});

describe("reply chunks", () => {
  it("are shown in seq order whatever order they arrive in", () => {
    let s = c.accepted(c.submitted(c.emptyConversation, "m1", "q", 1), "m1");
    s = c.replied(s, reply(1, "world "));
    expect(s.messages.m1?.reply?.text).toBe("");
    s = c.replied(s, reply(0, "hello "));
    expect(s.messages.m1?.reply?.text).toBe("hello world ");
    s = c.replied(s, reply(3, "!", true));
    expect(s.messages.m1?.reply?.text).toBe("hello world ");
    expect(s.messages.m1?.reply?.complete).toBe(false);
    expect(c.isStreaming(s.messages.m1!)).toBe(true);
    s = c.replied(s, reply(2, "again"));
    expect(s.messages.m1?.reply?.text).toBe("hello world again!");
    expect(s.messages.m1?.reply?.complete).toBe(true);
    expect(c.isStreaming(s.messages.m1!)).toBe(false);
  });

  it("ignore repeats (at-least-once delivery)", () => {
    let s = c.submitted(c.emptyConversation, "m1", "q", 1);
    s = c.replied(s, reply(0, "a "));
    const once = c.replied(s, reply(1, "b", true));
    expect(c.replied(once, reply(0, "a "))).toBe(once);
    expect(c.replied(once, reply(1, "b", true))).toBe(once);
    expect(once.messages.m1?.reply?.text).toBe("a b");
  });

  it("of a newer attempt replace the older attempt's, which is then ignored", () => {
    let s = c.accepted(c.submitted(c.emptyConversation, "m1", "q", 1), "m1");
    s = c.replied(s, reply(0, "The cat "));
    s = c.replied(s, { ...reply(0, "A dog "), attempt: 8 });
    expect(s.messages.m1?.reply).toMatchObject({ text: "A dog ", restarts: 1 });
    expect(s.messages.m1?.status).toBe("processing");
    s = c.replied(s, reply(2, "down.", true));
    expect(s.messages.m1?.reply).toMatchObject({ text: "A dog ", complete: false });
    s = c.replied(s, { ...reply(1, "ran.", true), attempt: 8 });
    expect(s.messages.m1).toMatchObject({ status: "answered", reply: { text: "A dog ran.", complete: true } });
  });

  it("for a message this page does not know still show", () => {
    const s = c.replied(c.emptyConversation, { ...reply(0, "late", true), in_reply_to: "gone" });
    expect(s.messages.gone?.text).toBeNull();
    expect(s.messages.gone?.reply?.text).toBe("late");
  });
});

describe("the offline outbox", () => {
  it("lists pending messages oldest first, and only those", () => {
    let s = c.submitted(c.emptyConversation, "a", "1", 1);
    s = c.submitted(s, "b", "2", 2);
    s = c.submitted(s, "c", "3", 3);
    s = c.accepted(s, "b");
    expect(c.pending(s).map((m) => m.id)).toEqual(["a", "c"]);
  });
});

describe("history", () => {
  it("is bounded", () => {
    let s = c.emptyConversation;
    for (let i = 0; i < c.HISTORY_LIMIT + 5; i++) s = c.accepted(c.submitted(s, `m${i}`, "x", i), `m${i}`);
    expect(s.order.length).toBe(c.HISTORY_LIMIT);
    expect(s.order[0]).toBe("m5");
    expect(Object.keys(s.messages).length).toBe(c.HISTORY_LIMIT);
  });

  it("is read back as the page kept it before there were several, and bad storage is ignored", () => {
    const store = new Map<string, string>();
    const storage = { getItem: (k: string) => store.get(k) ?? null, setItem: (k: string, v: string) => void store.set(k, v) };
    const s = c.accepted(c.submitted(c.emptyConversation, "m1", "hello", 1), "m1");
    store.set(c.STORAGE_KEY, JSON.stringify(s));
    expect(c.load(storage)).toEqual(s);
    store.set("switchboard.conversation.v1", "{not json");
    expect(c.load(storage)).toEqual(c.emptyConversation);
  });
});

describe("context for the model", () => {
  it("is the answered exchanges before the message, oldest first, within bounds", () => {
    let s = c.emptyConversation;
    for (const [id, text, answer] of [
      ["a", "one", "1"],
      ["b", "two", null],
      ["d", "three", "3"],
    ] as const) {
      s = c.submitted(s, id, text, 1);
      if (answer) s = c.replied(s, { type: "reply", id: `r${id}`, in_reply_to: id, seq: 0, text: answer, final: true });
    }
    s = c.submitted(s, "e", "now", 2);
    expect(c.contextFor(s, "e")).toEqual([
      { role: "user", text: "one" },
      { role: "assistant", text: "1" },
      { role: "user", text: "three" },
      { role: "assistant", text: "3" },
    ]);
    expect(c.contextFor(s, "a")).toEqual([]);
    let long = c.emptyConversation;
    for (let n = 0; n < 15; n++) {
      long = c.submitted(long, `m${n}`, `q${n}`, n);
      long = c.replied(long, { type: "reply", id: `r${n}`, in_reply_to: `m${n}`, seq: 0, text: "x".repeat(3000), final: true });
    }
    long = c.submitted(long, "last", "?", 99);
    const turns = c.contextFor(long, "last");
    expect(turns.length).toBe(20);
    expect(turns.reduce((n, t) => n + t.text.length, 0)).toBeLessThanOrEqual(32_000);
    expect(turns.at(-2)).toEqual({ role: "user", text: "q14" });
  });
});

