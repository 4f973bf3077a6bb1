import createClient, { type Middleware } from "openapi-fetch";
import { createLogger, redact, registerSecret, type Logger } from "../logger.ts";
import { ApiError, callOrNoResponse, fetchWithTimeout, parseRetryAfter, requestTimeoutMs } from "./http.ts";
import type { components, paths } from "./generated/anyrun.ts";
import { createMultipartBody, type SampleContent } from "../anyrun/multipart.ts";
import { AnyRunInputError, buildSubmission, type SandboxOptions } from "../anyrun/options.ts";
import {
  InvalidReportError,
  describeIssues,
  historySchema,
  parseReport,
  readIocs,
  readReport,
  userSchema,
  type AnyRunHistoryTask,
  type AnyRunIoc,
  type AnyRunReport,
  type AnyRunUser,
  type ReportOutcome,
} from "../anyrun/report.ts";

/**
 * Typed client for the ANY.RUN Sandbox API (openapi-fetch over shared/openapi/anyrun.yaml).
 * Every failure is an `ApiError` with api "anyrun": status 0 when no (complete) response arrived,
 * the HTTP status otherwise, `retryAfterSeconds` from Retry-After when sent. Input rejected before
 * any request is an `AnyRunInputError`. The API key is registered with the logger's redaction and
 * never appears in logs or error messages.
 */

export const connectorHeader = { name: "x-anyrun-connector", value: "MS_Sentinel_Connector:0.1.0" } as const;
/** Default timeout of a file upload (the body streams during it). */
export const uploadTimeoutMs = 10 * 60_000;

export type SubmitResult =
  | { kind: "task"; taskId: string; status: 200 | 201 }
  | { kind: "queued"; queueTaskId: string };

export interface FileSample {
  fileName: string;
  /** Streamed into the multipart body as it is sent. A Buffer is a Uint8Array. */
  content: SampleContent;
  /** Byte length; lets a stream upload carry Content-Length (and is checked against the bytes sent). */
  size?: number;
  contentType?: string;
}

export interface ReportResult {
  report: AnyRunReport;
  /** `done` (with verdict), `pending` or `failed`: see `readReport`. */
  outcome: ReportOutcome;
}

export interface HistoryPage {
  skip?: number;
  /** 1–100; default 25. */
  limit?: number;
  /** Team history instead of the key owner's. */
  team?: boolean;
}

export interface AnyRunClientOptions {
  baseUrl: string;
  apiKey: string;
  /** Transport for every call (tests, proxies). Default: global fetch with a per-call timeout. */
  fetch?: (input: Request) => Promise<Response>;
  logger?: Logger;
  /** Per-call timeout of the default transport (not file uploads). */
  timeoutMs?: number;
  /** Timeout of a file upload with the default transport. */
  uploadTimeoutMs?: number;
}

export interface AnyRunClient {
  submitUrl(url: string, options?: SandboxOptions): Promise<SubmitResult>;
  submitFile(sample: FileSample, options?: SandboxOptions): Promise<SubmitResult>;
  getReport(taskId: string): Promise<ReportResult>;
  /** IoCs of known types (ip, domain, url, sha256); unknown or malformed entries are skipped. */
  getIocs(taskId: string): Promise<AnyRunIoc[]>;
  getHistory(page?: HistoryPage): Promise<AnyRunHistoryTask[]>;
  getUser(): Promise<AnyRunUser["data"]>;
}

type FileSubmission = components["schemas"]["FileSubmission"];
type UrlSubmission = components["schemas"]["UrlSubmission"];

function errorMessage(body: unknown, response: Response): string {
  if (body && typeof body === "object") {
    const record = body as Record<string, unknown>;
    if (typeof record.message === "string" && record.message) return record.message;
    if (typeof record.description === "string" && record.description) return record.description;
  }
  if (typeof body === "string" && body.trim()) return body.trim().slice(0, 300);
  return response.statusText || `HTTP ${response.status}`;
}

function causeText(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const cause = (err as { cause?: unknown }).cause;
  return cause instanceof Error && cause.message && cause.message !== err.message ? `${err.message}: ${cause.message}` : err.message;
}

function requireTaskId(taskId: string): void {
  if (typeof taskId !== "string" || !/^[A-Za-z0-9-]{1,64}$/.test(taskId)) {
    throw new AnyRunInputError([`task id ${JSON.stringify(taskId)} is not a task uuid`]);
  }
}

export function createAnyRunClient(options: AnyRunClientOptions): AnyRunClient {
  registerSecret(options.apiKey);
  const logger = options.logger ?? createLogger({ service: "anyrun-client" });
  const readFetch = options.fetch ?? fetchWithTimeout(options.timeoutMs ?? requestTimeoutMs);
  const uploadFetch = options.fetch ?? fetchWithTimeout(options.uploadTimeoutMs ?? uploadTimeoutMs);

  const client = createClient<paths>({
    baseUrl: options.baseUrl,
    fetch: readFetch,
    headers: {
      Authorization: `API-Key ${options.apiKey}`,
      Accept: "application/json",
      [connectorHeader.name]: connectorHeader.value,
    },
  });

  const fail = (operation: string, status: number, message: string, code?: string, retryAfter?: number): ApiError =>
    new ApiError("anyrun", operation, status, redact(message), code, retryAfter);

  /** Turns a non-2xx answer into an ApiError. */
  const httpFailure = (operation: string, response: Response, body: unknown): ApiError =>
    fail(operation, response.status, errorMessage(body, response), undefined, parseRetryAfter(response.headers.get("retry-after")));

  /**
   * Runs one call. A failure before a status arrived (or while the body was still arriving) is
   * status 0; a complete answer whose body is not JSON is `InvalidBody` with its status.
   */
  async function send<T>(operation: string, exec: (capture: Middleware) => Promise<T>): Promise<T> {
    let status = 0;
    const started = Date.now();
    const capture: Middleware = {
      onResponse({ response }) {
        status = response.status;
        return undefined;
      },
    };
    try {
      const result = await callOrNoResponse("anyrun", operation, async () => {
        try {
          return await exec(capture);
        } catch (err) {
          if (err instanceof ApiError || err instanceof AnyRunInputError) throw err;
          if (err instanceof SyntaxError && status !== 0) {
            throw fail(operation, status, `response body is not JSON: ${err.message}`, "InvalidBody");
          }
          throw fail(operation, 0, causeText(err));
        }
      });
      logger.debug("anyrun call", { operation, status, ms: Date.now() - started });
      return result;
    } catch (err) {
      logger.debug("anyrun call failed", { operation, status, ms: Date.now() - started, error: err });
      throw err;
    }
  }

  function submitOutcome(operation: string, response: Response, body: unknown): SubmitResult {
    const envelope = (body && typeof body === "object" ? body : {}) as {
      error?: unknown;
      message?: unknown;
      data?: { taskid?: unknown; queueTaskId?: unknown };
    };
    const status = response.status;
    if (envelope.error === true) {
      logger.warn("anyrun submission answered 2xx with error: true", { status, message: redact(String(envelope.message ?? "")) });
    }
    const taskId = envelope.data?.taskid;
    const queueTaskId = envelope.data?.queueTaskId;
    if ((status === 200 || status === 201) && typeof taskId === "string" && taskId) {
      return { kind: "task", taskId, status };
    }
    if (status === 202 && typeof queueTaskId === "string" && queueTaskId) {
      return { kind: "queued", queueTaskId };
    }
    const detail = typeof envelope.message === "string" && envelope.message ? `: ${envelope.message}` : "";
    throw fail(operation, status, `HTTP ${status} without a task id; outcome unknown, reconcile through history${detail}`, "NoTaskId");
  }

  return {
    async submitUrl(url, sandboxOptions = {}) {
      const { fields, omitted } = buildSubmission({ kind: "url", url }, sandboxOptions);
      if (omitted.length) logger.debug("anyrun options not applicable, not sent", { omitted });
      const body = Object.fromEntries(fields) as UrlSubmission;
      return send("submitUrl", async (capture) => {
        const { data, error, response } = await client.POST("/v1/analysis", { body, middleware: [capture] });
        if (!response.ok) throw httpFailure("submitUrl", response, error);
        return submitOutcome("submitUrl", response, data);
      });
    },

    async submitFile(sample, sandboxOptions = {}) {
      if (!sample.fileName) throw new AnyRunInputError(["fileName is required"]);
      const { fields, omitted } = buildSubmission({ kind: "file" }, sandboxOptions);
      if (omitted.length) logger.debug("anyrun options not applicable, not sent", { omitted });
      let multipart;
      try {
        multipart = createMultipartBody(fields, {
          name: "file",
          fileName: sample.fileName,
          content: sample.content,
          ...(sample.size !== undefined ? { size: sample.size } : {}),
          ...(sample.contentType !== undefined ? { contentType: sample.contentType } : {}),
        });
      } catch (err) {
        throw new AnyRunInputError([err instanceof Error ? err.message : String(err)]);
      }
      const { body: stream, contentType, length } = multipart;
      // The typed body documents the fields; the serializer sends the streamed multipart instead.
      const body = { ...Object.fromEntries(fields), file: sample.fileName } as FileSubmission;
      return send("submitFile", async (capture) => {
        const { data, error, response } = await client.POST("/v1/analysis", {
          body,
          bodySerializer: () => stream,
          headers: {
            "Content-Type": contentType,
            ...(length !== undefined ? { "Content-Length": String(length) } : {}),
          },
          duplex: "half",
          fetch: uploadFetch,
          middleware: [capture],
        });
        if (!response.ok) throw httpFailure("submitFile", response, error);
        return submitOutcome("submitFile", response, data);
      });
    },

    async getReport(taskId) {
      requireTaskId(taskId);
      return send("getReport", async (capture) => {
        const { data, error, response } = await client.GET("/v1/analysis/{taskid}", {
          params: { path: { taskid: taskId } },
          middleware: [capture],
        });
        if (!response.ok) throw httpFailure("getReport", response, error);
        if (data && (data as { error?: unknown }).error === true) {
          throw fail("getReport", response.status, errorMessage(data, response), "ErrorInBody");
        }
        try {
          const report = parseReport(data);
          return { report, outcome: readReport(report) };
        } catch (err) {
          if (err instanceof InvalidReportError) throw fail("getReport", response.status, err.message, "InvalidBody");
          throw err;
        }
      });
    },

    async getIocs(taskId) {
      requireTaskId(taskId);
      return send("getIocs", async (capture) => {
        const { data, error, response } = await client.GET("/report/{taskid}/ioc/json", {
          params: { path: { taskid: taskId } },
          middleware: [capture],
        });
        if (!response.ok) throw httpFailure("getIocs", response, error);
        try {
          const { iocs, skipped } = readIocs(data);
          const unknown = Object.keys(skipped.unknownType).length;
          if (unknown || skipped.malformed || skipped.invalidIp) logger.debug("anyrun iocs skipped", { taskId, ...skipped });
          return iocs;
        } catch (err) {
          if (err instanceof InvalidReportError) throw fail("getIocs", response.status, err.message, "InvalidBody");
          throw err;
        }
      });
    },

    async getHistory(page = {}) {
      const skip = page.skip ?? 0;
      const limit = page.limit ?? 25;
      const problems: string[] = [];
      if (!Number.isInteger(skip) || skip < 0) problems.push(`skip must be an integer ≥ 0 (got ${skip})`);
      if (!Number.isInteger(limit) || limit < 1 || limit > 100) problems.push(`limit must be an integer 1–100 (got ${limit})`);
      if (problems.length) throw new AnyRunInputError(problems);
      return send("getHistory", async (capture) => {
        const { data, error, response } = await client.GET("/v1/analysis", {
          params: { query: { team: page.team ?? false, skip, limit } },
          middleware: [capture],
        });
        if (!response.ok) throw httpFailure("getHistory", response, error);
        const parsed = historySchema.safeParse(data);
        if (!parsed.success) throw fail("getHistory", response.status, describeIssues(parsed.error), "InvalidBody");
        return parsed.data.data.tasks;
      });
    },

    async getUser() {
      return send("getUser", async (capture) => {
        const { data, error, response } = await client.GET("/v1/user", { middleware: [capture] });
        if (!response.ok) throw httpFailure("getUser", response, error);
        const parsed = userSchema.safeParse(data);
        if (!parsed.success) throw fail("getUser", response.status, describeIssues(parsed.error), "InvalidBody");
        return parsed.data.data;
      });
    },
  };
}
