import { liveResponseWatchSchema } from "@connector/shared/messages";
import { ApiError } from "@connector/shared/clients/http";
import { describeIssues, InvalidInputError } from "@connector/shared/errors";
import { isTerminalActionStatus } from "@connector/shared/clients/mde";
import { parseCollectResult } from "@connector/shared/live-response/result";
import { ConcurrentUpdateError } from "@connector/shared/job-store";
import type { CoreDeps } from "./ports.ts";
import { addSeconds, failJob, now } from "./job-outcomes.ts";
import { backoffSeconds, isRetryable } from "./backoff.ts";

/**
 * One poll of a Live Response action. Not finished: schedule the next poll (or cancel our own
 * action once our deadline passed). Finished: success is decided from the script's exit code and
 * its result line, never from free text; the sample itself arrives through BlobCreated.
 */
export async function handleLiveResponseWatch(body: unknown, deps: CoreDeps): Promise<"pending" | "uploaded" | "failed" | "skipped"> {
  const parsed = liveResponseWatchSchema.safeParse(body);
  if (!parsed.success) throw new InvalidInputError(`Not a Live Response watch message: ${describeIssues(parsed.error)}`);
  const watch = parsed.data;
  const log = deps.logger.child({ incidentId: watch.incident.incidentId, artifactId: watch.artifactId, machineActionId: watch.machineActionId });
  const job = await deps.jobs.get(watch.incident.incidentId, watch.artifactId);
  if (!job) throw new InvalidInputError(`No job recorded for ${watch.incident.incidentId}/${watch.artifactId}`, "UnknownJob");
  if (job.status !== "collecting" || job.machineActionId !== watch.machineActionId) {
    log.info("collection already settled; poll ignored", { status: job.status });
    return "skipped";
  }

  const current = now(deps);
  const reschedule = async (delaySeconds = deps.settings.liveResponsePollSeconds) => {
    await deps.bus.scheduleLiveResponseWatch({ ...watch, attempt: watch.attempt + 1 }, addSeconds(current, delaySeconds));
  };

  let action;
  try {
    action = await deps.endpoints.getMachineAction(watch.machineActionId);
  } catch (err) {
    if (isRetryable(err)) {
      await reschedule(Math.max(deps.settings.liveResponsePollSeconds, backoffSeconds(watch.attempt, deps.settings.retry, err.retryAfterSeconds)));
      return "pending";
    }
    // Right after creation the action can briefly answer 404.
    if (err instanceof ApiError && err.status === 404 && current < new Date(watch.deadline)) {
      await reschedule();
      return "pending";
    }
    throw err;
  }

  if (!isTerminalActionStatus(action.status)) {
    if (current >= new Date(watch.deadline)) {
      await deps.endpoints.cancelMachineAction(watch.machineActionId, "ANY.RUN connector: collection deadline passed");
      await failJob(deps, job, `Live Response did not finish before the deadline (status ${action.status}); the action was cancelled.`);
      return "failed";
    }
    await reschedule();
    return "pending";
  }

  if (action.status !== "Succeeded") {
    const errors = (action.commands ?? []).flatMap((c) => c.errors ?? []).slice(0, 3).join("; ");
    await failJob(deps, job, `Live Response ended ${action.status}${errors ? `: ${errors}` : ""}.`);
    return "failed";
  }

  const outcome = parseCollectResult(await deps.endpoints.downloadScriptResult(watch.machineActionId, 0));
  if (!outcome.ok) {
    await deps.staging.delete(job.blobName ?? "");
    const what = outcome.status ? `the script reported ${outcome.status}` : outcome.message;
    await failJob(deps, job, `The file could not be collected from the endpoint: ${what}${outcome.report?.detail ? ` (${outcome.report.detail})` : ""}.`);
    return "failed";
  }
  // BlobCreated may have been handled already; only move forward from "collecting".
  const fresh = await deps.jobs.get(job.incidentId, job.artifactId);
  if (fresh?.status === "collecting") {
    await deps.jobs.update(job.incidentId, job.artifactId, { status: "uploaded" }, fresh.etag).catch((err: unknown) => {
      if (!(err instanceof ConcurrentUpdateError)) throw err;
    });
  }
  log.info("endpoint script uploaded the sample", { size: outcome.report.size });
  return "uploaded";
}
