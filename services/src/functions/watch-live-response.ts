import { registerFunction } from "@connector/shared/function-definition";
import { handleLiveResponseWatch } from "../core/watch-live-response.ts";
import { getDeps } from "../deps.ts";
import { runLogged } from "./run.ts";

/** Service Bus queue `live-response-watch`: scheduled polls of a Live Response action. */
export const watchLiveResponse = registerFunction({
  name: "watchLiveResponse",
  kind: "serviceBus",
  handler: (message, context) =>
    runLogged("watchLiveResponse", context, async (logger) => {
      await handleLiveResponseWatch(message, { ...(await getDeps()), logger });
    }),
});
