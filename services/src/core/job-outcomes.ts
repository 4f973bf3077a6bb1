import type { JobRecord } from "@connector/shared/job-store";
import type { ArtifactCommand, IncidentRef } from "@connector/shared/messages";
import { ApiError } from "@connector/shared/clients/http";
import { maxCommentsPerIncident } from "@connector/shared/clients/sentinel";
import type { CoreDeps } from "./ports.ts";
import { backoffSeconds, describeApiError } from "./backoff.ts";
import { failureComment } from "./comments.ts";
import { commentIds } from "./intake.ts";

/**
 * Posts (or updates) one of our comments. An incident holds at most 100 comments, an analyst's
 * included; a new one past that is refused with 400, which no retry will change: then the rest of
 * the work goes on without it (labels and indicators are not lost with the comment). Any other
 * failure, another 400 included (a wrong API version, a bad body), is thrown: retried, and in
 * the end dead-lettered where an operator sees it. Returns whether the comment was written.
 */
export async function postComment(
  deps: { incidents: Pick<CoreDeps["incidents"], "putComment" | "listCommentIds">; logger: CoreDeps["logger"] },
  ref: IncidentRef,
  commentId: string,
  html: string,
): Promise<boolean> {
  try {
    await deps.incidents.putComment(ref, commentId, html);
    return true;
  } catch (err) {
    if (!(err instanceof ApiError) || err.status !== 400) throw err;
    const ids = await deps.incidents.listCommentIds(ref);
    if (ids.length < maxCommentsPerIncident || ids.includes(commentId)) throw err;
    deps.logger.warn("the incident holds the most comments Sentinel allows; going on without this one", { incidentId: ref.incidentId, commentId, comments: ids.length });
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
