import * as pulumi from "@pulumi/pulumi";
import { describe, expect, it } from "vitest";
import { resourceNames, deterministicGuid, isoSeconds } from "../src/naming.ts";
import { parseSettings, type RawSettings } from "../src/settings.ts";

const base: RawSettings = {
  stackName: "Contoso-Prod",
  projectDir: "/repo/infra-pulumi",
  provider: {
    tenantId: "99999999-8888-4777-8666-555555555555",
    subscriptionId: "11111111-2222-4333-8444-555555555555",
    location: "westeurope",
    azureadTenantId: "99999999-8888-4777-8666-555555555555",
  },
  sentinel: { resourceGroup: "rg-s", workspaceName: "law-s" },
  anyrunApiKey: pulumi.secret("k"),
};

describe("stack configuration", () => {
  it("applies defaults and derives the tenant slug from the stack name", () => {
    const s = parseSettings(base);
    expect(s.tenantSlug).toBe("contosopro");
    expect(s.sentinel).toEqual({
      subscriptionId: base.provider.subscriptionId,
      resourceGroup: "rg-s",
      workspaceName: "law-s",
      runOnIncidentUpdate: false,
      automationRuleOrder: 100,
    });
    expect(s.functions).toEqual({ packagePath: "/repo/dist/functions.zip", maximumInstanceCount: 40, instanceMemoryMB: 2048 });
    expect(s.defender.appRoles).toEqual(["Machine.Read.All", "Machine.ReadWrite.All", "Machine.LiveResponse"]);
    expect(s.threatIntelUpload).toBe(true);
    expect(s.storage.stagingRetentionDays).toBe(1);
  });

  it("validates connector settings with the functions' own schema", () => {
    const s = parseSettings({ ...base, appSettings: { ANYRUN_OPT_PRIVACY: "owner", ANYRUN_OPT_TIMEOUT: 200 } });
    expect(s.appSettings).toEqual({ ANYRUN_OPT_PRIVACY: "owner", ANYRUN_OPT_TIMEOUT: "200" });
    expect(() =>
      parseSettings({
        ...base,
        appSettings: { ANYRUN_OPT_PRIVACY: "everyone", ANYRUN_TYPO: "1", ANYRUN_API_KEY: "plain", EVENTGRID_KEY: "k" },
      }),
    ).toThrow(
      [
        'appSettings.ANYRUN_OPT_PRIVACY: "everyone" is not a valid value',
        "appSettings.ANYRUN_TYPO is not a connector setting (see shared/src/config.ts)",
        "appSettings.ANYRUN_API_KEY is set by the program from the resources it creates",
        "appSettings.EVENTGRID_KEY is set by the program from the resources it creates",
      ].join("\n  - "),
    );
  });

  it("names every missing required key", () => {
    expect(() =>
      parseSettings({ ...base, provider: {}, sentinel: {}, anyrunApiKey: undefined, tenant: "Bad_Slug" }),
    ).toThrow(
      [
        "azure-native:tenantId is required",
        "azure-native:subscriptionId is required",
        "azure-native:location is required",
        "azuread:tenantId is required",
        'tenant "Bad_Slug" must match /^[a-z][a-z0-9]{1,9}$/ (set the "tenant" config key)',
        "sentinel.resourceGroup is required",
        "sentinel.workspaceName is required",
        "anyrunApiKey is required (set it with `pulumi config set --secret anyrunApiKey`)",
      ].join("\n  - "),
    );
  });

  it("refuses an azuread tenant other than the azure-native one", () => {
    expect(() => parseSettings({ ...base, provider: { ...base.provider, azureadTenantId: "12345678-8888-4777-8666-555555555555" } })).toThrow(
      "azuread:tenantId (12345678-8888-4777-8666-555555555555) must equal azure-native:tenantId (99999999-8888-4777-8666-555555555555)",
    );
  });

  it("takes the operator replay function's settings and keeps the tables the program creates", () => {
    const s = parseSettings({ ...base, appSettings: { REPLAY_REQUIRE_PRINCIPAL: "true", REPLAY_ALLOWED_ROLES: "Replay.Operator" } });
    expect(s.appSettings).toEqual({ REPLAY_REQUIRE_PRINCIPAL: "true", REPLAY_ALLOWED_ROLES: "Replay.Operator" });
    expect(() => parseSettings({ ...base, appSettings: { LIVE_RESPONSE_TABLE: "mytable" } })).toThrow(
      "appSettings.LIVE_RESPONSE_TABLE is set by the program from the resources it creates",
    );
  });

  it("refuses Defender permissions without Live Response", () => {
    expect(() => parseSettings({ ...base, defender: { appRoles: ["Machine.Read.All"] } })).toThrow(
      "defender.appRoles must include Machine.LiveResponse",
    );
  });
});

describe("resource names", () => {
  it("are valid, stable and distinct per subscription", () => {
    const a = resourceNames("contoso", base.provider.subscriptionId!);
    const b = resourceNames("contoso", "22222222-2222-4333-8444-555555555555");
    expect(a).toMatchObject({ resourceGroup: "rg-anyrun-contoso" });
    expect(a.stagingAccount).toMatch(/^stcontosostg[0-9a-f]{6}$/);
    expect(a.keyVault.length).toBeLessThanOrEqual(24);
    expect(resourceNames("abcdefghij", base.provider.subscriptionId!).keyVault.length).toBeLessThanOrEqual(24);
    expect(resourceNames("abcdefghij", base.provider.subscriptionId!).stagingAccount.length).toBeLessThanOrEqual(24);
    expect(a.stagingAccount).toBe(resourceNames("contoso", base.provider.subscriptionId!).stagingAccount);
    expect(a.stagingAccount).not.toBe(b.stagingAccount);
    expect(() => resourceNames("Contoso", base.provider.subscriptionId!)).toThrow(/tenant slug/);
  });

  it("formats ISO durations and deterministic GUIDs", () => {
    expect(isoSeconds(60)).toBe("PT1M");
    expect(isoSeconds(45)).toBe("PT45S");
    const guid = deterministicGuid("scope", "principal", "role");
    expect(guid).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(deterministicGuid("scope", "principal", "role")).toBe(guid);
    expect(deterministicGuid("scope", "principal", "other")).not.toBe(guid);
  });
});
