import { createHash } from "node:crypto";
import { z } from "zod";
import type { IncidentRef } from "./messages.ts";
import { describeIssues, InvalidInputError } from "./errors.ts";

/**
 * The body the Sentinel playbook forwards to the intake queue: the Logic Apps "Microsoft Sentinel
 * incident" trigger body. Only the keys confirmed by real captures are required; the rest is read
 * when present (see shared/reference/sentinel-api.md §4).
 */

export const sentinelEntitySchema = z.looseObject({
  id: z.string().optional(),
  name: z.string().optional(),
  kind: z.string(),
  properties: z.looseObject({}).default({}),
});
export type SentinelEntity = z.infer<typeof sentinelEntitySchema>;

export const incidentTriggerSchema = z.looseObject({
  eventUniqueId: z.string().optional(),
  objectEventType: z.string().optional(),
  workspaceId: z.string().min(1),
  workspaceInfo: z.looseObject({
    SubscriptionId: z.string().min(1),
    ResourceGroupName: z.string().min(1),
    WorkspaceName: z.string().min(1),
  }),
  object: z.looseObject({
    id: z.string().regex(/\/providers\/Microsoft\.SecurityInsights\/Incidents\/[^/]+$/i, "object.id is not an incident resource id"),
    name: z.string().optional(),
    properties: z.looseObject({
      incidentNumber: z.number().int().optional(),
      title: z.string().optional(),
      relatedEntities: z.array(z.unknown()).optional(),
    }),
  }),
});
export type IncidentTrigger = z.infer<typeof incidentTriggerSchema>;

export interface ParsedTrigger {
  incident: IncidentRef;
  /** Entities that parsed; malformed ones are counted in `skippedEntities`. */
  entities: SentinelEntity[];
  skippedEntities: number;
  eventType: string;
  /** Names this trigger event: the same for every delivery of it, different for the next event. */
  eventKey: string;
}

export { InvalidInputError };

export function parseIncidentTrigger(body: unknown): ParsedTrigger {
  const parsed = incidentTriggerSchema.safeParse(body);
  if (!parsed.success) {
    throw new InvalidInputError(`Not a Sentinel incident trigger body: ${describeIssues(parsed.error)}`, "InvalidIncidentTrigger");
  }
  const trigger = parsed.data;
  const incidentId = trigger.object.name ?? trigger.object.id.split("/").pop()!;
  const entities: SentinelEntity[] = [];
  let skippedEntities = 0;
  for (const raw of trigger.object.properties.relatedEntities ?? []) {
    const entity = sentinelEntitySchema.safeParse(raw);
    if (entity.success) entities.push(entity.data);
    else skippedEntities++;
  }
  return {
    incident: {
      subscriptionId: trigger.workspaceInfo.SubscriptionId,
      resourceGroup: trigger.workspaceInfo.ResourceGroupName,
      workspaceName: trigger.workspaceInfo.WorkspaceName,
      workspaceId: trigger.workspaceId,
      incidentId,
      ...(trigger.object.properties.incidentNumber !== undefined ? { incidentNumber: trigger.object.properties.incidentNumber } : {}),
      ...(trigger.object.properties.title !== undefined ? { title: trigger.object.properties.title } : {}),
    },
    entities,
    skippedEntities,
    eventType: trigger.objectEventType ?? "Create",
    eventKey: trigger.eventUniqueId || createHash("sha256").update(JSON.stringify(body)).digest("hex").slice(0, 32),
  };
}

/**
 * What the intake playbook does to a trigger body too large for one Service Bus message (256 KiB
 * on the Standard tier): above `aboveChars` characters of JSON it drops the incident's lists the
 * intake can read back from the Sentinel API (entities) or does not use (alerts, comments,
 * bookmarks). 64,000 characters stay under 256 KiB in UTF-8 whatever the text. The playbook's
 * workflow expression and the local runtime's stand-in for it are both built from this.
 */
export const triggerBodyCompaction = {
  aboveChars: 64_000,
  droppedProperties: ["relatedEntities", "alerts", "comments", "bookmarks"],
} as const;

export function compactTriggerBody(body: unknown): unknown {
  if (JSON.stringify(body).length <= triggerBodyCompaction.aboveChars) return body;
  const object = (body as { object?: { properties?: unknown } } | null)?.object;
  if (!object || typeof object.properties !== "object" || object.properties === null) return body;
  const properties = { ...(object.properties as Record<string, unknown>) };
  for (const key of triggerBodyCompaction.droppedProperties) delete properties[key];
  return { ...(body as Record<string, unknown>), object: { ...object, properties } };
}
