import * as azure from "@pulumi/azure-native";
import * as azuread from "@pulumi/azuread";
import * as pulumi from "@pulumi/pulumi";
import { assignRole } from "./roles.ts";

/** Application (client) id of the "WindowsDefenderATP" API in every tenant. */
export const WINDOWS_DEFENDER_ATP_APP_ID = "fc780465-2017-40d4-a0c5-307022471b92";
export const LIBRARY_MANAGE_ROLE = "Library.Manage";
export const UPLOADER_SECRET_NAME = "library-uploader-secret";

export interface DefenderArgs {
  readonly tenantId: string;
  readonly subscriptionId: string;
  readonly functionPrincipalId: pulumi.Input<string>;
  /** WindowsDefenderATP application permissions for the Function App's identity. */
  readonly appRoles: readonly string[];
  readonly libraryUploader: boolean;
  readonly uploaderDisplayName: string;
  readonly uploaderSecretRotation: string;
  readonly resourceGroupName: pulumi.Input<string>;
  readonly vault: azure.keyvault.Vault;
}

function roleId(ids: pulumi.Output<Record<string, string>>, role: string): pulumi.Output<string> {
  return ids.apply((map) => {
    const id = map[role];
    if (!id) throw new Error(`WindowsDefenderATP has no application permission named ${role}`);
    return id;
  });
}

/**
 * Microsoft Defender for Endpoint access:
 * - the Function App's managed identity gets the WindowsDefenderATP application permissions Live
 *   Response needs (app role assignments = admin consent, no client secret involved);
 * - an Entra application with only `Library.Manage` is the identity of the Live Response library
 *   upload script (scripts/upload-live-response-scripts.ts). Its client secret goes straight into
 *   the tenant's Key Vault; the deploying identity may read that one secret.
 */
export class ConnectorDefender extends pulumi.ComponentResource {
  readonly functionAppRoleAssignments: azuread.AppRoleAssignment[] = [];
  readonly uploaderApplication?: azuread.Application;
  readonly uploaderClientId?: pulumi.Output<string>;
  readonly uploaderSecretUri?: pulumi.Output<string>;

  constructor(name: string, args: DefenderArgs, opts?: pulumi.ComponentResourceOptions) {
    super("anyrun:connector:Defender", name, {}, opts);
    const parent = { parent: this };
    const wdatp = azuread.getServicePrincipalOutput({ clientId: WINDOWS_DEFENDER_ATP_APP_ID }, parent);

    for (const role of args.appRoles) {
      this.functionAppRoleAssignments.push(
        new azuread.AppRoleAssignment(
          `functionapp-${role}`,
          {
            appRoleId: roleId(wdatp.appRoleIds, role),
            principalObjectId: args.functionPrincipalId,
            resourceObjectId: wdatp.objectId,
          },
          parent,
        ),
      );
    }

    if (args.libraryUploader) {
      const libraryManage = roleId(wdatp.appRoleIds, LIBRARY_MANAGE_ROLE);
      const deployer = azure.authorization.getClientConfigOutput(parent);
      const app = new azuread.Application(
        "library-uploader",
        {
          displayName: args.uploaderDisplayName,
          signInAudience: "AzureADMyOrg",
          owners: [deployer.objectId],
          requiredResourceAccesses: [
            { resourceAppId: WINDOWS_DEFENDER_ATP_APP_ID, resourceAccesses: [{ id: libraryManage, type: "Role" }] },
          ],
        },
        parent,
      );
      const sp = new azuread.ServicePrincipal(
        "library-uploader",
        { clientId: app.clientId, owners: [deployer.objectId] },
        parent,
      );
      new azuread.AppRoleAssignment(
        "library-uploader-Library.Manage",
        { appRoleId: libraryManage, principalObjectId: sp.objectId, resourceObjectId: wdatp.objectId },
        parent,
      );
      const password = new azuread.ApplicationPassword(
        "library-uploader",
        {
          applicationId: app.id,
          displayName: "live-response-library-upload",
          endDateRelative: "2160h", // 90 days; rotate earlier by changing defender.uploaderSecretRotation
          rotateWhenChanged: { rotation: args.uploaderSecretRotation },
        },
        parent,
      );
      const secret = new azure.keyvault.Secret(
        "library-uploader-secret",
        {
          resourceGroupName: args.resourceGroupName,
          vaultName: args.vault.name,
          secretName: UPLOADER_SECRET_NAME,
          // Marked secret explicitly: never trust that a provider output is flagged secret.
          properties: { value: pulumi.secret(password.value), contentType: "client-secret" },
        },
        parent,
      );
      assignRole(
        "deployer-reads-uploader-secret",
        args.subscriptionId,
        {
          principalId: deployer.objectId,
          role: "keyVaultSecretsUser",
          scope: pulumi.interpolate`${args.vault.id}/secrets/${UPLOADER_SECRET_NAME}`,
          description: "Deploying identity: read the library uploader's client secret (upload script)",
        },
        { parent: this, dependsOn: [secret] },
      );
      this.uploaderApplication = app;
      this.uploaderClientId = app.clientId;
      this.uploaderSecretUri = pulumi.interpolate`${args.vault.properties.vaultUri}secrets/${UPLOADER_SECRET_NAME}`;
    }
    this.registerOutputs({});
  }
}
