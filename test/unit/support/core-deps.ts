import { JobStore } from "@connector/shared/job-store";
import { createLogger } from "@connector/shared/logger";
import type { AnalysisCompleted, AnalysisWatch, ArtifactCommand, IncidentRef, LiveResponseWatch } from "@connector/shared/messages";
import type { CoreDeps, SandboxIoc, SandboxReport, SubmitResult } from "@connector/services/core/ports";
import { MemoryTable } from "./memory-table.ts";

/**
 * Core dependencies for unit tests: a real JobStore over an in-memory table, and recorders of
 * every outbound effect (messages, events, comments, labels, indicator uploads, submissions).
 */
export interface Recorded {
  commands: ArtifactCommand[];
  scheduledCommands: { command: ArtifactCommand; at: Date }[];
  analysisWatches: { watch: AnalysisWatch; at: Date }[];
  liveResponseWatches: { watch: LiveResponseWatch; at: Date }[];
  events: AnalysisCompleted[];
  comments: Map<string, string>;
  labels: string[];
  uploads: Record<string, unknown>[][];
  submissions: { kind: "url" | "file"; target: string }[];
}

export interface FakeSandbox {
  submit: () => Promise<SubmitResult>;
  report: (taskId: string) => Promise<SandboxReport>;
  iocs: SandboxIoc[];
  history: { taskId: string; url?: string; sha256?: string }[];
}

export const incident: IncidentRef = {
  subscriptionId: "00000000-0000-0000-0000-000000000000",
  resourceGroup: "rg",
  workspaceName: "ws",
  workspaceId: "22222222-2222-2222-2222-222222222222",
  incidentId: "33333333-3333-3333-3333-333333333333",
  incidentNumber: 7,
};

export function coreDeps(sandbox: Partial<FakeSandbox> = {}) {
  const table = new MemoryTable();
  const recorded: Recorded = {
    commands: [],
    scheduledCommands: [],
    analysisWatches: [],
    liveResponseWatches: [],
    events: [],
    comments: new Map(),
    labels: [],
    uploads: [],
    submissions: [],
  };
  let taskCounter = 0;
  const fake: FakeSandbox = {
    submit: async () => ({ kind: "task", taskId: `task-${++taskCounter}` }),
    report: async (taskId) => ({ final: true, failed: false, taskUrl: `https://app.any.run/tasks/${taskId}`, verdict: { threatLevel: 2, threatLevelText: "Malicious activity", score: 100 }, tags: ["trojan"] }),
    iocs: [],
    history: [],
    ...sandbox,
  };
  const deps: CoreDeps & { stagingContainer: string } = {
    jobs: new JobStore(table.asTableClient()),
    bus: {
      sendArtifactCommand: async (c) => void recorded.commands.push(c),
      scheduleArtifactCommand: async (c, at) => void recorded.scheduledCommands.push({ command: c, at }),
      scheduleAnalysisWatch: async (w, at) => void recorded.analysisWatches.push({ watch: w, at }),
      scheduleLiveResponseWatch: async (w, at) => void recorded.liveResponseWatches.push({ watch: w, at }),
    },
    events: { publishCompleted: async (e) => void recorded.events.push(e) },
    staging: {
      createUploadUrl: async (name) => ({ url: `http://127.0.0.1/staging/${name}?sig=secret`, expiresOn: new Date() }),
      digest: async () => undefined,
      openRead: async () => {
        throw new Error("no blob in unit tests");
      },
      delete: async () => undefined,
    },
    stagingContainer: "staging",
    sandbox: {
      submitUrl: async (url) => {
        recorded.submissions.push({ kind: "url", target: url });
        return fake.submit();
      },
      submitFile: async (file) => {
        recorded.submissions.push({ kind: "file", target: file.fileName });
        return fake.submit();
      },
      getReport: (taskId) => fake.report(taskId),
      getIocs: async () => fake.iocs,
      taskUrl: (taskId) => `https://app.any.run/tasks/${taskId}`,
      findTask: async ({ url, sha256 }) => fake.history.find((t) => (url && t.url === url) || (sha256 && t.sha256 === sha256))?.taskId,
    },
    endpoints: {} as CoreDeps["endpoints"],
    incidents: {
      listEntities: async () => [],
      putComment: async (_ref, id, message) => void recorded.comments.set(id, message),
      listCommentIds: async () => [...recorded.comments.keys()],
      addLabels: async (_ref, labels) => {
        for (const l of labels) if (!recorded.labels.some((x) => x.toLowerCase() === l.toLowerCase())) recorded.labels.push(l);
        return recorded.labels;
      },
    },
    threatIntel: {
      uploadStixObjects: async (_ws, objects) => {
        recorded.uploads.push(objects);
        return { accepted: objects.length, errors: [] };
      },
    },
    settings: {
      analysisPollSeconds: 30,
      analysisDeadlineMinutes: 30,
      liveResponsePollSeconds: 20,
      liveResponseDeadlineMinutes: 30,
      sasExpiryMinutes: 30,
      scriptWindows: "anyrun-collect.ps1",
      scriptUnix: "anyrun-collect.sh",
      urlOptions: {},
      fileOptions: {},
      tiValidDays: 90,
      retry: { baseSeconds: 10, maxSeconds: 900, maxAttempts: 5 },
      submissionGraceSeconds: 720,
      intake: { maxArtifactsPerIncident: 25, collectFilesWithoutHash: false },
    },
    logger: createLogger({ level: "error" }),
    now: () => new Date("2026-12-01T10:00:00Z"),
  };
  return { deps, recorded, table, sandbox: fake };
}
