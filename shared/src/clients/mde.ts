import { gunzipSync } from "node:zlib";
import type { TokenCredential } from "@azure/identity";
import createClient from "openapi-fetch";
import { createLogger, type Logger } from "../logger.ts";
import { runScriptResultSchema, type RunScriptResult } from "../live-response/result.ts";
import type { components, paths } from "./generated/mde.ts";
import { ApiError, bearerAuth, callOrNoResponse, fetchWithTimeout, parseRetryAfter } from "./http.ts";

/**
 * Microsoft Defender for Endpoint client: the Live Response calls the connector needs.
 * Errors are ApiError(api "mde") carrying the envelope's `error.code` (callers match on it, never on
 * the message) and, when present, Retry-After in seconds.
 */

export type Machine = components["schemas"]["Machine"];
export type MachineAction = components["schemas"]["MachineAction"];
export type MachineActionCommand = components["schemas"]["MachineActionCommand"];
export type LibraryFile = components["schemas"]["LibraryFile"];
export type MdeErrorEnvelope = components["schemas"]["ErrorEnvelope"];
export type { RunScriptResult };

export type MachineActionStatus = "Pending" | "InProgress" | "Succeeded" | "Failed" | "TimeOut" | "Cancelled";
const terminalStatuses: ReadonlySet<string> = new Set(["Succeeded", "Failed", "TimeOut", "Cancelled"]);

/**
 * True for Succeeded, Failed, TimeOut and Cancelled. Unknown values count as not final, so the
 * caller keeps polling until its own deadline (and then cancels).
 */
export function isTerminalActionStatus(status: string | null | undefined): boolean {
  return status !== null && status !== undefined && terminalStatuses.has(status);
}

/** Error codes the connector reacts to (the service has more; see common-errors.md). */
export const mdeErrorCodes = {
  activeRequestAlreadyExists: "ActiveRequestAlreadyExists",
  resourceNotFound: "ResourceNotFound",
  notFound: "NotFound",
  unauthorized: "Unauthorized",
  tooManyRequests: "TooManyRequests",
  invalidRequestBody: "InvalidRequestBody",
  missingRequiredParameter: "MissingRequiredParameter",
  /** Client-side: the downloaded result file is not a RunScript result. */
  invalidResultFile: "InvalidResultFile",
} as const;

/** Library file names: letters, digits, `-`, `_`, `.` only. */
const libraryNamePattern = /^[A-Za-z0-9_.-]+$/;
/** The opaque Args envelopes this client passes (see live-response/args.ts). */
const argsPattern = /^[A-Za-z0-9._-]+$/;
/** API upload limit of the Live Response library. */
export const libraryUploadLimitBytes = 20 * 1024 * 1024;

export interface MdeClientOptions {
  baseUrl: string;
  credential: TokenCredential;
  /** e.g. https://api.securitycenter.microsoft.com/.default */
  scope: string;
  fetch?: (input: Request) => Promise<Response>;
  logger?: Logger;
}

export interface RunScriptOptions {
  /** Library script name, e.g. anyrun-collect.sh. */
  scriptName: string;
  /** One opaque argument string; only [A-Za-z0-9._-] is accepted. */
  args: string;
  /** Shown in the action centre. */
  comment: string;
}

export interface UploadLibraryFileOptions {
  fileName: string;
  content: Uint8Array | string;
  description: string;
  hasParameters: boolean;
  parametersDescription?: string;
  overrideIfExists: boolean;
}

/**
 * Clauses of the OData `$filter` of GET /api/machineactions, joined with `and`. The documented
 * filterable fields include machineId, type and status; combining clauses is unverified against
 * the real service, so the connector itself filters on `machineId` alone.
 */
export interface MachineActionFilter {
  machineId?: string;
  type?: string;
  status?: string;
  /** `$top` (the service allows up to 10,000). */
  top?: number;
}

/** OData string literal: single quotes doubled. */
function odataString(value: string): string {
  return `'${value.replace(/'/g, "''")}'`;
}

export function machineActionFilter(filter: MachineActionFilter): string | undefined {
  const clauses: string[] = [];
  if (filter.machineId !== undefined) clauses.push(`machineId eq ${odataString(filter.machineId)}`);
  if (filter.type !== undefined) clauses.push(`type eq ${odataString(filter.type)}`);
  if (filter.status !== undefined) clauses.push(`status eq ${odataString(filter.status)}`);
  return clauses.length > 0 ? clauses.join(" and ") : undefined;
}

export interface MdeClient {
  getMachine(id: string): Promise<Machine>;
  /** Machine actions matching `filter` (actions started from the portal's device page are not listed). */
  listMachineActions(filter: MachineActionFilter): Promise<MachineAction[]>;
  /** Starts a Live Response action with one RunScript command (result index 0). */
  runScript(machineId: string, options: RunScriptOptions): Promise<MachineAction>;
  getMachineAction(id: string): Promise<MachineAction>;
  /** A fresh link (valid 30 min) to the result of command `index`. Secret: never log it. */
  getResultDownloadLink(actionId: string, index: number): Promise<string>;
  /** Fetches and parses the RunScript result of command `index` (gzip tolerated). */
  downloadScriptResult(actionId: string, index: number): Promise<RunScriptResult>;
  cancelMachineAction(id: string, comment: string): Promise<MachineAction>;
  listLibraryFiles(): Promise<LibraryFile[]>;
  uploadLibraryFile(options: UploadLibraryFileOptions): Promise<LibraryFile>;
}

function errorFrom(operation: string, response: Response, body: unknown): ApiError {
  const envelope = (body as Partial<MdeErrorEnvelope> | undefined)?.error;
  const code = typeof envelope?.code === "string" ? envelope.code : undefined;
  const message = typeof envelope?.message === "string" ? envelope.message : response.statusText || "request failed";
  return new ApiError("mde", operation, response.status, message, code, parseRetryAfter(response.headers.get("Retry-After")));
}

function decodeResultBytes(bytes: Uint8Array): unknown {
  let raw = bytes;
  if (raw.length >= 2 && raw[0] === 0x1f && raw[1] === 0x8b) raw = gunzipSync(raw);
  const text = new TextDecoder("utf-8").decode(raw).replace(/^\uFEFF/, "");
  return JSON.parse(text);
}

export function createMdeClient(options: MdeClientOptions): MdeClient {
  const fetchImpl = options.fetch ?? fetchWithTimeout();
  const log = options.logger ?? createLogger({ service: "mde-client" });
  const client = createClient<paths>({ baseUrl: options.baseUrl, fetch: fetchImpl });
  client.use(bearerAuth(options.credential, options.scope));

  async function call<T>(operation: string, run: () => Promise<{ data?: T; error?: unknown; response: Response }>): Promise<T> {
    return callOrNoResponse("mde", operation, async () => {
      let answer = await run();
      if (answer.response.status === 401) {
        // MDE's documented answer to 401: ask for the token again and retry once (a 401 was never
        // executed). The credential decides whether that yields a new token: it renews one near
        // its expiry, which is the usual cause of a stray 401.
        log.warn("mde answered 401; asking for the token again and retrying once", { operation });
        answer = await run();
      }
      const { data, error, response } = answer;
      log.debug("mde call", { operation, status: response.status });
      if (!response.ok) throw errorFrom(operation, response, error);
      if (data === undefined) throw new ApiError("mde", operation, response.status, "empty response body");
      return data;
    });
  }

  const getResultDownloadLink = (actionId: string, index: number) =>
    call("getResultDownloadLink", () =>
      client.GET("/api/machineactions/{id}/GetLiveResponseResultDownloadLink(index={index})", {
        params: { path: { id: actionId, index } },
      }),
    ).then((d) => d.value);

  return {
    getMachine: (id) => call("getMachine", () => client.GET("/api/machines/{id}", { params: { path: { id } } })),

    runScript(machineId, { scriptName, args, comment }) {
      if (!libraryNamePattern.test(scriptName)) throw new TypeError("scriptName must be a library file name ([A-Za-z0-9_.-])");
      if (!argsPattern.test(args)) throw new TypeError("args must be an opaque [A-Za-z0-9._-] string");
      return call("runScript", () =>
        client.POST("/api/machines/{id}/runliveresponse", {
          params: { path: { id: machineId } },
          body: {
            Commands: [
              {
                type: "RunScript",
                params: [
                  { key: "ScriptName", value: scriptName },
                  { key: "Args", value: args },
                ],
              },
            ],
            Comment: comment,
          },
        }),
      );
    },

    listMachineActions(filter) {
      const $filter = machineActionFilter(filter);
      if (filter.top !== undefined && (!Number.isInteger(filter.top) || filter.top < 1 || filter.top > 10_000)) throw new RangeError("top must be an integer from 1 to 10,000");
      return call("listMachineActions", () =>
        client.GET("/api/machineactions", {
          params: { query: { ...($filter !== undefined ? { $filter } : {}), ...(filter.top !== undefined ? { $top: filter.top } : {}) } },
        }),
      ).then((d) => d.value);
    },

    getMachineAction: (id) => call("getMachineAction", () => client.GET("/api/machineactions/{id}", { params: { path: { id } } })),

    getResultDownloadLink,

    async downloadScriptResult(actionId, index) {
      const link = await getResultDownloadLink(actionId, index);
      const operation = "downloadScriptResult";
      return callOrNoResponse("mde", operation, async () => {
        // A SAS link: no Authorization header, and the link never goes into an error or a log line.
        const response = await fetchImpl(new Request(link, { method: "GET" }));
        log.debug("mde result download", { operation, status: response.status });
        if (!response.ok) {
          await response.body?.cancel();
          const code = response.headers.get("x-ms-error-code") ?? undefined;
          throw new ApiError("mde", operation, response.status, "result download failed", code, parseRetryAfter(response.headers.get("Retry-After")));
        }
        const bytes = new Uint8Array(await response.arrayBuffer());
        let parsed: unknown;
        try {
          parsed = decodeResultBytes(bytes);
        } catch {
          throw new ApiError("mde", operation, response.status, "result file is not JSON", mdeErrorCodes.invalidResultFile);
        }
        const result = runScriptResultSchema.safeParse(parsed);
        if (!result.success) throw new ApiError("mde", operation, response.status, "result file is not a RunScript result", mdeErrorCodes.invalidResultFile);
        return result.data;
      });
    },

    cancelMachineAction: (id, comment) =>
      call("cancelMachineAction", () =>
        client.POST("/api/machineactions/{id}/cancel", { params: { path: { id } }, body: { Comment: comment } }),
      ),

    listLibraryFiles: () => call("listLibraryFiles", () => client.GET("/api/libraryfiles")).then((d) => d.value),

    uploadLibraryFile(upload) {
      if (!libraryNamePattern.test(upload.fileName)) throw new TypeError("fileName must use [A-Za-z0-9_.-] only");
      const bytes = typeof upload.content === "string" ? new TextEncoder().encode(upload.content) : upload.content;
      if (bytes.byteLength > libraryUploadLimitBytes) throw new RangeError("library files uploaded through the API are limited to 20 MB");
      const form = new FormData();
      form.append("file", new Blob([bytes], { type: "application/octet-stream" }), upload.fileName);
      form.append("Description", upload.description);
      form.append("HasParameters", String(upload.hasParameters));
      if (upload.parametersDescription !== undefined) form.append("ParametersDescription", upload.parametersDescription);
      form.append("OverrideIfExists", String(upload.overrideIfExists));
      return call("uploadLibraryFile", () =>
        client.POST("/api/libraryfiles", {
          body: { file: upload.fileName },
          bodySerializer: () => form,
        }),
      );
    },
  };
}
