// Pulumi program: one stack per customer tenant deploys the whole ANY.RUN Sentinel connector.
// See README.md for configuration, permissions and the steps that are scripts.
import { createConnector } from "./src/connector.ts";
import { loadSettings } from "./src/settings.ts";

const connector = createConnector(loadSettings(__dirname));

export const resourceGroupName = connector.outputs.resourceGroupName;
export const functionAppName = connector.outputs.functionAppName;
export const functionAppPrincipalId = connector.outputs.functionAppPrincipalId;
export const serviceBusNamespace = connector.outputs.serviceBusNamespace;
export const stagingStorageAccount = connector.outputs.stagingStorageAccount;
export const eventGridEndpoint = connector.outputs.eventGridEndpoint;
export const keyVaultName = connector.outputs.keyVaultName;
export const playbookId = connector.outputs.playbookId;
export const automationRuleIds = connector.outputs.automationRuleIds;
export const libraryUpload = connector.outputs.libraryUpload;
