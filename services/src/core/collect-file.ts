import type { ArtifactCommand, FileArtifact } from "@connector/shared/messages";
import { artifactCommandOf } from "./artifact-command.ts";
import { ApiError } from "@connector/shared/clients/http";
import { mdeErrorCodes, type MachineAction } from "@connector/shared/clients/mde";
import { InvalidInputError } from "@connector/shared/errors";
import { ConcurrentUpdateError, type JobRecord } from "@connector/shared/job-store";
import type { Logger } from "@connector/shared/logger";
import { newStagingBlobName } from "@connector/shared/staging";
import { assertLocalPath, CollectArgsError, encodeCollectArgs, type CollectOs } from "@connector/shared/live-response/args";
import { collectComment, leaseHolderOf } from "@connector/shared/live-response/ownership";
import { sandboxEnvironmentFor } from "@connector/shared/anyrun/options";
import type { MachineInfo } from "./ports.ts";
import { addSeconds, failJob, now, retryCommand } from "./job-outcomes.ts";
import { isRetryable } from "./backoff.ts";
import { findOwnAction, leaseSeconds, refusalError, releaseLeases, retryLater, type CollectDeps } from "./live-response-sessions.ts";

export type { CollectDeps } from "./live-response-sessions.ts";
export type CollectOutcome = "started" | "adopted" | "skipped" | "failed" | "retrying";

export function collectOsFor(machine: MachineInfo): CollectOs {
  const platform = (machine.osPlatform ?? "").toLowerCase();
  if (platform.includes("windows")) return "windows";
  if (/mac|darwin|osx/.test(platform)) return "macos";
  return "linux";
}

export function originalPath(artifact: FileArtifact, os: CollectOs): string {
  const dir = artifact.directory ?? "";
  const sep = os === "windows" ? "\\" : "/";
  return dir.endsWith(sep) || dir === "" ? `${dir}${artifact.fileName}` : `${dir}${sep}${artifact.fileName}`;
}

/**
 * File collection: reads the machine from MDE, takes the Live Response leases (one session per
 * device, tenant-wide session cap and start rate), records its intent, mints a SAS for one new blob
 * and starts a RunScript of the project's own script with a single encoded argument. The action is
 * then watched by scheduled messages (no waiting inside the function).
 *
 * Crash safety: the intent (status "collecting" without an action id) is written before
 * `runliveresponse`. A delivery that finds such an intent looks for OUR action on the device (its
 * comment ends with the job's marker) created after the intent and adopts it; only when none shows
 * up within a short grace does it start one. A busy device, a limit or throttling reschedules the
 * command with backoff.
 */
export async function handleCollectFile(body: unknown, deps: CollectDeps): Promise<CollectOutcome> {
  const command = artifactCommandOf(body, "file", deps.logger);
  if (!command) return "skipped";
  const { incident, artifact } = command;
  const log = deps.logger.child({ incidentId: incident.incidentId, artifactId: artifact.artifactId, deviceId: artifact.deviceId });
  const job = await deps.jobs.get(incident.incidentId, artifact.artifactId);
  if (!job) throw new InvalidInputError(`No job recorded for ${incident.incidentId}/${artifact.artifactId}`, "UnknownJob");
  if (job.status === "collecting") return resume(deps, job, command, artifact, log);
  if (job.status !== "queued") {
    // A crash right after MDE accepted the action can leave it without a watch, and so the device
    // lease and session slot held, while the script still uploaded and the job moved on. Without a
    // recorded action the leases go back now; with one, its watch gives them back when it ends.
    if (job.machineActionId) await ensureWatch(deps, job, job.machineActionId);
    else await releaseLeases(deps, job);
    log.info("file already handled; nothing to do", { status: job.status });
    return "skipped";
  }
  return start(deps, job, command, artifact, log, { resumed: false });
}

/** A delivery for a job that already recorded its intent (a crash, a redelivery, an unknown outcome). */
async function resume(deps: CollectDeps, job: JobRecord, command: ArtifactCommand, artifact: FileArtifact, log: Logger): Promise<CollectOutcome> {
  if (job.machineActionId) {
    await ensureWatch(deps, job, job.machineActionId);
    log.info("collection already started; its watch is scheduled", { machineActionId: job.machineActionId });
    return "skipped";
  }

  const intentAt = new Date(job.updatedAt);
  let own: MachineAction | undefined;
  try {
    own = await findOwnAction(deps, job, artifact.deviceId, intentAt);
  } catch (err) {
    if (isRetryable(err)) return retryLater(deps, job, command, err, { keepStatus: true, releaseOnGiveUp: true });
    throw err;
  }
  if (own) return adopt(deps, job, artifact, own, log);

  const ageSeconds = (now(deps).getTime() - intentAt.getTime()) / 1000;
  const grace = deps.liveResponse.intentGraceSeconds;
  if (ageSeconds < grace) {
    // Another delivery may still be inside runliveresponse, or the new action is not listed yet.
    const wait = Math.max(1, Math.ceil(grace - ageSeconds));
    log.info("an earlier start may still be in flight; looking again later", { intentAgeSeconds: Math.round(ageSeconds), waitSeconds: wait });
    const pending = new ApiError("mde", "listMachineActions", 404, "our action is not listed (yet)", mdeErrorCodes.resourceNotFound, wait);
    return retryLater(deps, job, command, pending, { keepStatus: true, releaseOnGiveUp: true });
  }
  log.warn("no action of ours followed the intent; starting the collection again", { intentAt: job.updatedAt });
  return start(deps, job, command, artifact, log, { resumed: true });
}

/** Takes over an action an earlier delivery started: records it and schedules its watch. Never starts one. */
async function adopt(deps: CollectDeps, job: JobRecord, artifact: FileArtifact, action: MachineAction, log: Logger): Promise<CollectOutcome> {
  const created = action.creationDateTimeUtc ? new Date(action.creationDateTimeUtc) : new Date(job.updatedAt);
  const deadline = addSeconds(created, deps.settings.liveResponseDeadlineMinutes * 60);
  const lease = await deps.liveResponse.limits.acquire({
    deviceId: artifact.deviceId,
    holder: leaseHolderOf(job),
    ttlSeconds: leaseSeconds(deps, deadline, now(deps)),
    countStart: false,
  });
  if (!lease.granted) log.warn("our lease lapsed while our action kept running; adopting it anyway", { limit: lease.limit });
  try {
    await deps.jobs.update(job.incidentId, job.artifactId, { machineActionId: action.id }, job.etag);
  } catch (err) {
    if (err instanceof ConcurrentUpdateError) {
      log.info("another delivery settled this collection first", {});
      return "skipped";
    }
    throw err;
  }
  await scheduleFirstWatch(deps, job, action.id, deadline);
  log.info("adopted the Live Response action an earlier delivery started", { machineActionId: action.id, status: action.status });
  return "adopted";
}

async function start(
  deps: CollectDeps,
  job: JobRecord,
  command: ArtifactCommand,
  artifact: FileArtifact,
  log: Logger,
  { resumed }: { resumed: boolean },
): Promise<CollectOutcome> {
  let machine: MachineInfo;
  try {
    machine = await deps.endpoints.getMachine(artifact.deviceId);
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) {
      await failJob(deps, job, `The device ${artifact.deviceId} is not known to Defender for Endpoint.`);
      if (resumed) await releaseLeases(deps, job);
      return "failed";
    }
    if (isRetryable(err)) return retryLater(deps, job, command, err, { keepStatus: true, releaseOnGiveUp: resumed });
    throw err;
  }
  if (machine.healthStatus && machine.healthStatus !== "Active") {
    await failJob(deps, job, `The device ${machine.computerDnsName ?? artifact.deviceId} is ${machine.healthStatus}: Live Response cannot reach it.`);
    if (resumed) await releaseLeases(deps, job);
    return "failed";
  }

  // A path the script must refuse is refused here, before it costs a session or a start call.
  const os = collectOsFor(machine);
  try {
    assertLocalPath(originalPath(artifact, os), os);
  } catch (err) {
    if (!(err instanceof CollectArgsError)) throw err;
    if (resumed) await releaseLeases(deps, job);
    await failJob(deps, job, `The file cannot be collected: ${err.message}.`);
    return "failed";
  }

  // One session per device, the tenant-wide session cap and the start-call rate, before any call.
  const lease = await deps.liveResponse.limits.acquire({
    deviceId: artifact.deviceId,
    holder: leaseHolderOf(job),
    ttlSeconds: leaseSeconds(deps),
    countStart: true,
  });
  if (!lease.granted) {
    log.info("Live Response limit reached; will try again later", { limit: lease.limit, waitSeconds: lease.waitSeconds });
    return retryLater(deps, job, command, refusalError(lease), { keepStatus: true, releaseOnGiveUp: resumed });
  }

  const sandboxEnvironment = sandboxEnvironmentFor({
    osPlatform: machine.osPlatform ?? undefined,
    osArchitecture: machine.osArchitecture ?? undefined,
    osProcessor: machine.osProcessor ?? undefined,
    version: machine.version ?? undefined,
  });
  const { incident } = command;
  const blobName = newStagingBlobName(incident.incidentId, artifact.artifactId);
  let args: string;
  try {
    const upload = await deps.staging.createUploadUrl(blobName, deps.settings.sasExpiryMinutes);
    args = encodeCollectArgs({ uploadUrl: upload.url, originalPath: originalPath(artifact, os), fileName: artifact.fileName, ...artifact.hashes, os });
    // The intent, recorded before the call: a crash from here on is reconciled, never restarted blindly.
    await deps.jobs.update(
      job.incidentId,
      job.artifactId,
      {
        status: "collecting",
        blobName,
        sandboxEnvironment: {
          env_os: sandboxEnvironment.env_os,
          env_version: sandboxEnvironment.env_version,
          env_bitness: String(sandboxEnvironment.env_bitness),
        },
      },
      job.etag,
    );
  } catch (err) {
    if (err instanceof ConcurrentUpdateError) {
      // Another delivery of this job got there first; it holds the same leases (same holder id).
      log.info("another delivery is starting this collection", {});
      return "skipped";
    }
    if (err instanceof CollectArgsError) {
      // A name or path the endpoint script cannot be given safely (e.g. a separator inside the
      // file name): this will never work, so say so on the incident instead of retrying.
      await releaseLeases(deps, job);
      await failJob(deps, job, `The file cannot be collected: ${err.message}.`);
      return "failed";
    }
    if (!resumed) await releaseLeases(deps, job);
    throw err;
  }

  let action: MachineAction;
  try {
    action = await deps.endpoints.runScript(artifact.deviceId, {
      scriptName: os === "windows" ? deps.settings.scriptWindows : deps.settings.scriptUnix,
      args,
      comment: collectComment({ incidentId: job.incidentId, artifactId: job.artifactId, fileName: artifact.fileName, incidentLabel: String(incident.incidentNumber ?? incident.incidentId) }),
    });
  } catch (err) {
    const noActionCreated = err instanceof ApiError && (err.code === mdeErrorCodes.activeRequestAlreadyExists || err.status === 429);
    if (noActionCreated) {
      // Busy device (someone else's action or session) or throttling: nothing was created.
      if (resumed) {
        // An earlier call's action may still show up: keep the intent, look for it first next time.
        return retryLater(deps, job, command, err, { keepStatus: true, releaseOnGiveUp: true });
      }
      await releaseLeases(deps, job);
      return retryCommand(deps, job, command, err);
    }
    if (isRetryable(err)) {
      // 5xx or no answer: an action may exist. Keep intent and leases; the next delivery looks for it.
      log.warn("the start call's outcome is unknown; will look for the action before starting again", { status: err.status });
      return retryLater(deps, job, command, err, { keepStatus: true, releaseOnGiveUp: true });
    }
    await releaseLeases(deps, job);
    if (err instanceof ApiError) {
      await failJob(deps, job, `Live Response refused the collection (${err.status}${err.code ? ` ${err.code}` : ""}).`);
      return "failed";
    }
    throw err;
  }
  await deps.jobs.update(job.incidentId, job.artifactId, { machineActionId: action.id });
  const started = now(deps);
  await scheduleFirstWatch(deps, job, action.id, addSeconds(started, deps.settings.liveResponseDeadlineMinutes * 60));
  log.info("Live Response collection started", { machineActionId: action.id, os, sandbox: sandboxEnvironment, resumed });
  return "started";
}

/**
 * Schedules the first poll of a recorded action again: a crash between recording the action and
 * scheduling its poll leaves nobody watching it. The poll's message id is deterministic, so if it
 * went out (within the duplicate-detection window) this one is dropped.
 */
async function ensureWatch(deps: CollectDeps, job: JobRecord, machineActionId: string): Promise<void> {
  await scheduleFirstWatch(deps, job, machineActionId, addSeconds(new Date(job.updatedAt), deps.settings.liveResponseDeadlineMinutes * 60));
}

async function scheduleFirstWatch(deps: CollectDeps, job: JobRecord, machineActionId: string, deadline: Date): Promise<void> {
  await deps.bus.scheduleLiveResponseWatch(
    { incident: job.incident, artifactId: job.artifactId, machineActionId, attempt: 0, deadline: deadline.toISOString() },
    addSeconds(now(deps), deps.settings.liveResponsePollSeconds),
  );
}
