import { describe, expect, it } from "vitest";
import { deadLetterEntities, filterMatches, resendTarget, resolveEntity } from "@connector/shared/replay/entities";
import { filterInputSchema, formatAge, parseDuration, resendRequestSchema, toFilter } from "@connector/shared/replay/filters";
import { isDeadLetterProperty, replayMessageId, stripDeadLetterProperties } from "@connector/shared/replay/servicebus";
import { table } from "@connector/services/replay/format";
import { clientPrincipal } from "@connector/services/replay/http-api";
import { compileRoute } from "@connector/local/functions-host/http";
import { functionTriggers } from "@connector/shared/topology";

describe("durations and ages", () => {
  it("parses operator durations", () => {
    expect(parseDuration("90s")).toBe(90_000);
    expect(parseDuration("10m")).toBe(600_000);
    expect(parseDuration("2h")).toBe(7_200_000);
    expect(parseDuration("1d")).toBe(86_400_000);
    expect(parseDuration("1h30m")).toBe(5_400_000);
    expect(parseDuration("250ms")).toBe(250);
    expect(parseDuration(" 1W ")).toBe(604_800_000);
    for (const bad of ["", "10", "m", "10 m", "1h-", "soon"]) expect(() => parseDuration(bad)).toThrow(/Invalid duration/);
  });

  it("formats ages compactly", () => {
    expect(formatAge(0)).toBe("0s");
    expect(formatAge(45_999)).toBe("45s");
    expect(formatAge(12 * 60_000 + 5_000)).toBe("12m05s");
    expect(formatAge(3 * 3_600_000 + 2 * 60_000)).toBe("3h02m");
    expect(formatAge(4 * 86_400_000 + 7 * 3_600_000)).toBe("4d07h");
  });
});

describe("filters as JSON (HTTP API)", () => {
  it("accepts one or many entities / ids, durations as text or ms, and rejects unknown keys", () => {
    const parsed = filterInputSchema.parse({ entity: ["incident-intake"], entities: "analysis-watch", reason: "Invalid", exactReason: "true", olderThan: "10m", newerThan: 7_200_000, id: "a,b", limit: "5" });
    expect(toFilter(parsed)).toEqual({
      entities: ["incident-intake", "analysis-watch"],
      reason: "Invalid",
      exactReason: true,
      olderThanMs: 600_000,
      newerThanMs: 7_200_000,
      ids: ["a", "b"],
      limit: 5,
    });
    expect(filterInputSchema.safeParse({ olderThan: "soon" }).success).toBe(false);
    expect(filterInputSchema.safeParse({ colour: "red" }).success).toBe(false);
    // Empty values never widen the selection to every dead letter.
    for (const empty of [{ id: "" }, { id: "," }, { ids: ["a", ""] }, { ids: [] }, { entities: [] }, { reason: "" }, { reason: "  " }, { entity: "" }]) {
      expect(filterInputSchema.safeParse(empty).success, JSON.stringify(empty)).toBe(false);
    }
    expect(resendRequestSchema.safeParse({ ids: ["a"] }).success).toBe(false);
    expect(resendRequestSchema.safeParse({ ids: [], dryRun: false }).success).toBe(false);
    expect(resendRequestSchema.parse({ ids: ["a"], dryRun: false })).toMatchObject({ dryRun: false });
  });
});

describe("entities and routing", () => {
  it("knows every queue and subscription of the topology and the names operators type", () => {
    expect(deadLetterEntities().map((e) => e.name)).toEqual([
      "incident-intake",
      "live-response-watch",
      "analysis-watch",
      "artifact-commands/submit-url",
      "artifact-commands/collect-file",
    ]);
    expect(resolveEntity("Incident-Intake").name).toBe("incident-intake");
    expect(resolveEntity("artifact-commands/Subscriptions/submit-url").name).toBe("artifact-commands/submit-url");
    expect(resolveEntity("artifact-commands/submit-url/$DeadLetterQueue").name).toBe("artifact-commands/submit-url");
    expect(resolveEntity("collect-file").name).toBe("artifact-commands/collect-file");
    expect(() => resolveEntity("artifact-commands")).toThrow(/Unknown entity/);
  });

  it("sends a queue's dead letter to the queue and a subscription's to its topic, when only that subscription matches", () => {
    const queue = resolveEntity("analysis-watch");
    expect(resendTarget(queue, {})).toEqual({ ok: true, entity: "analysis-watch" });
    const submitUrl = resolveEntity("submit-url");
    expect(resendTarget(submitUrl, { kind: "url", incidentId: "i" })).toEqual({ ok: true, entity: "artifact-commands" });
    expect(resendTarget(resolveEntity("collect-file"), { kind: "file" })).toEqual({ ok: true, entity: "artifact-commands" });
    const noKind = resendTarget(submitUrl, { incidentId: "i" });
    expect(noKind.ok).toBe(false);
    expect(!noKind.ok && noKind.reason).toMatch(/would not match the filter of submit-url/);
    expect(resendTarget(submitUrl, { kind: "file" }).ok).toBe(false);
    expect(filterMatches({ kind: "url" }, { kind: "url", other: 1 })).toBe(true);
    expect(filterMatches({ kind: "url" }, { kind: "URL" })).toBe(false);
  });
});

describe("the replay copy", () => {
  it("strips every dead-letter property and nothing else", () => {
    expect(["DeadLetterReason", "deadletterreason", "DeadLetterErrorDescription", "x-opt-deadletter-source", "X-OPT-DEADLETTER-REASON"].every(isDeadLetterProperty)).toBe(true);
    expect(["kind", "DeadLetter", "reason", "replayCount"].some(isDeadLetterProperty)).toBe(false);
    expect(stripDeadLetterProperties({ kind: "url", DeadLetterReason: "x", DeadLetterErrorDescription: "y", "x-opt-deadletter-foo": 1 })).toEqual({ kind: "url" });
  });

  it("derives a deterministic id within 128 characters", () => {
    expect(replayMessageId("inc-1:art-1:command", 1)).toBe("inc-1:art-1:command:replay:1");
    const long = "x".repeat(125);
    const id = replayMessageId(long, 12);
    expect(id).toHaveLength(128);
    expect(id).toBe(replayMessageId(long, 12));
    expect(id.endsWith(":replay:12")).toBe(true);
    expect(replayMessageId(`${"x".repeat(124)}y`, 12)).not.toBe(id);
  });
});

describe("operator API helpers", () => {
  it("reads the App Service Authentication principal", () => {
    const encode = (o: unknown) => Buffer.from(JSON.stringify(o)).toString("base64");
    const headers = (h: Record<string, string>) => new Headers(h);
    expect(clientPrincipal(headers({}))).toBeUndefined();
    expect(clientPrincipal(headers({ "x-ms-client-principal": "%%%" }))).toBeUndefined();
    expect(
      clientPrincipal(
        headers({
          "x-ms-client-principal": encode({ claims: [{ typ: "preferred_username", val: "ops@contoso.com" }, { typ: "roles", val: "DeadLetter.Replay" }, { typ: "custom_role", val: "Other" }], role_typ: "custom_role" }),
        }),
      ),
    ).toEqual({ name: "ops@contoso.com", roles: ["DeadLetter.Replay", "Other"] });
    expect(clientPrincipal(headers({ "x-ms-client-principal": encode({ claims: [] }), "x-ms-client-principal-name": "ops" }))).toEqual({ name: "ops", roles: [] });
  });

  it("compiles the topology's HTTP route like the Functions host", () => {
    const trigger = functionTriggers.replay;
    const { pattern, names } = compileRoute(trigger.route);
    expect(names).toEqual(["action"]);
    expect(pattern.exec("/ops/deadletters")?.[1]).toBeUndefined();
    expect(pattern.exec("/ops/deadletters/")).not.toBeNull();
    expect(pattern.exec("/ops/deadletters/resend")?.[1]).toBe("resend");
    expect(pattern.exec("/OPS/DeadLetters/list")?.[1]).toBe("list");
    expect(pattern.exec("/ops/deadletters/a/b")).toBeNull();
    expect(pattern.exec("/ops")).toBeNull();
  });

  it("aligns table columns and redacts and truncates cells", () => {
    const text = table(
      [
        ["A", 10],
        ["LONGER", 5],
        ["LAST", 20],
      ],
      [
        ["x", "1234567", "https://h/p?sig=abc"],
        ["yy", "1", ""],
      ],
    );
    expect(text.split("\n")).toEqual(["A   LONGER  LAST", "x   1234…   https://h/p?sig=RED…", "yy  1"]);
  });
});
