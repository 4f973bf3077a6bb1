import * as azure from "@pulumi/azure-native";
import * as pulumi from "@pulumi/pulumi";
import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { configSchema } from "../../shared/src/config.ts";
import { ConnectorAccess } from "./access.ts";
import { FunctionAppActivation } from "./activation.ts";
import { ConnectorDefender } from "./defender.ts";
import { ConnectorEventGridSubscriptions, ConnectorEventGridTopics } from "./eventing.ts";
import { ConnectorFunctionApp } from "./function-app.ts";
import { ConnectorMessaging } from "./messaging.ts";
import { resourceNames } from "./naming.ts";
import { ConnectorSentinel, workspaceId } from "./sentinel.ts";
import type { ConnectorSettings } from "./settings.ts";
import { ConnectorStorage } from "./storage.ts";
import { functionTriggers, queues } from "./topology.ts";

export function packageSha256(packagePath: string): string {
  if (!existsSync(packagePath)) {
    throw new Error(`Functions package ${packagePath} not found: run \`npm run build\` at the repository root first`);
  }
  return createHash("sha256").update(readFileSync(packagePath)).digest("hex");
}

/**
 * An explicit provider does not read the `azure-native:*` stack configuration: hand it the same
 * login (service principal, OIDC, managed identity) the default provider uses.
 */
const plainAuthKeys = ["clientId", "clientCertificatePath", "environment", "oidcRequestUrl", "oidcTokenFilePath"] as const;
const secretAuthKeys = ["clientSecret", "clientCertificatePassword", "oidcRequestToken", "oidcToken"] as const;
const flagAuthKeys = ["useOidc", "useMsi"] as const;
type StackAuth = Partial<Record<(typeof plainAuthKeys)[number], string>> &
  Partial<Record<(typeof secretAuthKeys)[number], pulumi.Output<string>>> &
  Partial<Record<(typeof flagAuthKeys)[number], boolean>>;

function providerAuthFromConfig(): StackAuth {
  const config = new pulumi.Config("azure-native");
  const auth: StackAuth = {};
  for (const key of plainAuthKeys) {
    const value = config.get(key);
    if (value) auth[key] = value;
  }
  for (const key of secretAuthKeys) {
    const value = config.getSecret(key);
    if (value) auth[key] = value;
  }
  for (const key of flagAuthKeys) {
    const value = config.getBoolean(key);
    if (value !== undefined) auth[key] = value;
  }
  return auth;
}

/** Declares one tenant's connector. */
export function createConnector(settings: ConnectorSettings) {
  const names = resourceNames(settings.tenantSlug, settings.subscriptionId);
  const packageHash = packageSha256(settings.functions.packagePath);
  const stackAuth = providerAuthFromConfig();
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
    packageSha256: packageHash,
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

  // After every role the app's identity needs (they can only be granted once the app exists):
  // restart onto the package and settings, sync triggers, wait for the functions to be listed.
  const activation = new FunctionAppActivation(
    "functions-activation",
    {
      appId: functionApp.app.id,
      packageSha256: packageHash,
      // A new ANY.RUN key (or any other setting) re-runs it, so the Key Vault reference is read again.
      settingsSha256: pulumi.secret(
        pulumi
          .all([settings.anyrunApiKey, pulumi.output(settings.appSettings)])
          .apply(([key, extra]) => createHash("sha256").update(JSON.stringify({ key, extra })).digest("hex")),
      ),
      expectedFunctions: Object.keys(functionTriggers),
      armBaseUrl: settings.appSettings["ARM_BASE_URL"] ?? String(configSchema.shape.ARM_BASE_URL.parse(undefined)),
      tenantId: settings.tenantId,
      // The stack's service-principal login, for the activation step's own ARM calls.
      ...(stackAuth.clientId ? { clientId: stackAuth.clientId } : {}),
      ...(stackAuth.clientSecret ? { clientSecret: stackAuth.clientSecret } : {}),
    },
    { dependsOn: [storage.packageBlob, functionApp.hostStorageRole, ...access.assignments, ...defender.functionAppRoleAssignments] },
  );

  const eventGridSubscriptions = new ConnectorEventGridSubscriptions("eventgrid-subscriptions", {
    resourceGroupName: rgName,
    storage,
    topics: eventGridTopics,
    functionAppId: functionApp.app.id,
    functionsReady: [activation],
  });

  const workspaceProvider =
    workspace.subscriptionId.toLowerCase() !== settings.subscriptionId.toLowerCase()
      ? new azure.Provider("sentinel-subscription", {
          ...stackAuth,
          subscriptionId: workspace.subscriptionId,
          tenantId: settings.tenantId,
          location,
        })
      : undefined;

  const intakeQueue = messaging.queues.get(queues.incidentIntake.name);
  if (!intakeQueue) throw new Error(`The topology's intake queue ${queues.incidentIntake.name} was not created`);
  const sentinel = new ConnectorSentinel("sentinel", {
    resourceGroupName: rgName,
    resourceGroupId: resourceGroup.id,
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
    activation,
    access,
    sentinel,
    defender,
    outputs,
  };
}
