import type { JobRecord } from "@connector/shared/job-store";
import type { CoreDeps } from "./ports.ts";
import { failureComment } from "./comments.ts";
import { commentIds } from "./intake.ts";

/** Ends a job as failed and says why on the incident (one comment per artifact, fixed id). */
export async function failJob(deps: Pick<CoreDeps, "jobs" | "incidents" | "logger">, job: JobRecord, reason: string): Promise<void> {
  await deps.incidents.putComment(job.incident, commentIds.failure(job.incidentId, job.artifactId), failureComment(job.artifact, reason, job.taskUrl));
  await deps.jobs.update(job.incidentId, job.artifactId, { status: "failed", failure: reason });
  deps.logger.warn("artifact analysis failed", { incidentId: job.incidentId, artifactId: job.artifactId, reason });
}

export function now(deps: Pick<CoreDeps, "now">): Date {
  return deps.now ? deps.now() : new Date();
}

export function addSeconds(date: Date, seconds: number): Date {
  return new Date(date.getTime() + seconds * 1000);
}
