import { artifactCommandSchema, type FileArtifact } from "@connector/shared/messages";
import { ApiError } from "@connector/shared/clients/http";
import { describeIssues, InvalidInputError } from "@connector/shared/errors";
import { newStagingBlobName } from "@connector/shared/staging";
import { encodeCollectArgs, type CollectOs } from "@connector/shared/live-response/args";
import { sandboxEnvironmentFor } from "@connector/shared/anyrun/options";
import type { CoreDeps, MachineInfo } from "./ports.ts";
import { addSeconds, failJob, now, retryCommand } from "./job-outcomes.ts";
import { isRetryable } from "./backoff.ts";

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
 * File collection: reads the machine from MDE, mints a SAS for one new blob, and starts a Live
 * Response RunScript of the project's own script with a single encoded argument. The action is
 * then watched by scheduled messages (no waiting inside the function).
 */
export async function handleCollectFile(body: unknown, deps: CoreDeps): Promise<"started" | "skipped" | "failed" | "retrying"> {
  const parsed = artifactCommandSchema.safeParse(body);
  if (!parsed.success || parsed.data.artifact.kind !== "file") {
    throw new InvalidInputError(`Not a file artifact command: ${parsed.success ? "kind is not file" : describeIssues(parsed.error)}`);
  }
  const command = parsed.data;
  const { incident } = command;
  const artifact = command.artifact as FileArtifact;
  const log = deps.logger.child({ incidentId: incident.incidentId, artifactId: artifact.artifactId, deviceId: artifact.deviceId });
  const job = await deps.jobs.get(incident.incidentId, artifact.artifactId);
  if (!job) throw new InvalidInputError(`No job recorded for ${incident.incidentId}/${artifact.artifactId}`, "UnknownJob");
  if (job.status !== "queued") {
    log.info("file already handled; nothing to do", { status: job.status });
    return "skipped";
  }

  let machine: MachineInfo;
  try {
    machine = await deps.endpoints.getMachine(artifact.deviceId);
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) {
      await failJob(deps, job, `The device ${artifact.deviceId} is not known to Defender for Endpoint.`);
      return "failed";
    }
    if (isRetryable(err)) return retryCommand(deps, job, command, err);
    throw err;
  }
  if (machine.healthStatus && machine.healthStatus !== "Active") {
    await failJob(deps, job, `The device ${machine.computerDnsName ?? artifact.deviceId} is ${machine.healthStatus}: Live Response cannot reach it.`);
    return "failed";
  }

  const os = collectOsFor(machine);
  const sandboxEnvironment = sandboxEnvironmentFor({
    osPlatform: machine.osPlatform ?? undefined,
    osArchitecture: machine.osArchitecture ?? undefined,
    osProcessor: machine.osProcessor ?? undefined,
    version: machine.version ?? undefined,
  });
  const blobName = newStagingBlobName(incident.incidentId, artifact.artifactId);
  const upload = await deps.staging.createUploadUrl(blobName, deps.settings.sasExpiryMinutes);
  const args = encodeCollectArgs({
    uploadUrl: upload.url,
    originalPath: originalPath(artifact, os),
    fileName: artifact.fileName,
    ...artifact.hashes,
    os,
  });
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

  let action;
  try {
    action = await deps.endpoints.runScript(artifact.deviceId, {
      scriptName: os === "windows" ? deps.settings.scriptWindows : deps.settings.scriptUnix,
      args,
      comment: `ANY.RUN connector: collect ${artifact.fileName} for Sentinel incident ${incident.incidentNumber ?? incident.incidentId}`,
    });
  } catch (err) {
    // Busy device (one Live Response per device), throttling or a transient fault: try again later.
    if (isRetryable(err)) return retryCommand(deps, job, command, err);
    if (err instanceof ApiError) {
      await failJob(deps, job, `Live Response refused the collection (${err.status}${err.code ? ` ${err.code}` : ""}).`);
      return "failed";
    }
    throw err;
  }
  await deps.jobs.update(job.incidentId, job.artifactId, { machineActionId: action.id });
  const start = now(deps);
  await deps.bus.scheduleLiveResponseWatch(
    {
      incident,
      artifactId: artifact.artifactId,
      machineActionId: action.id,
      attempt: 0,
      deadline: addSeconds(start, deps.settings.liveResponseDeadlineMinutes * 60).toISOString(),
    },
    addSeconds(start, deps.settings.liveResponsePollSeconds),
  );
  log.info("Live Response collection started", { machineActionId: action.id, os, sandbox: sandboxEnvironment });
  return "started";
}
