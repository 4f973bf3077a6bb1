import * as pulumi from "@pulumi/pulumi";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FUNCTION_PRINCIPAL_ID, SUBSCRIPTION_ID, TENANT_ID, mocks, ofType, one, resolve, settle } from "./helpers/mocks.ts";

/**
 * A second tenant shape: Sentinel in another subscription, no threat-intelligence upload, no
 * update rule, no library uploader application.
 */
const PROJECT = "anyrun-sentinel-connector";
const SENTINEL_SUBSCRIPTION = "33333333-2222-4333-8444-555555555555";
const WORKSPACE_ID = `/subscriptions/${SENTINEL_SUBSCRIPTION}/resourceGroups/rg-soc/providers/Microsoft.OperationalInsights/workspaces/law-soc`;
let outputs: Record<string, unknown>;

let dir: string;
afterAll(() => rmSync(dir, { recursive: true, force: true }));

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), "infra-variant-"));
  const packagePath = path.join(dir, "functions.zip");
  writeFileSync(packagePath, "package");
  pulumi.runtime.setAllConfig(
    {
      "azure-native:tenantId": TENANT_ID,
      "azuread:tenantId": TENANT_ID,
      "azure-native:subscriptionId": SUBSCRIPTION_ID,
      "azure-native:location": "northeurope",
      // A service-principal login through OIDC (CI): the workspace's provider must use it too.
      "azure-native:clientId": "0c1d2e3f-0000-4000-8000-00000000c1d2",
      "azure-native:useOidc": "true",
      [`${PROJECT}:anyrunApiKey`]: "another-secret-key",
      [`${PROJECT}:sentinel`]: JSON.stringify({
        subscriptionId: SENTINEL_SUBSCRIPTION,
        resourceGroup: "rg-soc",
        workspaceName: "law-soc",
        automationRuleOrder: 7,
      }),
      [`${PROJECT}:threatIntelUpload`]: "false",
      [`${PROJECT}:defender`]: JSON.stringify({ libraryUploader: false, appRoles: ["Machine.Read.All", "Machine.LiveResponse"] }),
      [`${PROJECT}:functions`]: JSON.stringify({ packagePath, maximumInstanceCount: 10, instanceMemoryMB: 4096 }),
    },
    [`${PROJECT}:anyrunApiKey`],
  );
  await pulumi.runtime.setMocks(mocks, PROJECT, "fabrikam", false);
  const program = (await import("../index.ts")) as Record<string, unknown>;
  outputs = {};
  for (const [key, value] of Object.entries(program)) outputs[key] = await resolve(value as pulumi.Input<unknown>);
  await settle();
}, 120_000);

const grants = (guid: string, subscription: string) =>
  ofType("azure-native:authorization:RoleAssignment").filter(
    (r) =>
      r.inputs.principalId === FUNCTION_PRINCIPAL_ID &&
      r.inputs.roleDefinitionId === `/subscriptions/${subscription}/providers/Microsoft.Authorization/roleDefinitions/${guid}`,
  );

describe("tenant variant", () => {
  it("derives names from the stack and applies function sizing", () => {
    expect(one("azure-native:resources:ResourceGroup").inputs).toMatchObject({ resourceGroupName: "rg-anyrun-fabrikam", location: "northeurope" });
    expect(one("azure-native:web:WebApp").inputs.functionAppConfig.scaleAndConcurrency).toEqual({
      maximumInstanceCount: 10,
      instanceMemoryMB: 4096,
    });
  });

  it("grants Sentinel Responder only, with the workspace subscription's role definition", () => {
    expect(grants("3e150937-b8fe-4cfb-8069-0eaf05ecd056", SENTINEL_SUBSCRIPTION).map((r) => r.inputs.scope)).toEqual([WORKSPACE_ID]);
    const contributor = ofType("azure-native:authorization:RoleAssignment").filter((r) =>
      String(r.inputs.roleDefinitionId).endsWith("ab8e14d6-4a74-4a29-9ba8-549422addade"),
    );
    expect(contributor).toEqual([]);
  });

  it("creates the automation rule through a provider for the workspace's subscription", () => {
    const provider = one("pulumi:providers:azure-native");
    expect(provider.inputs).toMatchObject({ subscriptionId: SENTINEL_SUBSCRIPTION, tenantId: TENANT_ID });
    // (azure-native marks clientId secret)
    expect(provider.inputs.clientId.value ?? provider.inputs.clientId).toBe("0c1d2e3f-0000-4000-8000-00000000c1d2");
    // The activation step logs in the same way.
    const activation = one("pulumi-nodejs:dynamic:Resource", (r) => r.name === "functions-activation");
    expect(activation.inputs).toMatchObject({ tenantId: TENANT_ID, clientId: "0c1d2e3f-0000-4000-8000-00000000c1d2" });
    expect(String(provider.inputs.useOidc)).toBe("true");
    const rules = ofType("azure-native:securityinsights:AutomationRule");
    expect(rules).toHaveLength(1);
    expect(rules[0]!.inputs).toMatchObject({ order: 7, workspaceName: "law-soc", resourceGroupName: "rg-soc" });
    expect(rules[0]!.inputs.triggeringLogic.triggersWhen).toBe("Created");
    expect(rules[0]!.provider).toContain("pulumi:providers:azure-native::sentinel-subscription");
    // Everything else stays on the default provider of the deployment subscription.
    expect(one("azure-native:logic:Workflow").provider ?? "").not.toContain("sentinel-subscription");
  });

  it("grants only the configured Defender permissions and creates no uploader application", () => {
    expect(ofType("azuread:index/application:Application")).toEqual([]);
    expect(ofType("azuread:index/appRoleAssignment:AppRoleAssignment")).toHaveLength(2);
    expect(ofType("azure-native:keyvault:Secret").map((s) => s.inputs.secretName)).toEqual(["anyrun-api-key"]);
    expect(outputs.libraryUpload).toMatchObject({ enabled: false, clientId: "", clientSecretUri: "" });
  });
});
