import { describe, expect, it } from "vitest";
import { addChunk, noAnswer, type Answer, type Chunk } from "./answer";

const chunk = (attempt: number, seq: number, text: string, final = false): Chunk => ({ attempt, seq, text, final });
const fold = (chunks: Chunk[]): Answer => chunks.reduce(addChunk, noAnswer);

describe("an answer's chunks", () => {
  it("are placed by seq, repeats change nothing, and the answer is complete when nothing is missing", () => {
    let a = fold([chunk(5, 1, "b"), chunk(5, 0, "a")]);
    expect(a.text).toBe("ab");
    expect(addChunk(a, chunk(5, 0, "a"))).toBe(a);
    a = addChunk(a, chunk(5, 3, "d", true));
    expect(a.complete).toBe(false);
    a = addChunk(a, chunk(5, 2, "c"));
    expect(a).toMatchObject({ text: "abcd", complete: true });
  });

  it("of a newer attempt replace what an older one showed, and the older one's late chunks are not shown", () => {
    const a = fold([chunk(10, 0, "The cat "), chunk(10, 1, "sat "), chunk(20, 0, "A dog ")]);
    expect(a).toMatchObject({ attempt: 20, text: "A dog ", restarts: 1, complete: false });
    const late = addChunk(a, chunk(10, 3, "mat.", true));
    expect(late).toMatchObject({ attempt: 20, text: "A dog " });
    expect(addChunk(late, chunk(20, 1, "ran.", true))).toMatchObject({ text: "A dog ran.", complete: true });
  });

  it("of an older attempt that completes first make it the answer", () => {
    const a = fold([chunk(10, 0, "One "), chunk(20, 0, "Two "), chunk(10, 1, "done.", true)]);
    expect(a).toMatchObject({ attempt: 10, text: "One done.", complete: true, restarts: 2 });
    expect(addChunk(a, chunk(20, 1, "also done.", true))).toBe(a);
  });

  it("without an attempt are of attempt 0, and a first-seen numbered attempt is no restart", () => {
    expect(fold([{ seq: 0, text: "x", final: true }])).toMatchObject({ attempt: 0, complete: true });
    expect(fold([chunk(3, 0, "y", true)]).restarts).toBeUndefined();
  });

  it("change nothing once the answer is complete, whatever their attempt", () => {
    const a = fold([chunk(1, 0, "done", true)]);
    expect(addChunk(a, chunk(9, 0, "again", true))).toBe(a);
  });

  it("with an error end the answer as failed, keeping what was shown", () => {
    const failure = { seq: 4294967295, text: "", final: true, error: { code: "request_failed", message: "gave up" } };
    const a = addChunk(fold([chunk(2, 0, "part")]), failure);
    expect(a).toMatchObject({ complete: true, text: "part", failed: { code: "request_failed" } });
  });

  it("of a cancelled attempt no longer count once a newer attempt replaces it", () => {
    const stopped = fold([chunk(1, 0, "a"), { ...chunk(1, 2, "", true), cancelled: true }]);
    expect(stopped).toMatchObject({ cancelled: true, complete: false });
    expect(addChunk(stopped, chunk(2, 0, "b")).cancelled).toBeUndefined();
  });
});
