import { describe, expect, it } from "vitest";
import { replied } from "./conversation";
import * as t from "./conversations";

const ids = () => {
  let n = 0;
  return () => `c${++n}`;
};
const titles = (cs: t.Conversations) => t.listed(cs).map((x) => x.title);
const chunk = (inReplyTo: string, text: string) =>
  ({ type: "reply", id: `r-${inReplyTo}`, in_reply_to: inReplyTo, seq: 0, text, final: true }) as const;

describe("conversations", () => {
  it("opens a new one, but not a second empty one", () => {
    let cs = t.fresh("a", 1);
    expect(t.created(cs, "b", 2)).toBe(cs);
    cs = t.submitted(cs, "m1", "first question\nwith a second line", 3);
    cs = t.created(cs, "b", 4);
    expect(cs.active).toBe("b");
    expect(titles(cs)).toEqual([t.UNTITLED, "first question"]);
  });

  it("titles a conversation from its first message, shortened, until the person names it", () => {
    const long = "word ".repeat(30);
    let cs = t.submitted(t.fresh("a", 1), "m1", long, 2);
    expect(t.activeThread(cs).title).toHaveLength(t.TITLE_CHARS);
    expect(t.activeThread(cs).title.endsWith("…")).toBe(true);
    cs = t.renamed(cs, "a", "  My   plan ", 3);
    expect(t.activeThread(cs).title).toBe("My plan");
    expect(t.renamed(cs, "a", "   ", 4)).toBe(cs);
    expect(t.renamed(cs, "nope", "x", 4)).toBe(cs);
    cs = t.submitted(cs, "m2", "another", 5);
    expect(t.activeThread(cs).title).toBe("My plan");
  });

  it("lists the most recently used first, and opening one does not reorder", () => {
    let cs = t.submitted(t.fresh("a", 1), "m1", "A", 2);
    cs = t.submitted(t.created(cs, "b", 3), "m2", "B", 4);
    expect(titles(cs)).toEqual(["B", "A"]);
    cs = t.opened(cs, "a");
    expect(cs.active).toBe("a");
    expect(titles(cs)).toEqual(["B", "A"]);
    cs = t.submitted(cs, "m3", "more A", 5);
    expect(titles(cs)).toEqual(["A", "B"]);
    expect(t.opened(cs, "missing")).toBe(cs);
  });

  it("deletes: the most recently used takes the screen, or a new one when none is left", () => {
    let cs = t.submitted(t.fresh("a", 1), "m1", "A", 2);
    cs = t.submitted(t.created(cs, "b", 3), "m2", "B", 4);
    cs = t.deleted(cs, "b", "x", 5);
    expect(cs.active).toBe("a");
    expect(cs.deleted).toEqual({ threads: ["b"], messages: ["m2"] });
    cs = t.deleted(cs, "a", "x", 6);
    expect(cs.active).toBe("x");
    expect(titles(cs)).toEqual([t.UNTITLED]);
  });

  it("routes what the gateway says to the message's own conversation; a deleted one's is dropped", () => {
    let cs = t.submitted(t.fresh("a", 1), "m1", "A", 2);
    cs = t.submitted(t.created(cs, "b", 3), "m2", "B", 4);
    cs = t.about(cs, "m1", (c) => replied(c, chunk("m1", "for A")));
    expect(cs.threads.a?.conversation.messages.m1?.reply?.text).toBe("for A");
    expect(cs.threads.b?.conversation.messages.m1).toBeUndefined();
    // A message sent elsewhere (another device): on the conversation on screen.
    cs = t.about(cs, "elsewhere", (c) => replied(c, chunk("elsewhere", "hi")));
    expect(cs.threads.b?.conversation.messages.elsewhere?.reply?.text).toBe("hi");
    cs = t.deleted(cs, "a", "x", 5);
    expect(t.about(cs, "m1", (c) => replied(c, chunk("m1", "late")))).toBe(cs);
  });

  it("keeps at most THREAD_LIMIT conversations, dropping the least recently used", () => {
    let cs = t.fresh("c0", 0);
    for (let i = 0; i <= t.THREAD_LIMIT; i++) {
      cs = t.submitted(cs, `m${i}`, `q${i}`, i * 2 + 1);
      cs = t.created(cs, `c${i + 1}`, i * 2 + 2);
    }
    expect(Object.keys(cs.threads)).toHaveLength(t.THREAD_LIMIT);
    expect(cs.threads.c0).toBeUndefined();
    expect(cs.threads[cs.active]).toBeDefined();
  });

  it("merges another tab's copy: its new conversations and names, both tabs' deletions, my screen", () => {
    const base = t.submitted(t.created(t.submitted(t.fresh("a", 1), "m1", "A", 2), "b", 3), "m2", "B", 4);
    // The other tab: renames a, deletes b, starts c.
    let theirs = t.renamed(base, "a", "Named there", 10);
    theirs = t.deleted(theirs, "b", "unused", 11);
    theirs = t.submitted(t.created(theirs, "c", 12), "m3", "C", 13);
    // This tab, meanwhile: b on screen, one more message in a.
    const mine = t.opened(t.about(base, "m1", (c) => replied(c, chunk("m1", "for A"))), "b");
    const next = ids();
    const both = t.merged(mine, theirs, next, 20);
    expect(titles(both)).toEqual(["C", "Named there"]);
    expect(both.threads.a?.conversation.messages.m1?.reply?.text).toBe("for A");
    // b is gone here too: the most recently used takes the screen.
    expect(both.active).toBe("c");
    expect(both.deleted.messages).toContain("m2");
    // A later name here wins over theirs.
    const renamedHere = t.renamed(both, "a", "Mine", 30);
    expect(t.merged(renamedHere, theirs, next, 31).threads.a?.title).toBe("Mine");
    // Nothing new: the same object (no re-render, no save).
    expect(t.merged(both, both, next, 40)).toBe(both);
  });

  it("drops the stray copy of an answer that arrived before the other tab's message", () => {
    // The other tab sent m9 in conversation b; its answer reached this tab first.
    const base = t.created(t.submitted(t.fresh("a", 1), "m1", "A", 2), "b", 3);
    const theirs = t.about(t.submitted(base, "m9", "B's question", 4), "m9", (c) => replied(c, chunk("m9", "B's answer")));
    const mine = t.about(t.opened(base, "a"), "m9", (c) => replied(c, chunk("m9", "B's answer")));
    expect(mine.threads.a?.conversation.messages.m9?.text).toBeNull();
    const both = t.merged(mine, theirs, ids(), 5);
    expect(both.threads.a?.conversation.messages.m9).toBeUndefined();
    expect(both.threads.a?.conversation.order).toEqual(["m1"]);
    expect(both.threads.b?.conversation.messages.m9?.reply?.text).toBe("B's answer");
  });

  it("loads what was saved, or starts afresh from nothing or from garbage", () => {
    const store = new Map<string, string>();
    const storage = { getItem: (k: string) => store.get(k) ?? null, setItem: (k: string, v: string) => void store.set(k, v) };
    const next = ids();
    expect(t.load(storage, next, 1)).toEqual(t.fresh("c1", 1));
    const cs = t.submitted(t.fresh("a", 1), "m1", "kept", 2);
    t.save(storage, cs);
    expect(t.load(storage, next, 3)).toEqual(cs);
    store.set(t.STORAGE_KEY, JSON.stringify({ active: "zz", threads: {}, deleted: { threads: [], messages: [] } }));
    expect(t.load(storage, next, 4)).toEqual(t.fresh("c2", 4));
    store.set(t.STORAGE_KEY, "{not json");
    expect(t.load(storage, next, 5)).toEqual(t.fresh("c3", 5));
  });
});
