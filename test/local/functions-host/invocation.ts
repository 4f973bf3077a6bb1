/**
 * Builds the `InvocationContext` the Functions host would pass and records each invocation.
 * In native ESM the class is reached through the default import (azure-functions-nodejs-library #287).
 */
import { randomUUID } from "node:crypto";
import { format } from "node:util";
import functions from "@azure/functions";
import type { InvocationContext } from "@azure/functions";
import type { Logger } from "@connector/shared/logger";

export interface InvocationRecord {
  readonly functionName: string;
  readonly invocationId: string;
  readonly trigger: "serviceBus" | "eventGrid" | "http";
  readonly outcome: "succeeded" | "failed";
  /** Service Bus: host-style delivery count (1 on first delivery). */
  readonly deliveryCount?: number;
  readonly messageId?: string;
  /** Service Bus: how the function settled the message (completed, abandoned, deadLettered). */
  readonly settlement?: string;
  readonly eventId?: string;
  /** HTTP: the status the function answered with. */
  readonly httpStatus?: number;
  readonly error?: string;
  readonly startedAt: string;
  readonly durationMs: number;
}

export function createInvocationContext(args: {
  functionName: string;
  triggerMetadata: Record<string, unknown>;
  trigger: { type: string; name: string } & Record<string, unknown>;
  logger: Logger;
}): InvocationContext {
  const invocationId = randomUUID();
  const log = args.logger.child({ functionName: args.functionName, invocationId });
  return new functions.InvocationContext({
    invocationId,
    functionName: args.functionName,
    triggerMetadata: args.triggerMetadata,
    options: { trigger: args.trigger, extraInputs: [], extraOutputs: [] },
    logHandler: (level, ...values) => {
      const message = format(...values);
      if (level === "error" || level === "critical") log.error(message);
      else if (level === "warning") log.warn(message);
      else if (level === "information") log.info(message);
      else log.debug(message);
    },
  });
}
