import * as azure from "@pulumi/azure-native";
import * as pulumi from "@pulumi/pulumi";
import { buildAppSettings } from "./app-settings.ts";
import { assignRole } from "./roles.ts";
import { DEPLOYMENT_CONTAINER, ConnectorStorage } from "./storage.ts";

export interface FunctionAppArgs {
  readonly resourceGroupName: pulumi.Input<string>;
  readonly location: string;
  readonly tenantId: string;
  readonly subscriptionId: string;
  readonly names: {
    readonly plan: string;
    readonly functionApp: string;
    readonly keyVault: string;
    readonly logAnalytics: string;
    readonly appInsights: string;
  };
  readonly storage: ConnectorStorage;
  readonly serviceBusFqdn: string;
  readonly eventGridEndpoint: pulumi.Input<string>;
  readonly anyrunApiKey: pulumi.Output<string>;
  readonly extraSettings: Readonly<Record<string, string>>;
  readonly packageSha256: string;
  readonly maximumInstanceCount: number;
  readonly instanceMemoryMB: number;
  readonly keyVault: { readonly purgeProtection: boolean; readonly softDeleteRetentionDays: number };
  readonly tags: Record<string, string>;
}

export const ANYRUN_KEY_SECRET_NAME = "anyrun-api-key";

/**
 * The Function App on Flex Consumption (Linux, Node 22) with a system-assigned identity,
 * Application Insights (Entra-only ingestion) and the Key Vault holding the ANY.RUN key.
 */
export class ConnectorFunctionApp extends pulumi.ComponentResource {
  readonly plan: azure.web.AppServicePlan;
  readonly app: azure.web.WebApp;
  readonly principalId: pulumi.Output<string>;
  readonly vault: azure.keyvault.Vault;
  readonly anyrunKeySecret: azure.keyvault.Secret;
  readonly anyrunKeySecretUri: pulumi.Output<string>;
  readonly logAnalytics: azure.operationalinsights.Workspace;
  readonly appInsights: azure.applicationinsights.Component;
  readonly appSettings: Record<string, pulumi.Input<string>>;
  /** Blob Data Owner on the host account: the host needs it to load the package and start. */
  readonly hostStorageRole: azure.authorization.RoleAssignment;

  constructor(name: string, args: FunctionAppArgs, opts?: pulumi.ComponentResourceOptions) {
    super("anyrun:connector:FunctionApp", name, {}, opts);
    const parent = { parent: this };
    const rg = { resourceGroupName: args.resourceGroupName, location: args.location, tags: args.tags };

    this.logAnalytics = new azure.operationalinsights.Workspace(
      "logs",
      { ...rg, workspaceName: args.names.logAnalytics, sku: { name: "PerGB2018" }, retentionInDays: 30 },
      parent,
    );
    this.appInsights = new azure.applicationinsights.Component(
      "appinsights",
      {
        ...rg,
        resourceName: args.names.appInsights,
        kind: "web",
        applicationType: "web",
        workspaceResourceId: this.logAnalytics.id,
        ingestionMode: "LogAnalytics",
        disableLocalAuth: true,
      },
      parent,
    );

    this.vault = new azure.keyvault.Vault(
      "keyvault",
      {
        ...rg,
        vaultName: args.names.keyVault,
        properties: {
          tenantId: args.tenantId,
          sku: { family: "A", name: "standard" },
          enableRbacAuthorization: true,
          enableSoftDelete: true,
          softDeleteRetentionInDays: args.keyVault.softDeleteRetentionDays,
          // ARM rejects an explicit `false`: the property is either true or absent.
          ...(args.keyVault.purgeProtection ? { enablePurgeProtection: true } : {}),
          publicNetworkAccess: "Enabled",
        },
      },
      parent,
    );
    this.anyrunKeySecret = new azure.keyvault.Secret(
      "anyrun-api-key",
      {
        resourceGroupName: args.resourceGroupName,
        vaultName: this.vault.name,
        secretName: ANYRUN_KEY_SECRET_NAME,
        properties: { value: args.anyrunApiKey, contentType: "text/plain" },
      },
      parent,
    );
    this.anyrunKeySecretUri = pulumi.interpolate`${this.vault.properties.vaultUri}secrets/${ANYRUN_KEY_SECRET_NAME}`;

    this.plan = new azure.web.AppServicePlan(
      "plan",
      { ...rg, name: args.names.plan, kind: "functionapp", reserved: true, sku: { name: "FC1", tier: "FlexConsumption" } },
      parent,
    );

    this.appSettings = buildAppSettings({
      serviceBusFqdn: args.serviceBusFqdn,
      stagingBlobUrl: args.storage.stagingAccount.primaryEndpoints.blob,
      stagingTableUrl: args.storage.stagingAccount.primaryEndpoints.table,
      eventGridEndpoint: args.eventGridEndpoint,
      anyrunKeySecretUri: this.anyrunKeySecretUri,
      hostStorageAccountName: args.storage.hostAccount.name,
      appInsightsConnectionString: this.appInsights.connectionString,
      packageSha256: args.packageSha256,
      extra: args.extraSettings,
    });

    this.app = new azure.web.WebApp(
      "functionapp",
      {
        ...rg,
        name: args.names.functionApp,
        kind: "functionapp,linux",
        serverFarmId: this.plan.id,
        httpsOnly: true,
        identity: { type: "SystemAssigned" },
        keyVaultReferenceIdentity: "SystemAssigned",
        functionAppConfig: {
          deployment: {
            storage: {
              type: "blobContainer",
              value: pulumi.interpolate`${args.storage.hostAccount.primaryEndpoints.blob}${DEPLOYMENT_CONTAINER}`,
              authentication: { type: "SystemAssignedIdentity" },
            },
          },
          runtime: { name: "node", version: "22" },
          scaleAndConcurrency: {
            maximumInstanceCount: args.maximumInstanceCount,
            instanceMemoryMB: args.instanceMemoryMB,
          },
        },
        siteConfig: {
          minTlsVersion: "1.2",
          ftpsState: "Disabled",
          http20Enabled: true,
          appSettings: Object.entries(this.appSettings).map(([name, value]) => ({ name, value })),
        },
      },
      { parent: this, dependsOn: [args.storage.packageBlob] },
    );
    this.principalId = this.app.identity.apply((identity) => {
      if (!identity?.principalId && !pulumi.runtime.isDryRun()) {
        throw new Error("The Function App has no system-assigned identity");
      }
      return identity?.principalId ?? "";
    });
    this.hostStorageRole = assignRole(
      "functionapp-host-storage",
      args.subscriptionId,
      {
        principalId: this.principalId,
        principalType: "ServicePrincipal",
        role: "storageBlobDataOwner",
        scope: args.storage.hostAccount.id,
        description: "Functions host: AzureWebJobsStorage and the deployment package",
      },
      parent,
    );
    this.registerOutputs({});
  }
}
