import { createHash } from "node:crypto";

/**
 * Azure names for one tenant's deployment. Globally unique names (storage, Key Vault, Service Bus,
 * Function App, Event Grid topic) carry a short hash of subscription + tenant slug, so they are
 * stable across `pulumi up` runs and predictable for operators, yet do not collide between tenants.
 */
export interface ResourceNames {
  readonly resourceGroup: string;
  readonly stagingAccount: string;
  readonly hostAccount: string;
  readonly serviceBus: string;
  readonly analysisTopic: (topologyName: string) => string;
  readonly keyVault: string;
  readonly logAnalytics: string;
  readonly appInsights: string;
  readonly plan: string;
  readonly functionApp: string;
  readonly playbook: string;
  readonly sentinelConnection: string;
  readonly uploaderApp: string;
}

export const TENANT_SLUG_PATTERN = /^[a-z][a-z0-9]{1,9}$/;

export function resourceNames(tenantSlug: string, subscriptionId: string): ResourceNames {
  if (!TENANT_SLUG_PATTERN.test(tenantSlug)) {
    throw new Error(`tenant slug "${tenantSlug}" must match ${TENANT_SLUG_PATTERN} (it is part of Azure resource names)`);
  }
  const hash = createHash("sha256").update(`${subscriptionId.toLowerCase()}/${tenantSlug}`).digest("hex").slice(0, 6);
  return {
    resourceGroup: `rg-anyrun-${tenantSlug}`,
    stagingAccount: `st${tenantSlug}stg${hash}`, // <= 23 chars, lower-case alphanumerics
    hostAccount: `st${tenantSlug}fn${hash}`,
    serviceBus: `sb-anyrun-${tenantSlug}-${hash}`,
    analysisTopic: (topologyName) => `${topologyName}-${tenantSlug}-${hash}`,
    keyVault: `kv-ar-${tenantSlug}-${hash}`, // <= 24 chars
    logAnalytics: `log-anyrun-${tenantSlug}`,
    appInsights: `appi-anyrun-${tenantSlug}`,
    plan: `asp-anyrun-${tenantSlug}`,
    functionApp: `func-anyrun-${tenantSlug}-${hash}`,
    playbook: `logic-anyrun-${tenantSlug}-intake`,
    sentinelConnection: `azuresentinel-anyrun-${tenantSlug}`,
    uploaderApp: `ANY.RUN Sentinel connector - Live Response library upload (${tenantSlug})`,
  };
}

/** ISO 8601 durations as ARM expects them for Service Bus entities. */
export function isoMinutes(minutes: number): string {
  return `PT${minutes}M`;
}

export function isoSeconds(seconds: number): string {
  return seconds % 60 === 0 ? `PT${seconds / 60}M` : `PT${seconds}S`;
}

export function isoDays(days: number): string {
  return `P${days}D`;
}

/** A deterministic GUID (UUID-shaped, version nibble 5) for names such as role assignments. */
export function deterministicGuid(...parts: string[]): string {
  const hex = createHash("sha256").update(parts.join("|")).digest("hex");
  const variant = ((parseInt(hex[16] ?? "0", 16) & 0x3) | 0x8).toString(16);
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-5${hex.slice(13, 16)}-${variant}${hex.slice(17, 20)}-${hex.slice(20, 32)}`;
}
