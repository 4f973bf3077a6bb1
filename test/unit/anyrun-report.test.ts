import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import {
  InvalidReportError,
  isReportFinal,
  parseReport,
  readIocs,
  readReport,
  reportState,
  reportTags,
  type AnyRunReport,
} from "@connector/shared/anyrun/report";

const fixture = (name: string): unknown =>
  JSON.parse(readFileSync(new URL(`../fixtures/anyrun/${name}`, import.meta.url), "utf8"));

const withStatus = (status: unknown, extra: Record<string, unknown> = {}): AnyRunReport =>
  parseReport({ data: { status, analysis: { uuid: "t-1", ...extra } } });

describe("recorded reports", () => {
  it("reads the malicious report's verdict, MITRE and main object", () => {
    const report = parseReport(fixture("report_malicious_file_2020.json"));
    const outcome = readReport(report);
    expect(outcome).toMatchObject({
      state: "done",
      taskId: "4649c7fc-5780-476a-86b0-b89e424339bc",
      permanentUrl: "https://app.any.run/tasks/4649c7fc-5780-476a-86b0-b89e424339bc",
      verdict: { score: 100, threatLevel: 2, threatLevelText: "Malicious activity" },
      tags: [],
      mitre: ["T1129"],
    });
    if (outcome.state !== "done") throw new Error("unreachable");
    expect(outcome.mainObject?.filename).toBe("setup.exe");
    expect(outcome.mainObject?.hashes?.sha256).toBe("9ed4502b2eb64dd0a4394e593cb3666e621e751c26d06f3dbb953808bf83536e");
    // Fields not modelled pass through untouched.
    expect((report.data as Record<string, unknown>).incidents).toHaveLength(4);
  });

  it("reads the clean report's verdict", () => {
    const outcome = readReport(parseReport(fixture("report_clean_file_2021.json")));
    expect(outcome).toMatchObject({
      state: "done",
      verdict: { score: 37, threatLevel: 0, threatLevelText: "No threats detected" },
      mitre: [],
    });
  });
});

describe("report state", () => {
  it.each([
    ["done", "done"],
    ["DONE", "done"],
    ["completed", "done"],
    [100, "done"],
    ["100", "done"],
    ["failed", "failed"],
    [-1, "failed"],
    ["running", "pending"],
    ["queued", "pending"],
    [60, "pending"],
    [undefined, "pending"],
  ] as const)("status %j → %s", (status, state) => {
    expect(reportState(withStatus(status))).toBe(state);
    expect(isReportFinal(withStatus(status))).toBe(state === "done");
  });

  it("never reads a verdict from an unfinished report, even one that looks clean", () => {
    const running = withStatus("running", { scores: { verdict: { score: 0, threatLevel: 0, threatLevelText: "No threats detected" } } });
    expect(readReport(running)).toEqual({ state: "pending", status: "running" });
    expect(readReport(withStatus(-1))).toEqual({ state: "failed", status: -1 });
  });

  it("refuses a final report without a verdict", () => {
    expect(() => readReport(withStatus("done"))).toThrow(InvalidReportError);
  });

  it("rejects a report whose verdict is out of range or whose envelope is missing", () => {
    expect(() => parseReport({ data: { status: "done", analysis: { scores: { verdict: { score: 50, threatLevel: 3, threatLevelText: "x" } } } } })).toThrow(
      /data\.analysis\.scores\.verdict\.threatLevel/,
    );
    expect(() => parseReport({ status: "done" })).toThrow(InvalidReportError);
    expect(() => parseReport(null)).toThrow(InvalidReportError);
  });
});

describe("reportTags", () => {
  it("accepts real {tag, users} objects and schema-example strings", () => {
    expect(reportTags(withStatus("done", { tags: [{ tag: "trojan", users: 3 }, { tag: "stealer", users: [] }] }))).toEqual(["trojan", "stealer"]);
    expect(reportTags(withStatus("done", { tags: ["string", "rat"] }))).toEqual(["string", "rat"]);
    expect(reportTags(withStatus("done"))).toEqual([]);
  });
});

describe("readIocs", () => {
  it("keeps known types, detects the IP family, and skips the rest without failing", () => {
    const { iocs, skipped } = readIocs([
      { category: "Main object", type: "sha256", name: "a.exe", ioc: "ab".repeat(32), reputation: 2 },
      { category: "Connections", type: "ip", ioc: "203.0.113.9", reputation: 1, discoveringEntryId: "e1" },
      { category: "Connections", type: "ip", ioc: "2001:db8::1", reputation: 2 },
      { category: "DNS requests", type: "domain", ioc: "bad.example", reputation: 0 },
      { category: "HTTP/HTTPS requests", type: "URL", ioc: "http://bad.example/x", reputation: 2 },
      { category: "Files", type: "md5", ioc: "00".repeat(16), reputation: 2 },
      { category: "Mutexes", type: "mutex", ioc: "Global\\x", reputation: 1 },
      { category: "Connections", type: "ip", ioc: "not-an-ip", reputation: 1 },
      { category: "Connections", type: "ip", ioc: "198.51.100.1", reputation: 5 },
      { type: "domain", ioc: "no-category.example", reputation: 1 },
      "garbage",
    ]);
    expect(iocs).toEqual([
      { category: "Main object", type: "sha256", name: "a.exe", ioc: "ab".repeat(32), reputation: 2 },
      { category: "Connections", type: "ip", ioc: "203.0.113.9", reputation: 1, discoveringEntryId: "e1", ipVersion: 4 },
      { category: "Connections", type: "ip", ioc: "2001:db8::1", reputation: 2, ipVersion: 6 },
      { category: "DNS requests", type: "domain", ioc: "bad.example", reputation: 0 },
      { category: "HTTP/HTTPS requests", type: "url", ioc: "http://bad.example/x", reputation: 2 },
    ]);
    expect(skipped).toEqual({ unknownType: { md5: 1, mutex: 1 }, malformed: 3, invalidIp: 1 });
  });

  it("fails only when the body is not an array", () => {
    expect(readIocs([]).iocs).toEqual([]);
    expect(() => readIocs({ error: false, data: [] })).toThrow(InvalidReportError);
  });
});
