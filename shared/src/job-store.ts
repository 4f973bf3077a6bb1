import { RestError, type TableClient, type TableEntity, type TableEntityResult } from "@azure/data-tables";
import { ensureTable } from "./tables.ts";
import { RetryLaterError } from "./errors.ts";
import { z } from "zod";
import { artifactSchema, incidentRefSchema, type Artifact, type IncidentRef } from "./messages.ts";

/**
 * Job state in Table storage: one row per artifact of an incident (PartitionKey = incident id,
 * RowKey = artifact id). Each step records what it did, so a redelivered message can see that a
 * sandbox task, Live Response action or comment already exists.
 */

export const jobStatuses = [
  "queued", // command published, nothing done yet
  "collecting", // Live Response action started on the endpoint
  "uploaded", // sample is in the staging container
  "submitting", // POST to the sandbox in flight (or interrupted by a crash)
  "submission_uncertain", // the POST ended without a clear answer: reconcile with the history first
  "submitted", // sandbox task exists (taskId set)
  "completed", // sandbox finished; completion event published
  "enriched", // verdict written to the incident
  "failed", // terminal failure, reported on the incident
  "not_collectable", // hash-only artifact, reported on the incident
] as const;
export type JobStatus = (typeof jobStatuses)[number];

export const terminalStatuses: ReadonlySet<JobStatus> = new Set(["enriched", "failed", "not_collectable"]);

export interface JobRecord {
  incidentId: string;
  artifactId: string;
  status: JobStatus;
  incident: IncidentRef;
  artifact: Artifact;
  taskId?: string;
  taskUrl?: string;
  machineActionId?: string;
  blobName?: string;
  /** SHA-256 of the collected sample (files), recorded before submission for reconciliation. */
  sampleSha256?: string;
  /** SHA-256 the endpoint script reported for what it uploaded (its result line). */
  reportedSha256?: string;
  /** When the paid submission call started: history lookups of an uncertain submission start here. */
  submittingAt?: string;
  /** The incident trigger event that recorded the job (its "analysis started" comment names it). */
  createdBy?: string;
  /** An enrichment of this job runs until then: a concurrent delivery of its event waits. */
  enrichingUntil?: string;
  /** Indicators accepted by Sentinel TI for this job: a redelivery does not upload the set again. */
  indicatorsUploaded?: number;
  /** ANY.RUN answered 202 with a queue id: the task exists but has no permanent id yet. */
  queueTaskId?: string;
  /** Sandbox environment chosen from the endpoint (env_os, env_version, env_bitness). */
  sandboxEnvironment?: Record<string, string>;
  verdict?: { threatLevel: number; threatLevelText: string; score: number };
  failure?: string;
  createdAt: string;
  updatedAt: string;
  etag?: string;
}

type Patch = Partial<Omit<JobRecord, "incidentId" | "artifactId" | "createdAt" | "etag">>;

const jsonFields = ["incident", "artifact", "sandboxEnvironment", "verdict"] as const;

function toEntity(record: Partial<JobRecord> & { incidentId: string; artifactId: string }): TableEntity<Record<string, unknown>> {
  const entity: TableEntity<Record<string, unknown>> = { partitionKey: record.incidentId, rowKey: record.artifactId };
  for (const [key, value] of Object.entries(record)) {
    if (key === "incidentId" || key === "artifactId" || key === "etag" || value === undefined) continue;
    entity[key] = (jsonFields as readonly string[]).includes(key) ? JSON.stringify(value) : value;
  }
  return entity;
}

const rowSchema = z.looseObject({
  partitionKey: z.string(),
  rowKey: z.string(),
  etag: z.string(),
  status: z.enum(jobStatuses),
  incident: z.string(),
  artifact: z.string(),
  createdAt: z.string(),
  updatedAt: z.string(),
});

function fromEntity(entity: TableEntityResult<Record<string, unknown>>): JobRecord {
  const row = rowSchema.parse(entity);
  const opt = (k: string) => (typeof entity[k] === "string" ? (entity[k] as string) : undefined);
  const json = (k: string) => (opt(k) ? JSON.parse(opt(k)!) : undefined);
  return {
    incidentId: row.partitionKey,
    artifactId: row.rowKey,
    status: row.status,
    incident: incidentRefSchema.parse(JSON.parse(row.incident)),
    artifact: artifactSchema.parse(JSON.parse(row.artifact)),
    createdAt: row.createdAt,
    updatedAt: row.updatedAt,
    etag: row.etag,
    ...(opt("taskId") ? { taskId: opt("taskId") } : {}),
    ...(opt("taskUrl") ? { taskUrl: opt("taskUrl") } : {}),
    ...(opt("machineActionId") ? { machineActionId: opt("machineActionId") } : {}),
    ...(opt("blobName") ? { blobName: opt("blobName") } : {}),
    ...(opt("sampleSha256") ? { sampleSha256: opt("sampleSha256") } : {}),
    ...(opt("reportedSha256") ? { reportedSha256: opt("reportedSha256") } : {}),
    ...(opt("submittingAt") ? { submittingAt: opt("submittingAt") } : {}),
    ...(opt("enrichingUntil") ? { enrichingUntil: opt("enrichingUntil") } : {}),
    ...(opt("createdBy") ? { createdBy: opt("createdBy") } : {}),
    ...(typeof entity["indicatorsUploaded"] === "number" ? { indicatorsUploaded: entity["indicatorsUploaded"] } : {}),
    ...(opt("queueTaskId") ? { queueTaskId: opt("queueTaskId") } : {}),
    ...(opt("failure") ? { failure: opt("failure") } : {}),
    ...(opt("sandboxEnvironment") ? { sandboxEnvironment: json("sandboxEnvironment") } : {}),
    ...(opt("verdict") ? { verdict: json("verdict") } : {}),
  };
}

export class JobStore {
  constructor(private readonly table: TableClient) {}

  async ensureTable(): Promise<void> {
    await ensureTable(this.table);
  }

  /** Creates the job; returns false (and changes nothing) when it already exists. */
  async create(job: Omit<JobRecord, "createdAt" | "updatedAt" | "etag">): Promise<boolean> {
    const now = new Date().toISOString();
    try {
      await this.table.createEntity(toEntity({ ...job, createdAt: now, updatedAt: now }));
      return true;
    } catch (err) {
      if (err instanceof RestError && err.statusCode === 409) return false;
      throw err;
    }
  }

  async get(incidentId: string, artifactId: string): Promise<JobRecord | undefined> {
    try {
      return fromEntity(await this.table.getEntity<Record<string, unknown>>(incidentId, artifactId));
    } catch (err) {
      if (err instanceof RestError && err.statusCode === 404) return undefined;
      throw err;
    }
  }

  /**
   * Merges `patch` into the job. With `ifMatch` the write only succeeds when nobody changed the
   * row since it was read (412 → `ConcurrentUpdateError`).
   */
  async update(incidentId: string, artifactId: string, patch: Patch, ifMatch?: string): Promise<void> {
    try {
      await this.table.updateEntity(
        toEntity({ ...patch, incidentId, artifactId, updatedAt: new Date().toISOString() }),
        "Merge",
        ifMatch ? { etag: ifMatch } : {},
      );
    } catch (err) {
      if (err instanceof RestError && err.statusCode === 412) throw new ConcurrentUpdateError(incidentId, artifactId);
      throw err;
    }
  }

  async listByIncident(incidentId: string): Promise<JobRecord[]> {
    const out: JobRecord[] = [];
    const filter = `PartitionKey eq '${incidentId.replace(/'/g, "''")}'`;
    for await (const e of this.table.listEntities<Record<string, unknown>>({ queryOptions: { filter } })) {
      if (e.rowKey !== ADMISSION_ROW) out.push(fromEntity(e));
    }
    return out;
  }

  /**
   * Admits `candidates` (in priority order) to the incident's analysis budget of `max` artifacts and
   * returns every artifact id admitted so far. The budget is one etag-guarded row per incident, so
   * two triggers of the same incident taken in at the same time cannot both spend it. Every
   * analysed job is admitted here before it is created, so the row alone says what is spent.
   */
  async admit(incidentId: string, candidates: readonly string[], max: number): Promise<ReadonlySet<string>> {
    for (let attempt = 0; attempt < 20; attempt++) {
      const row = await this.readAdmission(incidentId);
      const admitted = new Set(row?.ids ?? []);
      for (const id of candidates) if (admitted.size < max) admitted.add(id);
      const ids = [...admitted];
      if (row && ids.length === row.ids.length) return admitted;
      const entity = { partitionKey: incidentId, rowKey: ADMISSION_ROW, admitted: JSON.stringify(ids), updatedAt: new Date().toISOString() };
      try {
        if (row) await this.table.updateEntity(entity, "Replace", { etag: row.etag });
        else await this.table.createEntity(entity);
        return admitted;
      } catch (err) {
        if (err instanceof RestError && (err.statusCode === 409 || err.statusCode === 412)) continue;
        throw err;
      }
    }
    throw new RetryLaterError(`The analysis budget of incident ${incidentId} kept changing under concurrent intake; trying again later`);
  }

  private async readAdmission(incidentId: string): Promise<{ ids: string[]; etag: string } | undefined> {
    try {
      const row = admissionRowSchema.parse(await this.table.getEntity<Record<string, unknown>>(incidentId, ADMISSION_ROW));
      return { ids: z.array(z.string()).parse(JSON.parse(row.admitted)), etag: row.etag };
    } catch (err) {
      if (err instanceof RestError && err.statusCode === 404) return undefined;
      throw err;
    }
  }
}

/** RowKey of the per-incident budget row; `~` sorts after every artifact id and never starts one. */
const ADMISSION_ROW = "~admission";
const admissionRowSchema = z.looseObject({ etag: z.string(), admitted: z.string() });

export class ConcurrentUpdateError extends Error {
  override name = "ConcurrentUpdateError";
  constructor(incidentId: string, artifactId: string) {
    super(`Job ${incidentId}/${artifactId} was changed concurrently`);
  }
}
