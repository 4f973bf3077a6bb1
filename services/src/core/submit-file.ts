import type { EventGridEvent } from "@azure/functions";
import { ApiError } from "@connector/shared/clients/http";
import { parseBlobSubject, parseStagingBlobName, verifyHashes } from "@connector/shared/staging";
import { eventTypes } from "@connector/shared/topology";
import type { CoreDeps } from "./ports.ts";
import { addSeconds, failJob, now } from "./job-outcomes.ts";

export type SubmitFileOutcome = "submitted" | "ignored" | "skipped" | "failed";

/**
 * File submission, on BlobCreated for the staging container: match the blob to its collection
 * job, check it (exists, has a size, hash matches the incident's), stream it to the sandbox with
 * the endpoint's environment, delete it, and schedule the watch of the task.
 */
export async function handleBlobCreated(event: Pick<EventGridEvent, "eventType" | "subject" | "id">, deps: CoreDeps & { stagingContainer: string }): Promise<SubmitFileOutcome> {
  const log = deps.logger.child({ eventId: event.id });
  if (event.eventType !== eventTypes.blobCreated) {
    log.warn("event of an unexpected type ignored", { eventType: event.eventType });
    return "ignored";
  }
  const blob = parseBlobSubject(event.subject);
  const name = blob && blob.container === deps.stagingContainer ? parseStagingBlobName(blob.blobName) : undefined;
  if (!blob || !name) {
    log.warn("blob outside the connector's naming scheme ignored", { subject: event.subject });
    return "ignored";
  }
  const job = await deps.jobs.get(name.incidentId, name.artifactId);
  if (!job || job.blobName !== blob.blobName || job.artifact.kind !== "file") {
    log.warn("blob matches no collection job; ignored", { blobName: blob.blobName });
    return "ignored";
  }
  const jlog = log.child({ incidentId: job.incidentId, artifactId: job.artifactId });
  if (job.status !== "collecting" && job.status !== "uploaded") {
    jlog.info("sample already handled; duplicate event ignored", { status: job.status });
    return "skipped";
  }

  const digest = await deps.staging.digest(blob.blobName);
  if (!digest) {
    await failJob(deps, job, "The uploaded sample vanished from the staging container before submission (is malware scanning deleting it?).");
    return "failed";
  }
  if (digest.size === 0) {
    await deps.staging.delete(blob.blobName);
    await failJob(deps, job, "The endpoint uploaded an empty file.");
    return "failed";
  }
  const check = verifyHashes(job.artifact.hashes, digest);
  if (!check.ok) {
    await deps.staging.delete(blob.blobName);
    await failJob(deps, job, `The collected file's ${check.algorithm} ${check.actual} does not match the incident's ${check.expected}; not submitted.`);
    return "failed";
  }

  await deps.jobs.update(job.incidentId, job.artifactId, { status: "submitting" }, job.etag);
  let result;
  try {
    result = await deps.sandbox.submitFile(
      { fileName: job.artifact.fileName, content: await deps.staging.openRead(blob.blobName), size: digest.size },
      { ...deps.settings.fileOptions, ...sandboxEnvironmentOptions(job.sandboxEnvironment) },
    );
  } catch (err) {
    if (err instanceof ApiError && !err.transient) {
      await deps.staging.delete(blob.blobName);
      await failJob(deps, job, `The sandbox refused the file (${err.status}${err.code ? ` ${err.code}` : ""}).`);
      return "failed";
    }
    await deps.jobs.update(job.incidentId, job.artifactId, { status: "uploaded" });
    throw err;
  }
  const taskId = result.kind === "task" ? result.taskId : result.queueTaskId;
  const taskUrl = deps.sandbox.taskUrl(taskId);
  await deps.jobs.update(job.incidentId, job.artifactId, { status: "submitted", taskId, taskUrl });
  await deps.staging.delete(blob.blobName);
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
  jlog.info("file submitted to the sandbox", { taskId, size: digest.size, sha256: digest.sha256, environment: job.sandboxEnvironment });
  return "submitted";
}

function sandboxEnvironmentOptions(env: Record<string, string> | undefined) {
  if (!env) return {};
  return {
    env_os: env["env_os"] as "windows" | "linux" | "macos" | "android",
    env_version: env["env_version"]!,
    env_bitness: Number(env["env_bitness"]) as 32 | 64,
  };
}
