import type { EventGridEvent } from "@azure/functions";
import { ApiError } from "@connector/shared/clients/http";
import { RetryLaterError } from "@connector/shared/errors";
import { parseBlobSubject, parseStagingBlobName, verifyHashes } from "@connector/shared/staging";
import { eventTypes } from "@connector/shared/topology";
import type { JobRecord } from "@connector/shared/job-store";
import type { CoreDeps } from "./ports.ts";
import { failJob, now } from "./job-outcomes.ts";
import { decideSubmission, ensureFirstPoll, outcomeUnknown, recordQueued, recordSubmitted } from "./submission.ts";

export type SubmitFileOutcome = "submitted" | "adopted" | "ignored" | "skipped" | "failed";

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
  if (!["collecting", "uploaded", "submitting", "submission_uncertain"].includes(job.status)) {
    if (job.status === "submitted") {
      // The delivery that submitted may have died before the first poll was scheduled or the blob deleted.
      await ensureFirstPoll(deps, job);
      await deps.staging.delete(blob.blobName);
    }
    jlog.info("sample already handled; duplicate event ignored", { status: job.status });
    return "skipped";
  }

  if (job.status === "submitting" || job.status === "submission_uncertain") {
    const decision = await decideSubmission(deps, job, { sha256: job.sampleSha256 });
    if (decision.action === "wait") throw new RetryLaterError("a submission of this sample may still be in flight");
    if (decision.action === "giveUp") {
      await failJob(deps, job, decision.reason);
      await deps.staging.delete(blob.blobName);
      return "failed";
    }
    if (decision.action === "adopt") {
      await recordSubmitted(deps, job, { kind: "adopted", taskId: decision.taskId });
      await deps.staging.delete(blob.blobName);
      jlog.info("adopted the task an earlier attempt created", { taskId: decision.taskId });
      return "adopted";
    }
  }
  return submit(deps, job, blob.blobName, jlog);
}

async function submit(deps: CoreDeps, job: JobRecord, blobName: string, log: CoreDeps["logger"]): Promise<SubmitFileOutcome> {
  if (job.artifact.kind !== "file") return "ignored";
  const digest = await deps.staging.digest(blobName);
  if (!digest) {
    await failJob(deps, job, "The uploaded sample vanished from the staging container before submission (is malware scanning deleting it?).");
    return "failed";
  }
  if (digest.size === 0) {
    await deps.staging.delete(blobName);
    await failJob(deps, job, "The endpoint uploaded an empty file.");
    return "failed";
  }
  const check = verifyHashes(job.artifact.hashes, digest);
  if (!check.ok) {
    await deps.staging.delete(blobName);
    await failJob(deps, job, `The collected file's ${check.algorithm} ${check.actual} does not match the incident's ${check.expected}; not submitted.`);
    return "failed";
  }
  // Without a hash from the incident, the only proof that the blob is what the script collected is
  // the SHA-256 the script itself reported: wait for it rather than trust whoever held the SAS.
  const hasIncidentHash = Boolean(job.artifact.hashes.sha256 || job.artifact.hashes.sha1 || job.artifact.hashes.md5);
  if (!job.reportedSha256 && !hasIncidentHash) {
    if (job.status === "collecting") throw new RetryLaterError("waiting for the endpoint script's own hash of the upload");
    await deps.staging.delete(blobName);
    await failJob(deps, job, "The endpoint script reported no hash for the upload and the incident carries none; not submitted.");
    return "failed";
  }
  if (job.reportedSha256 && job.reportedSha256.toLowerCase() !== digest.sha256) {
    await deps.staging.delete(blobName);
    await failJob(deps, job, `The uploaded file (SHA-256 ${digest.sha256}) is not the one the endpoint script collected (${job.reportedSha256}); not submitted.`);
    return "failed";
  }

  // Recorded before the paid call: a crash from here on leaves "submitting", never a blind resubmit.
  await deps.jobs.update(job.incidentId, job.artifactId, { status: "submitting", sampleSha256: digest.sha256, submittingAt: now(deps).toISOString() }, job.etag);
  let result;
  try {
    result = await deps.sandbox.submitFile(
      // Read only the version that was hashed: a blob changed since then fails the read (412).
      { fileName: job.artifact.fileName, content: await deps.staging.openRead(blobName, digest.etag), size: digest.size },
      { ...deps.settings.fileOptions, ...sandboxEnvironmentOptions(job.sandboxEnvironment) },
    );
  } catch (err) {
    if (outcomeUnknown(err)) {
      await deps.jobs.update(job.incidentId, job.artifactId, { status: "submission_uncertain" });
      throw err; // Event Grid redelivers; the next delivery reconciles with the history first.
    }
    if (err instanceof ApiError && err.status === 429) {
      await deps.jobs.update(job.incidentId, job.artifactId, { status: "uploaded" });
      throw err; // no task was created; Event Grid's retry schedule is the backoff
    }
    if (err instanceof ApiError) {
      await deps.staging.delete(blobName);
      await failJob(deps, job, `The sandbox refused the file (${err.status}${err.code ? ` ${err.code}` : ""}: ${err.message.slice(0, 200)}).`);
      return "failed";
    }
    throw err;
  }
  if (result.kind === "queued") {
    await recordQueued(deps, job, result.queueTaskId);
    await deps.staging.delete(blobName);
    throw new RetryLaterError("the sandbox queued the sample; its task is adopted from the history on a later delivery");
  }
  const taskId = await recordSubmitted(deps, job, result);
  await deps.staging.delete(blobName);
  log.info("file submitted to the sandbox", { taskId, size: digest.size, sha256: digest.sha256, environment: job.sandboxEnvironment });
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
