import { registerFunction } from "@connector/shared/function-definition";
import { handleCollectFile } from "../core/collect-file.ts";
import { getDeps } from "../deps.ts";
import { runLogged } from "./run.ts";

/** Service Bus subscription `artifact-commands/collect-file`: file artifacts to collect with Live Response. */
export const collectFile = registerFunction({
  name: "collectFile",
  kind: "serviceBus",
  handler: (message, context) =>
    runLogged("collectFile", context, async (logger) => {
      await handleCollectFile(message, { ...(await getDeps()), logger });
    }),
});
