import type { InvocationContext } from "@azure/functions";
import { createLogger, type Logger } from "@connector/shared/logger";
import { InvalidInputError } from "@connector/shared/errors";

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
    logger.error(err instanceof InvalidInputError ? "invalid input; it will end in the dead-letter store" : "handler failed; the delivery will be retried", {
      error: err,
      messageId: meta["messageId"],
      deliveryCount: meta["deliveryCount"],
    });
    throw err;
  }
}
