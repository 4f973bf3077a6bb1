import { registerFunction } from "@connector/shared/function-definition";
import { handleIncidentTrigger } from "../core/intake.ts";
import { getDeps } from "../deps.ts";
import { runLogged } from "./run.ts";

/** Service Bus queue `incident-intake`: the Sentinel playbook's incident trigger bodies. */
export const intake = registerFunction({
  name: "intake",
  kind: "serviceBus",
  handler: (message, context) =>
    runLogged("intake", context, async (logger) => {
      const deps = await getDeps();
      await handleIncidentTrigger(message, { jobs: deps.jobs, bus: deps.bus, sentinel: deps.incidents, policy: deps.settings.intake, logger });
    }),
});
