import { describe, expect, it } from "vitest";
import * as r from "./rooms";

const msg = (seq: number, from = "alice") => ({ seq, id: `m${seq}`, from, text: `t${seq}` });

describe("rooms", () => {
  it("places messages by seq, once, whatever order they come in", () => {
    let s = r.listed(r.noRooms, [{ id: "R", name: "Team" }]);
    s = r.messageArrived(s, "R", msg(2));
    s = r.messageArrived(s, "R", msg(1));
    const again = r.messageArrived(s, "R", msg(2));
    expect(again).toBe(s);
    expect(s.byId.R?.messages.map((m) => m.seq)).toEqual([1, 2]);
    expect(s.byId.R?.name).toBe("Team");
  });

  it("counts who has a message and who has read it, not myself", () => {
    let s = r.messageArrived(r.noRooms, "R", msg(1));
    s = r.messageArrived(s, "R", msg(2));
    s = r.receiptArrived(s, "R", "bob", 1, "delivered");
    s = r.receiptArrived(s, "R", "me", 1, "delivered");
    s = r.receiptArrived(s, "R", "carol", 2, "read");
    s = r.receiptArrived(s, "R", "carol", 1, "read"); // older: changes nothing
    const room = s.byId.R!;
    expect(r.deliveredTo(room, 1, "me").sort()).toEqual(["bob", "carol"]);
    expect(r.readBy(room, 1, "me")).toEqual(["carol"]);
    expect(r.readBy(room, 2, "me")).toEqual(["carol"]);
    expect(r.deliveredTo(room, 2, "me")).toEqual(["carol"]);
  });

  it("keeps the member list current from pushed presence, without asking", () => {
    let s = r.detailed(r.noRooms, "R", "Team", [{ user_id: "me", online: true }], "tok");
    s = r.presenceChanged(s, "R", "bob", true, true);
    expect(s.byId.R?.members).toEqual([
      { user_id: "me", online: true },
      { user_id: "bob", online: true },
    ]);
    s = r.presenceChanged(s, "R", "bob", true, false);
    expect(s.byId.R?.members.find((m) => m.user_id === "bob")?.online).toBe(false);
    const same = r.presenceChanged(s, "R", "bob", true, false);
    expect(same).toBe(s);
    s = r.presenceChanged(s, "R", "bob", false, false);
    expect(s.byId.R?.members.map((m) => m.user_id)).toEqual(["me"]);
    expect(r.presenceChanged(s, "unknown", "bob", true, true)).toBe(s);
  });

  it("puts the invitation in the fragment and reads it back", () => {
    const link = r.inviteLink({ protocol: "http:", host: "chat.test" }, "a.b+c");
    expect(link).toBe("http://chat.test/#join=a.b%2Bc");
    expect(r.inviteFromHash(new URL(link).hash)).toBe("a.b+c");
    expect(r.inviteFromHash("")).toBeNull();
    expect(r.inviteFromHash("#other")).toBeNull();
  });

  it("streams the assistant's answer under the message it answers, once per chunk, the newest attempt shown", () => {
    const chunk = (seq: number, text: string, final = false, attempt = 0) => ({ in_reply_to: "m1", seq, text, final, attempt });
    let s = r.answerChunk(r.noRooms, "R", chunk(1, "there", true));
    expect(s.byId.R!.answers.m1).toMatchObject({ text: "", complete: false });
    s = r.answerChunk(s, "R", chunk(0, "Hi "));
    expect(r.answerChunk(s, "R", chunk(0, "Hi "))).toBe(s);
    expect(s.byId.R!.answers.m1).toMatchObject({ text: "Hi there", complete: true });
    let t = r.answerChunk(r.noRooms, "R", chunk(0, "Hello "));
    t = r.answerChunk(t, "R", chunk(0, "Howdy ", false, 8));
    t = r.answerChunk(t, "R", chunk(2, "you", true));
    expect(t.byId.R!.answers.m1).toMatchObject({ text: "Howdy ", restarts: 1, complete: false });
  });
});
