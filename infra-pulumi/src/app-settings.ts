import * as pulumi from "@pulumi/pulumi";
import { connectionSettings, storageDefaults } from "./topology.ts";

export interface AppSettingInputs {
  readonly serviceBusFqdn: string;
  readonly stagingBlobUrl: pulumi.Input<string>;
  readonly stagingTableUrl: pulumi.Input<string>;
  readonly eventGridEndpoint: pulumi.Input<string>;
  /** Versionless Key Vault secret URI of the ANY.RUN API key (rotation needs no redeploy). */
  readonly anyrunKeySecretUri: pulumi.Input<string>;
  readonly hostStorageAccountName: pulumi.Input<string>;
  readonly appInsightsConnectionString: pulumi.Input<string>;
  /** SHA-256 of the deployed package: a new value restarts the app onto the new package. */
  readonly packageSha256: string;
  /** Validated extra settings from stack configuration (names from shared/src/config.ts). */
  readonly extra: Readonly<Record<string, string>>;
}

/**
 * The Function App's settings. Names are the ones shared/src/config.ts reads, plus the Functions
 * host's identity-based connection settings (no connection strings, no keys).
 */
export function buildAppSettings(inputs: AppSettingInputs): Record<string, pulumi.Input<string>> {
  return {
    ...inputs.extra,
    // Functions host: identity-based storage and trigger connection.
    AzureWebJobsStorage__accountName: inputs.hostStorageAccountName,
    AzureWebJobsStorage__credential: "managedidentity",
    [`${connectionSettings.serviceBus}__fullyQualifiedNamespace`]: inputs.serviceBusFqdn,
    [`${connectionSettings.serviceBus}__credential`]: "managedidentity",
    APPLICATIONINSIGHTS_CONNECTION_STRING: inputs.appInsightsConnectionString,
    APPLICATIONINSIGHTS_AUTHENTICATION_STRING: "Authorization=AAD",
    // Connector configuration (shared/src/config.ts).
    AZURE_CREDENTIAL: "default",
    SERVICEBUS_NAMESPACE: inputs.serviceBusFqdn,
    STORAGE_BLOB_URL: inputs.stagingBlobUrl,
    STORAGE_TABLE_URL: inputs.stagingTableUrl,
    STAGING_CONTAINER: storageDefaults.stagingContainer,
    JOBS_TABLE: storageDefaults.jobsTable,
    LIVE_RESPONSE_TABLE: storageDefaults.liveResponseTable,
    EVENTGRID_ENDPOINT: inputs.eventGridEndpoint,
    ANYRUN_API_KEY: pulumi.interpolate`@Microsoft.KeyVault(SecretUri=${inputs.anyrunKeySecretUri})`,
    CONNECTOR_PACKAGE_SHA256: inputs.packageSha256,
  };
}
