import * as azure from "@pulumi/azure-native";
import * as pulumi from "@pulumi/pulumi";
import { deterministicGuid } from "./naming.ts";

/** Built-in Azure role definition ids (identical in every tenant). */
export const builtInRoles = {
  storageBlobDataOwner: "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
  storageBlobDataContributor: "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
  storageBlobDelegator: "db58b8e5-c6ad-4a2a-8342-4190687cbf4a",
  storageTableDataContributor: "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
  serviceBusDataSender: "69a216fc-b8fb-44d8-bc22-1f3c2cd27a39",
  serviceBusDataReceiver: "4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0",
  eventGridDataSender: "d5a91429-5739-47e2-a06b-3470a27159e7",
  keyVaultSecretsUser: "4633458b-17de-408a-b874-0445c86b69e6",
  monitoringMetricsPublisher: "3913510d-42f4-4e42-8a64-420c390055eb",
  sentinelReader: "8d289c81-5878-46d4-8554-54e1e3d8b5cb",
  sentinelResponder: "3e150937-b8fe-4cfb-8069-0eaf05ecd056",
  sentinelContributor: "ab8e14d6-4a74-4a29-9ba8-549422addade",
  sentinelAutomationContributor: "f4c81013-99ee-4d62-a7ee-b3f1f648599a",
} as const;

export type BuiltInRole = keyof typeof builtInRoles;

export interface RoleGrant {
  /** Object id of the principal (managed identity, service principal, user). */
  readonly principalId: pulumi.Input<string>;
  /** `ServicePrincipal` for managed identities: avoids failures while a new identity replicates. */
  readonly principalType?: "ServicePrincipal" | "User" | "Group";
  readonly role: BuiltInRole;
  /** ARM id of the resource (never a subscription or resource group). */
  readonly scope: pulumi.Input<string>;
  readonly description: string;
}

/**
 * One role assignment. Its name is a GUID derived from scope, principal and role, so a lost state
 * or a re-run cannot create a duplicate assignment.
 */
export function assignRole(
  logicalName: string,
  subscriptionId: string,
  grant: RoleGrant,
  opts: pulumi.CustomResourceOptions,
): azure.authorization.RoleAssignment {
  const roleId = builtInRoles[grant.role];
  return new azure.authorization.RoleAssignment(
    logicalName,
    {
      roleAssignmentName: pulumi
        .all([grant.scope, grant.principalId])
        .apply(([scope, principal]) => deterministicGuid(scope.toLowerCase(), principal, roleId)),
      principalId: grant.principalId,
      principalType: grant.principalType,
      roleDefinitionId: `/subscriptions/${subscriptionId}/providers/Microsoft.Authorization/roleDefinitions/${roleId}`,
      scope: grant.scope,
      description: grant.description,
    },
    { deleteBeforeReplace: true, ...opts },
  );
}
