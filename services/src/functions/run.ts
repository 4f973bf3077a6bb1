import type { EventGridEvent, InvocationContext } from "@azure/functions";
import type { EventGridDeadLetterWriter } from "@connector/shared/eventgrid-dead-letters";
import { functionTriggers, type FunctionName } from "@connector/shared/topology";
import { createLogger, type Logger } from "@connector/shared/logger";
import { InvalidInputError, RetryLaterError } from "@connector/shared/errors";

/**
 * The one place where a handler's failure is logged before the host settles the message: the
 * host abandons (Service Bus) or fails the delivery (Event Grid) on a throw, so that transient
 * faults are retried and poison input ends in the dead-letter store.
 */
export async function runLogged<T>(name: string, context: InvocationContext, work: (logger: Logger) => Promise<T>): Promise<T> {
  const logger = createLogger({ service: name, fields: { invocationId: context.invocationId } });
  try {
    return await work(logger);
  } catch (err) {
    const meta = context.triggerMetadata ?? {};
    const fields = { error: err, messageId: meta["messageId"], deliveryCount: meta["deliveryCount"] };
    if (err instanceof RetryLaterError) logger.info("not ready yet; the delivery will be retried", fields);
    else logger.error(err instanceof InvalidInputError ? "invalid input; it goes to the dead-letter store" : "handler failed; the delivery will be retried", fields);
    throw err;
  }
}

/**
 * Event Grid functions: invalid input is dead-lettered at once with its reason (see
 * EventGridDeadLetterWriter) and the delivery succeeds; any other failure fails the delivery, so
 * Event Grid retries it on its own schedule.
 */
export async function runEventGrid(
  name: FunctionName,
  event: EventGridEvent,
  context: InvocationContext,
  deadLetters: () => Promise<Pick<EventGridDeadLetterWriter, "write">>,
  work: (logger: Logger) => Promise<unknown>,
): Promise<void> {
  try {
    await runLogged(name, context, work);
  } catch (err) {
    if (!(err instanceof InvalidInputError)) throw err;
    const trigger = functionTriggers[name];
    const subscription = trigger.type === "eventGrid" ? trigger.subscription : name;
    const attempts = Number(context.triggerMetadata?.["deliveryCount"] ?? 1) || 1;
    const blobName = await (await deadLetters()).write(subscription, event, err.reason, err.message, attempts);
    createLogger({ service: name, fields: { invocationId: context.invocationId } }).warn("event dead-lettered", { eventId: event.id, reason: err.reason, blobName });
  }
}
