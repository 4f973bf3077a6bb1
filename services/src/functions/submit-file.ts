import { registerFunction } from "@connector/shared/function-definition";
import { handleBlobCreated } from "../core/submit-file.ts";
import { getDeps } from "../deps.ts";
import { runEventGrid } from "./run.ts";

/** Event Grid `Microsoft.Storage.BlobCreated` on the staging container: submit the collected sample. */
export const submitFile = registerFunction({
  name: "submitFile",
  kind: "eventGrid",
  handler: (event, context) =>
    runEventGrid("submitFile", event, context, async () => (await getDeps()).eventGridDeadLetters, async (logger) => {
      await handleBlobCreated(event, { ...(await getDeps()), logger });
    }),
});
