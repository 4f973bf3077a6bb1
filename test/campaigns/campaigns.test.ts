import { describe, expect, it } from "vitest";
import { runCrashCampaign } from "./crash.ts";
import { runFaultsCampaign } from "./faults.ts";
import { runPoisonCampaign } from "./poison.ts";
import type { Figures } from "./counts.ts";

/**
 * The three scripted campaigns of issue 4, on the whole local runtime (functions host as a child
 * process, broker, Event Grid, Azurite, the doubles). Each prints its summary line and asserts its
 * figures exactly; the figures are counted on the doubles, not read from the connector's state.
 * They run one after the other in this file (about 2½ minutes on 2 cores).
 */

const print = (lines: string[]) => process.stdout.write(lines.join("\n") + "\n");

function expectNoDuplicates(f: Figures) {
  expect({
    duplicateSubmissions: f.duplicateSubmissions,
    duplicateLiveResponses: f.duplicateLiveResponses,
    duplicateComments: f.duplicateComments,
    conflictingComments: f.conflictingComments,
    duplicateIndicators: f.duplicateIndicators,
  }).toEqual({ duplicateSubmissions: 0, duplicateLiveResponses: 0, duplicateComments: 0, conflictingComments: 0, duplicateIndicators: 0 });
}

function expectComplete(f: Figures) {
  expect(f.unfinished).toEqual([]);
  expect(f.wrongVerdicts).toEqual([]);
  expect(f.missingLabels).toEqual([]);
  expect(f.missingIndicators).toBe(0);
  expect(f.enrichedWithoutTask).toBe(0);
  expect(f.missingStartedComments).toBe(0);
  expect(f.foreignTasks).toBe(0);
}

describe("campaigns", () => {
  it("crash: 100 incidents through 50 SIGKILLs of the functions host end enriched, without duplicates or dead letters", async () => {
    const r = await runCrashCampaign({ incidents: 100, kills: 50 });
    print([r.summary, ...r.details]);
    expect(r.kills).toHaveLength(50);
    expect(r.unfinished).toEqual([]);
    expect(r.figures.enriched).toBe(100);
    expectComplete(r.figures);
    expectNoDuplicates(r.figures);
    // One sandbox task per artifact, one Live Response per file artifact, no dead letter anywhere.
    expect(r.figures.sandboxTasks).toBe(r.figures.artifacts);
    expect(r.figures.liveResponses).toBe(r.figures.perArtifact.filter((a) => a.artifact.kind === "file").length);
    expect(r.figures.deadLetters).toEqual([]);
    expect(r.settled).toBe(true);
  }, 720_000);

  it("faults: with 10 % 5xx / 429 / timeouts on every double, every incident ends enriched or with a failure comment, without duplicates or dead letters", async () => {
    const r = await runFaultsCampaign({ incidents: 40 });
    print([r.summary, ...r.details]);
    for (const double of ["anyrun", "mde", "arm", "ti"]) {
      // One fault in every block of ten requests: 10 % of each double's requests.
      const faults = r.faults.filter((f) => f.double === double).length;
      const requests = r.requests[double]!;
      expect(requests, double).toBeGreaterThanOrEqual(10);
      expect([Math.floor(requests / 10), Math.ceil(requests / 10)], double).toContain(faults);
    }
    for (const kind of ["5xx", "429", "timeout"] as const) expect(r.faults.some((f) => f.kind === kind)).toBe(true);
    expect(r.figures.enriched + r.figures.failedWithComment).toBe(40);
    expectComplete(r.figures);
    expectNoDuplicates(r.figures);
    expect(r.figures.deadLetters).toEqual([]);
    expect(r.settled).toBe(true);
  }, 720_000);

  it("poison: malformed bodies and events end in dead letters with their reasons; after the fix, replay brings the others through to enrichment", async () => {
    const r = await runPoisonCampaign();
    print([r.summary, ...r.details]);
    for (const c of r.cases) {
      expect(c.found, c.name).toBeDefined();
      expect(c.found!.reason, c.name).toMatch(c.reason);
      if (c.entity.startsWith("eventgrid:")) expect(c.logLine, c.name).toMatch(c.says);
      else expect(c.found!.description, c.name).toMatch(c.says);
    }
    for (const replay of r.replays) expect({ name: replay.name, deadLettered: !!replay.deadLettered, replayed: replay.replayed, enriched: replay.enriched }).toEqual({ name: replay.name, deadLettered: true, replayed: true, enriched: true });
    for (const c of r.corrected) expect(c).toEqual({ name: c.name, enriched: true });
    expect(r.duplicates).toEqual({ submissions: 0, comments: 0, indicators: 0, liveResponses: 0 });
    // What is left is exactly the malformed input, which no fix of ours can make valid.
    expect(r.leftAfter).toHaveLength(r.cases.length);
    expect(r.problems).toEqual([]);
  }, 180_000);
});
