import { ApiError } from "@connector/shared/clients/http";
import type { Settings } from "./ports.ts";

/**
 * Backoff instead of hot retries: the Functions host redelivers a failed message at once, so work
 * that hit a busy device, a throttled API or a transient fault is completed and scheduled again,
 * later each time, honouring the service's Retry-After.
 */
export function isRetryable(err: unknown): err is ApiError {
  return err instanceof ApiError && (err.transient || err.code === "ActiveRequestAlreadyExists");
}

export function backoffSeconds(attempt: number, retry: Settings["retry"], retryAfterSeconds?: number, random = Math.random): number {
  const exponential = Math.min(retry.maxSeconds, retry.baseSeconds * 2 ** attempt);
  const jittered = exponential * (0.75 + random() * 0.5);
  return Math.max(retryAfterSeconds ?? 0, Math.round(jittered * 10) / 10);
}

export function describeApiError(err: ApiError): string {
  return `${err.api} answered ${err.status === 0 ? "nothing" : `HTTP ${err.status}`}${err.code ? ` ${err.code}` : ""}`;
}
