import { describe, expect, it } from "vitest";
import { Pacer } from "./pacer";

describe("Pacer", () => {
  it("lets a burst through, then one send per refill", () => {
    const pacer = new Pacer(3, 10);
    expect([pacer.take(0), pacer.take(0), pacer.take(0)]).toEqual([true, true, true]);
    expect(pacer.take(0)).toBe(false);
    expect(pacer.wait(0)).toBe(100);
    expect(pacer.take(50)).toBe(false);
    expect(pacer.wait(50)).toBe(50);
    expect(pacer.take(100)).toBe(true);
    expect(pacer.take(100)).toBe(false);
  });

  it("never holds more than the burst", () => {
    const pacer = new Pacer(2, 10);
    pacer.take(0);
    expect([pacer.take(60_000), pacer.take(60_000), pacer.take(60_000)]).toEqual([true, true, false]);
  });
});
