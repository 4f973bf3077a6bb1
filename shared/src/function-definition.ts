import functions from "@azure/functions";
import type { EventGridEvent, InvocationContext } from "@azure/functions";
import { connectionSettings, functionTriggers, type FunctionName } from "./topology.ts";

/**
 * A function of the Function App: its name (a key of the topology's `functionTriggers`) and its
 * handler. `registerFunction` binds it to the Functions host from the topology; the local
 * functions host reads the same definitions, so both deliver to the same handler the same way.
 */
export interface ServiceBusFunctionDefinition {
  readonly name: FunctionName;
  readonly kind: "serviceBus";
  readonly handler: (message: unknown, context: InvocationContext) => Promise<void>;
}

export interface EventGridFunctionDefinition {
  readonly name: FunctionName;
  readonly kind: "eventGrid";
  readonly handler: (event: EventGridEvent, context: InvocationContext) => Promise<void>;
}

export type FunctionDefinition = ServiceBusFunctionDefinition | EventGridFunctionDefinition;

export function registerFunction(definition: FunctionDefinition): FunctionDefinition {
  const trigger = functionTriggers[definition.name];
  const { app } = functions;
  if (trigger.type === "serviceBusQueue" && definition.kind === "serviceBus") {
    app.serviceBusQueue(definition.name, {
      connection: connectionSettings.serviceBus,
      queueName: trigger.queue,
      handler: definition.handler,
    });
  } else if (trigger.type === "serviceBusTopic" && definition.kind === "serviceBus") {
    app.serviceBusTopic(definition.name, {
      connection: connectionSettings.serviceBus,
      topicName: trigger.topic,
      subscriptionName: trigger.subscription,
      handler: definition.handler,
    });
  } else if (trigger.type === "eventGrid" && definition.kind === "eventGrid") {
    app.eventGrid(definition.name, { handler: definition.handler });
  } else {
    throw new Error(`Function ${definition.name}: handler kind ${definition.kind} does not fit trigger ${trigger.type}`);
  }
  return definition;
}
