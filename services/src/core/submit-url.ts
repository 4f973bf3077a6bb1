import { artifactCommandSchema, type UrlArtifact } from "@connector/shared/messages";
import { ApiError } from "@connector/shared/clients/http";
import type { CoreDeps } from "./ports.ts";
import { addSeconds, failJob, now, retryCommand } from "./job-outcomes.ts";
import { isRetryable } from "./backoff.ts";
import { describeIssues, InvalidInputError } from "@connector/shared/errors";

/** URL submission: one sandbox task per URL artifact, then a scheduled watch of the task. */
export async function handleSubmitUrl(body: unknown, deps: CoreDeps): Promise<"submitted" | "skipped" | "failed" | "retrying"> {
  const parsed = artifactCommandSchema.safeParse(body);
  if (!parsed.success || parsed.data.artifact.kind !== "url") {
    throw new InvalidInputError(`Not a URL artifact command: ${parsed.success ? "kind is not url" : describeIssues(parsed.error)}`);
  }
  const command = parsed.data;
  const { incident } = command;
  const artifact = command.artifact as UrlArtifact;
  const log = deps.logger.child({ incidentId: incident.incidentId, artifactId: artifact.artifactId });
  const job = await deps.jobs.get(incident.incidentId, artifact.artifactId);
  if (!job) throw new InvalidInputError(`No job recorded for ${incident.incidentId}/${artifact.artifactId}`, "UnknownJob");
  if (job.status !== "queued") {
    log.info("URL already handled; nothing to do", { status: job.status });
    return "skipped";
  }

  await deps.jobs.update(job.incidentId, job.artifactId, { status: "submitting" }, job.etag);
  let result;
  try {
    result = await deps.sandbox.submitUrl(artifact.url, deps.settings.urlOptions);
  } catch (err) {
    if (err instanceof ApiError && !err.transient) {
      await failJob(deps, job, `The sandbox refused the URL (${err.status}${err.code ? ` ${err.code}` : ""}).`);
      return "failed";
    }
    if (!isRetryable(err)) throw err;
    return retryCommand(deps, job, command, err);
  }
  const taskId = result.kind === "task" ? result.taskId : result.queueTaskId;
  const taskUrl = deps.sandbox.taskUrl(taskId);
  await deps.jobs.update(job.incidentId, job.artifactId, { status: "submitted", taskId, taskUrl });
  const start = now(deps);
  await deps.bus.scheduleAnalysisWatch(
    {
      incident,
      artifactId: artifact.artifactId,
      taskId,
      attempt: 0,
      deadline: addSeconds(start, deps.settings.analysisDeadlineMinutes * 60).toISOString(),
    },
    addSeconds(start, deps.settings.analysisPollSeconds),
  );
  log.info("URL submitted to the sandbox", { taskId, queued: result.kind === "queued" });
  return "submitted";
}
