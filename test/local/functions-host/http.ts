/**
 * HTTP trigger of the local functions host: one loopback server for every HTTP function, routes
 * under `/api/` from the topology's `http` triggers (`{name}` and `{name?}` segments), and the
 * Functions key check the real host makes before a function runs: the key comes in the
 * `x-functions-key` header or the `code` query parameter; auth level `function` accepts the
 * function key or the master key, `admin` only the master key; otherwise 401 and the function is
 * not invoked. (No App Service Authentication locally: `x-ms-client-principal` headers pass through
 * as sent, which lets tests play the platform.)
 */
import http from "node:http";
import { timingSafeEqual } from "node:crypto";
import type { AddressInfo } from "node:net";
import functions from "@azure/functions";
import type { HttpResponseInit } from "@azure/functions";
import type { HttpFunctionDefinition } from "@connector/shared/function-definition";
import { functionTriggers, type FunctionTrigger } from "@connector/shared/topology";
import type { Logger } from "@connector/shared/logger";
import { createInvocationContext, type InvocationRecord } from "./invocation.ts";

export type HttpTrigger = Extract<FunctionTrigger, { type: "http" }>;

export interface HttpKeys {
  /** Accepted by `function`-level functions. */
  readonly functionKey: string;
  /** Accepted by every function (`function` and `admin` level). */
  readonly masterKey: string;
}

export interface HttpTriggerServer {
  /** `http://127.0.0.1:<port>/api` */
  readonly url: string;
  close(): Promise<void>;
}

interface Route {
  readonly definition: HttpFunctionDefinition;
  readonly trigger: HttpTrigger;
  readonly pattern: RegExp;
  readonly names: readonly string[];
}

/** `ops/deadletters/{action?}` → a regex over the path after `/api/` and the parameter names. */
export function compileRoute(template: string): { pattern: RegExp; names: string[] } {
  const names: string[] = [];
  let source = "";
  for (const segment of template.replace(/^\/+|\/+$/g, "").split("/")) {
    const param = /^\{([A-Za-z_][A-Za-z0-9_]*)(\?)?\}$/.exec(segment);
    if (param) {
      names.push(param[1]!);
      source += param[2] ? "(?:/([^/]+))?" : "/([^/]+)";
    } else {
      source += `/${segment.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}`;
    }
  }
  return { pattern: new RegExp(`^${source}/?$`, "i"), names };
}

function same(given: string | null | undefined, expected: string): boolean {
  if (!given) return false;
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

function authorised(req: http.IncomingMessage, url: URL, trigger: HttpTrigger, keys: HttpKeys): boolean {
  const header = req.headers["x-functions-key"];
  const given = (Array.isArray(header) ? header[0] : header) ?? url.searchParams.get("code");
  if (same(given, keys.masterKey)) return true;
  return trigger.authLevel === "function" && same(given, keys.functionKey);
}

async function writeResponse(res: http.ServerResponse, init: HttpResponseInit): Promise<void> {
  const headers = new Headers(init.headers as Record<string, string> | undefined);
  let body: Buffer | undefined;
  if (init.jsonBody !== undefined) {
    body = Buffer.from(JSON.stringify(init.jsonBody));
    if (!headers.has("content-type")) headers.set("content-type", "application/json");
  } else if (typeof init.body === "string") {
    body = Buffer.from(init.body);
    if (!headers.has("content-type")) headers.set("content-type", "text/plain; charset=utf-8");
  } else if (init.body instanceof Uint8Array) {
    body = Buffer.from(init.body);
  } else if (init.body !== undefined && init.body !== null) {
    body = Buffer.from(await new Response(init.body as ConstructorParameters<typeof Response>[0]).arrayBuffer());
  }
  const out: Record<string, string> = {};
  headers.forEach((value, key) => (out[key] = value));
  if (body) out["content-length"] = String(body.length);
  res.writeHead(init.status ?? 200, out);
  res.end(body);
}

export async function startHttpTriggers(
  definitions: readonly HttpFunctionDefinition[],
  options: { keys: HttpKeys; port?: number; logger: Logger; record: (r: InvocationRecord) => void },
): Promise<HttpTriggerServer> {
  const routes: Route[] = definitions.map((definition) => {
    const trigger = functionTriggers[definition.name];
    if (trigger.type !== "http") throw new Error(`Function ${definition.name} has no http trigger`);
    return { definition, trigger, ...compileRoute(trigger.route) };
  });
  const inFlight = new Set<Promise<void>>();

  const handle = async (req: http.IncomingMessage, res: http.ServerResponse) => {
    const url = new URL(req.url ?? "/", "http://127.0.0.1");
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const rest = url.pathname.startsWith("/api/") ? url.pathname.slice(4) : undefined;
    const matched = rest === undefined ? undefined : routes.map((r) => ({ r, m: r.pattern.exec(rest) })).find((x) => x.m);
    if (!matched?.m) return void res.writeHead(404, { "content-length": "0" }).end();
    const { r: route, m } = matched;
    if (!route.trigger.methods.includes((req.method ?? "GET").toUpperCase() as "GET" | "POST")) {
      return void res.writeHead(405, { "content-length": "0", allow: route.trigger.methods.join(", ") }).end();
    }
    if (!authorised(req, url, route.trigger, options.keys)) return void res.writeHead(401, { "content-length": "0" }).end();

    const params: Record<string, string> = {};
    route.names.forEach((name, i) => {
      const value = m[i + 1];
      if (value !== undefined) params[name] = decodeURIComponent(value);
    });
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(req.headers)) if (v !== undefined) headers[k] = Array.isArray(v) ? v.join(", ") : v;
    const body = Buffer.concat(chunks);
    const request = new functions.HttpRequest({
      method: req.method ?? "GET",
      url: `http://127.0.0.1${url.pathname}${url.search}`,
      headers,
      // No `query`: the request then reads it from the URL, repeated keys (?entity=a&entity=b) included.
      params,
      ...(body.length > 0 ? { body: { bytes: body } } : {}),
    });
    const context = createInvocationContext({
      functionName: route.definition.name,
      triggerMetadata: { params, query: Object.fromEntries(url.searchParams), headers },
      trigger: { type: "httpTrigger", name: "request", authLevel: route.trigger.authLevel, methods: [...route.trigger.methods], route: route.trigger.route },
      logger: options.logger,
    });
    const started = Date.now();
    const base = { functionName: route.definition.name, invocationId: context.invocationId, trigger: "http" as const, startedAt: new Date(started).toISOString() };
    let init: HttpResponseInit;
    try {
      init = await route.definition.handler(request, context);
    } catch (err) {
      options.logger.warn("http function failed; 500", { functionName: route.definition.name, error: err });
      options.record({ ...base, outcome: "failed", httpStatus: 500, error: err instanceof Error ? err.message : String(err), durationMs: Date.now() - started });
      return void res.writeHead(500, { "content-length": "0" }).end();
    }
    options.record({ ...base, outcome: (init.status ?? 200) < 500 ? "succeeded" : "failed", httpStatus: init.status ?? 200, durationMs: Date.now() - started });
    await writeResponse(res, init);
  };

  const server = http.createServer((req, res) => {
    const p = handle(req, res).catch((err: unknown) => {
      options.logger.error("local http trigger failed", { error: err });
      if (!res.headersSent) res.writeHead(500, { "content-length": "0" }).end();
      else res.destroy();
    });
    inFlight.add(p);
    void p.finally(() => inFlight.delete(p));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port ?? 0, "127.0.0.1", () => resolve());
  });
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/api`,
    async close() {
      await Promise.allSettled([...inFlight]);
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
