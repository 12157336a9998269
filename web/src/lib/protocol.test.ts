import { describe, expect, it } from "vitest";
import { parseServerFrame, sendFrame, socketProtocols, socketUrl, tokenExpiry } from "./protocol";

describe("parseServerFrame", () => {
  it("reads every frame the gateway sends", () => {
    expect(parseServerFrame('{"type":"welcome","user_id":"g-1"}')).toEqual({ type: "welcome", user_id: "g-1" });
    expect(parseServerFrame('{"type":"accepted","id":"m1"}')).toEqual({ type: "accepted", id: "m1" });
    expect(
      parseServerFrame('{"type":"reply","id":"r","in_reply_to":"m1","seq":2,"text":"hi","final":true}'),
    ).toEqual({ type: "reply", id: "r", in_reply_to: "m1", seq: 2, text: "hi", final: true });
    expect(
      parseServerFrame('{"type":"error","code":"broker_unavailable","message":"later","id":"m1","retryable":true}'),
    ).toEqual({ type: "error", code: "broker_unavailable", message: "later", id: "m1", retryable: true });
    expect(parseServerFrame('{"type":"error","code":"invalid_json","message":"bad","retryable":false}')).toEqual({
      type: "error",
      code: "invalid_json",
      message: "bad",
      retryable: false,
    });
    expect(parseServerFrame('{"type":"pong"}')).toEqual({ type: "pong" });
    expect(
      parseServerFrame('{"type":"room_presence","room_id":"R","user_id":"bob","member":true,"online":false}'),
    ).toEqual({ type: "room_presence", room_id: "R", user_id: "bob", member: true, online: false });
    expect(parseServerFrame('{"type":"room_presence","room_id":"R","user_id":"bob","member":"yes","online":false}')).toBeNull();
    expect(parseServerFrame('{"type":"message_status","id":"m1","status":"processing"}')).toEqual({
      type: "message_status",
      id: "m1",
      status: "processing",
    });
    expect(
      parseServerFrame('{"type":"reply","id":"r","in_reply_to":"m1","seq":3,"text":"","final":true,"cancelled":true}'),
    ).toEqual({ type: "reply", id: "r", in_reply_to: "m1", seq: 3, text: "", final: true, cancelled: true });
    expect(
      parseServerFrame('{"type":"reply","id":"r","in_reply_to":"m1","seq":0,"attempt":9,"text":"a","final":false}'),
    ).toEqual({ type: "reply", id: "r", in_reply_to: "m1", seq: 0, attempt: 9, text: "a", final: false });
  });

  it("ignores what it does not understand instead of throwing", () => {
    for (const junk of [
      "",
      "{",
      "null",
      "42",
      "[]",
      '{"type":"telepathy"}',
      '{"type":"welcome"}',
      '{"type":"reply","id":"r","in_reply_to":"m","seq":-1,"text":"x","final":false}',
      '{"type":"reply","id":"r","in_reply_to":"m","seq":1.5,"text":"x","final":false}',
      '{"type":"reply","id":"r","in_reply_to":"m","seq":0,"text":"x"}',
      '{"type":"reply","id":"r","in_reply_to":"m","seq":0,"attempt":-1,"text":"x","final":false}',
      '{"type":"reply","id":"r","in_reply_to":"m","seq":0,"attempt":"2","text":"x","final":false}',
      '{"type":"error","code":5,"message":"x"}',
      '{"type":"message_status","id":"m1","status":"dreaming"}',
    ]) {
      expect(parseServerFrame(junk), junk).toBeNull();
    }
  });

  it("keeps extra fields from newer servers from breaking a frame", () => {
    expect(parseServerFrame('{"type":"accepted","id":"m1","extra":[1]}')).toEqual({ type: "accepted", id: "m1" });
  });
});

describe("frames the page sends", () => {
  it("encodes send", () => {
    expect(JSON.parse(sendFrame("m1", 'say "hi"'))).toEqual({ type: "send", id: "m1", text: 'say "hi"' });
  });
});

describe("socketUrl and socketProtocols", () => {
  it("follow the page's scheme and host, so it works behind a proxy", () => {
    expect(socketUrl({ protocol: "http:", host: "localhost:5055" })).toBe("ws://localhost:5055/ws");
    expect(socketUrl({ protocol: "https:", host: "chat.example" })).toBe("wss://chat.example/ws");
  });

  it("carry the token in a subprotocol, not in the URL", () => {
    expect(socketProtocols("a.b.c")).toEqual(["switchboard", "bearer.a.b.c"]);
  });
});

describe("tokenExpiry", () => {
  it("reads exp from a JWT and tolerates junk", () => {
    const payload = btoa(JSON.stringify({ sub: "g-1", exp: 1_800_000_000 })).replace(/=+$/, "");
    expect(tokenExpiry(`h.${payload}.s`)).toBe(1_800_000_000);
    expect(tokenExpiry("not a token")).toBeNull();
    expect(tokenExpiry("h.%%%.s")).toBeNull();
  });
});
