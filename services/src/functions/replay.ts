import type { HttpRequest, HttpResponseInit } from "@azure/functions";
import { registerFunction } from "@connector/shared/function-definition";
import { createLogger } from "@connector/shared/logger";
import { getReplaySettings } from "@connector/shared/replay/settings";
import { handleReplayRequest, type ReplayApiDeps } from "../replay/http-api.ts";
import { buildReplayCore } from "../replay/deps.ts";
import { functionAppRedelivery } from "../replay/redeliver.ts";

let deps: Promise<ReplayApiDeps> | undefined;

/** Built once per process from the app settings; BlobCreated events are re-delivered to submitFile in this app. */
function getReplayApiDeps(): Promise<ReplayApiDeps> {
  deps ??= (async () => {
    const settings = getReplaySettings();
    const logger = createLogger({ service: "replay", level: settings.LOG_LEVEL });
    const core = await buildReplayCore(settings, { logger, redeliverBlobCreated: await functionAppRedelivery(logger) });
    return { serviceBus: core.serviceBus, eventGrid: core.eventGrid, settings, logger };
  })().catch((err: unknown) => {
    deps = undefined;
    throw err;
  });
  return deps;
}

/** HTTP `ops/deadletters/{action?}` (function key): operators list and resend dead letters. */
export const replay = registerFunction({
  name: "replay",
  kind: "http",
  handler: async (request: HttpRequest): Promise<HttpResponseInit> => {
    let d: ReplayApiDeps;
    try {
      d = await getReplayApiDeps();
    } catch (err) {
      createLogger({ service: "replay" }).error("replay function misconfigured", { error: err });
      return { status: 500, jsonBody: { error: "the replay function is not configured: see the Function App logs" } };
    }
    return handleReplayRequest(request, d);
  },
});
