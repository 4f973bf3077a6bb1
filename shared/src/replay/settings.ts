/**
 * What the replay tools need, read once from the environment and validated with the connector's own
 * setting definitions (shared/src/config.ts) — but only these settings: an operator's shell that
 * replays dead letters has no reason to hold the ANY.RUN key.
 *
 * The same code path serves the local broker and Azure: `SERVICEBUS_CONNECTION` (a connection
 * string, local or SAS) or `SERVICEBUS_NAMESPACE` (Entra ID via DefaultAzureCredential: managed
 * identity in Azure, `az login` on a workstation).
 */
import { z } from "zod";
import { ConfigError, configSchema } from "../config.ts";
import { registerSecret } from "../logger.ts";

const bool = z.enum(["true", "false", "1", "0"]).transform((v) => v === "true" || v === "1");

export const replaySettingsSchema = configSchema
  .pick({
    SERVICEBUS_CONNECTION: true,
    SERVICEBUS_NAMESPACE: true,
    STORAGE_CONNECTION: true,
    STORAGE_BLOB_URL: true,
    EVENTGRID_KEY: true,
    AZURE_CREDENTIAL: true,
    LOG_LEVEL: true,
  })
  .extend({
    /** Needed only to re-publish custom-topic events. */
    EVENTGRID_ENDPOINT: configSchema.shape.EVENTGRID_ENDPOINT.optional(),
    /**
     * Operator HTTP function: also require an App Service Authentication (Entra ID) principal,
     * i.e. the `x-ms-client-principal` header the platform sets after validating the caller's token.
     */
    REPLAY_REQUIRE_PRINCIPAL: bool.default(false),
    /** Comma-separated app roles, one of which the principal must hold (when set). */
    REPLAY_ALLOWED_ROLES: z.string().default(""),
  });

export type ReplaySettings = z.infer<typeof replaySettingsSchema>;

export function parseReplaySettings(env: Record<string, string | undefined>): ReplaySettings {
  const result = replaySettingsSchema.safeParse(env);
  if (!result.success) {
    throw new ConfigError(`Invalid replay configuration: ${result.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ")}`);
  }
  registerSecret(result.data.EVENTGRID_KEY);
  for (const part of [result.data.SERVICEBUS_CONNECTION, result.data.STORAGE_CONNECTION]) {
    const key = /(?:SharedAccessKey|AccountKey)=([^;]+)/i.exec(part ?? "")?.[1];
    registerSecret(key);
  }
  return result.data;
}

let cached: ReplaySettings | undefined;

export function getReplaySettings(): ReplaySettings {
  cached ??= parseReplaySettings(process.env);
  return cached;
}

/** Whether any configured connection needs an Entra ID credential (no connection string / key for it). */
export function needsCredential(settings: ReplaySettings): boolean {
  return !settings.SERVICEBUS_CONNECTION || (!settings.STORAGE_CONNECTION && Boolean(settings.STORAGE_BLOB_URL)) || (Boolean(settings.EVENTGRID_ENDPOINT) && !settings.EVENTGRID_KEY);
}
