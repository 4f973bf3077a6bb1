import { liveResponseWatchSchema } from "@connector/shared/messages";
import { ApiError } from "@connector/shared/clients/http";
import { describeIssues, InvalidInputError } from "@connector/shared/errors";
import { isTerminalActionStatus, type MachineAction } from "@connector/shared/clients/mde";
import { parseCollectResult, type CollectOutcome } from "@connector/shared/live-response/result";
import { isOwnAction } from "@connector/shared/live-response/ownership";
import { ConcurrentUpdateError } from "@connector/shared/job-store";
import { addSeconds, failJob, now } from "./job-outcomes.ts";
import { backoffSeconds, isRetryable } from "./backoff.ts";
import { releaseLeases, type CollectDeps } from "./live-response-sessions.ts";

/**
 * One poll of a Live Response action. Not finished: schedule the next poll (or cancel our own
 * action once our deadline passed). Finished: success is decided from the script's exit code and
 * its result line, never from free text; the sample itself arrives through BlobCreated.
 *
 * The job's device and session leases are given back as soon as the action is final or cancelled
 * at our deadline — also when BlobCreated already moved the job on, which is why the action is
 * followed until it ends even then. Only the action recorded on the job is followed, and it is
 * only cancelled if its comment carries the job's marker: never an action we did not start.
 */
export async function handleLiveResponseWatch(body: unknown, deps: CollectDeps): Promise<"pending" | "uploaded" | "failed" | "skipped"> {
  const parsed = liveResponseWatchSchema.safeParse(body);
  if (!parsed.success) throw new InvalidInputError(`Not a Live Response watch message: ${describeIssues(parsed.error)}`);
  const watch = parsed.data;
  const log = deps.logger.child({ incidentId: watch.incident.incidentId, artifactId: watch.artifactId, machineActionId: watch.machineActionId });
  const job = await deps.jobs.get(watch.incident.incidentId, watch.artifactId);
  if (!job) throw new InvalidInputError(`No job recorded for ${watch.incident.incidentId}/${watch.artifactId}`, "UnknownJob");
  if (job.machineActionId !== watch.machineActionId) {
    log.info("not the job's action; poll ignored", { status: job.status });
    return "skipped";
  }
  // BlobCreated may have moved the job on while the action is still finishing: follow it to its end anyway (leases).
  const collecting = job.status === "collecting";

  const current = now(deps);
  const pastDeadline = current >= new Date(watch.deadline);
  const reschedule = async (delaySeconds = deps.settings.liveResponsePollSeconds) => {
    await deps.bus.scheduleLiveResponseWatch({ ...watch, attempt: watch.attempt + 1 }, addSeconds(current, delaySeconds));
  };

  let action: MachineAction;
  try {
    action = await deps.endpoints.getMachineAction(watch.machineActionId);
  } catch (err) {
    if (isRetryable(err)) {
      await reschedule(Math.max(deps.settings.liveResponsePollSeconds, backoffSeconds(watch.attempt, deps.settings.retry, err.retryAfterSeconds)));
      return "pending";
    }
    if (err instanceof ApiError && err.status === 404) {
      // Right after creation the action can briefly answer 404.
      if (!pastDeadline) {
        await reschedule();
        return "pending";
      }
      await releaseLeases(deps, job);
      if (!collecting) return "skipped";
      await failJob(deps, job, "The Live Response action could not be found before the deadline.");
      return "failed";
    }
    if (err instanceof ApiError) {
      // 401/403 and the like: polling again will not help; free the device and tell the incident.
      await releaseLeases(deps, job);
      if (!collecting) return "skipped";
      await failJob(deps, job, `Live Response status cannot be read (${err.status}${err.code ? ` ${err.code}` : ""}).`);
      return "failed";
    }
    throw err;
  }

  if (!isTerminalActionStatus(action.status)) {
    if (!pastDeadline) {
      await reschedule();
      return "pending";
    }
    if (!isOwnAction(action, job)) {
      // Defence in depth: the recorded id should always be ours; if it is not, leave it alone.
      log.warn("deadline passed on an action without our marker; not cancelled", { status: action.status });
      await releaseLeases(deps, job);
      if (!collecting) return "skipped";
      await failJob(deps, job, `Live Response did not finish before the deadline (status ${action.status}); the action was not started by the connector and was left alone.`);
      return "failed";
    }
    try {
      await deps.endpoints.cancelMachineAction(watch.machineActionId, "ANY.RUN connector: collection deadline passed");
    } catch (err) {
      // 400: the action became final in the meantime; read it again at once.
      if (err instanceof ApiError && err.status === 400) {
        await reschedule(0);
        return "pending";
      }
      throw err;
    }
    await releaseLeases(deps, job);
    if (!collecting) return "skipped";
    await failJob(deps, job, `Live Response did not finish before the deadline (status ${action.status}); the action was cancelled.`);
    return "failed";
  }

  await releaseLeases(deps, job);
  if (!collecting) {
    log.info("action ended after the job moved on; leases released", { status: job.status, actionStatus: action.status });
    return "skipped";
  }

  if (action.status !== "Succeeded") {
    // MDE documents that Succeeded only means the commands ran, so a non-zero exit normally arrives
    // as Succeeded (below). Should a service fail the command instead, its result file is still
    // there: say what the script reported, not only MDE's generic error.
    const reported = action.status === "Failed" ? await scriptReport(deps, watch.machineActionId) : undefined;
    const errors = (action.commands ?? []).flatMap((c) => c.errors ?? []).slice(0, 3).join("; ");
    await deps.staging.delete(job.blobName ?? "");
    await failJob(deps, job, reported ?? `Live Response ended ${action.status}${errors ? `: ${errors}` : ""}.`);
    return "failed";
  }

  let resultFile;
  try {
    resultFile = await deps.endpoints.downloadScriptResult(watch.machineActionId, 0);
  } catch (err) {
    if (isRetryable(err)) {
      await reschedule(Math.max(deps.settings.liveResponsePollSeconds, backoffSeconds(watch.attempt, deps.settings.retry, err.retryAfterSeconds)));
      return "pending";
    }
    if (!(err instanceof ApiError)) throw err;
    if (!collecting) return "skipped";
    await deps.staging.delete(job.blobName ?? "");
    await failJob(deps, job, `The endpoint script's result cannot be read (${err.status}${err.code ? ` ${err.code}` : ""}); the sample is not trusted.`);
    return "failed";
  }
  const outcome = parseCollectResult(resultFile);
  if (!outcome.ok) {
    await deps.staging.delete(job.blobName ?? "");
    await failJob(deps, job, collectFailureText(outcome));
    return "failed";
  }
  // BlobCreated may have been handled already; only move forward from "collecting".
  const fresh = await deps.jobs.get(job.incidentId, job.artifactId);
  if (fresh?.status === "collecting") {
    // The script's own SHA-256 of what it uploaded: file submission checks the blob against it.
    await deps.jobs.update(job.incidentId, job.artifactId, { status: "uploaded", reportedSha256: outcome.report.sha256 }, fresh.etag).catch((err: unknown) => {
      if (!(err instanceof ConcurrentUpdateError)) throw err;
    });
  }
  log.info("endpoint script uploaded the sample", { size: outcome.report.size });
  return "uploaded";
}

/** What the collection script itself reported in a failed action's result file, when it got that far. */
async function scriptReport(deps: CollectDeps, actionId: string): Promise<string | undefined> {
  try {
    const outcome = parseCollectResult(await deps.endpoints.downloadScriptResult(actionId, 0));
    if (outcome.ok || !outcome.status) return undefined;
    return collectFailureText(outcome);
  } catch {
    return undefined;
  }
}

/** The incident's failure text for a collection the script itself did not complete. */
function collectFailureText(outcome: Exclude<CollectOutcome, { ok: true }>): string {
  const what = outcome.status
    ? `the script reported ${outcome.status}${outcome.report?.detail ? ` (${outcome.report.detail})` : ""}, exit code ${outcome.exitCode ?? "unknown"}`
    : outcome.message;
  return `The file could not be collected from the endpoint: ${what}.`;
}
