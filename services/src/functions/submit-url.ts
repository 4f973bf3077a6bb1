import { registerFunction } from "@connector/shared/function-definition";
import { handleSubmitUrl } from "../core/submit-url.ts";
import { getDeps } from "../deps.ts";
import { runLogged } from "./run.ts";

/** Service Bus subscription `artifact-commands/submit-url`: URL artifacts. */
export const submitUrl = registerFunction({
  name: "submitUrl",
  kind: "serviceBus",
  handler: (message, context) =>
    runLogged("submitUrl", context, async (logger) => {
      await handleSubmitUrl(message, { ...(await getDeps()), logger });
    }),
});
