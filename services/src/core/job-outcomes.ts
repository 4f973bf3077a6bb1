import type { JobRecord } from "@connector/shared/job-store";
import type { ArtifactCommand, IncidentRef } from "@connector/shared/messages";
import { ApiError } from "@connector/shared/clients/http";
import type { CoreDeps } from "./ports.ts";
import { backoffSeconds, describeApiError } from "./backoff.ts";
import { failureComment } from "./comments.ts";
import { commentIds } from "./intake.ts";

/**
 * Posts (or updates) one of our comments. Sentinel refusing it with a 400 (an incident holds at most
 * 100 comments, an analyst's included) will not change on a retry: that is logged and the rest of
 * the work goes on, so labels and indicators are not lost with the comment. Returns whether it
 * was posted; any other failure is thrown to be retried.
 */
export async function postComment(
  deps: { incidents: Pick<CoreDeps["incidents"], "putComment">; logger: CoreDeps["logger"] },
  ref: IncidentRef,
  commentId: string,
  html: string,
): Promise<boolean> {
  try {
    await deps.incidents.putComment(ref, commentId, html);
    return true;
  } catch (err) {
    if (!(err instanceof ApiError) || err.status !== 400) throw err;
    deps.logger.warn("Sentinel refused the comment; going on without it", { incidentId: ref.incidentId, commentId, error: err.message });
    return false;
  }
}

/** Ends a job as failed and says why on the incident (one comment per artifact, fixed id). */
export async function failJob(deps: Pick<CoreDeps, "jobs" | "incidents" | "logger">, job: JobRecord, reason: string): Promise<void> {
  await postComment(deps, job.incident, commentIds.failure(job.incidentId, job.artifactId), failureComment(job.artifact, reason, job.taskUrl));
  await deps.jobs.update(job.incidentId, job.artifactId, { status: "failed", failure: reason });
  deps.logger.warn("artifact analysis failed", { incidentId: job.incidentId, artifactId: job.artifactId, reason });
}

export function now(deps: Pick<CoreDeps, "now">): Date {
  return deps.now ? deps.now() : new Date();
}

export function addSeconds(date: Date, seconds: number): Date {
  return new Date(date.getTime() + seconds * 1000);
}

/**
 * Puts the job back to "queued" and schedules the same command again with backoff; once the
 * retry budget is spent, the job fails with a comment that says what kept failing.
 */
export async function retryCommand(
  deps: CoreDeps,
  job: JobRecord,
  command: ArtifactCommand,
  err: ApiError,
  options: { keepStatus?: boolean } = {},
): Promise<"retrying" | "failed"> {
  const next = command.attempt + 1;
  if (next >= deps.settings.retry.maxAttempts) {
    await failJob(deps, job, `Gave up after ${next} attempts: ${describeApiError(err)}.`);
    return "failed";
  }
  const delay = backoffSeconds(command.attempt, deps.settings.retry, err.retryAfterSeconds);
  if (!options.keepStatus) await deps.jobs.update(job.incidentId, job.artifactId, { status: "queued" });
  await deps.bus.scheduleArtifactCommand({ ...command, attempt: next }, addSeconds(now(deps), delay));
  deps.logger.info("will try again later", { incidentId: job.incidentId, artifactId: job.artifactId, attempt: next, delaySeconds: delay, cause: describeApiError(err) });
  return "retrying";
}
