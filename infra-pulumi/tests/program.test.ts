import * as pulumi from "@pulumi/pulumi";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { configSchema, parseConfig } from "../../shared/src/config.ts";
import { compactTriggerBody } from "../../shared/src/incident-trigger.ts";
import { evaluateWdl } from "./helpers/wdl.ts";
import {
  allEventGridTopics,
  allQueues,
  allTopics,
  connectionSettings,
  eventTypes,
  functionTriggers,
  queues,
  storageDefaults,
} from "../../shared/src/topology.ts";
import {
  DEPLOYER_OBJECT_ID,
  FUNCTION_PRINCIPAL_ID,
  SECURITY_INSIGHTS_SP_OBJECT_ID,
  SUBSCRIPTION_ID,
  TENANT_ID,
  UPLOADER_PASSWORD,
  WDATP_APP_ROLE_IDS,
  WDATP_SP_OBJECT_ID,
  mocks,
  ofType,
  one,
  recorded,
  resolve,
  settle,
  type RecordedResource,
} from "./helpers/mocks.ts";

const PROJECT = "anyrun-sentinel-connector";
const ANYRUN_KEY = "anyrun-api-key-value-that-must-stay-secret";
const SENTINEL_RG = "rg-soc-sentinel";
const WORKSPACE = "law-soc-sentinel";
const WORKSPACE_ID = `/subscriptions/${SUBSCRIPTION_ID}/resourceGroups/${SENTINEL_RG}/providers/Microsoft.OperationalInsights/workspaces/${WORKSPACE}`;

const ROLE = {
  blobOwner: "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
  blobContributor: "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
  blobDelegator: "db58b8e5-c6ad-4a2a-8342-4190687cbf4a",
  tableContributor: "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
  sbSender: "69a216fc-b8fb-44d8-bc22-1f3c2cd27a39",
  sbReceiver: "4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0",
  egSender: "d5a91429-5739-47e2-a06b-3470a27159e7",
  kvSecretsUser: "4633458b-17de-408a-b874-0445c86b69e6",
  metricsPublisher: "3913510d-42f4-4e42-8a64-420c390055eb",
  sentinelReader: "8d289c81-5878-46d4-8554-54e1e3d8b5cb",
  sentinelResponder: "3e150937-b8fe-4cfb-8069-0eaf05ecd056",
  sentinelContributor: "ab8e14d6-4a74-4a29-9ba8-549422addade",
  sentinelAutomationContributor: "f4c81013-99ee-4d62-a7ee-b3f1f648599a",
};

let stackOutputs: Record<string, unknown>;
let appSettings: Record<string, string>;
let functionApp: RecordedResource;

let dir: string;
afterAll(() => rmSync(dir, { recursive: true, force: true }));

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), "infra-test-"));
  const packagePath = path.join(dir, "functions.zip");
  writeFileSync(packagePath, "not really a zip, only hashed by the program");
  pulumi.runtime.setAllConfig(
    {
      "azure-native:tenantId": TENANT_ID,
      "azuread:tenantId": TENANT_ID,
      "azure-native:subscriptionId": SUBSCRIPTION_ID,
      "azure-native:location": "westeurope",
      [`${PROJECT}:tenant`]: "contoso",
      [`${PROJECT}:anyrunApiKey`]: ANYRUN_KEY,
      [`${PROJECT}:sentinel`]: JSON.stringify({
        resourceGroup: SENTINEL_RG,
        workspaceName: WORKSPACE,
        runOnIncidentUpdate: true,
      }),
      [`${PROJECT}:appSettings`]: JSON.stringify({ ANYRUN_OPT_PRIVACY: "owner", ANYRUN_OPT_TIMEOUT: 180 }),
      [`${PROJECT}:functions`]: JSON.stringify({ packagePath }),
    },
    [`${PROJECT}:anyrunApiKey`],
  );
  await pulumi.runtime.setMocks(mocks, PROJECT, "contoso", false);
  const program = (await import("../index.ts")) as Record<string, unknown>;
  stackOutputs = {};
  for (const [key, value] of Object.entries(program)) {
    if (key === "default") continue;
    stackOutputs[key] = await resolve(value as pulumi.Input<unknown>);
  }
  await settle();
  functionApp = one("azure-native:web:WebApp");
  appSettings = Object.fromEntries(
    (functionApp.inputs.siteConfig.appSettings as { name: string; value: string }[]).map((s) => [s.name, s.value]),
  );
}, 120_000);

/** Mocks receive secret inputs wrapped in Pulumi's secret signature. */
function isSecret(value: unknown): boolean {
  return (
    typeof value === "object" &&
    value !== null &&
    (value as Record<string, unknown>)[pulumi.runtime.specialSigKey] === pulumi.runtime.specialSecretSig
  );
}

const roleAssignments = () => ofType("azure-native:authorization:RoleAssignment");
const roleId = (guid: string) => `/subscriptions/${SUBSCRIPTION_ID}/providers/Microsoft.Authorization/roleDefinitions/${guid}`;
const grantsTo = (principalId: string, guid: string) =>
  roleAssignments()
    .filter((r) => r.inputs.principalId === principalId && r.inputs.roleDefinitionId === roleId(guid))
    .map((r) => r.inputs.scope as string);

describe("Service Bus from the topology", () => {
  it("creates a Standard namespace with local (SAS) auth disabled", () => {
    const ns = one("azure-native:servicebus:Namespace");
    expect(ns.inputs.sku).toEqual({ name: "Standard", tier: "Standard" });
    expect(ns.inputs.disableLocalAuth).toBe(true);
    expect(ns.inputs.minimumTlsVersion).toBe("1.2");
  });

  it("creates exactly the declared queues with their settings", () => {
    const created = ofType("azure-native:servicebus:Queue");
    expect(created.map((q) => q.inputs.queueName).sort()).toEqual(allQueues().map((q) => q.name).sort());
    for (const q of allQueues()) {
      const queue = one("azure-native:servicebus:Queue", (r) => r.inputs.queueName === q.name);
      expect(queue.inputs).toMatchObject({
        maxDeliveryCount: q.maxDeliveryCount,
        lockDuration: "PT1M",
        requiresDuplicateDetection: true,
        duplicateDetectionHistoryTimeWindow: `PT${q.duplicateDetectionWindowMinutes}M`,
        deadLetteringOnMessageExpiration: q.deadLetterOnExpiration,
        defaultMessageTimeToLive: `P${q.defaultMessageTtlDays}D`,
        requiresSession: false,
      });
    }
  });

  it("creates the declared topics, subscriptions and correlation filters", () => {
    expect(ofType("azure-native:servicebus:Topic").map((t) => t.inputs.topicName).sort()).toEqual(
      allTopics().map((t) => t.name).sort(),
    );
    const declaredSubs = allTopics().flatMap((t) => t.subscriptions.map((s) => ({ topic: t, sub: s })));
    expect(ofType("azure-native:servicebus:Subscription")).toHaveLength(declaredSubs.length);
    for (const { topic, sub } of declaredSubs) {
      const t = one("azure-native:servicebus:Topic", (r) => r.inputs.topicName === topic.name);
      expect(t.inputs).toMatchObject({
        requiresDuplicateDetection: true,
        duplicateDetectionHistoryTimeWindow: `PT${topic.duplicateDetectionWindowMinutes}M`,
        defaultMessageTimeToLive: `P${topic.defaultMessageTtlDays}D`,
      });
      const s = one(
        "azure-native:servicebus:Subscription",
        (r) => r.inputs.topicName === topic.name && r.inputs.subscriptionName === sub.name,
      );
      expect(s.inputs).toMatchObject({
        maxDeliveryCount: sub.maxDeliveryCount,
        lockDuration: "PT1M",
        deadLetteringOnMessageExpiration: sub.deadLetterOnExpiration,
        deadLetteringOnFilterEvaluationExceptions: sub.deadLetterOnFilterEvaluationExceptions,
      });
      // The subscription's `$Default` rule carries the filter, so no catch-all rule is left.
      const rule = one(
        "azure-native:servicebus:DefaultRule",
        (r) => r.inputs.topicName === topic.name && r.inputs.subscriptionName === sub.name,
      );
      expect(ofType("azure-native:servicebus:Rule")).toEqual([]);
      expect(rule.inputs.filterType).toBe("CorrelationFilter");
      expect(rule.inputs.correlationFilter.properties).toEqual(sub.filter);
    }
  });
});

describe("Event Grid", () => {
  const stagingAccount = () => one("azure-native:storage:StorageAccount", (r) => r.inputs.allowSharedKeyAccess === false);

  it("puts a system topic on the staging account and a custom topic for analysis events", () => {
    const system = one("azure-native:eventgrid:SystemTopic");
    expect(system.inputs.systemTopicName).toBe("staging-blob-events");
    expect(system.inputs.topicType).toBe("Microsoft.Storage.StorageAccounts");
    expect(system.inputs.source).toBe(stagingAccount().id);
    const custom = one("azure-native:eventgrid:Topic");
    expect(custom.inputs.topicName).toMatch(/^analysis-events-contoso-[0-9a-f]{6}$/);
    expect(custom.inputs.disableLocalAuth).toBe(true);
    expect(custom.inputs.inputSchema).toBe("EventGridSchema");
  });

  it("filters the BlobCreated subscription to the staging container and complete uploads", () => {
    const sub = one("azure-native:eventgrid:SystemTopicEventSubscription");
    expect(sub.inputs.eventSubscriptionName).toBe("submit-file");
    expect(sub.inputs.filter.includedEventTypes).toEqual([eventTypes.blobCreated]);
    expect(sub.inputs.filter.subjectBeginsWith).toBe(
      `/blobServices/default/containers/${storageDefaults.stagingContainer}/blobs/`,
    );
    expect(sub.inputs.filter.advancedFilters).toEqual([
      { operatorType: "StringIn", key: "data.api", values: ["PutBlob", "PutBlockList"] },
    ]);
  });

  it("sets retry policy and identity-based dead-lettering on every subscription", () => {
    const subs = [
      ...ofType("azure-native:eventgrid:SystemTopicEventSubscription"),
      ...ofType("azure-native:eventgrid:EventSubscription"),
    ];
    const declared = allEventGridTopics().flatMap((t) => t.subscriptions);
    expect(subs).toHaveLength(declared.length);
    for (const d of declared) {
      const s = subs.find((r) => r.inputs.eventSubscriptionName === d.name)!;
      expect(s.inputs.retryPolicy).toEqual({
        maxDeliveryAttempts: d.maxDeliveryAttempts,
        eventTimeToLiveInMinutes: d.eventTimeToLiveMinutes,
      });
      expect(s.inputs.deadLetterWithResourceIdentity).toEqual({
        identity: { type: "SystemAssigned" },
        deadLetterDestination: {
          endpointType: "StorageBlob",
          resourceId: stagingAccount().id,
          blobContainerName: storageDefaults.eventGridDeadLetterContainer,
        },
      });
    }
    const custom = one("azure-native:eventgrid:EventSubscription");
    expect(custom.inputs.scope).toBe(one("azure-native:eventgrid:Topic").id);
    expect(custom.inputs.filter.includedEventTypes).toEqual([eventTypes.analysisCompleted]);
  });
});

describe("every function trigger points at an existing entity", () => {
  for (const [fn, trigger] of Object.entries(functionTriggers)) {
    it(`${fn} (${trigger.type})`, () => {
      if (trigger.type === "serviceBusQueue") {
        const q = one("azure-native:servicebus:Queue", (r) => r.inputs.queueName === trigger.queue);
        expect(grantsTo(FUNCTION_PRINCIPAL_ID, ROLE.sbReceiver)).toContain(q.id);
      } else if (trigger.type === "serviceBusTopic") {
        const s = one(
          "azure-native:servicebus:Subscription",
          (r) => r.inputs.topicName === trigger.topic && r.inputs.subscriptionName === trigger.subscription,
        );
        expect(grantsTo(FUNCTION_PRINCIPAL_ID, ROLE.sbReceiver)).toContain(s.id);
      } else if (trigger.type === "eventGrid") {
        const declaredTopic = allEventGridTopics().find((t) => t.name === trigger.topic)!;
        expect(declaredTopic.subscriptions.map((s) => s.name)).toContain(trigger.subscription);
        const subs = [
          ...ofType("azure-native:eventgrid:SystemTopicEventSubscription"),
          ...ofType("azure-native:eventgrid:EventSubscription"),
        ].filter((r) => r.inputs.eventSubscriptionName === trigger.subscription);
        expect(subs).toHaveLength(1);
        const topic =
          declaredTopic.source === "storage"
            ? one("azure-native:eventgrid:SystemTopic", (r) => r.inputs.systemTopicName === trigger.topic)
            : one("azure-native:eventgrid:Topic");
        if (declaredTopic.source === "storage") expect(subs[0]!.inputs.systemTopicName).toBe(topic.inputs.systemTopicName);
        else expect(subs[0]!.inputs.scope).toBe(topic.id);
        expect(subs[0]!.inputs.destination).toMatchObject({
          endpointType: "AzureFunction",
          resourceId: `${functionApp.id}/functions/${fn}`,
          maxEventsPerBatch: 1,
        });
      } else if (trigger.type === "http") {
        // An HTTP function lives on the Function App itself (keys are the host's). The operator
        // replay function reads every dead-letter sub-queue, re-sends to every queue and topic and
        // reads / deletes Event Grid dead letters: its identity must reach all of them.
        expect(functionApp.type).toBe("azure-native:web:WebApp");
        expect(trigger.authLevel).not.toBe("anonymous");
        const receivable = [...ofType("azure-native:servicebus:Queue"), ...ofType("azure-native:servicebus:Subscription")].map((r) => r.id);
        expect(grantsTo(FUNCTION_PRINCIPAL_ID, ROLE.sbReceiver)).toEqual(expect.arrayContaining(receivable));
        const sendable = [...ofType("azure-native:servicebus:Queue"), ...ofType("azure-native:servicebus:Topic")].map((r) => r.id);
        expect(grantsTo(FUNCTION_PRINCIPAL_ID, ROLE.sbSender)).toEqual(expect.arrayContaining(sendable));
        const staging = one("azure-native:storage:StorageAccount", (r) => r.inputs.allowSharedKeyAccess === false);
        expect(grantsTo(FUNCTION_PRINCIPAL_ID, ROLE.blobContributor)).toContain(
          `${staging.id}/blobServices/default/containers/${storageDefaults.eventGridDeadLetterContainer}`,
        );
      } else {
        throw new Error(`trigger type ${(trigger as { type: string }).type} has no infrastructure check`);
      }
    });
  }
});

describe("storage", () => {
  it("hardens the staging account and expires leftover samples", () => {
    const staging = one("azure-native:storage:StorageAccount", (r) => r.inputs.allowSharedKeyAccess === false);
    expect(staging.inputs).toMatchObject({
      allowBlobPublicAccess: false,
      minimumTlsVersion: "TLS1_2",
      enableHttpsTrafficOnly: true,
      kind: "StorageV2",
    });
    const container = one("azure-native:storage:BlobContainer", (r) => r.inputs.containerName === storageDefaults.stagingContainer);
    expect(container.inputs.publicAccess).toBe("None");
    expect(container.inputs.accountName).toBe(staging.inputs.accountName);
    const policy = one("azure-native:storage:ManagementPolicy");
    const rule = policy.inputs.policy.rules.find((r: any) => r.name === "delete-leftover-samples");
    expect(rule.definition.filters.prefixMatch).toEqual([`${storageDefaults.stagingContainer}/`]);
    expect(rule.definition.actions.baseBlob.delete.daysAfterCreationGreaterThan).toBe(1);
    const tables = ofType("azure-native:storage:Table");
    expect(tables.map((t) => t.inputs.tableName).sort()).toEqual([storageDefaults.jobsTable, storageDefaults.liveResponseTable].sort());
    for (const table of tables) expect(table.inputs.accountName).toBe(staging.inputs.accountName);
  });

  it("requires TLS 1.2 and no public blob access on every account", () => {
    for (const account of ofType("azure-native:storage:StorageAccount")) {
      expect(account.inputs.minimumTlsVersion).toBe("TLS1_2");
      expect(account.inputs.allowBlobPublicAccess).toBe(false);
      expect(account.inputs.accountName).toMatch(/^[a-z0-9]{3,24}$/);
    }
  });
});

describe("Function App", () => {
  it("runs on Flex Consumption, Node 22, with a system-assigned identity and the uploaded package", () => {
    const plan = one("azure-native:web:AppServicePlan");
    expect(plan.inputs.sku).toEqual({ name: "FC1", tier: "FlexConsumption" });
    expect(plan.inputs.reserved).toBe(true);
    expect(functionApp.inputs.serverFarmId).toBe(plan.id);
    expect(functionApp.inputs.identity).toEqual({ type: "SystemAssigned" });
    expect(functionApp.inputs.functionAppConfig.runtime).toEqual({ name: "node", version: "22" });
    const host = one("azure-native:storage:StorageAccount", (r) => r.inputs.allowSharedKeyAccess === true);
    expect(functionApp.inputs.functionAppConfig.deployment.storage).toEqual({
      type: "blobContainer",
      value: `https://${host.inputs.accountName}.blob.core.windows.net/app-package`,
      authentication: { type: "SystemAssignedIdentity" },
    });
    const blob = one("azure-native:storage:Blob");
    expect(blob.inputs).toMatchObject({ accountName: host.inputs.accountName, containerName: "app-package", blobName: "released-package.zip" });
    expect(appSettings.CONNECTOR_PACKAGE_SHA256).toMatch(/^[0-9a-f]{64}$/);
  });

  it("sets the connector's settings by the names shared/src/config.ts reads", () => {
    const ns = one("azure-native:servicebus:Namespace");
    const fqdn = `${ns.inputs.namespaceName}.servicebus.windows.net`;
    const staging = one("azure-native:storage:StorageAccount", (r) => r.inputs.allowSharedKeyAccess === false);
    const vault = one("azure-native:keyvault:Vault");
    expect(appSettings).toMatchObject({
      SERVICEBUS_NAMESPACE: fqdn,
      [`${connectionSettings.serviceBus}__fullyQualifiedNamespace`]: fqdn,
      STORAGE_BLOB_URL: `https://${staging.inputs.accountName}.blob.core.windows.net/`,
      STORAGE_TABLE_URL: `https://${staging.inputs.accountName}.table.core.windows.net/`,
      STAGING_CONTAINER: storageDefaults.stagingContainer,
      JOBS_TABLE: storageDefaults.jobsTable,
      LIVE_RESPONSE_TABLE: storageDefaults.liveResponseTable,
      EVENTGRID_ENDPOINT: `https://${one("azure-native:eventgrid:Topic").inputs.topicName}.westeurope-1.eventgrid.azure.net/api/events`,
      ANYRUN_API_KEY: `@Microsoft.KeyVault(SecretUri=https://${vault.inputs.vaultName}.vault.azure.net/secrets/anyrun-api-key)`,
      AZURE_CREDENTIAL: "default",
      ANYRUN_OPT_PRIVACY: "owner",
      ANYRUN_OPT_TIMEOUT: "180",
      AzureWebJobsStorage__accountName: one("azure-native:storage:StorageAccount", (r) => r.inputs.allowSharedKeyAccess === true).inputs.accountName,
    });
    const hostSettings = /^(AzureWebJobsStorage__|ServiceBusConnection__|APPLICATIONINSIGHTS_|CONNECTOR_PACKAGE_SHA256$)/;
    for (const name of Object.keys(appSettings)) {
      expect(name in configSchema.shape || hostSettings.test(name), `unexpected app setting ${name}`).toBe(true);
    }
    // Flex Consumption rejects the first three; a key-based AzureWebJobsStorage would be a secret in plain settings.
    for (const forbidden of ["FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION", "WEBSITE_RUN_FROM_PACKAGE", "AzureWebJobsStorage"]) {
      expect(appSettings).not.toHaveProperty(forbidden);
    }
    // The deployed settings satisfy the functions' own configuration schema once App Service has
    // resolved the Key Vault reference; left unresolved, the functions refuse to start and say why.
    expect(() => parseConfig(appSettings)).toThrow(/ANYRUN_API_KEY: is an unresolved Key Vault reference/);
    const parsed = parseConfig({ ...appSettings, ANYRUN_API_KEY: "value-resolved-by-app-service" });
    expect(parsed.SERVICEBUS_NAMESPACE).toBe(fqdn);
    expect(parsed.ANYRUN_OPT_PRIVACY).toBe("owner");
    expect(parsed.ANYRUN_OPT_TIMEOUT).toBe(180);
  });

  it("keeps the ANY.RUN key in Key Vault (RBAC) and hands the app only a reference", () => {
    const vault = one("azure-native:keyvault:Vault");
    expect(vault.inputs.properties.enableRbacAuthorization).toBe(true);
    expect(vault.inputs.properties.tenantId).toBe(TENANT_ID);
    expect(vault.inputs.properties).not.toHaveProperty("enablePurgeProtection");
    const secret = one("azure-native:keyvault:Secret", (r) => r.inputs.secretName === "anyrun-api-key");
    // The value reaches the provider as a Pulumi secret (encrypted in state, masked in diffs).
    expect(isSecret(secret.inputs.properties)).toBe(true);
    expect(secret.inputs.properties.value.value).toBe(ANYRUN_KEY);
    expect(functionApp.inputs.keyVaultReferenceIdentity).toBe("SystemAssigned");
    const kvScope = `${vault.id}/secrets/anyrun-api-key`;
    expect(grantsTo(FUNCTION_PRINCIPAL_ID, ROLE.kvSecretsUser)).toEqual([kvScope]);
  });
});

describe("function app activation", () => {
  const index = (r: RecordedResource) => recorded.indexOf(r);
  const activation = () => one("pulumi-nodejs:dynamic:Resource", (r) => r.name === "functions-activation");

  it("restarts onto the package and syncs triggers for every function of the topology", () => {
    const a = activation();
    expect(a.inputs.appId).toBe(functionApp.id);
    expect([...a.inputs.expectedFunctions].sort()).toEqual(Object.keys(functionTriggers).sort());
    expect(a.inputs.packageSha256).toMatch(/^[0-9a-f]{64}$/);
    expect(a.inputs.armBaseUrl).toBe("https://management.azure.com");
    // Its own ARM calls use the stack's tenant, never the az CLI's current one.
    expect(a.inputs.tenantId).toBe(TENANT_ID);
    // The setting hash covers the ANY.RUN key, so it is kept as a secret.
    expect(isSecret(a.inputs.settingsSha256)).toBe(true);
    expect(JSON.stringify(a.inputs)).not.toContain(ANYRUN_KEY);
  });

  it("runs after every role assignment and the package upload, and before the Event Grid subscriptions", () => {
    const a = index(activation());
    for (const r of roleAssignments().filter((r) => r.inputs.principalId === FUNCTION_PRINCIPAL_ID)) expect(index(r), r.name).toBeLessThan(a);
    expect(index(one("azure-native:storage:Blob"))).toBeLessThan(a);
    const subscriptions = [...ofType("azure-native:eventgrid:SystemTopicEventSubscription"), ...ofType("azure-native:eventgrid:EventSubscription")];
    expect(subscriptions).toHaveLength(2);
    for (const sub of subscriptions) expect(index(sub), sub.name).toBeGreaterThan(a);
  });
});

describe("secrets", () => {
  it("never appear in app settings, stack outputs or any resource other than their Key Vault secret", () => {
    const joinedSettings = JSON.stringify(appSettings);
    expect(joinedSettings).not.toContain(ANYRUN_KEY);
    expect(joinedSettings).not.toContain(UPLOADER_PASSWORD);
    for (const [name, value] of Object.entries(appSettings)) {
      if (/(KEY|SECRET|PASSWORD)$/i.test(name)) expect(value, name).toMatch(/^@Microsoft\.KeyVault\(SecretUri=https:\/\//);
      expect(name).not.toMatch(/CONNECTION$|^EVENTGRID_KEY$/);
    }
    const outputs = JSON.stringify(stackOutputs);
    expect(outputs).not.toContain(ANYRUN_KEY);
    expect(outputs).not.toContain(UPLOADER_PASSWORD);
    const holders = recorded.filter((r) => JSON.stringify(r.inputs).includes(ANYRUN_KEY)).map((r) => r.name);
    expect(holders).toEqual(["anyrun-api-key"]);
    const uploaderHolders = recorded
      .filter((r) => r.type !== "azuread:index/applicationPassword:ApplicationPassword")
      .filter((r) => JSON.stringify(r.inputs).includes(UPLOADER_PASSWORD))
      .map((r) => `${r.type}:${r.inputs.secretName}`);
    expect(uploaderHolders).toEqual(["azure-native:keyvault:Secret:library-uploader-secret"]);
    const uploaderSecret = one("azure-native:keyvault:Secret", (r) => r.inputs.secretName === "library-uploader-secret");
    expect(isSecret(uploaderSecret.inputs.properties)).toBe(true);
    // Nothing secret flowed into the Function App's configuration.
    expect(JSON.stringify(functionApp.inputs)).not.toContain(pulumi.runtime.specialSecretSig);
  });

  it("reads the ANY.RUN key as a Pulumi secret", async () => {
    const { loadSettings } = await import("../src/settings.ts");
    const settings = loadSettings(path.resolve("."));
    expect(await (settings.anyrunApiKey as any).isSecret).toBe(true);
  });
});

describe("role assignments", () => {
  it("are all scoped to a resource, never a subscription; the one resource-group grant is the connector's own group", () => {
    expect(roleAssignments().length).toBeGreaterThan(15);
    const connectorGroup = one("azure-native:resources:ResourceGroup").id;
    for (const r of roleAssignments()) {
      const scope = r.inputs.scope as string;
      if (scope === connectorGroup) {
        // Sentinel requires its run-playbook grant on the playbook's resource group.
        expect(r.inputs.roleDefinitionId, r.name).toBe(roleId(ROLE.sentinelAutomationContributor));
        continue;
      }
      expect(scope, r.name).toMatch(/^\/subscriptions\/[^/]+\/resourceGroups\/[^/]+\/providers\/.+\/.+/);
      expect(r.inputs.roleAssignmentName).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
      expect(Object.values(ROLE).map(roleId), r.name).toContain(r.inputs.roleDefinitionId);
    }
  });

  it("give the Function App least-privilege data access", () => {
    const staging = one("azure-native:storage:StorageAccount", (r) => r.inputs.allowSharedKeyAccess === false);
    const host = one("azure-native:storage:StorageAccount", (r) => r.inputs.allowSharedKeyAccess === true);
    expect(grantsTo(FUNCTION_PRINCIPAL_ID, ROLE.blobOwner)).toEqual([host.id]);
    expect(grantsTo(FUNCTION_PRINCIPAL_ID, ROLE.blobContributor)).toEqual([
      `${staging.id}/blobServices/default/containers/${storageDefaults.stagingContainer}`,
      `${staging.id}/blobServices/default/containers/${storageDefaults.eventGridDeadLetterContainer}`,
    ]);
    expect(grantsTo(FUNCTION_PRINCIPAL_ID, ROLE.blobDelegator)).toEqual([staging.id]);
    expect(grantsTo(FUNCTION_PRINCIPAL_ID, ROLE.tableContributor)).toEqual([
      `${staging.id}/tableServices/default/tables/${storageDefaults.jobsTable}`,
      `${staging.id}/tableServices/default/tables/${storageDefaults.liveResponseTable}`,
    ]);
    const entityIds = [...ofType("azure-native:servicebus:Queue"), ...ofType("azure-native:servicebus:Topic")].map((r) => r.id);
    expect(grantsTo(FUNCTION_PRINCIPAL_ID, ROLE.sbSender).sort()).toEqual(entityIds.sort());
    expect(grantsTo(FUNCTION_PRINCIPAL_ID, ROLE.egSender)).toEqual([one("azure-native:eventgrid:Topic").id]);
    expect(grantsTo(FUNCTION_PRINCIPAL_ID, ROLE.metricsPublisher)).toEqual([one("azure-native:applicationinsights:Component").id]);
    for (const r of roleAssignments().filter((a) => a.inputs.principalId === FUNCTION_PRINCIPAL_ID)) {
      expect(r.inputs.principalType).toBe("ServicePrincipal");
    }
  });

  it("give Sentinel Responder on the workspace, and Contributor only for threat-intelligence upload", () => {
    expect(grantsTo(FUNCTION_PRINCIPAL_ID, ROLE.sentinelResponder)).toEqual([WORKSPACE_ID]);
    expect(grantsTo(FUNCTION_PRINCIPAL_ID, ROLE.sentinelContributor)).toEqual([WORKSPACE_ID]);
  });

  it("let each Event Grid topic write only to the dead-letter container", () => {
    const staging = one("azure-native:storage:StorageAccount", (r) => r.inputs.allowSharedKeyAccess === false);
    const deadLetters = `${staging.id}/blobServices/default/containers/${storageDefaults.eventGridDeadLetterContainer}`;
    for (const topic of [one("azure-native:eventgrid:SystemTopic"), one("azure-native:eventgrid:Topic")]) {
      const principal = `principal-${topic.inputs.systemTopicName ?? topic.inputs.topicName}`;
      expect(roleAssignments().filter((r) => r.inputs.principalId === principal).map((r) => r.inputs.scope)).toEqual([deadLetters]);
    }
  });
});

describe("Sentinel playbook and automation rules", () => {
  it("forwards the incident trigger body to the intake queue with the playbook's identity", () => {
    const workflow = one("azure-native:logic:Workflow");
    const definition = workflow.inputs.definition;
    const trigger = definition.triggers.Microsoft_Sentinel_incident;
    expect(trigger.type).toBe("ApiConnectionWebhook");
    expect(trigger.inputs.path).toBe("/incident-creation");
    expect(trigger.inputs.body).toEqual({ callback_url: "@{listCallbackUrl()}" });
    const actions = Object.values(definition.actions) as any[];
    expect(actions).toHaveLength(1);
    const send = actions[0];
    const fqdn = `${one("azure-native:servicebus:Namespace").inputs.namespaceName}.servicebus.windows.net`;
    expect(send.type).toBe("Http");
    expect(send.inputs.method).toBe("POST");
    expect(send.inputs.uri).toBe(`https://${fqdn}/${queues.incidentIntake.name}/messages`);
    // The body is the trigger body, or, too large for one message, what compactTriggerBody makes of it.
    const small = JSON.parse(readFileSync(new URL("../../test/fixtures/microsoft/sentinel-incident-trigger-body.COMPOSITE.json", import.meta.url), "utf8"));
    expect(evaluateWdl(send.inputs.body, { triggerBody: small })).toEqual(small);
    const large = structuredClone(small);
    large.object.properties.relatedEntities = Array.from({ length: 2000 }, (_, i) => ({ kind: "Url", properties: { url: `https://bulk.example/${i}` } }));
    const compacted = evaluateWdl(send.inputs.body, { triggerBody: large }) as typeof large;
    expect(compacted).toEqual(compactTriggerBody(large));
    expect(compacted.object.properties).not.toHaveProperty("relatedEntities");
    expect(compacted.object.properties.title).toBe(small.object.properties.title);
    expect(send.inputs.authentication).toEqual({ type: "ManagedServiceIdentity", audience: "https://servicebus.azure.net" });
    expect(JSON.parse(send.inputs.headers.BrokerProperties.replace(/@\{[^"]*\}/, "x"))).toEqual({ MessageId: "x" });
    expect(workflow.inputs.identity).toEqual({ type: "SystemAssigned" });
    const connection = one("azure-native:resources:Resource");
    expect(connection.inputs.properties.parameterValueType).toBe("Alternative");
    expect(workflow.inputs.parameters.$connections.value.azuresentinel).toMatchObject({
      connectionId: connection.id,
      connectionProperties: { authentication: { type: "ManagedServiceIdentity" } },
    });
    const intake = one("azure-native:servicebus:Queue", (r) => r.inputs.queueName === queues.incidentIntake.name);
    expect(grantsTo("playbook-principal-id", ROLE.sbSender)).toEqual([intake.id]);
    expect(grantsTo("playbook-principal-id", ROLE.sentinelReader)).toEqual([WORKSPACE_ID]);
    // On the playbook's resource group, where Sentinel looks for it.
    expect(grantsTo(SECURITY_INSIGHTS_SP_OBJECT_ID, ROLE.sentinelAutomationContributor)).toEqual([one("azure-native:resources:ResourceGroup").id]);
  });

  it("runs the playbook on incident creation and, as configured, when alerts are added", () => {
    const workflow = one("azure-native:logic:Workflow");
    const rules = ofType("azure-native:securityinsights:AutomationRule");
    expect(rules.map((r) => r.inputs.triggeringLogic.triggersWhen).sort()).toEqual(["Created", "Updated"]);
    for (const rule of rules) {
      expect(rule.inputs).toMatchObject({ resourceGroupName: SENTINEL_RG, workspaceName: WORKSPACE });
      expect(rule.inputs.triggeringLogic).toMatchObject({ isEnabled: true, triggersOn: "Incidents" });
      expect(rule.inputs.actions).toEqual([
        { actionType: "RunPlaybook", order: 1, actionConfiguration: { logicAppResourceId: workflow.id, tenantId: TENANT_ID } },
      ]);
    }
    const update = rules.find((r) => r.inputs.triggeringLogic.triggersWhen === "Updated")!;
    expect(update.inputs.triggeringLogic.conditions).toEqual([
      { conditionType: "PropertyArrayChanged", conditionProperties: { arrayType: "Alerts", changeType: "Added" } },
    ]);
    expect(stackOutputs.automationRuleIds).toEqual(rules.map((r) => r.id));
  });
});

describe("Defender for Endpoint", () => {
  it("grants the Function App's identity the Live Response application permissions", () => {
    const assignments = ofType("azuread:index/appRoleAssignment:AppRoleAssignment").filter(
      (r) => r.inputs.principalObjectId === FUNCTION_PRINCIPAL_ID,
    );
    expect(assignments.map((r) => r.inputs.appRoleId).sort()).toEqual(
      ["Machine.Read.All", "Machine.ReadWrite.All", "Machine.LiveResponse"].map((n) => WDATP_APP_ROLE_IDS[n]).sort(),
    );
    for (const a of assignments) expect(a.inputs.resourceObjectId).toBe(WDATP_SP_OBJECT_ID);
  });

  it("creates the library uploader application with Library.Manage only, its secret in Key Vault", () => {
    const app = one("azuread:index/application:Application");
    expect(app.inputs.requiredResourceAccesses).toEqual([
      {
        resourceAppId: "fc780465-2017-40d4-a0c5-307022471b92",
        resourceAccesses: [{ id: WDATP_APP_ROLE_IDS["Library.Manage"], type: "Role" }],
      },
    ]);
    const consent = ofType("azuread:index/appRoleAssignment:AppRoleAssignment").filter(
      (r) => r.inputs.principalObjectId === "uploader-sp-object-id",
    );
    expect(consent.map((r) => r.inputs.appRoleId)).toEqual([WDATP_APP_ROLE_IDS["Library.Manage"]]);
    const vault = one("azure-native:keyvault:Vault");
    expect(grantsTo(DEPLOYER_OBJECT_ID, ROLE.kvSecretsUser)).toEqual([`${vault.id}/secrets/library-uploader-secret`]);
    expect(stackOutputs.libraryUpload).toEqual({
      enabled: true,
      tenantId: TENANT_ID,
      clientId: "c1c1c1c1-0000-4000-8000-000000000005",
      clientSecretUri: `https://${vault.inputs.vaultName}.vault.azure.net/secrets/library-uploader-secret`,
      mdeBaseUrl: "https://api.security.microsoft.com",
      scripts: ["anyrun-collect.ps1", "anyrun-collect.sh"],
    });
  });
});
