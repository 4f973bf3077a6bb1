import type * as azure from "@pulumi/azure-native";
import * as pulumi from "@pulumi/pulumi";
import { ConnectorEventGridTopics } from "./eventing.ts";
import { ANYRUN_KEY_SECRET_NAME, ConnectorFunctionApp } from "./function-app.ts";
import { ConnectorMessaging } from "./messaging.ts";
import { assignRole } from "./roles.ts";
import type { ConnectorStorage } from "./storage.ts";
import { functionTriggers } from "./topology.ts";

export interface AccessArgs {
  readonly subscriptionId: string;
  readonly workspace: { readonly id: string; readonly subscriptionId: string };
  readonly threatIntelUpload: boolean;
  readonly storage: ConnectorStorage;
  readonly messaging: ConnectorMessaging;
  readonly eventGridTopics: ConnectorEventGridTopics;
  readonly functionApp: ConnectorFunctionApp;
}

/**
 * Azure RBAC of the Function App's managed identity (besides its host storage, granted by
 * ConnectorFunctionApp), every assignment scoped to one resource:
 * data access on the entities it uses, never a subscription or resource group.
 */
export class ConnectorAccess extends pulumi.ComponentResource {
  readonly assignments: azure.authorization.RoleAssignment[] = [];

  constructor(name: string, args: AccessArgs, opts?: pulumi.ComponentResourceOptions) {
    super("anyrun:connector:Access", name, {}, opts);
    const principalId = args.functionApp.principalId;
    const grant = (
      logicalName: string,
      role: Parameters<typeof assignRole>[2]["role"],
      scope: pulumi.Input<string>,
      description: string,
      subscriptionId = args.subscriptionId,
    ) => {
      const assignment = assignRole(
        `functionapp-${logicalName}`,
        subscriptionId,
        { principalId, principalType: "ServicePrincipal", role, scope, description },
        { parent: this },
      );
      this.assignments.push(assignment);
      return assignment;
    };

    // (Functions host storage: see ConnectorFunctionApp, the host needs it before it starts.)
    // Staging: samples (container), user-delegation SAS (account-level key), jobs table.
    grant(
      "staging-blobs",
      "storageBlobDataContributor",
      args.storage.stagingContainer.id,
      "Read, write and delete staged samples",
    );
    grant(
      "eventgrid-deadletters",
      "storageBlobDataContributor",
      args.storage.deadLetterContainer.id,
      "Operator replay: read and delete Event Grid dead letters",
    );
    grant(
      "staging-sas-delegation",
      "storageBlobDelegator",
      args.storage.stagingAccount.id,
      "Get a user delegation key to sign the endpoint's upload SAS",
    );
    grant(
      "jobs-table",
      "storageTableDataContributor",
      args.storage.jobsTable.id,
      "Job state",
    );
    grant(
      "liveresponse-table",
      "storageTableDataContributor",
      args.storage.liveResponseTable.id,
      "Live Response leases: one session per device, tenant-wide caps",
    );

    // Service Bus: receive where a trigger listens, send to every queue and topic (the functions
    // forward to the next stage and reschedule onto their own entity for backoff).
    for (const [fn, trigger] of Object.entries(functionTriggers)) {
      if (trigger.type === "serviceBusQueue") {
        const queue = args.messaging.queues.get(trigger.queue);
        if (!queue) throw new Error(`Function ${fn} listens to queue ${trigger.queue}, which the topology does not declare`);
        grant(`receive-${trigger.queue}`, "serviceBusDataReceiver", queue.id, `${fn}: receive from ${trigger.queue}`);
      } else if (trigger.type === "serviceBusTopic") {
        const key = `${trigger.topic}/${trigger.subscription}`;
        const sub = args.messaging.subscriptions.get(key);
        if (!sub) throw new Error(`Function ${fn} listens to ${key}, which the topology does not declare`);
        grant(
          `receive-${trigger.topic}-${trigger.subscription}`,
          "serviceBusDataReceiver",
          sub.id,
          `${fn}: receive from ${key}`,
        );
      }
    }
    for (const [queueName, queue] of args.messaging.queues) {
      grant(`send-${queueName}`, "serviceBusDataSender", queue.id, `Send to queue ${queueName}`);
    }
    for (const [topicName, topic] of args.messaging.topics) {
      grant(`send-${topicName}`, "serviceBusDataSender", topic.id, `Send to topic ${topicName}`);
    }

    grant("eventgrid-publish", "eventGridDataSender", args.eventGridTopics.analysisTopic.id, "Publish analysis-completed events");
    grant(
      "anyrun-key",
      "keyVaultSecretsUser",
      pulumi.interpolate`${args.functionApp.vault.id}/secrets/${ANYRUN_KEY_SECRET_NAME}`,
      "Resolve the ANY.RUN API key Key Vault reference",
    );
    grant(
      "telemetry",
      "monitoringMetricsPublisher",
      args.functionApp.appInsights.id,
      "Send telemetry to Application Insights (local auth is disabled)",
    );

    // Sentinel: incidents and comments; TI upload needs Contributor (shared/reference/sentinel-api.md §1, §5).
    grant(
      "sentinel-responder",
      "sentinelResponder",
      args.workspace.id,
      "Update incidents and add comments",
      args.workspace.subscriptionId,
    );
    if (args.threatIntelUpload) {
      grant(
        "sentinel-ti-contributor",
        "sentinelContributor",
        args.workspace.id,
        "Upload threat intelligence indicators",
        args.workspace.subscriptionId,
      );
    }
    this.registerOutputs({});
  }
}
