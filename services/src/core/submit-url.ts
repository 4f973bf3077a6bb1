import { artifactCommandOf } from "./artifact-command.ts";
import { ApiError } from "@connector/shared/clients/http";
import { InvalidInputError } from "@connector/shared/errors";
import type { CoreDeps } from "./ports.ts";
import { failJob, now, retryCommand } from "./job-outcomes.ts";
import { isRetryable } from "./backoff.ts";
import { decideSubmission, ensureFirstPoll, outcomeUnknown, recordQueued, recordSubmitted } from "./submission.ts";

export type SubmitUrlOutcome = "submitted" | "adopted" | "skipped" | "failed" | "retrying";

/** URL submission: one sandbox task per URL artifact, then a scheduled watch of the task. */
export async function handleSubmitUrl(body: unknown, deps: CoreDeps): Promise<SubmitUrlOutcome> {
  const command = artifactCommandOf(body, "url", deps.logger);
  if (!command) return "skipped";
  const { incident, artifact } = command;
  const log = deps.logger.child({ incidentId: incident.incidentId, artifactId: artifact.artifactId });
  const job = await deps.jobs.get(incident.incidentId, artifact.artifactId);
  if (!job) throw new InvalidInputError(`No job recorded for ${incident.incidentId}/${artifact.artifactId}`, "UnknownJob");
  if (!["queued", "submitting", "submission_uncertain"].includes(job.status)) {
    await ensureFirstPoll(deps, job);
    log.info("URL already handled; nothing to do", { status: job.status });
    return "skipped";
  }

  const decision = await decideSubmission(deps, job, { url: artifact.url });
  if (decision.action === "wait") {
    return retryCommand(deps, job, command, new ApiError("anyrun", "submitUrl", 0, "submission in flight elsewhere"), { keepStatus: true });
  }
  if (decision.action === "giveUp") {
    await failJob(deps, job, decision.reason);
    return "failed";
  }
  if (decision.action === "adopt") {
    const taskId = await recordSubmitted(deps, job, { kind: "adopted", taskId: decision.taskId });
    log.info("adopted the task an earlier attempt created", { taskId });
    return "adopted";
  }

  // Recorded before the paid call: a crash from here on leaves "submitting", never a blind resubmit.
  await deps.jobs.update(job.incidentId, job.artifactId, { status: "submitting", submittingAt: now(deps).toISOString() }, job.etag);
  let result;
  try {
    result = await deps.sandbox.submitUrl(artifact.url, deps.settings.urlOptions);
  } catch (err) {
    if (outcomeUnknown(err)) {
      await deps.jobs.update(job.incidentId, job.artifactId, { status: "submission_uncertain" });
      return retryCommand(deps, { ...job, status: "submission_uncertain" }, command, err, { keepStatus: true });
    }
    if (isRetryable(err)) return retryCommand(deps, job, command, err);
    if (err instanceof ApiError) {
      await failJob(deps, job, `The sandbox refused the URL (${err.status}${err.code ? ` ${err.code}` : ""}: ${err.message.slice(0, 200)}).`);
      return "failed";
    }
    throw err;
  }
  if (result.kind === "queued") {
    await recordQueued(deps, job, result.queueTaskId);
    return retryCommand(deps, { ...job, status: "submission_uncertain" }, command, new ApiError("anyrun", "submitUrl", 202, "queued; waiting for the task id"), { keepStatus: true });
  }
  const taskId = await recordSubmitted(deps, job, result);
  log.info("URL submitted to the sandbox", { taskId });
  return "submitted";
}
