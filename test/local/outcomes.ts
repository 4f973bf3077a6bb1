import { terminalStatuses, type JobRecord } from "@connector/shared/job-store";
import { redact } from "@connector/shared/logger";
import type { LocalRuntime } from "./runtime.ts";
import type { SampleIncident } from "./samples.ts";

/**
 * What an incident received, read back from the Sentinel double and the job table: the same view
 * an analyst gets in the portal (comments, labels, TI indicators), plus each artifact's job.
 */
export interface IncidentOutcome {
  incidentId: string;
  title: string;
  jobs: JobRecord[];
  labels: string[];
  comments: string[];
  /** Indicators in the workspace that point at one of this incident's sandbox tasks. */
  indicators: Record<string, unknown>[];
}

export function incidentIdOf(body: unknown): string {
  const object = (body as { object?: { name?: string; id?: string } }).object;
  const id = object?.name ?? object?.id?.split("/").pop();
  if (!id) throw new Error("incident body has no object.name / object.id");
  return id;
}

function workspaceIdOf(body: unknown): string {
  return (body as { workspaceId: string }).workspaceId;
}

export function readOutcome(runtime: LocalRuntime, body: unknown, jobs: JobRecord[]): IncidentOutcome {
  const incidentId = incidentIdOf(body);
  const incident = runtime.sentinel.incident(incidentId);
  const taskUrls = new Set(jobs.flatMap((j) => (j.taskUrl ? [j.taskUrl] : [])));
  const indicators = runtime.sentinel.indicators(workspaceIdOf(body)).filter((i) => {
    const refs = (i as { external_references?: { url?: string }[] }).external_references ?? [];
    return refs.some((r) => r.url && taskUrls.has(r.url.replace(/\/$/, "")));
  }) as Record<string, unknown>[];
  return {
    incidentId,
    title: incident?.properties?.title ?? "",
    jobs,
    labels: (incident?.properties?.labels ?? []).map((l) => l.labelName),
    comments: runtime.sentinel.comments(incidentId).map((c) => c.properties?.message ?? ""),
    indicators,
  };
}

/** Resolves when every job of the incident is final (or the incident got its "nothing to analyse" comment). */
export async function waitForIncident(runtime: LocalRuntime, body: unknown, timeoutMs: number): Promise<JobRecord[]> {
  const incidentId = incidentIdOf(body);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const jobs = await runtime.jobs.listByIncident(incidentId);
    if (jobs.length > 0 && jobs.every((j) => terminalStatuses.has(j.status))) return jobs;
    if (jobs.length === 0 && runtime.sentinel.comments(incidentId).some((c) => /no URL or file the sandbox can analyse/.test(c.properties?.message ?? ""))) return jobs;
    if (Date.now() > deadline) {
      throw new Error(`incident ${incidentId} not finished after ${timeoutMs} ms: ${jobs.map((j) => `${j.artifactId}=${j.status}`).join(", ") || "no jobs"}`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

export function artifactName(job: JobRecord): string {
  const a = job.artifact;
  if (a.kind === "url") return a.url;
  if (a.kind === "file") return a.fileName;
  return a.fileName ?? a.hashes.sha256 ?? a.hashes.sha1 ?? a.hashes.md5 ?? a.artifactId;
}

function matchesArtifact(job: JobRecord, name: string): boolean {
  const a = job.artifact;
  if (a.kind === "url") return a.url === name;
  if (a.kind === "file") return a.fileName === name;
  return [a.fileName, a.hashes.sha256, a.hashes.sha1, a.hashes.md5].includes(name);
}

/** Problems with an outcome against a sample's expectations (empty = as expected). */
export function checkExpectations(outcome: IncidentOutcome, expect: SampleIncident["expect"]): string[] {
  const problems: string[] = [];
  if (outcome.jobs.length !== expect.length) problems.push(`expected ${expect.length} artifact(s), got ${outcome.jobs.length}`);
  for (const e of expect) {
    const job = outcome.jobs.find((j) => matchesArtifact(j, e.artifact));
    if (!job) {
      problems.push(`no job for ${e.artifact}`);
      continue;
    }
    if (job.status !== e.outcome) problems.push(`${e.artifact}: ended ${job.status}${job.failure ? ` (${job.failure})` : ""}, expected ${e.outcome}`);
    if (e.verdict && job.verdict?.threatLevelText !== e.verdict) problems.push(`${e.artifact}: verdict ${job.verdict?.threatLevelText ?? "none"}, expected ${e.verdict}`);
    const count = outcome.indicators.filter((i) => ((i as { external_references?: { url?: string }[] }).external_references ?? []).some((r) => r.url?.replace(/\/$/, "") === job.taskUrl)).length;
    if (e.minIndicators !== undefined && count < e.minIndicators) problems.push(`${e.artifact}: ${count} indicator(s), expected at least ${e.minIndicators}`);
    if (e.maxIndicators !== undefined && count > e.maxIndicators) problems.push(`${e.artifact}: ${count} indicator(s), expected at most ${e.maxIndicators}`);
  }
  return problems;
}

const unescapeHtml = (html: string) =>
  html.replace(/<[^>]*>/g, "").replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&quot;/g, '"').replace(/&#39;/g, "'").replace(/&amp;/g, "&");

/** What the "analysis started" comment says was left out: entities ignored, and artifacts over the per-incident limit. */
function notAnalysed(comments: readonly string[]): string[] {
  const started = comments.find((c) => c.includes("ANY.RUN Sandbox: analysis started") || c.includes("no URL or file the sandbox can analyse"));
  if (!started) return [];
  const lines: string[] = [];
  const limit = /<p>Not analysed: (\d+) artifact\(s\) over the limit of (\d+) /.exec(started);
  if (limit) lines.push(`not analysed: ${limit[1]} artifact(s) over MAX_ARTIFACTS_PER_INCIDENT (${limit[2]}), listed in the started comment`);
  const ignored = /Ignored(?: entities)?: (.*?)\.?<\/p>/.exec(started);
  if (ignored) lines.push(`ignored entities: ${unescapeHtml(ignored[1]!)}`);
  return lines;
}

/**
 * Incident strings printed to a terminal: control characters (line breaks, escape sequences) shown
 * as \\uXXXX, and secrets an incident may carry (a SAS in a URL) masked as in the logs.
 */
const printable = (text: string) => redact(text).replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);

export function formatOutcome(outcome: IncidentOutcome): string {
  return formatOutcomeLines(outcome).map(printable).join("\n");
}

function formatOutcomeLines(outcome: IncidentOutcome): string[] {
  const lines = [`Incident ${outcome.incidentId} — ${outcome.title}`];
  // In the order the intake recorded them (entity order, files first).
  const jobs = [...outcome.jobs].sort((a, b) => a.createdAt.localeCompare(b.createdAt));
  for (const job of jobs) {
    const name = `${job.artifact.kind} ${artifactName(job)}`;
    if (job.status === "enriched" && job.verdict) {
      lines.push(`  ${name}: ${job.verdict.threatLevelText} (threat level ${job.verdict.threatLevel}, score ${job.verdict.score}) ${job.taskUrl ?? ""}`);
    } else if (job.status === "not_collectable") {
      lines.push(`  ${name}: not analysed (${job.artifact.kind === "hash" ? job.artifact.reason : "not collectable"})`);
    } else {
      lines.push(`  ${name}: ${job.status}${job.failure ? ` — ${job.failure}` : ""}`);
    }
  }
  lines.push(...notAnalysed(outcome.comments).map((line) => `  ${line}`));
  lines.push(`  labels: ${outcome.labels.join(", ") || "(none)"}`);
  lines.push(`  indicators uploaded: ${outcome.indicators.length}`);
  lines.push(`  comments: ${outcome.comments.length}`);
  return lines;
}
