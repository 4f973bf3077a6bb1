import * as pulumi from "@pulumi/pulumi";

/**
 * Pulumi mocks that record every resource and give them ARM-shaped ids and the computed outputs
 * the program reads (endpoints, identities), so assertions can check real scopes and references.
 */
export const SUBSCRIPTION_ID = "11111111-2222-4333-8444-555555555555";
export const TENANT_ID = "99999999-8888-4777-8666-555555555555";
export const LOCATION = "westeurope";
export const FUNCTION_PRINCIPAL_ID = "f0f0f0f0-0000-4000-8000-000000000001";
export const DEPLOYER_OBJECT_ID = "d0d0d0d0-0000-4000-8000-000000000002";
export const WDATP_SP_OBJECT_ID = "a7a7a7a7-0000-4000-8000-000000000003";
export const SECURITY_INSIGHTS_SP_OBJECT_ID = "5e5e5e5e-0000-4000-8000-000000000004";
export const UPLOADER_CLIENT_ID = "c1c1c1c1-0000-4000-8000-000000000005";
export const UPLOADER_PASSWORD = "uploader-password-value-that-must-stay-secret";
export const WDATP_APP_ROLE_IDS: Record<string, string> = {
  "Machine.Read.All": "ea8291d3-4b9a-44b5-bc3a-6cea3026dc79",
  "Machine.ReadWrite.All": "aa027352-232b-4ed4-b963-a705fc4d6d2c",
  "Machine.LiveResponse": "7f9b3ab5-31e2-4a79-91b9-1e6d00d3c29e",
  "Library.Manage": "41269fc5-d04d-4bfd-bce7-43a51cea049a",
};

export interface RecordedResource {
  readonly type: string;
  readonly name: string;
  readonly inputs: Record<string, any>;
  readonly id: string;
  readonly state: Record<string, any>;
  /** Provider reference (`<urn>::<id>`) when the resource names one explicitly or by inheritance. */
  readonly provider?: string;
}

export const recorded: RecordedResource[] = [];

function mockResource(type: string, name: string, inputs: Record<string, any>): { id: string; state: Record<string, any> } {
  const sub = `/subscriptions/${SUBSCRIPTION_ID}`;
  const rg = `${sub}/resourceGroups/${inputs.resourceGroupName ?? "unknown-rg"}`;
  const storage = `${rg}/providers/Microsoft.Storage/storageAccounts/${inputs.accountName}`;
  const sb = `${rg}/providers/Microsoft.ServiceBus/namespaces/${inputs.namespaceName}`;
  const identity = (principalId: string) => ({ type: "SystemAssigned", principalId, tenantId: TENANT_ID });
  switch (type) {
    case "azure-native:resources:ResourceGroup":
      return { id: `${sub}/resourceGroups/${inputs.resourceGroupName}`, state: { name: inputs.resourceGroupName } };
    case "azure-native:storage:StorageAccount":
      return {
        id: storage,
        state: {
          name: inputs.accountName,
          primaryEndpoints: {
            blob: `https://${inputs.accountName}.blob.core.windows.net/`,
            table: `https://${inputs.accountName}.table.core.windows.net/`,
            queue: `https://${inputs.accountName}.queue.core.windows.net/`,
          },
        },
      };
    case "azure-native:storage:BlobContainer":
      return { id: `${storage}/blobServices/default/containers/${inputs.containerName}`, state: { name: inputs.containerName } };
    case "azure-native:storage:Table":
      return { id: `${storage}/tableServices/default/tables/${inputs.tableName}`, state: { name: inputs.tableName } };
    case "azure-native:storage:Blob":
      return { id: `${storage}/blobServices/default/containers/${inputs.containerName}/blobs/${inputs.blobName}`, state: { name: inputs.blobName } };
    case "azure-native:servicebus:Namespace":
      return { id: sb, state: { name: inputs.namespaceName } };
    case "azure-native:servicebus:Queue":
      return { id: `${sb}/queues/${inputs.queueName}`, state: { name: inputs.queueName } };
    case "azure-native:servicebus:Topic":
      return { id: `${sb}/topics/${inputs.topicName}`, state: { name: inputs.topicName } };
    case "azure-native:servicebus:Subscription":
      return {
        id: `${sb}/topics/${inputs.topicName}/subscriptions/${inputs.subscriptionName}`,
        state: { name: inputs.subscriptionName },
      };
    case "azure-native:servicebus:Rule":
      return {
        id: `${sb}/topics/${inputs.topicName}/subscriptions/${inputs.subscriptionName}/rules/${inputs.ruleName}`,
        state: { name: inputs.ruleName },
      };
    case "azure-native:eventgrid:SystemTopic":
      return {
        id: `${rg}/providers/Microsoft.EventGrid/systemTopics/${inputs.systemTopicName}`,
        state: { name: inputs.systemTopicName, identity: identity(`principal-${inputs.systemTopicName}`) },
      };
    case "azure-native:eventgrid:Topic":
      return {
        id: `${rg}/providers/Microsoft.EventGrid/topics/${inputs.topicName}`,
        state: {
          name: inputs.topicName,
          endpoint: `https://${inputs.topicName}.${LOCATION}-1.eventgrid.azure.net/api/events`,
          identity: identity(`principal-${inputs.topicName}`),
        },
      };
    case "azure-native:web:AppServicePlan":
      return { id: `${rg}/providers/Microsoft.Web/serverfarms/${inputs.name}`, state: { name: inputs.name } };
    case "azure-native:web:WebApp":
      return {
        id: `${rg}/providers/Microsoft.Web/sites/${inputs.name}`,
        state: { name: inputs.name, identity: identity(FUNCTION_PRINCIPAL_ID) },
      };
    case "azure-native:keyvault:Vault":
      return {
        id: `${rg}/providers/Microsoft.KeyVault/vaults/${inputs.vaultName}`,
        state: { name: inputs.vaultName, properties: { ...inputs.properties, vaultUri: `https://${inputs.vaultName}.vault.azure.net/` } },
      };
    case "azure-native:keyvault:Secret":
      return {
        id: `${rg}/providers/Microsoft.KeyVault/vaults/${inputs.vaultName}/secrets/${inputs.secretName}`,
        state: { name: inputs.secretName, properties: { contentType: inputs.properties?.contentType } },
      };
    case "azure-native:operationalinsights:Workspace":
      return { id: `${rg}/providers/Microsoft.OperationalInsights/workspaces/${inputs.workspaceName}`, state: { name: inputs.workspaceName } };
    case "azure-native:applicationinsights:Component":
      return {
        id: `${rg}/providers/Microsoft.Insights/components/${inputs.resourceName}`,
        state: {
          name: inputs.resourceName,
          connectionString: "InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=https://westeurope-5.in.applicationinsights.azure.com/",
        },
      };
    case "azure-native:resources:Resource":
      return {
        id: `${rg}/providers/${inputs.resourceProviderNamespace}/${inputs.resourceType}/${inputs.resourceName}`,
        state: { name: inputs.resourceName },
      };
    case "azure-native:logic:Workflow":
      return {
        id: `${rg}/providers/Microsoft.Logic/workflows/${inputs.workflowName}`,
        state: { name: inputs.workflowName, identity: identity("playbook-principal-id") },
      };
    case "azure-native:securityinsights:AutomationRule":
      return {
        id: `${rg}/providers/Microsoft.OperationalInsights/workspaces/${inputs.workspaceName}/providers/Microsoft.SecurityInsights/automationRules/${inputs.automationRuleId}`,
        state: { name: inputs.automationRuleId },
      };
    case "azure-native:authorization:RoleAssignment":
      return {
        id: `${inputs.scope}/providers/Microsoft.Authorization/roleAssignments/${inputs.roleAssignmentName}`,
        state: { name: inputs.roleAssignmentName },
      };
    case "azuread:index/application:Application":
      return { id: `/applications/uploader-object-id`, state: { clientId: UPLOADER_CLIENT_ID, objectId: "uploader-object-id" } };
    case "azuread:index/servicePrincipal:ServicePrincipal":
      return { id: "uploader-sp-object-id", state: { objectId: "uploader-sp-object-id" } };
    case "azuread:index/applicationPassword:ApplicationPassword":
      return { id: "uploader-password-id", state: { value: UPLOADER_PASSWORD, keyId: "key-id" } };
    default:
      return { id: `${rg}/providers/mock/${type}/${name}`, state: {} };
  }
}

export const mocks: pulumi.runtime.Mocks = {
  newResource(args) {
    const { id, state } = mockResource(args.type, args.name, args.inputs);
    const fullState = { ...args.inputs, ...state };
    recorded.push({ type: args.type, name: args.name, inputs: args.inputs, id, state: fullState, provider: args.provider });
    return { id, state: fullState };
  },
  call(args) {
    if (args.token === "azuread:index/getServicePrincipal:getServicePrincipal") {
      if (args.inputs.clientId === "fc780465-2017-40d4-a0c5-307022471b92") {
        return { objectId: WDATP_SP_OBJECT_ID, appRoleIds: WDATP_APP_ROLE_IDS, clientId: args.inputs.clientId };
      }
      if (args.inputs.clientId === "98785600-1bb7-4fb9-b9fa-19afe2c8a360") {
        return { objectId: SECURITY_INSIGHTS_SP_OBJECT_ID, appRoleIds: {}, clientId: args.inputs.clientId };
      }
      throw new Error(`unexpected service principal lookup ${JSON.stringify(args.inputs)}`);
    }
    if (args.token === "azure-native:authorization:getClientConfig") {
      return { objectId: DEPLOYER_OBJECT_ID, tenantId: TENANT_ID, subscriptionId: SUBSCRIPTION_ID, clientId: "deployer-client" };
    }
    throw new Error(`unexpected invoke ${args.token}`);
  },
};

/** The value of an Output (mocks run as an update, so applies run). */
export function resolve<T>(value: pulumi.Input<T>): Promise<pulumi.Unwrap<T>> {
  return new Promise((res) => {
    pulumi.output(value).apply((v) => {
      res(v);
      return v;
    });
  });
}

/** Waits until no new resource has been registered for a while. */
export async function settle(): Promise<void> {
  let last = -1;
  let stableRounds = 0;
  while (stableRounds < 5) {
    await new Promise((r) => setTimeout(r, 25));
    if (recorded.length === last) stableRounds += 1;
    else {
      stableRounds = 0;
      last = recorded.length;
    }
  }
}

export function ofType(type: string): RecordedResource[] {
  return recorded.filter((r) => r.type === type);
}

export function one(type: string, predicate: (r: RecordedResource) => boolean = () => true): RecordedResource {
  const found = ofType(type).filter(predicate);
  if (found.length !== 1) throw new Error(`expected exactly one ${type}, found ${found.length}`);
  return found[0]!;
}
