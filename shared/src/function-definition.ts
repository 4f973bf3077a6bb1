import functions from "@azure/functions";
import type { EventGridEvent, HttpRequest, HttpResponseInit, InvocationContext } from "@azure/functions";
import type { ServiceBusReceivedMessage } from "@azure/service-bus";
import { connectionSettings, functionTriggers, type FunctionName } from "./topology.ts";
import { InvalidInputError } from "./errors.ts";

/**
 * A function of the Function App: its name (a key of the topology's `functionTriggers`) and its
 * handler. `registerFunction` binds it to the Functions host from the topology; the local
 * functions host reads the same definitions, so both deliver to the same handler the same way.
 */
export interface ServiceBusFunctionDefinition {
  readonly name: FunctionName;
  readonly kind: "serviceBus";
  /** Gets the message body; a throw of `InvalidInputError` dead-letters the message, any other throw abandons it. */
  readonly handler: (message: unknown, context: InvocationContext) => Promise<void>;
}

export interface EventGridFunctionDefinition {
  readonly name: FunctionName;
  readonly kind: "eventGrid";
  readonly handler: (event: EventGridEvent, context: InvocationContext) => Promise<void>;
}

/**
 * An HTTP function. The route, methods and auth level come from the topology's `http` trigger; the
 * Functions host checks the key before the handler runs, so the handler never sees an
 * unauthenticated call.
 */
export interface HttpFunctionDefinition {
  readonly name: FunctionName;
  readonly kind: "http";
  readonly handler: (request: HttpRequest, context: InvocationContext) => Promise<HttpResponseInit>;
}

export type FunctionDefinition = ServiceBusFunctionDefinition | EventGridFunctionDefinition | HttpFunctionDefinition;

/** What the Functions host hands a Service Bus function registered with `sdkBinding: true`. */
export interface ServiceBusMessageContextLike {
  messages: ServiceBusReceivedMessage | ServiceBusReceivedMessage[];
  actions: {
    complete(message: ServiceBusReceivedMessage): Promise<void>;
    abandon(message: ServiceBusReceivedMessage, propertiesToModify?: Uint8Array): Promise<void>;
    deadletter(message: ServiceBusReceivedMessage, propertiesToModify?: Uint8Array, reason?: string, description?: string): Promise<void>;
  };
}

export type Settlement = "completed" | "abandoned" | "deadLettered";

/** The message body as the handler sees it: JSON parsed, whether the SDK gives an object, a string or bytes. */
export function messageBody(message: Pick<ServiceBusReceivedMessage, "body">): unknown {
  const body: unknown = message.body;
  const text = body instanceof Uint8Array ? Buffer.from(body).toString("utf8") : typeof body === "string" ? body : undefined;
  if (text === undefined) return body;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return text;
  }
}

/**
 * The settlement policy, in one place: success completes, invalid input is dead-lettered at once
 * with a reason and a description that say what was wrong, anything else is abandoned (redelivered,
 * and dead-lettered by the broker after maxDeliveryCount). Transient faults never reach here: the
 * cores reschedule them with backoff.
 */
export function settlingHandler(definition: ServiceBusFunctionDefinition) {
  return async (ctx: ServiceBusMessageContextLike, context: InvocationContext): Promise<Settlement[]> => {
    const messages = Array.isArray(ctx.messages) ? ctx.messages : [ctx.messages];
    const outcomes: Settlement[] = [];
    for (const message of messages) {
      try {
        await definition.handler(messageBody(message), context);
        await ctx.actions.complete(message);
        outcomes.push("completed");
      } catch (err) {
        if (err instanceof InvalidInputError) {
          await ctx.actions.deadletter(message, undefined, err.reason, err.message.slice(0, 1024));
          outcomes.push("deadLettered");
        } else {
          await ctx.actions.abandon(message);
          outcomes.push("abandoned");
        }
      }
    }
    return outcomes;
  };
}

export function registerFunction<T extends FunctionDefinition>(definition: T): T {
  const trigger = functionTriggers[definition.name];
  const { app } = functions;
  if (definition.kind === "serviceBus" && (trigger.type === "serviceBusQueue" || trigger.type === "serviceBusTopic")) {
    // sdkBinding hands us the received message and its settlement actions (preview extension
    // @azure/functions-extensions-servicebus), so invalid input can be dead-lettered with a reason.
    const handler = settlingHandler(definition) as unknown as (message: unknown, context: InvocationContext) => Promise<void>;
    const common = { connection: connectionSettings.serviceBus, sdkBinding: true, autoCompleteMessages: false, cardinality: "one" as const, handler };
    if (trigger.type === "serviceBusQueue") app.serviceBusQueue(definition.name, { ...common, queueName: trigger.queue });
    else app.serviceBusTopic(definition.name, { ...common, topicName: trigger.topic, subscriptionName: trigger.subscription });
  } else if (definition.kind === "eventGrid" && trigger.type === "eventGrid") {
    app.eventGrid(definition.name, { handler: definition.handler });
  } else if (definition.kind === "http" && trigger.type === "http") {
    app.http(definition.name, { route: trigger.route, methods: [...trigger.methods], authLevel: trigger.authLevel, handler: definition.handler });
  } else {
    throw new Error(`Function ${definition.name}: handler kind ${definition.kind} does not fit trigger ${trigger.type}`);
  }
  return definition;
}
