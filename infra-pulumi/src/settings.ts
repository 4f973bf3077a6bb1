import * as pulumi from "@pulumi/pulumi";
import * as path from "node:path";
import { replaySettingsSchema } from "../../shared/src/replay/settings.ts";
import { configSchema } from "../../shared/src/config.ts";
import { TENANT_SLUG_PATTERN } from "./naming.ts";

/**
 * Stack configuration of one tenant (Pulumi.<tenant>.yaml), validated before any resource is
 * declared so that a typo fails `pulumi preview` with a message naming the key.
 */
export interface ConnectorSettings {
  readonly tenantSlug: string;
  readonly tenantId: string;
  readonly subscriptionId: string;
  readonly location: string;
  readonly sentinel: {
    readonly subscriptionId: string;
    readonly resourceGroup: string;
    readonly workspaceName: string;
    readonly runOnIncidentUpdate: boolean;
    readonly automationRuleOrder: number;
  };
  readonly anyrunApiKey: pulumi.Output<string>;
  /** Extra connector settings (names from shared/src/config.ts), validated with the app's own schema. */
  readonly appSettings: Readonly<Record<string, string>>;
  readonly functions: {
    readonly packagePath: string;
    readonly maximumInstanceCount: number;
    readonly instanceMemoryMB: number;
  };
  readonly storage: {
    readonly sku: string;
    readonly stagingRetentionDays: number;
    readonly deadLetterRetentionDays: number;
  };
  readonly defender: {
    /** WindowsDefenderATP application permissions granted to the Function App's managed identity. */
    readonly appRoles: readonly string[];
    /** Create the Entra application that uploads the Live Response scripts (Library.Manage). */
    readonly libraryUploader: boolean;
    /** Change this value to rotate the uploader's client secret on the next `pulumi up`. */
    readonly uploaderSecretRotation: string;
  };
  readonly threatIntelUpload: boolean;
  readonly keyVault: { readonly purgeProtection: boolean; readonly softDeleteRetentionDays: number };
  readonly tags: Readonly<Record<string, string>>;
}

/** App settings the program itself sets from the resources it creates: not overridable. */
export const MANAGED_APP_SETTINGS = [
  "SERVICEBUS_CONNECTION",
  "SERVICEBUS_NAMESPACE",
  "STORAGE_CONNECTION",
  "STORAGE_BLOB_URL",
  "STORAGE_TABLE_URL",
  "STAGING_CONTAINER",
  "JOBS_TABLE",
  "EVENTGRID_ENDPOINT",
  "EVENTGRID_KEY",
  "ANYRUN_API_KEY",
  "AZURE_CREDENTIAL",
  "LIVE_RESPONSE_TABLE",
] as const;

/** Default WindowsDefenderATP application permissions (see shared/reference/mde-live-response.md §1). */
export const DEFAULT_DEFENDER_APP_ROLES = ["Machine.Read.All", "Machine.ReadWrite.All", "Machine.LiveResponse"] as const;

const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export class SettingsError extends Error {
  override name = "SettingsError";
}

/** Raw, unvalidated values as read from stack configuration. */
export interface RawSettings {
  readonly stackName: string;
  readonly projectDir: string;
  readonly provider: { tenantId?: string; subscriptionId?: string; location?: string; azureadTenantId?: string };
  readonly tenant?: string;
  readonly sentinel?: unknown;
  readonly anyrunApiKey: pulumi.Output<string> | undefined;
  readonly appSettings?: unknown;
  readonly functions?: unknown;
  readonly storage?: unknown;
  readonly defender?: unknown;
  readonly threatIntelUpload?: boolean;
  readonly keyVault?: unknown;
  readonly tags?: unknown;
}

export function parseSettings(raw: RawSettings): ConnectorSettings {
  const problems: string[] = [];
  const need = (value: string | undefined, key: string, pattern?: RegExp): string => {
    if (!value) problems.push(`${key} is required`);
    else if (pattern && !pattern.test(value)) problems.push(`${key} "${value}" is malformed`);
    return value ?? "";
  };
  const tenantId = need(raw.provider.tenantId, "azure-native:tenantId", GUID);
  const subscriptionId = need(raw.provider.subscriptionId, "azure-native:subscriptionId", GUID);
  const location = need(raw.provider.location, "azure-native:location", /^[a-z0-9]+$/);
  // Without it the azuread provider takes the az CLI's current tenant: Defender grants could land elsewhere.
  const azureadTenantId = need(raw.provider.azureadTenantId, "azuread:tenantId", GUID);
  if (tenantId && azureadTenantId && tenantId.toLowerCase() !== azureadTenantId.toLowerCase()) {
    problems.push(`azuread:tenantId (${azureadTenantId}) must equal azure-native:tenantId (${tenantId})`);
  }

  const tenantSlug = raw.tenant ?? raw.stackName.toLowerCase().replace(/[^a-z0-9]/g, "").slice(0, 10);
  if (!TENANT_SLUG_PATTERN.test(tenantSlug)) {
    problems.push(`tenant "${tenantSlug}" must match ${TENANT_SLUG_PATTERN} (set the "tenant" config key)`);
  }

  const sentinel = record(raw.sentinel, "sentinel", problems);
  const sentinelSubscription = optionalString(sentinel.subscriptionId) ?? subscriptionId;
  if (!GUID.test(sentinelSubscription) && subscriptionId) problems.push("sentinel.subscriptionId is malformed");
  const sentinelRg = optionalString(sentinel.resourceGroup);
  const workspaceName = optionalString(sentinel.workspaceName);
  if (!sentinelRg) problems.push("sentinel.resourceGroup is required");
  if (!workspaceName) problems.push("sentinel.workspaceName is required");

  if (!raw.anyrunApiKey) problems.push("anyrunApiKey is required (set it with `pulumi config set --secret anyrunApiKey`)");

  const appSettings: Record<string, string> = {};
  // The connector's settings and the operator replay function's own.
  const shape = { ...configSchema.shape, ...replaySettingsSchema.shape } as Record<string, { safeParse(v: unknown): { success: boolean } }>;
  for (const [key, value] of Object.entries(record(raw.appSettings, "appSettings", problems))) {
    const text = typeof value === "string" ? value : JSON.stringify(value);
    if ((MANAGED_APP_SETTINGS as readonly string[]).includes(key)) {
      problems.push(`appSettings.${key} is set by the program from the resources it creates`);
    } else if (!shape[key]) {
      problems.push(`appSettings.${key} is not a connector setting (see shared/src/config.ts)`);
    } else if (!shape[key].safeParse(text).success) {
      problems.push(`appSettings.${key}: "${text}" is not a valid value`);
    } else {
      appSettings[key] = text;
    }
  }

  const functions = record(raw.functions, "functions", problems);
  const storage = record(raw.storage, "storage", problems);
  const defender = record(raw.defender, "defender", problems);
  const keyVault = record(raw.keyVault, "keyVault", problems);
  const tags = record(raw.tags, "tags", problems);

  const appRoles = Array.isArray(defender.appRoles) ? defender.appRoles.map(String) : [...DEFAULT_DEFENDER_APP_ROLES];
  if (!appRoles.includes("Machine.LiveResponse")) problems.push("defender.appRoles must include Machine.LiveResponse");

  const settings: ConnectorSettings = {
    tenantSlug,
    tenantId,
    subscriptionId,
    location,
    sentinel: {
      subscriptionId: sentinelSubscription,
      resourceGroup: sentinelRg ?? "",
      workspaceName: workspaceName ?? "",
      runOnIncidentUpdate: bool(sentinel.runOnIncidentUpdate, false),
      automationRuleOrder: int(sentinel.automationRuleOrder, 100, 1, 1000, "sentinel.automationRuleOrder", problems),
    },
    anyrunApiKey: raw.anyrunApiKey ?? pulumi.secret(""),
    appSettings,
    functions: {
      packagePath: path.resolve(raw.projectDir, optionalString(functions.packagePath) ?? "../dist/functions.zip"),
      maximumInstanceCount: int(functions.maximumInstanceCount, 40, 1, 1000, "functions.maximumInstanceCount", problems),
      instanceMemoryMB: oneOf(functions.instanceMemoryMB, 2048, [512, 2048, 4096], "functions.instanceMemoryMB", problems),
    },
    storage: {
      sku: optionalString(storage.sku) ?? "Standard_LRS",
      stagingRetentionDays: int(storage.stagingRetentionDays, 1, 1, 30, "storage.stagingRetentionDays", problems),
      deadLetterRetentionDays: int(storage.deadLetterRetentionDays, 30, 1, 365, "storage.deadLetterRetentionDays", problems),
    },
    defender: {
      appRoles,
      libraryUploader: bool(defender.libraryUploader, true),
      uploaderSecretRotation: optionalString(defender.uploaderSecretRotation) ?? "1",
    },
    threatIntelUpload: raw.threatIntelUpload ?? true,
    keyVault: {
      purgeProtection: bool(keyVault.purgeProtection, false),
      softDeleteRetentionDays: int(keyVault.softDeleteRetentionDays, 7, 7, 90, "keyVault.softDeleteRetentionDays", problems),
    },
    tags: Object.fromEntries(Object.entries(tags).map(([k, v]) => [k, String(v)])),
  };
  if (problems.length > 0) {
    throw new SettingsError(`Invalid stack configuration:\n  - ${problems.join("\n  - ")}`);
  }
  return settings;
}

/** Reads the stack configuration (project namespace + azure-native provider keys). */
export function loadSettings(projectDir: string): ConnectorSettings {
  const config = new pulumi.Config();
  const provider = new pulumi.Config("azure-native");
  return parseSettings({
    stackName: pulumi.getStack(),
    projectDir,
    provider: {
      tenantId: provider.get("tenantId"),
      subscriptionId: provider.get("subscriptionId"),
      location: provider.get("location"),
      azureadTenantId: new pulumi.Config("azuread").get("tenantId"),
    },
    tenant: config.get("tenant"),
    sentinel: config.getObject("sentinel"),
    anyrunApiKey: config.getSecret("anyrunApiKey"),
    appSettings: config.getObject("appSettings"),
    functions: config.getObject("functions"),
    storage: config.getObject("storage"),
    defender: config.getObject("defender"),
    threatIntelUpload: config.getBoolean("threatIntelUpload"),
    keyVault: config.getObject("keyVault"),
    tags: config.getObject("tags"),
  });
}

function record(value: unknown, key: string, problems: string[]): Record<string, unknown> {
  if (value === undefined || value === null) return {};
  if (typeof value !== "object" || Array.isArray(value)) {
    problems.push(`${key} must be an object`);
    return {};
  }
  return value as Record<string, unknown>;
}

function optionalString(value: unknown): string | undefined {
  return typeof value === "string" && value.length > 0 ? value : undefined;
}

function bool(value: unknown, fallback: boolean): boolean {
  if (typeof value === "boolean") return value;
  if (value === "true") return true;
  if (value === "false") return false;
  return fallback;
}

function int(value: unknown, fallback: number, min: number, max: number, key: string, problems: string[]): number {
  if (value === undefined) return fallback;
  const n = typeof value === "number" ? value : Number(value);
  if (!Number.isInteger(n) || n < min || n > max) {
    problems.push(`${key} must be an integer in [${min}, ${max}]`);
    return fallback;
  }
  return n;
}

function oneOf(value: unknown, fallback: number, allowed: number[], key: string, problems: string[]): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!allowed.includes(n)) {
    problems.push(`${key} must be one of ${allowed.join(", ")}`);
    return fallback;
  }
  return n;
}
