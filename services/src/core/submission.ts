import type { JobRecord } from "@connector/shared/job-store";
import { ApiError } from "@connector/shared/clients/http";
import { HistoryInconclusiveError, type CoreDeps, type SubmitResult } from "./ports.ts";
import { addSeconds, now } from "./job-outcomes.ts";

/**
 * Paid-submission safety. A sandbox submission whose outcome is unknown (a crash mid-POST, a
 * timeout, a reset connection, a 5xx, a 2xx without a task id) is never blindly repeated: the job
 * is marked uncertain, the account's analysis history is searched for the task, and only when it
 * is not there is the sample submitted again.
 */

export type SubmissionDecision =
  | { action: "submit" }
  | { action: "adopt"; taskId: string }
  /** Another delivery may still be in the middle of this submission: come back later. */
  | { action: "wait" }
  /** Whether the submission happened cannot be told: report it rather than pay twice. */
  | { action: "giveUp"; reason: string };

export async function decideSubmission(deps: CoreDeps, job: JobRecord, match: { url?: string; sha256?: string }): Promise<SubmissionDecision> {
  if (job.status !== "submitting" && job.status !== "submission_uncertain") return { action: "submit" };
  const since = new Date(job.submittingAt ?? job.updatedAt);
  if (job.status === "submitting" && now(deps).getTime() - since.getTime() < deps.settings.submissionGraceSeconds * 1000) {
    return { action: "wait" };
  }
  let taskId: string | undefined;
  try {
    taskId = await deps.sandbox.findTask({ ...match, since });
  } catch (err) {
    if (!(err instanceof HistoryInconclusiveError)) throw err;
    return {
      action: "giveUp",
      reason: `The sandbox submission's outcome is unknown and ${err.message}, so it was not submitted again (to avoid a second paid analysis). Look the task up in ANY.RUN, or re-run the analysis by hand.`,
    };
  }
  deps.logger.info("reconciled an uncertain submission with the sandbox history", {
    incidentId: job.incidentId,
    artifactId: job.artifactId,
    found: taskId ?? null,
  });
  if (taskId) return { action: "adopt", taskId };
  // ANY.RUN said 202 (queued): the task exists; wait until it shows in the history, never pay twice.
  return job.queueTaskId ? { action: "wait" } : { action: "submit" };
}

/**
 * ANY.RUN answered 202 with only a queue id. How a queue id resolves is not documented, so the
 * job is treated like an uncertain submission that must not be repeated: it waits until the task
 * appears in the account's history and adopts it from there.
 */
export async function recordQueued(deps: CoreDeps, job: JobRecord, queueTaskId: string): Promise<void> {
  await deps.jobs.update(job.incidentId, job.artifactId, { status: "submission_uncertain", queueTaskId });
  deps.logger.info("the sandbox queued the submission; waiting for its task in the history", { incidentId: job.incidentId, artifactId: job.artifactId, queueTaskId });
}

/** 429 means no task was created; 5xx, no answer or a 2xx without an id leave the outcome unknown. */
export function outcomeUnknown(err: unknown): err is ApiError {
  return err instanceof ApiError && err.status !== 429 && (err.transient || err.code === "NoTaskId");
}

/** Records the task and schedules the first poll of it. */
export async function recordSubmitted(deps: CoreDeps, job: JobRecord, result: Exclude<SubmitResult, { kind: "queued" }> | { kind: "adopted"; taskId: string }): Promise<string> {
  const taskId = result.taskId;
  const taskUrl = deps.sandbox.taskUrl(taskId);
  await deps.jobs.update(job.incidentId, job.artifactId, { status: "submitted", taskId, taskUrl });
  await scheduleFirstPoll(deps, job, taskId);
  return taskId;
}

async function scheduleFirstPoll(deps: CoreDeps, job: JobRecord, taskId: string): Promise<void> {
  const start = now(deps);
  await deps.bus.scheduleAnalysisWatch(
    {
      incident: job.incident,
      artifactId: job.artifactId,
      taskId,
      attempt: 0,
      deadline: addSeconds(start, deps.settings.analysisDeadlineMinutes * 60).toISOString(),
    },
    addSeconds(start, deps.settings.analysisPollSeconds),
  );
}

/**
 * The command or event of a job that is already "submitted" came again: the delivery that recorded
 * the task may have died before it scheduled the first poll, which would leave the job waiting for
 * ever. Scheduling the first poll again is harmless: it has the same message id, so duplicate
 * detection drops it when the original was sent.
 */
export async function ensureFirstPoll(deps: CoreDeps, job: JobRecord): Promise<void> {
  if (job.status === "submitted" && job.taskId) await scheduleFirstPoll(deps, job, job.taskId);
}
