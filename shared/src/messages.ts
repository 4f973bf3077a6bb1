import { z } from "zod";

/**
 * Contracts of every message and event that crosses a function boundary. Each handler parses its
 * input with these schemas at the boundary; a message that does not parse is dead-lettered with
 * the parse problems as its description.
 */

/** Where an incident lives: enough to address every Sentinel API call. */
export const incidentRefSchema = z.object({
  subscriptionId: z.string().min(1),
  resourceGroup: z.string().min(1),
  workspaceName: z.string().min(1),
  /** Log Analytics workspace GUID (the TI upload API addresses the workspace by it). */
  workspaceId: z.string().min(1),
  /** Incident resource name (GUID). */
  incidentId: z.string().min(1),
  incidentNumber: z.number().int().optional(),
  title: z.string().optional(),
});
export type IncidentRef = z.infer<typeof incidentRefSchema>;

export const hashesSchema = z.object({
  sha256: z.string().regex(/^[0-9a-f]{64}$/).optional(),
  sha1: z.string().regex(/^[0-9a-f]{40}$/).optional(),
  md5: z.string().regex(/^[0-9a-f]{32}$/).optional(),
});
export type Hashes = z.infer<typeof hashesSchema>;

export const urlArtifactSchema = z.object({
  kind: z.literal("url"),
  /** Stable identity within the incident, derived from the normalised URL. */
  artifactId: z.string().min(1),
  url: z.string().min(1),
});

export const fileArtifactSchema = z.object({
  kind: z.literal("file"),
  artifactId: z.string().min(1),
  fileName: z.string().min(1),
  directory: z.string().optional(),
  hashes: hashesSchema,
  /** MDE device id (40 hex) of the host the file was seen on. */
  deviceId: z.string().regex(/^[0-9a-f]{40}$/),
  hostName: z.string().optional(),
});

export const hashOnlyArtifactSchema = z.object({
  kind: z.literal("hash"),
  artifactId: z.string().min(1),
  fileName: z.string().optional(),
  hashes: hashesSchema,
  reason: z.string(),
});

export const artifactSchema = z.discriminatedUnion("kind", [urlArtifactSchema, fileArtifactSchema, hashOnlyArtifactSchema]);
export type UrlArtifact = z.infer<typeof urlArtifactSchema>;
export type FileArtifact = z.infer<typeof fileArtifactSchema>;
export type HashOnlyArtifact = z.infer<typeof hashOnlyArtifactSchema>;
export type Artifact = z.infer<typeof artifactSchema>;

/** Body of a message on the artifact-commands topic. */
export const artifactCommandSchema = z.object({
  incident: incidentRefSchema,
  artifact: z.discriminatedUnion("kind", [urlArtifactSchema, fileArtifactSchema]),
  /** 0 for the first delivery; a retry scheduled after a busy device or a throttled API counts up. */
  attempt: z.number().int().nonnegative().default(0),
});
export type ArtifactCommand = z.infer<typeof artifactCommandSchema>;

/** Body of a scheduled poll of a Live Response action. */
export const liveResponseWatchSchema = z.object({
  incident: incidentRefSchema,
  artifactId: z.string().min(1),
  machineActionId: z.string().min(1),
  attempt: z.number().int().nonnegative(),
  deadline: z.iso.datetime(),
});
export type LiveResponseWatch = z.infer<typeof liveResponseWatchSchema>;

/** Body of a scheduled poll of an ANY.RUN task. */
export const analysisWatchSchema = z.object({
  incident: incidentRefSchema,
  artifactId: z.string().min(1),
  taskId: z.string().min(1),
  attempt: z.number().int().nonnegative(),
  deadline: z.iso.datetime(),
});
export type AnalysisWatch = z.infer<typeof analysisWatchSchema>;

/** `data` of the AnyRun.Sandbox.AnalysisCompleted Event Grid event. */
export const analysisCompletedSchema = z.object({
  incident: incidentRefSchema,
  artifactId: z.string().min(1),
  taskId: z.string().min(1),
  /** `done`: the report is final; `failed`: the sandbox failed the task; `timeout`: our deadline passed. */
  outcome: z.enum(["done", "failed", "timeout"]),
});
export type AnalysisCompleted = z.infer<typeof analysisCompletedSchema>;
