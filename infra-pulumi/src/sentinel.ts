import * as azure from "@pulumi/azure-native";
import * as azuread from "@pulumi/azuread";
import * as pulumi from "@pulumi/pulumi";
import { deterministicGuid } from "./naming.ts";
import { SENTINEL_CONNECTION_KEY, playbookDefinition } from "./playbook-definition.ts";
import { assignRole } from "./roles.ts";

/** Application (client) id of "Azure Security Insights", the identity Sentinel runs playbooks as. */
export const AZURE_SECURITY_INSIGHTS_APP_ID = "98785600-1bb7-4fb9-b9fa-19afe2c8a360";

export interface SentinelArgs {
  readonly resourceGroupName: pulumi.Input<string>;
  /** ARM id of the connector's resource group, where the playbook lives. */
  readonly resourceGroupId: pulumi.Input<string>;
  readonly location: string;
  readonly tenantId: string;
  readonly subscriptionId: string;
  readonly tenantSlug: string;
  readonly names: { readonly playbook: string; readonly sentinelConnection: string };
  readonly workspace: {
    readonly subscriptionId: string;
    readonly resourceGroup: string;
    readonly name: string;
  };
  readonly serviceBusFqdn: string;
  readonly intakeQueueName: string;
  readonly intakeQueueId: pulumi.Input<string>;
  readonly runOnIncidentUpdate: boolean;
  readonly automationRuleOrder: number;
  /** Provider for the workspace's subscription when it differs from the deployment's. */
  readonly workspaceProvider?: pulumi.ProviderResource;
  readonly tags: Record<string, string>;
}

export function workspaceId(ws: SentinelArgs["workspace"]): string {
  return `/subscriptions/${ws.subscriptionId}/resourceGroups/${ws.resourceGroup}/providers/Microsoft.OperationalInsights/workspaces/${ws.name}`;
}

/**
 * The Sentinel side: the intake playbook (Logic App with a managed identity), its Sentinel API
 * connection (managed-identity authenticated), the permissions Sentinel needs to run it, and the
 * automation rule(s) that run it on incident creation (and, if configured, on new alerts).
 */
export class ConnectorSentinel extends pulumi.ComponentResource {
  readonly connection: azure.resources.Resource;
  readonly playbook: azure.logic.Workflow;
  readonly playbookPrincipalId: pulumi.Output<string>;
  readonly automationRules: azure.securityinsights.AutomationRule[] = [];
  readonly definition: Record<string, unknown>;

  constructor(name: string, args: SentinelArgs, opts?: pulumi.ComponentResourceOptions) {
    super("anyrun:connector:Sentinel", name, {}, opts);
    const parent = { parent: this };
    const managedApiId = `/subscriptions/${args.subscriptionId}/providers/Microsoft.Web/locations/${args.location}/managedApis/azuresentinel`;

    // azure-native's web.Connection has no `parameterValueType`, which a managed-identity
    // connection needs, so the connection is declared as a generic ARM resource.
    this.connection = new azure.resources.Resource(
      "sentinel-connection",
      {
        resourceGroupName: args.resourceGroupName,
        resourceProviderNamespace: "Microsoft.Web",
        parentResourcePath: "",
        resourceType: "connections",
        resourceName: args.names.sentinelConnection,
        apiVersion: "2016-06-01",
        location: args.location,
        kind: "V1",
        properties: {
          displayName: `ANY.RUN connector (${args.tenantSlug}) - Microsoft Sentinel`,
          parameterValueType: "Alternative",
          api: { id: managedApiId },
        },
        tags: args.tags,
      },
      parent,
    );

    this.definition = playbookDefinition(args.serviceBusFqdn, args.intakeQueueName);
    this.playbook = new azure.logic.Workflow(
      "playbook",
      {
        resourceGroupName: args.resourceGroupName,
        location: args.location,
        workflowName: args.names.playbook,
        state: "Enabled",
        identity: { type: "SystemAssigned" },
        definition: this.definition,
        parameters: {
          $connections: {
            value: {
              [SENTINEL_CONNECTION_KEY]: {
                connectionId: this.connection.id,
                connectionName: args.names.sentinelConnection,
                id: managedApiId,
                connectionProperties: { authentication: { type: "ManagedServiceIdentity" } },
              },
            },
          },
        },
        tags: { ...args.tags, "hidden-SentinelTemplateName": "anyrun-sandbox-intake" },
      },
      parent,
    );
    this.playbookPrincipalId = this.playbook.identity.apply((i) => i?.principalId ?? "");

    const wsId = workspaceId(args.workspace);
    const grants = [
      assignRole(
        "playbook-intake-sender",
        args.subscriptionId,
        {
          principalId: this.playbookPrincipalId,
          principalType: "ServicePrincipal",
          role: "serviceBusDataSender",
          scope: args.intakeQueueId,
          description: "Intake playbook: send incident trigger bodies to the intake queue",
        },
        parent,
      ),
      assignRole(
        "playbook-sentinel-reader",
        args.workspace.subscriptionId,
        {
          principalId: this.playbookPrincipalId,
          principalType: "ServicePrincipal",
          role: "sentinelReader",
          scope: wsId,
          description: "Intake playbook: the Sentinel connection's managed identity reads incidents",
        },
        parent,
      ),
    ];

    const securityInsights = azuread.getServicePrincipalOutput({ clientId: AZURE_SECURITY_INSIGHTS_APP_ID }, parent);
    const automationGrant = assignRole(
      "sentinel-runs-playbook",
      args.subscriptionId,
      {
        principalId: securityInsights.objectId,
        principalType: "ServicePrincipal",
        role: "sentinelAutomationContributor",
        // Sentinel checks this grant on the playbook's resource group, not on the playbook: an
        // automation rule cannot be saved with a grant on the Logic App alone. The group holds only
        // the connector's own resources.
        scope: args.resourceGroupId,
        description: "Microsoft Sentinel (Azure Security Insights) may run the intake playbook",
      },
      parent,
    );

    const ruleOpts = {
      parent: this,
      dependsOn: [automationGrant, ...grants],
      ...(args.workspaceProvider ? { provider: args.workspaceProvider } : {}),
    };
    const runPlaybook = [
      {
        actionType: "RunPlaybook" as const,
        order: 1,
        actionConfiguration: { logicAppResourceId: this.playbook.id, tenantId: args.tenantId },
      },
    ];
    this.automationRules.push(
      new azure.securityinsights.AutomationRule(
        "automation-on-create",
        {
          resourceGroupName: args.workspace.resourceGroup,
          workspaceName: args.workspace.name,
          automationRuleId: deterministicGuid(wsId.toLowerCase(), args.tenantSlug, "incident-created"),
          displayName: "ANY.RUN Sandbox: analyse new incidents",
          order: args.automationRuleOrder,
          triggeringLogic: { isEnabled: true, triggersOn: "Incidents", triggersWhen: "Created", conditions: [] },
          actions: runPlaybook,
        },
        ruleOpts,
      ),
    );
    if (args.runOnIncidentUpdate) {
      this.automationRules.push(
        new azure.securityinsights.AutomationRule(
          "automation-on-update",
          {
            resourceGroupName: args.workspace.resourceGroup,
            workspaceName: args.workspace.name,
            automationRuleId: deterministicGuid(wsId.toLowerCase(), args.tenantSlug, "incident-updated"),
            displayName: "ANY.RUN Sandbox: analyse incidents that receive new alerts",
            order: args.automationRuleOrder + 1,
            triggeringLogic: {
              isEnabled: true,
              triggersOn: "Incidents",
              triggersWhen: "Updated",
              conditions: [
                {
                  conditionType: "PropertyArrayChanged",
                  conditionProperties: { arrayType: "Alerts", changeType: "Added" },
                },
              ],
            },
            actions: runPlaybook,
          },
          ruleOpts,
        ),
      );
    }
    this.registerOutputs({});
  }
}
