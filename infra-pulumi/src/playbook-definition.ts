/**
 * Workflow definition of the intake playbook: the "Microsoft Sentinel incident" trigger (run by
 * the automation rule) and one HTTP action that posts the trigger body to the intake queue with
 * the Logic App's managed identity: unchanged, or without its entity, alert, comment and bookmark
 * lists when it would not fit one Service Bus message (`triggerBodyCompaction`; the intake then
 * reads the entities from the Sentinel API). The intake function does the rest - see
 * shared/reference/sentinel-api.md §4.
 */
import { triggerBodyCompaction } from "../../shared/src/incident-trigger.ts";

export const SENTINEL_CONNECTION_KEY = "azuresentinel";
export const TRIGGER_NAME = "Microsoft_Sentinel_incident";
export const SEND_ACTION_NAME = "Send_to_intake_queue";

export function intakeQueueUrl(serviceBusFqdn: string, queueName: string): string {
  return `https://${serviceBusFqdn}/${encodeURIComponent(queueName)}/messages`;
}

/** `triggerBody()` as `compactTriggerBody` shapes it, as a Workflow Definition Language expression. */
export function compactedTriggerBodyExpression(): string {
  let properties = "triggerBody()?['object']?['properties']";
  for (const key of triggerBodyCompaction.droppedProperties) properties = `removeProperty(${properties}, '${key}')`;
  const compacted = `setProperty(triggerBody(), 'object', setProperty(triggerBody()?['object'], 'properties', ${properties}))`;
  return `@if(greater(length(string(triggerBody())), ${triggerBodyCompaction.aboveChars}), ${compacted}, triggerBody())`;
}

export function playbookDefinition(serviceBusFqdn: string, intakeQueue: string): Record<string, unknown> {
  return {
    $schema: "https://schema.management.azure.com/providers/Microsoft.Logic/schemas/2016-06-01/workflowdefinition.json#",
    contentVersion: "1.0.0.0",
    parameters: {
      $connections: { type: "Object", defaultValue: {} },
    },
    triggers: {
      [TRIGGER_NAME]: {
        type: "ApiConnectionWebhook",
        inputs: {
          host: { connection: { name: `@parameters('$connections')['${SENTINEL_CONNECTION_KEY}']['connectionId']` } },
          body: { callback_url: "@{listCallbackUrl()}" },
          path: "/incident-creation",
        },
      },
    },
    actions: {
      [SEND_ACTION_NAME]: {
        type: "Http",
        runAfter: {},
        inputs: {
          method: "POST",
          uri: intakeQueueUrl(serviceBusFqdn, intakeQueue),
          headers: {
            "Content-Type": "application/json",
            // MessageId feeds the queue's duplicate detection: a retried run is dropped.
            BrokerProperties:
              "{\"MessageId\":\"@{coalesce(triggerBody()?['eventUniqueId'], workflow()?['run']?['name'])}\"}",
          },
          body: compactedTriggerBodyExpression(),
          authentication: { type: "ManagedServiceIdentity", audience: "https://servicebus.azure.net" },
          retryPolicy: { type: "exponential", count: 6, interval: "PT15S", maximumInterval: "PT10M" },
        },
      },
    },
    outputs: {},
  };
}
