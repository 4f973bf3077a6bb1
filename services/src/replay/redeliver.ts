/**
 * Re-delivery of dead-lettered BlobCreated events.
 *
 * The storage account's system topic accepts no publishes, and re-writing the sample blob to make
 * Storage raise a new event would change evidence (new ETag) and needs the blob to still exist. So a
 * dead-lettered BlobCreated event is handed to the function its subscription triggers, in-process,
 * the way the Functions host invokes an Event Grid trigger (one event, an InvocationContext). The
 * handler is idempotent by job state: a sample already submitted is skipped.
 *
 * Where this runs: inside the Function App, by the operator HTTP function (it has the connector's
 * configuration and identity), or by the CLI when it is given the whole connector configuration
 * (the local runtime, or an operator running it directly); otherwise the CLI forwards the replay to
 * the HTTP function (`--function-url`).
 */
import { randomUUID } from "node:crypto";
import functions from "@azure/functions";
import type { EventGridEvent } from "@azure/functions";
import type { EventGridFunctionDefinition } from "@connector/shared/function-definition";
import type { BlobCreatedRedelivery } from "@connector/shared/replay/eventgrid";
import { functionTriggers } from "@connector/shared/topology";
import type { Logger } from "@connector/shared/logger";

/** A redelivery port over Event Grid function definitions, each found by its trigger's subscription. */
export function inProcessRedelivery(definitions: readonly EventGridFunctionDefinition[], logger: Logger): BlobCreatedRedelivery {
  return async (subscription: string, event: EventGridEvent) => {
    const definition = definitions.find((d) => {
      const trigger = functionTriggers[d.name];
      return trigger.type === "eventGrid" && trigger.subscription === subscription;
    });
    if (!definition) throw new Error(`no function of this app listens to Event Grid subscription ${subscription}`);
    const invocationId = randomUUID();
    const log = logger.child({ functionName: definition.name, invocationId, eventId: event.id });
    const context = new functions.InvocationContext({
      invocationId,
      functionName: definition.name,
      triggerMetadata: { ...event, replayed: true },
      options: { trigger: { type: "eventGridTrigger", name: "event" }, extraInputs: [], extraOutputs: [] },
      logHandler: (level, ...values) => {
        const message = values.map(String).join(" ");
        if (level === "error" || level === "critical") log.error(message);
        else if (level === "warning") log.warn(message);
        else log.debug(message);
      },
    });
    await definition.handler(event, context);
  };
}

/** The Function App's own Event Grid functions (loaded lazily: importing them registers them with the host). */
export async function functionAppRedelivery(logger: Logger): Promise<BlobCreatedRedelivery> {
  const { submitFile } = await import("../functions/submit-file.ts");
  return inProcessRedelivery([submitFile], logger);
}
