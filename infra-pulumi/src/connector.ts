import * as azure from "@pulumi/azure-native";
import * as pulumi from "@pulumi/pulumi";
import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { configSchema } from "../../shared/src/config.ts";
import { ConnectorAccess } from "./access.ts";
import { ConnectorDefender } from "./defender.ts";
import { ConnectorEventGridSubscriptions, ConnectorEventGridTopics } from "./eventing.ts";
import { ConnectorFunctionApp } from "./function-app.ts";
import { ConnectorMessaging } from "./messaging.ts";
import { resourceNames } from "./naming.ts";
import { ConnectorSentinel, workspaceId } from "./sentinel.ts";
import type { ConnectorSettings } from "./settings.ts";
import { ConnectorStorage } from "./storage.ts";
import { queues } from "./topology.ts";

export function packageSha256(packagePath: string): string {
  if (!existsSync(packagePath)) {
    throw new Error(`Functions package ${packagePath} not found: run \`npm run build\` at the repository root first`);
  }
  return createHash("sha256").update(readFileSync(packagePath)).digest("hex");
}

/** Declares one tenant's connector. */
export function createConnector(settings: ConnectorSettings) {
  const names = resourceNames(settings.tenantSlug, settings.subscriptionId);
  const tags = { "anyrun-connector": settings.tenantSlug, "managed-by": "pulumi", ...settings.tags };
  const location = settings.location;

  const resourceGroup = new azure.resources.ResourceGroup("resource-group", {
    resourceGroupName: names.resourceGroup,
    location,
    tags,
  });
  const rgName = resourceGroup.name;

  const storage = new ConnectorStorage("storage", {
    resourceGroupName: rgName,
    stagingAccountName: names.stagingAccount,
    hostAccountName: names.hostAccount,
    sku: settings.storage.sku,
    stagingRetentionDays: settings.storage.stagingRetentionDays,
    deadLetterRetentionDays: settings.storage.deadLetterRetentionDays,
    packagePath: settings.functions.packagePath,
    tags,
  });

  const messaging = new ConnectorMessaging("messaging", { resourceGroupName: rgName, namespaceName: names.serviceBus, tags });

  const eventGridTopics = new ConnectorEventGridTopics("eventgrid-topics", {
    resourceGroupName: rgName,
    location,
    subscriptionId: settings.subscriptionId,
    customTopicName: names.analysisTopic,
    storage,
    tags,
  });

  const functionApp = new ConnectorFunctionApp("functions", {
    resourceGroupName: rgName,
    location,
    tenantId: settings.tenantId,
    subscriptionId: settings.subscriptionId,
    names,
    storage,
    serviceBusFqdn: messaging.fullyQualifiedNamespace,
    eventGridEndpoint: eventGridTopics.analysisTopic.endpoint,
    anyrunApiKey: settings.anyrunApiKey,
    extraSettings: settings.appSettings,
    packageSha256: packageSha256(settings.functions.packagePath),
    maximumInstanceCount: settings.functions.maximumInstanceCount,
    instanceMemoryMB: settings.functions.instanceMemoryMB,
    keyVault: settings.keyVault,
    tags,
  });

  const workspace = {
    subscriptionId: settings.sentinel.subscriptionId,
    resourceGroup: settings.sentinel.resourceGroup,
    name: settings.sentinel.workspaceName,
  };

  const access = new ConnectorAccess("access", {
    subscriptionId: settings.subscriptionId,
    workspace: { id: workspaceId(workspace), subscriptionId: workspace.subscriptionId },
    threatIntelUpload: settings.threatIntelUpload,
    storage,
    messaging,
    eventGridTopics,
    functionApp,
  });

  const eventGridSubscriptions = new ConnectorEventGridSubscriptions("eventgrid-subscriptions", {
    resourceGroupName: rgName,
    storage,
    topics: eventGridTopics,
    functionAppId: functionApp.app.id,
    functionsReady: [storage.packageBlob, functionApp.hostStorageRole],
  });

  const workspaceProvider =
    workspace.subscriptionId.toLowerCase() !== settings.subscriptionId.toLowerCase()
      ? new azure.Provider("sentinel-subscription", {
          subscriptionId: workspace.subscriptionId,
          tenantId: settings.tenantId,
          location,
        })
      : undefined;

  const intakeQueue = messaging.queues.get(queues.incidentIntake.name);
  if (!intakeQueue) throw new Error(`The topology's intake queue ${queues.incidentIntake.name} was not created`);
  const sentinel = new ConnectorSentinel("sentinel", {
    resourceGroupName: rgName,
    location,
    tenantId: settings.tenantId,
    subscriptionId: settings.subscriptionId,
    tenantSlug: settings.tenantSlug,
    names,
    workspace,
    serviceBusFqdn: messaging.fullyQualifiedNamespace,
    intakeQueueName: queues.incidentIntake.name,
    intakeQueueId: intakeQueue.id,
    runOnIncidentUpdate: settings.sentinel.runOnIncidentUpdate,
    automationRuleOrder: settings.sentinel.automationRuleOrder,
    ...(workspaceProvider ? { workspaceProvider } : {}),
    tags,
  });

  const defender = new ConnectorDefender("defender", {
    tenantId: settings.tenantId,
    subscriptionId: settings.subscriptionId,
    functionPrincipalId: functionApp.principalId,
    appRoles: settings.defender.appRoles,
    libraryUploader: settings.defender.libraryUploader,
    uploaderDisplayName: names.uploaderApp,
    uploaderSecretRotation: settings.defender.uploaderSecretRotation,
    resourceGroupName: rgName,
    vault: functionApp.vault,
  });

  const setting = (key: "LIVE_RESPONSE_SCRIPT_WINDOWS" | "LIVE_RESPONSE_SCRIPT_UNIX" | "MDE_BASE_URL"): string =>
    settings.appSettings[key] ?? String(configSchema.shape[key].parse(undefined));

  // Stack outputs: names and ids only - no key, secret or connection string.
  const outputs = {
    resourceGroupName: rgName,
    functionAppName: functionApp.app.name,
    functionAppPrincipalId: functionApp.principalId,
    serviceBusNamespace: messaging.fullyQualifiedNamespace,
    stagingStorageAccount: storage.stagingAccount.name,
    eventGridEndpoint: eventGridTopics.analysisTopic.endpoint,
    keyVaultName: functionApp.vault.name,
    playbookId: sentinel.playbook.id,
    automationRuleIds: sentinel.automationRules.map((rule) => rule.id),
    libraryUpload: {
      enabled: settings.defender.libraryUploader,
      tenantId: settings.tenantId,
      clientId: defender.uploaderClientId ?? pulumi.output(""),
      clientSecretUri: defender.uploaderSecretUri ?? pulumi.output(""),
      mdeBaseUrl: setting("MDE_BASE_URL"),
      scripts: [setting("LIVE_RESPONSE_SCRIPT_WINDOWS"), setting("LIVE_RESPONSE_SCRIPT_UNIX")],
    },
  };

  return {
    names,
    resourceGroup,
    storage,
    messaging,
    eventGridTopics,
    eventGridSubscriptions,
    functionApp,
    access,
    sentinel,
    defender,
    outputs,
  };
}
