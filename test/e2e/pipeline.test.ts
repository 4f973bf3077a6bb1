import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { JobRecord } from "@connector/shared/job-store";
import { startLocalRuntime, type LocalRuntime } from "@connector/local/runtime";
import { maliciousSample, sampleIncidents, sha256, urls, eicar, sha1, type SampleIncident } from "@connector/local/samples";
import { incidentIdOf, readOutcome, waitForIncident, type IncidentOutcome } from "@connector/local/outcomes";

/**
 * The whole connector on this machine: the four sample incidents go in through the intake queue,
 * as the Sentinel playbook sends them, and come out as comments, labels and TI indicators on the
 * Sentinel double. Everything between is the real pipeline: broker, Event Grid, Azurite, the
 * functions host running the real handlers, and the real bash collection script.
 */

let runtime: LocalRuntime;
const samples = sampleIncidents();
const outcomes = new Map<string, IncidentOutcome>();
const byName = (prefix: string): SampleIncident => samples.find((s) => s.name.startsWith(prefix))!;
const outcomeOf = (sample: SampleIncident) => outcomes.get(incidentIdOf(sample.body))!;
const resultComments = (o: IncidentOutcome) => o.comments.filter((c) => c.includes("ANY.RUN Sandbox verdict"));
const jobOf = (o: IncidentOutcome, kind: JobRecord["artifact"]["kind"]) => o.jobs.find((j) => j.artifact.kind === kind)!;

beforeAll(async () => {
  runtime = await startLocalRuntime({ env: { LOG_LEVEL: "info" } });
  await runtime.startHost();
  for (const sample of samples) {
    runtime.seed(sample);
    await runtime.pushIncident(sample.body);
  }
  for (const sample of samples) {
    const jobs = await waitForIncident(runtime, sample.body, 90_000);
    outcomes.set(incidentIdOf(sample.body), readOutcome(runtime, sample.body, jobs));
  }
}, 150_000);

afterAll(async () => {
  await runtime?.close();
});

describe("end to end on the local runtime", () => {
  it("writes the malicious verdict of the Windows file: comment, labels and a SHA-256 indicator", () => {
    const o = outcomeOf(byName("Quarantined file on a Windows host"));
    const job = jobOf(o, "file");
    expect(job.status).toBe("enriched");
    expect(job.verdict).toEqual({ threatLevel: 2, threatLevelText: "Malicious activity", score: 100 });
    expect(job.taskUrl).toMatch(/^https:\/\/app\.any\.run\/tasks\/[0-9a-f-]{36}$/);
    expect(job.sandboxEnvironment).toEqual({ env_os: "windows", env_version: "11", env_bitness: "64" });

    const [comment, ...more] = resultComments(o);
    expect(more).toEqual([]);
    expect(comment).toContain("<td>Verdict</td><td>Malicious activity</td>");
    expect(comment).toContain("<td>Threat level</td><td>2</td>");
    expect(comment).toContain("<td>Score</td><td>100</td>");
    expect(comment).toContain(`<a href="${job.taskUrl}">`);

    // The report's tags, our verdict label, and the label the analyst had set before.
    expect(o.labels).toEqual(expect.arrayContaining(["trojan", "stealer", "ANY.RUN: Malicious activity", "phishing-campaign-42"]));

    const patterns = o.indicators.map((i) => i["pattern"]);
    expect(patterns).toContain(`[file:hashes.'SHA-256' = '${sha256(maliciousSample)}']`);
    for (const indicator of o.indicators) {
      expect(indicator["external_references"]).toEqual([expect.objectContaining({ source_name: "ANY.RUN", url: job.taskUrl })]);
    }
  });

  it("reports the clean URL as clean and uploads no indicator", () => {
    const o = outcomeOf(byName("URL incident"));
    const job = jobOf(o, "url");
    expect(job.verdict?.threatLevelText).toBe("No threats detected");
    expect(resultComments(o)).toHaveLength(1);
    expect(resultComments(o)[0]).toContain("<td>Verdict</td><td>No threats detected</td>");
    expect(resultComments(o)[0]).toContain(urls.clean);
    expect(o.labels).toContain("ANY.RUN: No threats detected");
    expect(o.indicators).toEqual([]);
  });

  it("collects EICAR from the Linux host with the real bash script and keeps its recorded verdict", () => {
    const o = outcomeOf(byName("Quarantined EICAR"));
    const job = jobOf(o, "file");
    expect(job.status).toBe("enriched");
    expect(job.verdict?.threatLevelText).toBe("No threats detected");
    expect(job.sandboxEnvironment).toEqual({ env_os: "linux", env_version: "22.04.2", env_bitness: "64" });
    const run = runtime.mde.runs().find((r) => r.os === "linux");
    expect(run?.exitCode).toBe(0);
    expect(run?.stdout).toMatch(/ANYRUN_COLLECT_RESULT [A-Za-z0-9_-]+\s*$/);
    expect(job.artifact.kind === "file" && job.artifact.hashes.sha1).toBe(sha1(eicar));
    expect(o.indicators).toEqual([]);
  });

  it("handles a URL, a file and a hash-only file in one incident", () => {
    const o = outcomeOf(byName("URL, file and hash-only"));
    expect(o.jobs.map((j) => `${j.artifact.kind}:${j.status}`).sort()).toEqual(["file:enriched", "hash:not_collectable", "url:enriched"]);
    expect(resultComments(o)).toHaveLength(2);
    const started = o.comments.find((c) => c.includes("analysis started"));
    expect(started).toContain("for 2 artifact(s)");
    expect(started).toContain("MD5 5d41402abc4b2a76b9719d911017c592: hash only");
    expect(o.indicators.length).toBeGreaterThanOrEqual(2);
  });

  it("posts each comment once: one started comment and one result per analysed artifact", () => {
    for (const sample of samples) {
      const o = outcomeOf(sample);
      const analysed = o.jobs.filter((j) => j.artifact.kind !== "hash").length;
      expect(o.comments.filter((c) => c.includes("analysis started"))).toHaveLength(1);
      expect(resultComments(o)).toHaveLength(analysed);
    }
  });

  it("submits each artifact to the sandbox exactly once and leaves no sample in the staging container", async () => {
    const analysed = samples.flatMap((s) => outcomeOf(s).jobs.filter((j) => j.artifact.kind !== "hash"));
    expect(runtime.anyrun.submissions()).toBe(analysed.length);
    const { BlobServiceClient } = await import("@azure/storage-blob");
    const container = BlobServiceClient.fromConnectionString(runtime.env.STORAGE_CONNECTION!).getContainerClient(runtime.env.STAGING_CONTAINER!);
    const left: string[] = [];
    for await (const blob of container.listBlobsFlat()) left.push(blob.name);
    expect(left).toEqual([]);
  });

  it("never lets the API key or a SAS signature reach a log line, comment or transcript", () => {
    const key = runtime.env.ANYRUN_API_KEY!;
    const logs = runtime.hostOutput();
    expect(logs.length).toBeGreaterThan(1000);
    const comments = samples.flatMap((s) => outcomeOf(s).comments).join("\n");
    const transcripts = runtime.mde.runs().map((r) => `${r.stdout}\n${r.stderr}`).join("\n");
    for (const text of [logs, comments, transcripts]) {
      expect(text).not.toContain(key);
      expect(text).not.toMatch(/sig=(?!REDACTED)[A-Za-z0-9%+/=]{10,}/);
    }
  });
});
