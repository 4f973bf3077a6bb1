import { DefaultAzureCredential, type AccessToken, type TokenCredential } from "@azure/identity";
import type { Config } from "./config.ts";

/**
 * The local runtime's stand-in for Entra ID: a token per scope, accepted by the local doubles.
 * Production uses DefaultAzureCredential (the Function App's managed identity).
 */
export class LocalTokenCredential implements TokenCredential {
  async getToken(scopes: string | string[]): Promise<AccessToken> {
    const scope = Array.isArray(scopes) ? scopes.join(" ") : scopes;
    const audience = scope.replace(/\/\.default$/, "");
    return {
      token: `local.${Buffer.from(audience).toString("base64url")}`,
      expiresOnTimestamp: Date.now() + 3_600_000,
    };
  }
}

export function createCredential(config: Pick<Config, "AZURE_CREDENTIAL">): TokenCredential {
  return config.AZURE_CREDENTIAL === "local" ? new LocalTokenCredential() : new DefaultAzureCredential();
}
