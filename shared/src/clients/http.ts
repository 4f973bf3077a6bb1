import type { TokenCredential } from "@azure/identity";
import type { Middleware } from "openapi-fetch";

/**
 * What every typed client shares: authentication middleware for openapi-fetch and one error type
 * that carries what the callers need to classify a failure (HTTP status, service error code,
 * Retry-After), never the request's secrets.
 */

export type ApiName = "anyrun" | "mde" | "sentinel" | "sentinel-ti" | "storage";

export class ApiError extends Error {
  override name = "ApiError";
  constructor(
    readonly api: ApiName,
    readonly operation: string,
    /** HTTP status; 0 when no response arrived (timeout, connection reset). */
    readonly status: number,
    message: string,
    readonly code?: string,
    readonly retryAfterSeconds?: number,
  ) {
    super(`${api} ${operation} failed (${status === 0 ? "no response" : `HTTP ${status}`}${code ? ` ${code}` : ""}): ${message}`);
  }

  /** 429, 5xx and no-response are worth retrying later; other 4xx are not. */
  get transient(): boolean {
    return this.status === 0 || this.status === 429 || this.status >= 500;
  }
}

/** Parses a Retry-After header given in seconds or as an HTTP date. */
export function parseRetryAfter(value: string | null | undefined, now = Date.now()): number | undefined {
  if (!value) return undefined;
  const seconds = Number(value);
  if (Number.isFinite(seconds) && seconds >= 0) return seconds;
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, Math.ceil((date - now) / 1000));
}

/** Adds `Authorization: Bearer <token>` from an Entra credential, fetched per request (the credential caches). */
export function bearerAuth(credential: TokenCredential, scope: string): Middleware {
  return {
    async onRequest({ request }) {
      const token = await credential.getToken(scope);
      if (!token) throw new Error(`No access token for scope ${scope}`);
      request.headers.set("Authorization", `Bearer ${token.token}`);
      return request;
    },
  };
}

/** Turns a fetch that never got a response into an ApiError with status 0. */
export async function callOrNoResponse<T>(api: ApiName, operation: string, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (err) {
    if (err instanceof ApiError) throw err;
    const message = err instanceof Error ? err.message : String(err);
    throw new ApiError(api, operation, 0, message);
  }
}

/** Default per-request timeout for outbound calls. */
export const requestTimeoutMs = 30_000;

/** A fetch that aborts after `timeoutMs`; used as openapi-fetch's `fetch`. */
export function fetchWithTimeout(timeoutMs = requestTimeoutMs): (input: Request) => Promise<Response> {
  return (input: Request) => fetch(input, { signal: AbortSignal.timeout(timeoutMs) });
}
