import { TableClient } from "@azure/data-tables";
import { getConfig, type Config } from "@connector/shared/config";
import { createCredential } from "@connector/shared/credentials";
import { Bus } from "@connector/shared/bus";
import { AnalysisEvents } from "@connector/shared/analysis-events";
import { StagingStore, blobServiceFromConfig } from "@connector/shared/staging";
import { EventGridDeadLetterWriter } from "@connector/shared/eventgrid-dead-letters";
import { JobStore } from "@connector/shared/job-store";
import { createLogger, registerSecret } from "@connector/shared/logger";
import { createMdeClient } from "@connector/shared/clients/mde";
import { createSentinelClient } from "@connector/shared/clients/sentinel";
import { createSentinelTiClient } from "@connector/shared/clients/sentinel-ti";
import { sandboxOptionsFromConfig } from "@connector/shared/anyrun/options";
import { LiveResponseLimits } from "@connector/shared/live-response/limits";
import type { TokenCredential } from "@azure/identity";
import type { CoreDeps, Settings } from "./core/ports.ts";
import type { LiveResponseDeps } from "./core/live-response-sessions.ts";
import { createSandboxPort } from "./adapters/sandbox.ts";
import { createIncidentPort } from "./adapters/incidents.ts";

export type Deps = CoreDeps & LiveResponseDeps & { stagingContainer: string; eventGridDeadLetters: EventGridDeadLetterWriter };

function tableClient(config: Config, credential: TokenCredential, table = config.JOBS_TABLE): TableClient {
  if (config.STORAGE_CONNECTION) {
    const insecure = /TableEndpoint=http:\/\//i.test(config.STORAGE_CONNECTION) || /DefaultEndpointsProtocol=http;/i.test(config.STORAGE_CONNECTION);
    return TableClient.fromConnectionString(config.STORAGE_CONNECTION, table, { allowInsecureConnection: insecure });
  }
  return new TableClient(config.STORAGE_TABLE_URL!, table, credential);
}

export function settingsFrom(config: Config): Settings {
  const { env_os: _os, env_version: _v, env_bitness: _b, ...fileOptions } = sandboxOptionsFromConfig(config, { kind: "file" });
  return {
    analysisPollSeconds: config.ANALYSIS_POLL_SECONDS,
    analysisDeadlineMinutes: config.ANALYSIS_DEADLINE_MINUTES,
    liveResponsePollSeconds: config.LIVE_RESPONSE_POLL_SECONDS,
    liveResponseDeadlineMinutes: config.LIVE_RESPONSE_DEADLINE_MINUTES,
    sasExpiryMinutes: config.SAS_EXPIRY_MINUTES,
    scriptWindows: config.LIVE_RESPONSE_SCRIPT_WINDOWS,
    scriptUnix: config.LIVE_RESPONSE_SCRIPT_UNIX,
    urlOptions: sandboxOptionsFromConfig(config, { kind: "url" }),
    fileOptions,
    tiValidDays: config.TI_VALID_DAYS,
    retry: { baseSeconds: config.RETRY_BASE_SECONDS, maxSeconds: config.RETRY_MAX_SECONDS, maxAttempts: config.RETRY_MAX_ATTEMPTS },
    submissionGraceSeconds: config.SUBMISSION_GRACE_SECONDS,
    intake: { maxArtifactsPerIncident: config.MAX_ARTIFACTS_PER_INCIDENT, collectFilesWithoutHash: config.COLLECT_FILES_WITHOUT_HASH },
  };
}

/** Builds every dependency of the handlers from the configuration. */
export async function buildDeps(config: Config, credential: TokenCredential = createCredential(config)): Promise<Deps> {
  registerSecret(config.ANYRUN_API_KEY);
  registerSecret(config.EVENTGRID_KEY);
  const logger = createLogger({ level: config.LOG_LEVEL });
  const jobs = new JobStore(tableClient(config, credential));
  await jobs.ensureTable();
  const liveResponseLimits = new LiveResponseLimits(tableClient(config, credential, config.LIVE_RESPONSE_TABLE), {
    maxSessions: config.LIVE_RESPONSE_MAX_SESSIONS,
    startsPerWindow: config.LIVE_RESPONSE_STARTS_PER_MINUTE,
    windowSeconds: 60,
  });
  await liveResponseLimits.ensureTable();
  const staging = StagingStore.fromConfig(config, credential);
  const sentinel = createSentinelClient({ baseUrl: config.ARM_BASE_URL, apiVersion: config.SENTINEL_API_VERSION, credential, scope: config.ARM_SCOPE, logger });
  const ti = createSentinelTiClient({ baseUrl: config.SENTINEL_TI_BASE_URL, apiVersion: config.SENTINEL_TI_API_VERSION, credential, scope: config.ARM_SCOPE, logger });
  return {
    jobs,
    bus: Bus.fromConfig(config, credential),
    events: AnalysisEvents.fromConfig(config, credential),
    staging,
    stagingContainer: config.STAGING_CONTAINER,
    eventGridDeadLetters: new EventGridDeadLetterWriter(blobServiceFromConfig(config, credential)),
    sandbox: createSandboxPort({ baseUrl: config.ANYRUN_BASE_URL, apiKey: config.ANYRUN_API_KEY, logger }),
    endpoints: createMdeClient({ baseUrl: config.MDE_BASE_URL, credential, scope: config.MDE_SCOPE, logger }),
    liveResponse: { limits: liveResponseLimits, intentGraceSeconds: config.LIVE_RESPONSE_INTENT_GRACE_SECONDS },
    incidents: createIncidentPort(sentinel),
    threatIntel: {
      uploadStixObjects: (workspaceId, objects) => ti.uploadStixObjects(workspaceId, config.TI_SOURCE_SYSTEM, objects as never),
    },
    settings: settingsFrom(config),
    logger,
  };
}

let deps: Promise<Deps> | undefined;

/** The process's dependencies, built once on first use (a failure is retried on the next call). */
export function getDeps(): Promise<Deps> {
  deps ??= buildDeps(getConfig()).catch((err: unknown) => {
    deps = undefined;
    throw err;
  });
  return deps;
}
