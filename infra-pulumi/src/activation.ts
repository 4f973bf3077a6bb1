import * as pulumi from "@pulumi/pulumi";
import { activateFunctionApp } from "./activation-core.ts";

export interface FunctionAppActivationArgs {
  appId: pulumi.Input<string>;
  /** A change of either re-runs the activation (restart, trigger sync, wait). */
  packageSha256: pulumi.Input<string>;
  settingsSha256: pulumi.Input<string>;
  expectedFunctions: pulumi.Input<string[]>;
  armBaseUrl: pulumi.Input<string>;
  /** The stack's tenant: the token is never taken from the az CLI's current tenant. */
  tenantId: pulumi.Input<string>;
  /** The stack's service-principal login (`azure-native:clientId` / `clientSecret`), when it has one. */
  clientId?: pulumi.Input<string>;
  clientSecret?: pulumi.Input<string>;
}

interface ActivationInputs {
  appId: string;
  packageSha256: string;
  settingsSha256: string;
  expectedFunctions: string[];
  armBaseUrl: string;
  tenantId: string;
  clientId?: string;
  clientSecret?: string;
}

async function activate(inputs: ActivationInputs): Promise<Record<string, unknown>> {
  // Loaded here, in the provider process. The same login as the stack's providers: its service
  // principal (stack config, or the ARM_* variables azure-native reads), else az login / AZURE_*
  // / workload identity, always in the stack's tenant.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const identity = require("@azure/identity") as typeof import("@azure/identity");
  const clientId = inputs.clientId ?? process.env["ARM_CLIENT_ID"];
  const clientSecret = inputs.clientSecret ?? process.env["ARM_CLIENT_SECRET"];
  const credential =
    clientId && clientSecret
      ? new identity.ClientSecretCredential(inputs.tenantId, clientId, clientSecret)
      : new identity.DefaultAzureCredential({ tenantId: inputs.tenantId });
  const scope = `${inputs.armBaseUrl.replace(/\/$/, "")}/.default`;
  const result = await activateFunctionApp(
    { appId: inputs.appId, expectedFunctions: inputs.expectedFunctions, armBaseUrl: inputs.armBaseUrl },
    {
      getToken: async () => {
        const token = await credential.getToken(scope);
        if (!token) throw new Error(`No ARM token for ${scope}`);
        return token.token;
      },
    },
  );
  const { clientSecret: _secret, ...kept } = inputs;
  return { ...kept, functions: result.functions, activatedAt: new Date().toISOString() };
}

const provider: pulumi.dynamic.ResourceProvider = {
  async create(inputs: ActivationInputs) {
    return { id: `${inputs.appId}/activation`, outs: await activate(inputs) };
  },
  async diff(_id: string, olds: ActivationInputs, news: ActivationInputs) {
    const keys = ["appId", "packageSha256", "settingsSha256", "expectedFunctions", "armBaseUrl", "tenantId"] as const;
    const changed = keys.filter((k) => JSON.stringify(olds[k]) !== JSON.stringify(news[k]));
    return { changes: changed.length > 0, replaces: changed.includes("appId") ? ["appId"] : [] };
  },
  async update(_id: string, _olds: ActivationInputs, news: ActivationInputs) {
    return { outs: await activate(news) };
  },
  // Nothing to undo: the app itself is deleted by its own resource.
  async delete() {},
};

/**
 * Restarts the Function App onto its package and settings, syncs its triggers and waits until ARM
 * lists every function (see activation-core.ts). Event Grid subscriptions depend on it.
 */
export class FunctionAppActivation extends pulumi.dynamic.Resource {
  declare readonly functions: pulumi.Output<string[]>;

  constructor(name: string, args: FunctionAppActivationArgs, opts?: pulumi.CustomResourceOptions) {
    super(provider, name, { ...args, functions: undefined, activatedAt: undefined }, opts);
  }
}
