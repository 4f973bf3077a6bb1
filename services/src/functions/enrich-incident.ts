import { registerFunction } from "@connector/shared/function-definition";
import { handleAnalysisCompleted } from "../core/enrich.ts";
import { getDeps } from "../deps.ts";
import { runEventGrid } from "./run.ts";

/** Event Grid `AnyRun.Sandbox.AnalysisCompleted`: write the verdict, labels and indicators to Sentinel. */
export const enrichIncident = registerFunction({
  name: "enrichIncident",
  kind: "eventGrid",
  handler: (event, context) =>
    runEventGrid("enrichIncident", event, context, async () => (await getDeps()).eventGridDeadLetters, async (logger) => {
      await handleAnalysisCompleted(event, { ...(await getDeps()), logger });
    }),
});
