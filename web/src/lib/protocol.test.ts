import { describe, expect, it } from "vitest";
import { parseServerFrame, sendFrame, socketUrl } from "./protocol";

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
      '{"type":"error","code":5,"message":"x"}',
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

describe("socketUrl", () => {
  it("follows the page's scheme and host, so it works behind a proxy", () => {
    expect(socketUrl({ protocol: "http:", host: "localhost:5055" }, "t")).toBe("ws://localhost:5055/ws?token=t");
    expect(socketUrl({ protocol: "https:", host: "chat.example" }, "a+b/c=")).toBe(
      "wss://chat.example/ws?token=a%2Bb%2Fc%3D",
    );
  });
});
