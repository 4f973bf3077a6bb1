/**
 * The operator HTTP API over the replay core (services/src/functions/replay.ts registers it as the
 * `replay` function, route `ops/deadletters/{action?}`):
 *
 *   GET  ops/deadletters[/list]?entity=&reason=&exactReason=&olderThan=&newerThan=&id=&limit=
 *   GET  ops/deadletters/show?entity=<entity>&id=<sequenceNumber|messageId>
 *   POST ops/deadletters/resend            {"dryRun": true|false, …filters}
 *   GET  ops/deadletters/eventgrid?entity=<subscription>&…filters
 *   GET  ops/deadletters/eventgrid-show?blob=<blob name>
 *   POST ops/deadletters/eventgrid-replay  {"dryRun": true|false, …filters}
 *
 * Authentication is the Functions key (auth level `function`, checked by the host before this runs).
 * With REPLAY_REQUIRE_PRINCIPAL=true it also requires the principal App Service Authentication puts
 * in `x-ms-client-principal` after validating the caller's Entra token (App Service strips that
 * header from incoming requests, so a caller cannot forge it), and with REPLAY_ALLOWED_ROLES one of
 * those app roles. Every call is logged with the caller (principal name, when there is one).
 */
import type { HttpRequest, HttpResponseInit } from "@azure/functions";
import { describeIssues } from "@connector/shared/errors";
import { redact, redactValue, type Logger } from "@connector/shared/logger";
import type { EventGridDeadLetters } from "@connector/shared/replay/eventgrid";
import { UnknownEntityError } from "@connector/shared/replay/entities";
import { filterInputSchema, resendRequestSchema, toFilter } from "@connector/shared/replay/filters";
import { countByEntity, type ServiceBusDeadLetters } from "@connector/shared/replay/servicebus";
import type { ReplaySettings } from "@connector/shared/replay/settings";

export interface ReplayApiDeps {
  readonly serviceBus: Pick<ServiceBusDeadLetters, "list" | "show" | "resend">;
  /** On demand: most calls are about Service Bus. */
  readonly eventGrid: () => Promise<Pick<EventGridDeadLetters, "list" | "show" | "replay">>;
  readonly settings: Pick<ReplaySettings, "REPLAY_REQUIRE_PRINCIPAL" | "REPLAY_ALLOWED_ROLES">;
  readonly logger: Logger;
}

export type ReplayRequest = Pick<HttpRequest, "method" | "headers" | "query" | "params" | "text">;

function json(status: number, body: unknown): HttpResponseInit {
  return { status, headers: { "content-type": "application/json; charset=utf-8" }, body: JSON.stringify(redactValue(body), null, 2) };
}

const error = (status: number, message: string) => json(status, { error: message });

interface Principal {
  readonly name: string;
  readonly roles: readonly string[];
}

const roleClaimTypes = ["roles", "role", "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"];

/** The App Service Authentication principal of the request, if any (base64 JSON in `x-ms-client-principal`). */
export function clientPrincipal(headers: ReplayRequest["headers"]): Principal | undefined {
  const encoded = headers.get("x-ms-client-principal");
  if (!encoded) return undefined;
  try {
    const parsed = JSON.parse(Buffer.from(encoded, "base64").toString("utf8")) as { claims?: { typ?: unknown; val?: unknown }[]; role_typ?: unknown };
    if (typeof parsed !== "object" || parsed === null || !Array.isArray(parsed.claims)) return undefined;
    const roleTypes = new Set([...roleClaimTypes, ...(typeof parsed.role_typ === "string" ? [parsed.role_typ] : [])]);
    const claim = (types: string[]) => parsed.claims!.find((c) => typeof c.typ === "string" && types.includes(c.typ) && typeof c.val === "string")?.val as string | undefined;
    const name = headers.get("x-ms-client-principal-name") ?? claim(["name", "preferred_username", "appid", "azp"]) ?? "unknown";
    const roles = parsed.claims.filter((c) => typeof c.typ === "string" && roleTypes.has(c.typ) && typeof c.val === "string").map((c) => c.val as string);
    return { name, roles };
  } catch {
    return undefined;
  }
}

function queryFilter(query: URLSearchParams): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const key of new Set(query.keys())) {
    if (key === "code") continue; // the Functions key, when passed in the query
    const values = query.getAll(key);
    out[key] = key === "entity" || key === "id" || key === "ids" || key === "entities" ? values : values[values.length - 1];
  }
  return out;
}

async function readJson(request: ReplayRequest): Promise<unknown> {
  const text = await request.text();
  if (text.trim() === "") return {};
  return JSON.parse(text) as unknown;
}

export async function handleReplayRequest(request: ReplayRequest, deps: ReplayApiDeps): Promise<HttpResponseInit> {
  const action = (request.params["action"] ?? "list").toLowerCase();
  const method = request.method.toUpperCase();

  const principal = clientPrincipal(request.headers);
  if (deps.settings.REPLAY_REQUIRE_PRINCIPAL && !principal) {
    return error(401, "this operation requires an Entra ID sign-in (App Service Authentication principal missing)");
  }
  const allowed = deps.settings.REPLAY_ALLOWED_ROLES.split(",").map((r) => r.trim()).filter(Boolean);
  if (allowed.length > 0 && !principal?.roles.some((r) => allowed.includes(r))) {
    return error(403, `the caller holds none of the roles ${allowed.join(", ")}`);
  }
  const log = deps.logger.child({ action, method, caller: principal?.name ?? "function key" });

  const expect = (m: "GET" | "POST") => (method === m ? undefined : { ...error(405, `use ${m} for ${action}`), headers: { allow: m, "content-type": "application/json; charset=utf-8" } });

  try {
    switch (action) {
      case "list":
      case "eventgrid": {
        const wrong = expect("GET");
        if (wrong) return wrong;
        const parsed = filterInputSchema.safeParse(queryFilter(request.query));
        if (!parsed.success) return error(400, `invalid filter: ${describeIssues(parsed.error)}`);
        const filter = toFilter(parsed.data);
        if (action === "eventgrid") return json(200, { deadLetters: await (await deps.eventGrid()).list(filter) });
        const deadLetters = await deps.serviceBus.list(filter);
        return json(200, { byEntity: countByEntity(filter.entities, deadLetters), deadLetters });
      }
      case "show": {
        const wrong = expect("GET");
        if (wrong) return wrong;
        const entity = request.query.get("entity");
        const id = request.query.get("id");
        if (!entity || !id) return error(400, "show needs ?entity=<entity>&id=<sequenceNumber|messageId>");
        const detail = await deps.serviceBus.show(entity, id);
        return detail ? json(200, detail) : error(404, `no dead letter ${id} in ${entity}`);
      }
      case "eventgrid-show": {
        const wrong = expect("GET");
        if (wrong) return wrong;
        const blob = request.query.get("blob");
        if (!blob) return error(400, "eventgrid-show needs ?blob=<blob name>");
        const events = await (await deps.eventGrid()).show(blob);
        return events ? json(200, { blobName: blob, events }) : error(404, `no dead-letter blob ${blob}`);
      }
      case "resend":
      case "eventgrid-replay": {
        const wrong = expect("POST");
        if (wrong) return wrong;
        let body: unknown;
        try {
          body = await readJson(request);
        } catch {
          return error(400, "the body must be JSON");
        }
        const parsed = resendRequestSchema.safeParse(body);
        if (!parsed.success) return error(400, `invalid request: ${describeIssues(parsed.error)}`);
        const { dryRun, ...filters } = parsed.data;
        const filter = toFilter(filters);
        log.info("operator replay requested", { filter, dryRun });
        const report = action === "resend" ? await deps.serviceBus.resend(filter, { dryRun }) : await (await deps.eventGrid()).replay(filter, { dryRun });
        log.info("operator replay done", { dryRun, selected: report.selected, failed: report.failed });
        return json(200, report);
      }
      default:
        return error(404, `unknown action '${action}': list, show, resend, eventgrid, eventgrid-show, eventgrid-replay`);
    }
  } catch (err) {
    if (err instanceof UnknownEntityError) return error(400, err.message);
    log.error("replay request failed", { error: err });
    return error(500, err instanceof Error ? err.message : String(err));
  }
}
