import { describe, expect, it } from "vitest";
import { readFileSync } from "node:fs";
import { compactTriggerBody, parseIncidentTrigger, triggerBodyCompaction } from "@connector/shared/incident-trigger";

const trigger = JSON.parse(readFileSync(new URL("../fixtures/microsoft/sentinel-incident-trigger-body.COMPOSITE.json", import.meta.url), "utf8"));

describe("compactTriggerBody (what the intake playbook sends)", () => {
  it("sends a body that fits unchanged", () => {
    expect(compactTriggerBody(trigger)).toBe(trigger);
  });

  it("drops the entity, alert, comment and bookmark lists of a body too large for one message, and keeps the incident", () => {
    const large = structuredClone(trigger);
    // 3,000 entities with non-ASCII names: the worst case for UTF-8 size.
    large.object.properties.relatedEntities = Array.from({ length: 3000 }, (_, i) => ({ kind: "Url", properties: { url: `https://例え.example/${i}` } }));
    const compacted = compactTriggerBody(large) as typeof large;
    for (const key of triggerBodyCompaction.droppedProperties) expect(compacted.object.properties).not.toHaveProperty(key);
    expect(Buffer.byteLength(JSON.stringify(compacted), "utf8")).toBeLessThan(256 * 1024);
    // Still a valid trigger: the intake then reads the entities from the Sentinel API.
    const parsed = parseIncidentTrigger(compacted);
    expect(parsed.incident.incidentId).toBe(trigger.object.name);
    expect(parsed.entities).toEqual([]);
    expect(large.object.properties.relatedEntities).toHaveLength(3000);
  });

  it("leaves a large body it cannot shape alone (the intake says what is wrong with it)", () => {
    const odd = { object: "x".repeat(70_000) };
    expect(compactTriggerBody(odd)).toBe(odd);
  });
});
