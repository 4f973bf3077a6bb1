import type { TokenCredential } from "@azure/identity";
import createClient from "openapi-fetch";
import { createLogger, type Logger } from "../logger.ts";
import { ApiError, bearerAuth, callOrNoResponse, fetchWithTimeout, parseRetryAfter } from "./http.ts";
import type { components, paths } from "./generated/sentinel-ti.ts";
import type { FetchFn } from "./sentinel.ts";

/**
 * Microsoft Sentinel threat intelligence: the STIX objects upload API (preview,
 * api-version 2024-02-01-preview) at https://api.ti.sentinel.azure.com, addressed by workspace GUID.
 * Contract: shared/reference/sentinel-api.md §5.1; types: shared/openapi/sentinel-ti.yaml.
 */

export type StixObject = components["schemas"]["StixObject"];
export type UploadRecordError = components["schemas"]["UploadRecordError"];

/** Objects per request the service accepts. */
export const maxStixObjectsPerUpload = 100;
/** `sourcesystem` value the service reserves for itself. */
export const reservedSourceSystem = "Microsoft Sentinel";

export interface SentinelTiClientOptions {
  /** e.g. https://api.ti.sentinel.azure.com (config SENTINEL_TI_BASE_URL). */
  baseUrl: string;
  /** e.g. 2024-02-01-preview (config SENTINEL_TI_API_VERSION). */
  apiVersion: string;
  credential: TokenCredential;
  /** e.g. https://management.azure.com/.default (config ARM_SCOPE). */
  scope: string;
  fetch?: FetchFn;
  logger?: Logger;
}

export interface UploadResult {
  /** Objects the service stored. */
  accepted: number;
  /** Rejected records (partial failure), by index into the uploaded array. */
  errors: UploadRecordError[];
}

export interface SentinelTiClient {
  /**
   * Uploads at most 100 objects (chunk larger sets with `chunk`). A 200 with `errors` is a partial
   * failure, reported in the result; 429 throws ApiError with `retryAfterSeconds`.
   */
  uploadStixObjects(workspaceId: string, sourceSystem: string, objects: readonly StixObject[]): Promise<UploadResult>;
}

/** Splits `items` into consecutive slices of at most `size` (default: the upload limit). */
export function chunk<T>(items: readonly T[], size = maxStixObjectsPerUpload): T[][] {
  if (!Number.isInteger(size) || size < 1) throw new RangeError(`chunk size must be a positive integer, got ${size}`);
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

/** N from "Rate limit is exceeded. Try again in N seconds." */
export function parseRetryAfterMessage(message: string | undefined): number | undefined {
  const match = message?.match(/try again in (\d+(?:\.\d+)?) seconds?/i);
  return match ? Math.ceil(Number(match[1])) : undefined;
}

function errorDetails(body: unknown): { code?: string; message?: string } {
  if (body && typeof body === "object") {
    const b = body as { message?: unknown; error?: unknown };
    if (b.error && typeof b.error === "object") {
      const { code, message } = b.error as { code?: unknown; message?: unknown };
      return {
        ...(typeof code === "string" ? { code } : {}),
        ...(typeof message === "string" ? { message } : {}),
      };
    }
    if (typeof b.message === "string") return { message: b.message };
  }
  if (typeof body === "string" && body.trim()) return { message: body.trim().slice(0, 500) };
  return {};
}

function asRecordErrors(value: unknown): UploadRecordError[] {
  if (!value || typeof value !== "object") return [];
  const errors = (value as { errors?: unknown }).errors;
  if (!Array.isArray(errors)) return [];
  return errors
    .filter((e): e is { recordIndex: number; errorMessages?: unknown } => !!e && Number.isInteger(e.recordIndex))
    .map((e) => ({
      recordIndex: e.recordIndex,
      errorMessages: Array.isArray(e.errorMessages) ? e.errorMessages.map(String) : [],
    }));
}

export function createSentinelTiClient(options: SentinelTiClientOptions): SentinelTiClient {
  const log = (options.logger ?? createLogger({ service: "sentinel-ti-client" })).child({ api: "sentinel-ti" });
  const client = createClient<paths>({ baseUrl: options.baseUrl, fetch: options.fetch ?? fetchWithTimeout() });
  client.use(bearerAuth(options.credential, options.scope));

  async function uploadStixObjects(
    workspaceId: string,
    sourceSystem: string,
    objects: readonly StixObject[],
  ): Promise<UploadResult> {
    if (objects.length > maxStixObjectsPerUpload) {
      throw new RangeError(
        `${objects.length} STIX objects in one upload; the API accepts at most ${maxStixObjectsPerUpload} (use chunk())`,
      );
    }
    if (!sourceSystem.trim() || sourceSystem.trim().toLowerCase() === reservedSourceSystem.toLowerCase()) {
      throw new RangeError(`sourcesystem "${sourceSystem}" is empty or reserved`);
    }
    if (objects.length === 0) return { accepted: 0, errors: [] };

    return callOrNoResponse("sentinel-ti", "uploadStixObjects", async () => {
      const { data, error, response } = await client.POST("/workspaces/{workspaceId}/threat-intelligence-stix-objects:upload", {
        params: { path: { workspaceId }, query: { "api-version": options.apiVersion } },
        body: { sourcesystem: sourceSystem, stixobjects: [...objects] },
      });
      if (!response.ok) {
        const { code, message } = errorDetails(error);
        const retryAfterSeconds =
          response.status === 429
            ? (parseRetryAfter(response.headers.get("Retry-After")) ?? parseRetryAfterMessage(message))
            : parseRetryAfter(response.headers.get("Retry-After"));
        throw new ApiError(
          "sentinel-ti",
          "uploadStixObjects",
          response.status,
          message ?? (response.statusText || "request failed"),
          code ?? (response.status === 429 ? "TooManyRequests" : undefined),
          retryAfterSeconds,
        );
      }
      const errors = asRecordErrors(data);
      const rejected = new Set(errors.map((e) => e.recordIndex).filter((i) => i >= 0 && i < objects.length)).size;
      const result = { accepted: objects.length - rejected, errors };
      if (errors.length > 0) {
        log.warn("STIX upload partially rejected", { workspaceId, accepted: result.accepted, rejected });
      } else {
        log.debug("STIX upload accepted", { workspaceId, accepted: result.accepted });
      }
      return result;
    });
  }

  return { uploadStixObjects };
}
