import type { IncidentRef } from "@connector/shared/messages";
import type { Logger } from "@connector/shared/logger";
import type { JobStore } from "@connector/shared/job-store";
import type { Bus } from "@connector/shared/bus";
import type { AnalysisEvents } from "@connector/shared/analysis-events";
import type { StagingStore } from "@connector/shared/staging";
import type { Machine, MdeClient } from "@connector/shared/clients/mde";

/**
 * What the cores need from the outside world, as narrow interfaces. The typed clients satisfy
 * them in the Function App; unit tests can hand in doubles of just these calls.
 */

export type SubmitResult = { kind: "task"; taskId: string } | { kind: "queued"; queueTaskId: string };

export interface SandboxReport {
  final: boolean;
  failed: boolean;
  taskUrl: string;
  verdict?: { threatLevel: number; threatLevelText: string; score: number };
  tags: string[];
}

export interface SandboxIoc {
  type: string;
  value: string;
  reputation: number;
}

import type { SandboxOptions } from "@connector/shared/anyrun/options";
export type SandboxOptionValues = SandboxOptions;

export interface SandboxPort {
  submitUrl(url: string, options: SandboxOptionValues): Promise<SubmitResult>;
  submitFile(file: { fileName: string; content: NodeJS.ReadableStream; size: number }, options: SandboxOptionValues): Promise<SubmitResult>;
  getReport(taskId: string): Promise<SandboxReport>;
  getIocs(taskId: string): Promise<SandboxIoc[]>;
  taskUrl(taskId: string): string;
  /** The newest matching task submitted after `since`; throws HistoryInconclusiveError when the history could not be searched that far. */
  findTask(criteria: { url?: string; sha256?: string; since: Date }): Promise<string | undefined>;
}

/** The MDE calls the cores make (the typed client satisfies it). */
export type EndpointPort = Pick<MdeClient, "getMachine" | "runScript" | "getMachineAction" | "downloadScriptResult" | "cancelMachineAction">;
export type MachineInfo = Machine;

export interface IncidentPort {
  listEntities(ref: IncidentRef): Promise<readonly unknown[]>;
  putComment(ref: IncidentRef, commentId: string, message: string): Promise<unknown>;
  /** Ids (names) of the incident's comments. */
  listCommentIds(ref: IncidentRef): Promise<string[]>;
  addLabels(ref: IncidentRef, labels: string[]): Promise<unknown>;
}

export interface ThreatIntelPort {
  uploadStixObjects(workspaceId: string, objects: Record<string, unknown>[]): Promise<{ accepted: number; errors: { recordIndex: number; errorMessages: string[] }[] }>;
}

export interface Settings {
  analysisPollSeconds: number;
  analysisDeadlineMinutes: number;
  liveResponsePollSeconds: number;
  liveResponseDeadlineMinutes: number;
  sasExpiryMinutes: number;
  scriptWindows: string;
  scriptUnix: string;
  urlOptions: SandboxOptionValues;
  fileOptions: SandboxOptionValues;
  tiValidDays: number;
  retry: { baseSeconds: number; maxSeconds: number; maxAttempts: number };
  /** How long a submission may be in flight before another delivery treats its outcome as unknown. */
  submissionGraceSeconds: number;
  intake: IntakePolicy;
}

/** Which of an incident's entities are analysed (MAX_ARTIFACTS_PER_INCIDENT, COLLECT_FILES_WITHOUT_HASH). */
export interface IntakePolicy {
  maxArtifactsPerIncident: number;
  collectFilesWithoutHash: boolean;
}

export interface CoreDeps {
  jobs: JobStore;
  bus: Pick<Bus, "sendArtifactCommand" | "scheduleArtifactCommand" | "scheduleAnalysisWatch" | "scheduleLiveResponseWatch">;
  events: Pick<AnalysisEvents, "publishCompleted">;
  staging: Pick<StagingStore, "createUploadUrl" | "digest" | "openRead" | "delete">;
  sandbox: SandboxPort;
  endpoints: EndpointPort;
  incidents: IncidentPort;
  threatIntel: ThreatIntelPort;
  settings: Settings;
  logger: Logger;
  now?: () => Date;
}

/** The sandbox history was too long to search the whole submission window. */
export class HistoryInconclusiveError extends Error {
  override name = "HistoryInconclusiveError";
  constructor(readTasks: number) {
    super(`the account's analysis history could not be searched back to the submission (read ${readTasks} tasks)`);
  }
}
