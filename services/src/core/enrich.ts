import type { EventGridEvent } from "@azure/functions";
import { analysisCompletedSchema, type AnalysisCompleted } from "@connector/shared/messages";
import type { Logger } from "@connector/shared/logger";
import { describeIssues, InvalidInputError, RetryLaterError } from "@connector/shared/errors";
import { ConcurrentUpdateError, type JobRecord } from "@connector/shared/job-store";
import { buildIndicator, type IocType } from "@connector/shared/clients/stix";
import { chunk } from "@connector/shared/clients/sentinel-ti";
import type { CoreDeps, SandboxIoc } from "./ports.ts";
import { resultComment } from "./comments.ts";
import { commentIds } from "./intake.ts";
import { failJob, now, postComment } from "./job-outcomes.ts";

/**
 * How long one delivery holds the enrichment: longer than a normal one takes (seconds) and than
 * Event Grid's 30-second delivery timeout, short enough that a retry after a crash is not held up long.
 */
const enrichClaimMs = 60_000;

const stixTypes: ReadonlySet<string> = new Set<IocType>(["sha256", "sha1", "md5", "url", "domain", "ip"]);

export function verdictLabel(threatLevelText: string): string {
  return `ANY.RUN: ${threatLevelText}`;
}

export interface EnrichResult {
  outcome: "enriched" | "failed" | "skipped";
  labels?: string[];
  indicators?: number;
  rejectedIndicators?: number;
}

/**
 * Enrichment, on "analysis completed": one result comment (verdict, score, task link, IoC table),
 * the sandbox tags merged into the incident labels, and the malicious and suspicious IoCs uploaded
 * to Sentinel TI as STIX indicators. A clean verdict uploads nothing.
 */
export async function handleAnalysisCompleted(event: Pick<EventGridEvent, "data" | "id">, deps: CoreDeps): Promise<EnrichResult> {
  const parsed = analysisCompletedSchema.safeParse(event.data);
  if (!parsed.success) throw new InvalidInputError(`Not an analysis-completed event: ${describeIssues(parsed.error)}`);
  const data = parsed.data;
  const log = deps.logger.child({ incidentId: data.incident.incidentId, artifactId: data.artifactId, taskId: data.taskId });
  const job = await deps.jobs.get(data.incident.incidentId, data.artifactId);
  if (!job) throw new InvalidInputError(`No job recorded for ${data.incident.incidentId}/${data.artifactId}`, "UnknownJob");
  if (job.status === "enriched" || job.status === "failed") {
    log.info("incident already enriched for this artifact; duplicate event ignored");
    return { outcome: "skipped" };
  }

  // One enrichment at a time per job: Event Grid may deliver the event again while the first
  // delivery is still writing (a slow Sentinel answer outlasts its delivery timeout).
  const at = now(deps);
  if (job.enrichingUntil && Date.parse(job.enrichingUntil) > at.getTime()) {
    throw new RetryLaterError(`Another delivery is enriching the incident for ${job.artifactId} until ${job.enrichingUntil}`);
  }
  try {
    await deps.jobs.update(job.incidentId, job.artifactId, { enrichingUntil: new Date(at.getTime() + enrichClaimMs).toISOString() }, job.etag);
  } catch (err) {
    if (err instanceof ConcurrentUpdateError) throw new RetryLaterError(`Another delivery took up the enrichment of ${job.artifactId}`);
    throw err;
  }

  try {
    return await enrichClaimed(deps, data, job, log);
  } catch (err) {
    // A failed attempt gives the claim back at once, so its retry (or a replay) need not wait it out.
    await deps.jobs.update(job.incidentId, job.artifactId, { enrichingUntil: new Date(0).toISOString() }).catch(() => undefined);
    throw err;
  }
}

async function enrichClaimed(deps: CoreDeps, data: AnalysisCompleted, job: JobRecord, log: Logger): Promise<EnrichResult> {
  if (data.outcome !== "done") {
    const reason = data.outcome === "failed" ? "The sandbox reported the task as failed." : "The sandbox task did not finish before the connector's deadline.";
    await failJob(deps, { ...job, taskUrl: job.taskUrl ?? deps.sandbox.taskUrl(data.taskId) }, reason);
    return { outcome: "failed" };
  }

  const report = await deps.sandbox.getReport(data.taskId);
  if (!report.final || !report.verdict) throw new Error(`Report of task ${data.taskId} is not final; no verdict is read from an unfinished task`);
  const verdict = report.verdict;
  const iocs = await deps.sandbox.getIocs(data.taskId);
  const env = job.sandboxEnvironment;

  await postComment(
    deps,
    job.incident,
    commentIds.result(job.incidentId, job.artifactId),
    resultComment({
      artifact: job.artifact,
      taskUrl: report.taskUrl,
      verdict,
      tags: report.tags,
      iocs,
      ...(env ? { sandboxEnvironment: `${env["env_os"]} ${env["env_version"]} ${env["env_bitness"]}-bit` } : {}),
    }),
  );

  const labels = [verdictLabel(verdict.threatLevelText), ...report.tags];
  await deps.incidents.addLabels(job.incident, labels);

  let uploaded = job.indicatorsUploaded ?? 0;
  let rejected = 0;
  if (verdict.threatLevel > 0 && job.indicatorsUploaded === undefined) {
    const indicators = toIndicators(iocs, report.taskUrl, report.tags, now(deps), deps.settings.tiValidDays);
    for (const batch of chunk(indicators)) {
      const result = await deps.threatIntel.uploadStixObjects(job.incident.workspaceId, batch);
      uploaded += result.accepted;
      rejected += result.errors.length;
    }
    if (rejected > 0) log.warn("threat intelligence upload rejected some indicators", { rejected, accepted: uploaded });
    await deps.jobs.update(job.incidentId, job.artifactId, { indicatorsUploaded: uploaded });
  }

  await deps.jobs.update(job.incidentId, job.artifactId, { status: "enriched", verdict });
  log.info("incident enriched", { verdict: verdict.threatLevelText, score: verdict.score, labels: labels.length, indicators: uploaded });
  return { outcome: "enriched", labels, indicators: uploaded, rejectedIndicators: rejected };
}

/** Malicious and suspicious IoCs as STIX indicators, one per distinct value. */
export function toIndicators(iocs: readonly SandboxIoc[], taskUrl: string, tags: readonly string[], at: Date, validDays: number): Record<string, unknown>[] {
  const byId = new Map<string, Record<string, unknown>>();
  for (const ioc of iocs) {
    if (ioc.reputation !== 1 && ioc.reputation !== 2) continue;
    if (!stixTypes.has(ioc.type)) continue;
    const indicator = buildIndicator({
      type: ioc.type as IocType,
      value: ioc.value,
      reputation: ioc.reputation,
      taskUrl,
      labels: ["ANY.RUN", ...tags],
      now: at,
      validDays,
    });
    if (indicator) byId.set(indicator.id, indicator as unknown as Record<string, unknown>);
  }
  return [...byId.values()];
}
