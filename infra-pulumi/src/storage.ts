import * as azure from "@pulumi/azure-native";
import * as pulumi from "@pulumi/pulumi";
import { storageDefaults } from "./topology.ts";

export interface StorageArgs {
  readonly resourceGroupName: pulumi.Input<string>;
  readonly stagingAccountName: string;
  readonly hostAccountName: string;
  readonly sku: string;
  readonly stagingRetentionDays: number;
  readonly deadLetterRetentionDays: number;
  /** The zip built by `npm run build`. */
  readonly packagePath: string;
  readonly tags: Record<string, string>;
}

/** Blob name the Flex Consumption One Deploy flow itself uses in the deployment container. */
export const PACKAGE_BLOB_NAME = "released-package.zip";
export const DEPLOYMENT_CONTAINER = "app-package";

/**
 * Storage of one tenant:
 * - the staging account: private container for collected samples (lifecycle-deleted), the Event
 *   Grid dead-letter container and the jobs table. Shared keys are disabled: everything uses
 *   Entra ID, and the endpoint upload uses user-delegation SAS.
 * - the Functions host account: AzureWebJobsStorage (identity-based) and the Flex Consumption
 *   deployment container with the package.
 */
export class ConnectorStorage extends pulumi.ComponentResource {
  readonly stagingAccount: azure.storage.StorageAccount;
  readonly stagingContainer: azure.storage.BlobContainer;
  readonly deadLetterContainer: azure.storage.BlobContainer;
  readonly jobsTable: azure.storage.Table;
  /** Live Response leases (one session per device, tenant-wide caps). */
  readonly liveResponseTable: azure.storage.Table;
  readonly lifecycle: azure.storage.ManagementPolicy;
  readonly hostAccount: azure.storage.StorageAccount;
  readonly deploymentContainer: azure.storage.BlobContainer;
  readonly packageBlob: azure.storage.Blob;

  constructor(name: string, args: StorageArgs, opts?: pulumi.ComponentResourceOptions) {
    super("anyrun:connector:Storage", name, {}, opts);
    const parent = { parent: this };

    const hardened = {
      resourceGroupName: args.resourceGroupName,
      kind: "StorageV2",
      sku: { name: args.sku },
      accessTier: "Hot",
      allowBlobPublicAccess: false,
      minimumTlsVersion: "TLS1_2",
      enableHttpsTrafficOnly: true,
      allowCrossTenantReplication: false,
      defaultToOAuthAuthentication: true,
      tags: args.tags,
    } as const;

    this.stagingAccount = new azure.storage.StorageAccount(
      "staging",
      { ...hardened, accountName: args.stagingAccountName, allowSharedKeyAccess: false },
      parent,
    );
    const staging = { resourceGroupName: args.resourceGroupName, accountName: this.stagingAccount.name };
    this.stagingContainer = new azure.storage.BlobContainer(
      "staging-container",
      { ...staging, containerName: storageDefaults.stagingContainer, publicAccess: "None" },
      parent,
    );
    this.deadLetterContainer = new azure.storage.BlobContainer(
      "eventgrid-deadletters",
      { ...staging, containerName: storageDefaults.eventGridDeadLetterContainer, publicAccess: "None" },
      parent,
    );
    this.jobsTable = new azure.storage.Table("jobs-table", { ...staging, tableName: storageDefaults.jobsTable }, parent);
    this.liveResponseTable = new azure.storage.Table("liveresponse-table", { ...staging, tableName: storageDefaults.liveResponseTable }, parent);
    this.lifecycle = new azure.storage.ManagementPolicy(
      "staging-lifecycle",
      {
        ...staging,
        managementPolicyName: "default",
        policy: {
          rules: [
            {
              name: "delete-leftover-samples",
              enabled: true,
              type: "Lifecycle",
              definition: {
                filters: { blobTypes: ["blockBlob"], prefixMatch: [`${storageDefaults.stagingContainer}/`] },
                actions: { baseBlob: { delete: { daysAfterCreationGreaterThan: args.stagingRetentionDays } } },
              },
            },
            {
              name: "delete-old-eventgrid-deadletters",
              enabled: true,
              type: "Lifecycle",
              definition: {
                filters: { blobTypes: ["blockBlob"], prefixMatch: [`${storageDefaults.eventGridDeadLetterContainer}/`] },
                actions: { baseBlob: { delete: { daysAfterCreationGreaterThan: args.deadLetterRetentionDays } } },
              },
            },
          ],
        },
      },
      { parent: this, dependsOn: [this.stagingContainer, this.deadLetterContainer] },
    );

    // Shared keys stay enabled on the host account only: the azure-native Blob resource uploads
    // the package with the account key (pulumi/pulumi-azure-native#2015). The functions themselves
    // reach this account with their managed identity (AzureWebJobsStorage__accountName).
    this.hostAccount = new azure.storage.StorageAccount(
      "functions-host",
      { ...hardened, accountName: args.hostAccountName, allowSharedKeyAccess: true },
      parent,
    );
    this.deploymentContainer = new azure.storage.BlobContainer(
      "deployment-container",
      {
        resourceGroupName: args.resourceGroupName,
        accountName: this.hostAccount.name,
        containerName: DEPLOYMENT_CONTAINER,
        publicAccess: "None",
      },
      parent,
    );
    this.packageBlob = new azure.storage.Blob(
      "functions-package",
      {
        resourceGroupName: args.resourceGroupName,
        accountName: this.hostAccount.name,
        containerName: this.deploymentContainer.name,
        blobName: PACKAGE_BLOB_NAME,
        type: "Block",
        contentType: "application/zip",
        source: new pulumi.asset.FileAsset(args.packagePath),
      },
      parent,
    );

    this.registerOutputs({});
  }
}
