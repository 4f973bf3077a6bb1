import { analysisWatchSchema } from "@connector/shared/messages";
import { ApiError } from "@connector/shared/clients/http";
import { describeIssues, InvalidInputError } from "@connector/shared/errors";
import type { CoreDeps } from "./ports.ts";
import { ConcurrentUpdateError } from "@connector/shared/job-store";
import { addSeconds, now } from "./job-outcomes.ts";
import { backoffSeconds, isRetryable } from "./backoff.ts";

/**
 * One poll of a sandbox task. A verdict is only ever taken from a finished report; until then the
 * next poll is scheduled, up to our deadline. The outcome goes out as an "analysis completed" event.
 */
export async function handleAnalysisWatch(body: unknown, deps: CoreDeps): Promise<"pending" | "done" | "failed" | "timeout" | "skipped"> {
  const parsed = analysisWatchSchema.safeParse(body);
  if (!parsed.success) throw new InvalidInputError(`Not an analysis watch message: ${describeIssues(parsed.error)}`);
  const watch = parsed.data;
  const log = deps.logger.child({ incidentId: watch.incident.incidentId, artifactId: watch.artifactId, taskId: watch.taskId });
  const job = await deps.jobs.get(watch.incident.incidentId, watch.artifactId);
  if (!job) throw new InvalidInputError(`No job recorded for ${watch.incident.incidentId}/${watch.artifactId}`, "UnknownJob");
  if (job.status !== "submitted" || job.taskId !== watch.taskId) {
    log.info("task already settled; poll ignored", { status: job.status });
    return "skipped";
  }
  const current = now(deps);
  const pastDeadline = current >= new Date(watch.deadline);
  const publish = async (outcome: "done" | "failed" | "timeout") => {
    await deps.events.publishCompleted({ incident: watch.incident, artifactId: watch.artifactId, taskId: watch.taskId, outcome });
    // Guarded: enrichment may already have ended the job (a terminal status is never overwritten).
    await deps.jobs.update(job.incidentId, job.artifactId, { status: "completed" }, job.etag).catch((err: unknown) => {
      if (!(err instanceof ConcurrentUpdateError)) throw err;
    });
    log.info("analysis finished", { outcome });
    return outcome;
  };

  let report;
  try {
    report = await deps.sandbox.getReport(watch.taskId);
  } catch (err) {
    // A task can be briefly unknown right after creation; throttling and faults are polled again later.
    if (isRetryable(err)) {
      const delay = Math.max(deps.settings.analysisPollSeconds, backoffSeconds(watch.attempt, deps.settings.retry, err.retryAfterSeconds));
      await deps.bus.scheduleAnalysisWatch({ ...watch, attempt: watch.attempt + 1 }, addSeconds(current, delay));
      return "pending";
    }
    if (!(err instanceof ApiError)) throw err;
    // A task can be unknown for a while right after creation: keep polling until the deadline.
    if (err.status === 404 && !pastDeadline) report = undefined;
    else if (err.status === 404) return publish("timeout");
    else {
      // 401/403/unreadable report: it will not get better by polling; the incident is told.
      log.warn("the task's report cannot be read; ending the analysis as failed", { status: err.status, code: err.code });
      return publish("failed");
    }
  }
  if (report?.final) return publish("done");
  if (report?.failed) return publish("failed");
  if (pastDeadline) return publish("timeout");
  await deps.bus.scheduleAnalysisWatch({ ...watch, attempt: watch.attempt + 1 }, addSeconds(current, deps.settings.analysisPollSeconds));
  return "pending";
}
