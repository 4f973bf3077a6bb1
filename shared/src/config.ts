import { z } from "zod";
import { storageDefaults } from "./topology.ts";

/**
 * The connector's configuration, read once from the environment (app settings in Azure) and
 * validated loudly: a missing or malformed setting stops the process with a message that names it.
 */

const bool = z
  .enum(["true", "false", "1", "0"])
  .transform((v) => v === "true" || v === "1");

const seconds = z.coerce.number().int().positive();

export const configSchema = z.object({
  /** Service Bus: a connection string (local broker, or SAS) or a namespace FQDN for managed identity. */
  SERVICEBUS_CONNECTION: z.string().min(1).optional(),
  SERVICEBUS_NAMESPACE: z.string().min(1).optional(),

  /** Blob + Table storage: a connection string (Azurite, or account key) or account URLs for managed identity. */
  STORAGE_CONNECTION: z.string().min(1).optional(),
  STORAGE_BLOB_URL: z.url().optional(),
  STORAGE_TABLE_URL: z.url().optional(),
  STAGING_CONTAINER: z.string().regex(/^[a-z0-9-]{3,63}$/).default(storageDefaults.stagingContainer),
  JOBS_TABLE: z.string().regex(/^[A-Za-z][A-Za-z0-9]{2,62}$/).default(storageDefaults.jobsTable),
  /** Lifetime of the create/write-only SAS handed to the endpoint script. */
  SAS_EXPIRY_MINUTES: z.coerce.number().int().min(5).max(120).default(30),

  /** Event Grid custom topic for "analysis completed" events. */
  EVENTGRID_ENDPOINT: z.url(),
  EVENTGRID_KEY: z.string().min(1).optional(),

  ANYRUN_BASE_URL: z.url().default("https://api.any.run"),
  ANYRUN_API_KEY: z
    .string()
    .min(8)
    // App Service passes a Key Vault reference it could not resolve on as its literal text.
    .refine((v) => !v.startsWith("@Microsoft.KeyVault("), {
      message: "is an unresolved Key Vault reference: give the app's identity Key Vault Secrets User on the secret, then restart the app",
    }),
  ANYRUN_OPT_TIMEOUT: z.coerce.number().int().min(10).max(660).default(120),
  ANYRUN_OPT_PRIVACY: z.enum(["public", "bylink", "owner", "byteam"]).default("bylink"),
  ANYRUN_OPT_NETWORK_CONNECT: bool.default(true),
  ANYRUN_OPT_NETWORK_FAKENET: bool.default(false),
  ANYRUN_OPT_NETWORK_TOR: bool.default(false),
  ANYRUN_OPT_NETWORK_MITM: bool.default(false),
  ANYRUN_OPT_NETWORK_GEO: z.string().default("fastest"),
  ANYRUN_OPT_AUTOMATED_INTERACTIVITY: bool.default(true),
  ANYRUN_URL_BROWSER_WINDOWS: z.string().default("Microsoft Edge"),
  /** Windows version for URL tasks (URLs carry no endpoint OS). */
  ANYRUN_URL_ENV_VERSION: z.enum(["7", "10", "11"]).default("10"),
  ANYRUN_USER_TAGS: z.string().default("sentinel"),
  /**
   * Artifacts (URLs and files) analysed per incident; the rest are listed as not analysed. Every
   * analysis is a paid sandbox task and a comment (Sentinel keeps at most 100 per incident).
   */
  MAX_ARTIFACTS_PER_INCIDENT: z.coerce.number().int().min(1).max(90).default(25),
  /**
   * Collect a File entity that comes without any hash. Off by default: nothing then proves the
   * collected file is the detected one, and whatever sits at that path would go to the sandbox.
   */
  COLLECT_FILES_WITHOUT_HASH: bool.default(false),
  /** Stop watching a task this long after submission. */
  ANALYSIS_DEADLINE_MINUTES: z.coerce.number().int().positive().default(30),
  ANALYSIS_POLL_SECONDS: seconds.default(30),

  MDE_BASE_URL: z.url().default("https://api.security.microsoft.com"),
  MDE_SCOPE: z.string().default("https://api.securitycenter.microsoft.com/.default"),
  LIVE_RESPONSE_SCRIPT_WINDOWS: z.string().regex(/^[A-Za-z0-9_.-]+$/).default("anyrun-collect.ps1"),
  LIVE_RESPONSE_SCRIPT_UNIX: z.string().regex(/^[A-Za-z0-9_.-]+$/).default("anyrun-collect.sh"),
  LIVE_RESPONSE_POLL_SECONDS: seconds.default(20),
  LIVE_RESPONSE_DEADLINE_MINUTES: z.coerce.number().int().positive().default(30),
  /** Tenant-wide cap on our concurrent Live Response sessions (MDE's own limit is 25 per tenant). */
  LIVE_RESPONSE_MAX_SESSIONS: z.coerce.number().int().min(1).max(50).default(25),
  /** Tenant-wide cap on `runliveresponse` calls per rolling minute (MDE's own limit is 10). */
  LIVE_RESPONSE_STARTS_PER_MINUTE: z.coerce.number().int().min(1).max(100).default(10),
  /** After a crash between recording the intent and the action id: how long to look for our action before starting one. */
  LIVE_RESPONSE_INTENT_GRACE_SECONDS: seconds.default(120),
  /** Table of the Live Response leases (per device, per session) and the start-call window. */
  LIVE_RESPONSE_TABLE: z.string().regex(/^[A-Za-z][A-Za-z0-9]{2,62}$/).default(storageDefaults.liveResponseTable),

  ARM_BASE_URL: z.url().default("https://management.azure.com"),
  ARM_SCOPE: z.string().default("https://management.azure.com/.default"),
  SENTINEL_API_VERSION: z.string().default("2025-09-01"),
  SENTINEL_TI_BASE_URL: z.url().default("https://api.ti.sentinel.azure.com"),
  SENTINEL_TI_API_VERSION: z.string().default("2024-02-01-preview"),
  TI_SOURCE_SYSTEM: z.string().default("ANY.RUN Sandbox connector"),
  /** Days an uploaded indicator stays valid. */
  TI_VALID_DAYS: z.coerce.number().int().positive().default(90),

  /** Backoff of retried work (busy device, throttled API, transient fault): base delay, doubled per attempt. */
  RETRY_BASE_SECONDS: seconds.default(10),
  RETRY_MAX_SECONDS: seconds.default(900),
  RETRY_MAX_ATTEMPTS: z.coerce.number().int().min(1).max(50).default(12),
  /** A submission in flight longer than this (upload timeout + margin) counts as "outcome unknown". */
  SUBMISSION_GRACE_SECONDS: seconds.default(720),

  /** `default` = DefaultAzureCredential (managed identity in Azure). `local` = the local runtime's token stand-in. */
  AZURE_CREDENTIAL: z.enum(["default", "local"]).default("default"),
  LOG_LEVEL: z.enum(["debug", "info", "warn", "error"]).default("info"),
});

export type Config = z.infer<typeof configSchema>;

export class ConfigError extends Error {
  override name = "ConfigError";
}

export function parseConfig(env: Record<string, string | undefined>): Config {
  const result = configSchema.safeParse(env);
  if (!result.success) {
    const problems = result.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ");
    throw new ConfigError(`Invalid connector configuration: ${problems}`);
  }
  const config = result.data;
  if (!config.SERVICEBUS_CONNECTION && !config.SERVICEBUS_NAMESPACE) {
    throw new ConfigError("Invalid connector configuration: set SERVICEBUS_CONNECTION or SERVICEBUS_NAMESPACE");
  }
  if (!config.STORAGE_CONNECTION && !(config.STORAGE_BLOB_URL && config.STORAGE_TABLE_URL)) {
    throw new ConfigError(
      "Invalid connector configuration: set STORAGE_CONNECTION or both STORAGE_BLOB_URL and STORAGE_TABLE_URL",
    );
  }
  return config;
}

let cached: Config | undefined;

/** The process's configuration, parsed on first use. */
export function getConfig(): Config {
  cached ??= parseConfig(process.env);
  return cached;
}
