/**
 * Service Bus trigger of the local functions host, built on the real @azure/service-bus SDK the way
 * the Functions Service Bus extension behaves with its defaults: peek-lock, one message per
 * invocation, the SDK renewing the lock while the handler runs (maxAutoLockRenewalDuration 5 min),
 * complete on success, abandon on a throw (redelivered at once; the broker's maxDeliveryCount
 * dead-letters poison messages).
 */
import type { ServiceBusClient, ServiceBusReceivedMessage, ServiceBusReceiver } from "@azure/service-bus";
import { settlingHandler, type ServiceBusFunctionDefinition, type ServiceBusMessageContextLike } from "@connector/shared/function-definition";
import { connectionSettings, type FunctionTrigger } from "@connector/shared/topology";
import type { Logger } from "@connector/shared/logger";
import { createInvocationContext, type InvocationRecord } from "./invocation.ts";
import { serviceBusTriggerMetadata, triggerInputFromBody } from "./trigger-metadata.ts";
// The SDK settles with rhea: one disposition frame per delivery (see rhea-dispositions.ts).
import "../servicebus/rhea-dispositions.ts";

export type ServiceBusTrigger = Extract<FunctionTrigger, { type: "serviceBusQueue" | "serviceBusTopic" }>;

export interface ServiceBusListenerOptions {
  readonly maxConcurrentCalls: number;
  readonly maxAutoLockRenewalDurationMs: number;
  readonly logger: Logger;
  readonly record: (record: InvocationRecord) => void;
}

export interface ServiceBusListener {
  close(): Promise<void>;
}

export function entityPath(trigger: ServiceBusTrigger): string {
  return trigger.type === "serviceBusQueue" ? trigger.queue : `${trigger.topic}/Subscriptions/${trigger.subscription}`;
}

export function startServiceBusListener(
  client: ServiceBusClient,
  definition: ServiceBusFunctionDefinition,
  trigger: ServiceBusTrigger,
  options: ServiceBusListenerOptions,
): ServiceBusListener {
  const logger = options.logger.child({ functionName: definition.name, entity: entityPath(trigger) });
  const receiverOptions = {
    receiveMode: "peekLock" as const,
    maxAutoLockRenewalDurationInMs: options.maxAutoLockRenewalDurationMs,
  };
  const receiver: ServiceBusReceiver =
    trigger.type === "serviceBusQueue"
      ? client.createReceiver(trigger.queue, receiverOptions)
      : client.createReceiver(trigger.topic, trigger.subscription, receiverOptions);
  const triggerOptions =
    trigger.type === "serviceBusQueue"
      ? { type: "serviceBusTrigger", name: "message", connection: connectionSettings.serviceBus, queueName: trigger.queue }
      : {
          type: "serviceBusTrigger",
          name: "message",
          connection: connectionSettings.serviceBus,
          topicName: trigger.topic,
          subscriptionName: trigger.subscription,
        };
  const inFlight = new Set<Promise<void>>();
  let closing = false;

  const guarded = (action: string, call: () => Promise<void>, message: ServiceBusReceivedMessage) =>
    call().catch((err: unknown) => {
      // Lock lost or link gone: the broker redelivers the message after the lock expires.
      logger.warn(`could not ${action} message`, { messageId: String(message.messageId ?? ""), error: err });
    });
  // The settlement actions the host gives an sdkBinding function, backed by this receiver.
  const actions: ServiceBusMessageContextLike["actions"] = {
    complete: (m) => guarded("complete", () => receiver.completeMessage(m), m),
    abandon: (m) => guarded("abandon", () => receiver.abandonMessage(m), m),
    deadletter: (m, _properties, reason, description) =>
      guarded("dead-letter", () => receiver.deadLetterMessage(m, { deadLetterReason: reason ?? "", deadLetterErrorDescription: description ?? "" }), m),
  };
  const handler = settlingHandler(definition);

  const invoke = async (message: ServiceBusReceivedMessage) => {
    const input = triggerInputFromBody(message.body);
    const triggerMetadata = serviceBusTriggerMetadata(message, input);
    const context = createInvocationContext({
      functionName: definition.name,
      triggerMetadata,
      trigger: triggerOptions,
      logger,
    });
    const started = Date.now();
    const base = {
      functionName: definition.name,
      invocationId: context.invocationId,
      trigger: "serviceBus" as const,
      deliveryCount: triggerMetadata.deliveryCount as number,
      messageId: message.messageId === undefined ? undefined : String(message.messageId),
      startedAt: new Date(started).toISOString(),
    };
    let settlement: string;
    try {
      settlement = (await handler({ messages: [message], actions }, context)).join(",");
    } catch (err) {
      // The function itself failed before settling (a settlement call threw): the host abandons.
      logger.warn("function failed; abandoning message", { invocationId: context.invocationId, deliveryCount: base.deliveryCount, error: err });
      options.record({ ...base, outcome: "failed", error: err instanceof Error ? err.message : String(err), durationMs: Date.now() - started });
      await actions.abandon(message);
      return;
    }
    options.record({ ...base, outcome: settlement === "completed" ? "succeeded" : "failed", settlement, durationMs: Date.now() - started });
  };

  const subscription = receiver.subscribe(
    {
      processMessage: async (message) => {
        const p = invoke(message);
        inFlight.add(p);
        try {
          await p;
        } finally {
          inFlight.delete(p);
        }
      },
      processError: async (args) => {
        if (closing) return;
        logger.warn("service bus receive error", { errorSource: args.errorSource, error: args.error });
      },
    },
    { autoCompleteMessages: false, maxConcurrentCalls: options.maxConcurrentCalls },
  );
  logger.info("service bus trigger listening");

  return {
    async close() {
      closing = true;
      await subscription.close();
      await Promise.allSettled([...inFlight]);
      await receiver.close();
    },
  };
}
