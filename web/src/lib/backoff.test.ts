import { describe, expect, it } from "vitest";
import { backoffDelay } from "./backoff";

const fixed = (r: number) => ({ baseMs: 500, maxMs: 15_000, random: () => r });

describe("backoffDelay", () => {
  it("doubles per attempt, between half and all of the step", () => {
    expect([0, 1, 2, 3].map((a) => backoffDelay(a, fixed(0)))).toEqual([250, 500, 1000, 2000]);
    expect([0, 1, 2, 3].map((a) => backoffDelay(a, fixed(0.999999)))).toEqual([500, 1000, 2000, 4000]);
  });

  it("is capped", () => {
    expect(backoffDelay(10, fixed(0.999999))).toBe(15_000);
    expect(backoffDelay(1_000, fixed(0))).toBe(7_500);
  });

  it("spreads clients that retry at the same attempt", () => {
    const delays = new Set([0.1, 0.3, 0.5, 0.7, 0.9].map((r) => backoffDelay(4, fixed(r))));
    expect(delays.size).toBe(5);
  });
});
