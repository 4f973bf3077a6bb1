import { describe, expect, it } from "vitest";
import {
  buildIndicator,
  escapePatternValue,
  indicatorId,
  toObservable,
  type IndicatorInput,
} from "@connector/shared/clients/stix";
import { uuidV5 } from "@connector/shared/ids";

const now = new Date("2025-06-01T12:00:00.000Z");
const taskUrl = "https://app.any.run/tasks/0cf223f2-530e-4a50-b68f-563045268648";
const input = (over: Partial<IndicatorInput>): IndicatorInput => ({
  type: "url",
  value: "http://example.com/",
  reputation: "malicious",
  taskUrl,
  labels: ["anyrun"],
  now,
  validDays: 30,
  ...over,
});
const uuidPattern = /^indicator--[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

describe("UUIDv5", () => {
  it("matches the RFC 4122 name-based vector", () => {
    // DNS namespace, "www.example.com" (the value every UUIDv5 implementation reproduces)
    expect(uuidV5("www.example.com", "6ba7b810-9dad-11d1-80b4-00c04fd430c8")).toBe("2ed6657d-e927-568b-95e1-2665a8aea6a2");
  });
});

describe("escapePatternValue", () => {
  it("escapes backslashes first, then single quotes", () => {
    expect(escapePatternValue("a\\b")).toBe("a\\\\b");
    expect(escapePatternValue("it's")).toBe("it\\'s");
    // A quote already "escaped" in the input stays literal: \' → \\\'
    expect(escapePatternValue("\\'")).toBe("\\\\\\'");
  });

  it("puts the escaped value into the pattern", () => {
    const indicator = buildIndicator(input({ value: "http://example.com/a\\b'c" }))!;
    expect(indicator.pattern).toBe("[url:value = 'http://example.com/a\\\\b\\'c']");
  });
});

describe("buildIndicator", () => {
  it("builds a complete STIX 2.1 indicator", () => {
    const indicator = buildIndicator(
      input({ type: "sha256", value: "E923636F1093C414AAB39F846E9D7A372BEEFA7B628B28179197E539C56AA0F0", labels: ["anyrun", "anyrun", " "] }),
    );
    expect(indicator).toEqual({
      type: "indicator",
      spec_version: "2.1",
      id: indicator!.id,
      created: "2025-06-01T12:00:00.000Z",
      modified: "2025-06-01T12:00:00.000Z",
      name: "ANY.RUN malicious file: e923636f1093c414aab39f846e9d7a372beefa7b628b28179197e539c56aa0f0",
      description: `Seen as malicious in ANY.RUN sandbox analysis ${taskUrl}`,
      indicator_types: ["malicious-activity"],
      pattern: "[file:hashes.'SHA-256' = 'e923636f1093c414aab39f846e9d7a372beefa7b628b28179197e539c56aa0f0']",
      pattern_type: "stix",
      pattern_version: "2.1",
      valid_from: "2025-06-01T12:00:00.000Z",
      valid_until: "2025-07-01T12:00:00.000Z",
      confidence: 100,
      labels: ["anyrun"],
      external_references: [{ source_name: "ANY.RUN", url: taskUrl }],
    });
    expect(indicator!.id).toMatch(uuidPattern);
  });

  it("uses the pattern of each hash type and rejects malformed hashes", () => {
    expect(buildIndicator(input({ type: "sha1", value: "3395856CE81F2B7382DEE72602F798B642F14140" }))!.pattern).toBe(
      "[file:hashes.'SHA-1' = '3395856ce81f2b7382dee72602f798b642f14140']",
    );
    expect(buildIndicator(input({ type: "md5", value: "44d88612fea8a8f36de82e1278abb02f" }))!.pattern).toBe(
      "[file:hashes.MD5 = '44d88612fea8a8f36de82e1278abb02f']",
    );
    expect(buildIndicator(input({ type: "sha256", value: "abc" }))).toBeUndefined();
    expect(buildIndicator(input({ type: "md5", value: "z".repeat(32) }))).toBeUndefined();
  });

  it("keeps ids stable across calls, times and letter case", () => {
    const a = buildIndicator(input({ type: "domain", value: "Example.COM" }))!;
    const b = buildIndicator(input({ type: "domain", value: "example.com.", now: new Date("2026-01-01T00:00:00Z"), reputation: "suspicious" }))!;
    expect(a.id).toBe(b.id);
    expect(a.id).toBe(indicatorId({ observable: "domain-name", value: "example.com" }));
    expect(a.id).toMatch(uuidPattern);
    const upper = buildIndicator(input({ type: "sha256", value: "A".repeat(64) }))!;
    const lower = buildIndicator(input({ type: "sha256", value: "a".repeat(64) }))!;
    expect(upper.id).toBe(lower.id);
    // Different observables never share an id.
    const url = buildIndicator(input({ type: "url", value: "example.com" }))!;
    expect(url.id).not.toBe(a.id);
  });

  it("maps reputation to confidence and indicator type", () => {
    expect(buildIndicator(input({ reputation: "malicious" }))).toMatchObject({ confidence: 100, indicator_types: ["malicious-activity"] });
    expect(buildIndicator(input({ reputation: 2 }))).toMatchObject({ confidence: 100 });
    expect(buildIndicator(input({ reputation: "suspicious" }))).toMatchObject({ confidence: 60, indicator_types: ["anomalous-activity"] });
    expect(buildIndicator(input({ reputation: 1 }))).toMatchObject({ confidence: 60 });
    expect(buildIndicator(input({ reputation: 0 as unknown as 1 }))).toBeUndefined();
  });

  it("sets valid_until from validDays and refuses a non-positive one", () => {
    expect(buildIndicator(input({ validDays: 365 }))!.valid_until).toBe("2026-06-01T12:00:00.000Z");
    expect(() => buildIndicator(input({ validDays: 0 }))).toThrow(RangeError);
  });
});

describe("IP addresses", () => {
  it("detects IPv4", () => {
    expect(buildIndicator(input({ type: "ip", value: " 203.0.113.7 " }))!.pattern).toBe("[ipv4-addr:value = '203.0.113.7']");
  });

  it("detects IPv6 and normalises it, so equal addresses share an id", () => {
    const long = buildIndicator(input({ type: "ip", value: "2001:0DB8:0000:0000:0000:0000:0000:0001" }))!;
    const short = buildIndicator(input({ type: "ip", value: "2001:db8::1" }))!;
    expect(long.pattern).toBe("[ipv6-addr:value = '2001:db8::1']");
    expect(long.id).toBe(short.id);
    expect(buildIndicator(input({ type: "ip", value: "::ffff:192.0.2.1" }))!.pattern).toBe("[ipv6-addr:value = '::ffff:c000:201']");
  });

  it("accepts CIDR blocks and rejects what is not an address", () => {
    expect(toObservable("ip", "198.51.100.0/24")).toMatchObject({ observable: "ipv4-addr", value: "198.51.100.0/24" });
    expect(toObservable("ip", "2001:db8::/32")).toMatchObject({ observable: "ipv6-addr", value: "2001:db8::/32" });
    for (const bad of ["198.51.100.0/33", "999.1.1.1", "203.0.113.7:443", "fe80::1%eth0", "example.com", "", "1.2.3.4/24/1"]) {
      expect(buildIndicator(input({ type: "ip", value: bad })), bad).toBeUndefined();
    }
  });
});

describe("domains", () => {
  it("lower-cases, drops the trailing dot and converts IDN to punycode", () => {
    expect(buildIndicator(input({ type: "domain", value: "Mail.Example.ORG." }))!.pattern).toBe("[domain-name:value = 'mail.example.org']");
    expect(buildIndicator(input({ type: "domain", value: "bücher.example" }))!.pattern).toBe("[domain-name:value = 'xn--bcher-kva.example']");
    expect(toObservable("domain", "_dmarc.example.com")).toMatchObject({ value: "_dmarc.example.com" });
  });

  it("rejects values that are not domain names", () => {
    for (const bad of [
      "example.com/path",
      "example.com:443",
      "http://example.com",
      "user@example.com",
      "exa mple.com",
      "localhost",
      "-bad.example.com",
      "bad-.example.com",
      "a..example.com",
      `${"a".repeat(64)}.example.com`,
      "203.0.113.7",
      "example.123",
      "it's.example.com",
      "",
    ]) {
      expect(buildIndicator(input({ type: "domain", value: bad })), bad).toBeUndefined();
    }
  });
});

describe("URLs and unknown types", () => {
  it("keeps URLs as submitted but refuses control characters and whitespace", () => {
    expect(toObservable("url", "HTTP://Example.com/Path?q=1")).toMatchObject({ value: "HTTP://Example.com/Path?q=1" });
    expect(buildIndicator(input({ value: "http://example.com/a b" }))).toBeUndefined();
    expect(buildIndicator(input({ value: "http://example.com/\n" }))!.pattern).toBe("[url:value = 'http://example.com/']");
    expect(buildIndicator(input({ value: "http://exa\u0000mple.com" }))).toBeUndefined();
  });

  it("returns undefined for an unknown IoC type", () => {
    expect(buildIndicator(input({ type: "email" as unknown as "url", value: "a@example.com" }))).toBeUndefined();
  });
});
