import { registerFunction } from "@connector/shared/function-definition";
import { handleAnalysisWatch } from "../core/watch-analysis.ts";
import { getDeps } from "../deps.ts";
import { runLogged } from "./run.ts";

/** Service Bus queue `analysis-watch`: scheduled polls of a sandbox task. */
export const watchAnalysis = registerFunction({
  name: "watchAnalysis",
  kind: "serviceBus",
  handler: (message, context) =>
    runLogged("watchAnalysis", context, async (logger) => {
      await handleAnalysisWatch(message, { ...(await getDeps()), logger });
    }),
});
