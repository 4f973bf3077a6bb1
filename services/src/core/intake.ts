import { parseIncidentTrigger, sentinelEntitySchema, type SentinelEntity } from "@connector/shared/incident-trigger";
import type { IncidentRef } from "@connector/shared/messages";
import type { JobStore } from "@connector/shared/job-store";
import type { Logger } from "@connector/shared/logger";
import { uuidV5 } from "@connector/shared/ids";
import type { Bus } from "@connector/shared/bus";
import type { IncidentPort, IntakePolicy } from "./ports.ts";
import { extractArtifacts } from "./extract-artifacts.ts";
import type { Artifact } from "@connector/shared/messages";
import { noArtifactsComment, startedComment } from "./comments.ts";
import { postComment } from "./job-outcomes.ts";

export interface IntakeDeps {
  jobs: JobStore;
  bus: Pick<Bus, "sendArtifactCommand">;
  sentinel: Pick<IncidentPort, "listEntities" | "putComment" | "listCommentIds">;
  policy: IntakePolicy;
  logger: Logger;
}

export interface IntakeResult {
  incidentId: string;
  published: string[];
  notCollectable: string[];
  alreadyKnown: string[];
  entitiesFrom: "trigger" | "api";
}

/** Deterministic comment ids: a redelivered message updates the same comment. */
export const commentIds = {
  started: (incidentId: string) => uuidV5(`${incidentId}:started`),
  startedUpdate: (incidentId: string, eventKey: string) => uuidV5(`${incidentId}:started:${eventKey}`),
  result: (incidentId: string, artifactId: string) => uuidV5(`${incidentId}:${artifactId}:result`),
  failure: (incidentId: string, artifactId: string) => uuidV5(`${incidentId}:${artifactId}:failure`),
};

/**
 * Intake: validates the trigger body, turns the incident's entities into artifacts, records one
 * job per artifact and publishes one command per URL or file. Redelivery is harmless: a job that
 * already moved past "queued" is not published again, and the started comment has a fixed id.
 */
export async function handleIncidentTrigger(body: unknown, deps: IntakeDeps): Promise<IntakeResult> {
  const trigger = parseIncidentTrigger(body);
  const { incident } = trigger;
  const log = deps.logger.child({ incidentId: incident.incidentId, incidentNumber: incident.incidentNumber });

  const extractOptions = { collectFilesWithoutHash: deps.policy.collectFilesWithoutHash };
  let extraction = extractArtifacts(trigger.entities, extractOptions);
  let entitiesFrom: IntakeResult["entitiesFrom"] = "trigger";
  if (extraction.artifacts.length === 0) {
    // Entities can be missing or late in the trigger: read them from the incident itself.
    const fetched = await deps.sentinel.listEntities(incident);
    const entities: SentinelEntity[] = fetched.flatMap((e) => {
      const parsed = sentinelEntitySchema.safeParse(e);
      return parsed.success ? [parsed.data] : [];
    });
    extraction = extractArtifacts(entities, extractOptions);
    entitiesFrom = "api";
  }
  // At most MAX_ARTIFACTS_PER_INCIDENT analysed artifacts over all the incident's triggers (an update
  // brings new entities); those admitted by an earlier trigger keep their place.
  const budget = await deps.jobs.admit(incident.incidentId, byPriority(extraction.artifacts).map((a) => a.artifactId), deps.policy.maxArtifactsPerIncident);
  const { admitted, overLimit } = splitByBudget(extraction.artifacts, budget);
  extraction = { ...extraction, artifacts: admitted };

  const result: IntakeResult = { incidentId: incident.incidentId, published: [], notCollectable: [], alreadyKnown: [], entitiesFrom };
  for (const artifact of extraction.artifacts) {
    const status = artifact.kind === "hash" ? "not_collectable" : "queued";
    const created = await deps.jobs.create({ incidentId: incident.incidentId, artifactId: artifact.artifactId, status, incident, artifact, createdBy: trigger.eventKey });
    if (artifact.kind === "hash") {
      result.notCollectable.push(artifact.artifactId);
      continue;
    }
    const job = created ? undefined : await deps.jobs.get(incident.incidentId, artifact.artifactId);
    // Another event's job is that event's to publish (its own redelivery does, after a crash).
    if (job && (job.status !== "queued" || job.createdBy !== trigger.eventKey)) {
      result.alreadyKnown.push(artifact.artifactId);
      continue;
    }
    // New, or recorded by an earlier delivery of this event that may have stopped before publishing.
    await deps.bus.sendArtifactCommand({ incident, artifact, attempt: 0 });
    result.published.push(artifact.artifactId);
  }

  const commenter = { incidents: deps.sentinel, logger: log };
  // One "analysis started" comment per trigger event, naming the artifacts this event recorded:
  // a later event (an update with new entities) adds its own comment and never rewrites an
  // earlier one. Posted on every delivery, not only when this one created jobs: a first delivery
  // that recorded the jobs and then failed must not leave the incident without it; the fixed
  // comment id makes the repeat an update of the same comment.
  const jobs = await deps.jobs.listByIncident(incident.incidentId);
  const order = new Map(extraction.artifacts.map((a, i) => [a.artifactId, i]));
  const mine = jobs
    .filter((j) => j.createdBy === trigger.eventKey && order.has(j.artifactId))
    .sort((a, b) => order.get(a.artifactId)! - order.get(b.artifactId)!)
    .map((j) => j.artifact);
  const isCreate = trigger.eventType === "Create";
  const commentId = isCreate ? commentIds.started(incident.incidentId) : commentIds.startedUpdate(incident.incidentId, trigger.eventKey);
  if (jobs.length === 0) {
    await postComment(commenter, incident, commentIds.started(incident.incidentId), noArtifactsComment(extraction.ignored));
  } else if (mine.length > 0 || overLimit.length > 0) {
    const limit = overLimit.length ? { max: deps.policy.maxArtifactsPerIncident, artifacts: overLimit } : undefined;
    await postComment(commenter, incident, commentId, startedComment(mine, extraction.ignored, limit, { update: !isCreate }));
  }
  log.info("incident taken in", {
    event: trigger.eventType,
    entitiesFrom,
    published: result.published.length,
    notCollectable: result.notCollectable.length,
    alreadyKnown: result.alreadyKnown.length,
  });
  return result;
}

/**
 * The order in which artifacts claim the incident's analysis budget: files (the detected samples)
 * before URLs, each in entity order, so a redelivery claims the same ones. Hash-only artifacts
 * cost nothing and are left out.
 */
export function byPriority(artifacts: readonly Artifact[]): Artifact[] {
  return [...artifacts.filter((a) => a.kind === "file"), ...artifacts.filter((a) => a.kind === "url")];
}

/** Splits the extracted artifacts into those within the budget (plus every hash-only one) and those over it. */
export function splitByBudget(artifacts: readonly Artifact[], budget: ReadonlySet<string>): { admitted: Artifact[]; overLimit: Artifact[] } {
  return {
    admitted: artifacts.filter((a) => a.kind === "hash" || budget.has(a.artifactId)),
    overLimit: byPriority(artifacts).filter((a) => !budget.has(a.artifactId)),
  };
}
