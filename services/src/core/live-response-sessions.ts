import { ApiError } from "@connector/shared/clients/http";
import { mdeErrorCodes, type MachineAction, type MdeClient } from "@connector/shared/clients/mde";
import type { JobRecord } from "@connector/shared/job-store";
import type { ArtifactCommand } from "@connector/shared/messages";
import type { LeaseRefusal, LiveResponseLimiter } from "@connector/shared/live-response/limits";
import { isOwnAction, leaseHolderOf } from "@connector/shared/live-response/ownership";
import type { CoreDeps, EndpointPort } from "./ports.ts";
import { retryCommand } from "./job-outcomes.ts";

/**
 * What Live Response collection needs on top of the common ports: listing a device's actions (to
 * find our own after a crash) and the tenant-wide leases (one session per device, session cap,
 * start-call rate).
 */
export interface LiveResponseDeps {
  endpoints: EndpointPort & Pick<MdeClient, "listMachineActions">;
  liveResponse: {
    limits: LiveResponseLimiter;
    /** How long after an intent another delivery may still be inside `runliveresponse`. */
    intentGraceSeconds: number;
  };
}

export type CollectDeps = CoreDeps & LiveResponseDeps;

/** Our clock against MDE's: an action a little "older" than our intent can still be ours. */
const clockSkewMs = 60_000;

/** Leases outlive the watch's deadline by this much, so the deadline poll still finds them held. */
export function leaseSeconds(deps: Pick<CoreDeps, "settings">, fromDeadline?: Date, now = new Date()): number {
  const margin = Math.max(300, 3 * deps.settings.liveResponsePollSeconds);
  const untilDeadline = fromDeadline ? Math.max(0, (fromDeadline.getTime() - now.getTime()) / 1000) : deps.settings.liveResponseDeadlineMinutes * 60;
  return Math.ceil(untilDeadline + margin);
}

export function deviceOf(job: JobRecord): string | undefined {
  return job.artifact.kind === "file" ? job.artifact.deviceId : undefined;
}

export async function releaseLeases(deps: CollectDeps, job: JobRecord, deviceId = deviceOf(job)): Promise<void> {
  if (!deviceId) return;
  await deps.liveResponse.limits.release({ deviceId, holder: leaseHolderOf(job) });
}

/**
 * A refused lease is not a failure: the command comes back later through the usual retry
 * (`retryCommand`), described as what MDE itself would have answered had we called it — 400
 * ActiveRequestAlreadyExists for a busy device, 429 TooManyRequests for the session cap and the
 * start-call rate (with the time until a start leaves the window as Retry-After).
 */
export function refusalError(refusal: LeaseRefusal): ApiError {
  if (refusal.limit === "device") {
    return new ApiError("mde", "runLiveResponse", 400, "another collection of the connector holds this device", mdeErrorCodes.activeRequestAlreadyExists);
  }
  const what = refusal.limit === "sessions" ? "the connector's concurrent Live Response sessions are at their cap" : "the connector's Live Response start calls are at their per-minute cap";
  return new ApiError("mde", "runLiveResponse", 429, what, mdeErrorCodes.tooManyRequests, refusal.limit === "starts" ? refusal.waitSeconds : undefined);
}

/** Retries the command later; when the retry budget is spent (job failed), gives the leases back. */
export async function retryLater(
  deps: CollectDeps,
  job: JobRecord,
  command: ArtifactCommand,
  err: ApiError,
  options: { keepStatus: boolean; releaseOnGiveUp: boolean },
): Promise<"retrying" | "failed"> {
  const outcome = await retryCommand(deps, job, command, err, { keepStatus: options.keepStatus });
  if (outcome === "failed" && options.releaseOnGiveUp) await releaseLeases(deps, job);
  return outcome;
}

/**
 * Our action for this job on the device, created after the intent (newest first). Only actions
 * whose comment ends with the job's marker qualify; anything else on the device is not ours.
 */
export async function findOwnAction(deps: CollectDeps, job: JobRecord, deviceId: string, intentAt: Date): Promise<MachineAction | undefined> {
  const since = intentAt.getTime() - clockSkewMs;
  const actions = await deps.endpoints.listMachineActions({ machineId: deviceId });
  return actions
    .filter((a) => (a.machineId ?? "").toLowerCase() === deviceId.toLowerCase())
    .filter((a) => isOwnAction(a, job))
    .filter((a) => {
      const created = a.creationDateTimeUtc ? Date.parse(a.creationDateTimeUtc) : Number.NaN;
      return Number.isFinite(created) && created >= since;
    })
    .sort((a, b) => Date.parse(b.creationDateTimeUtc!) - Date.parse(a.creationDateTimeUtc!))[0];
}
