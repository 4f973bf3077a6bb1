/**
 * The one declaration of the connector's messaging topology.
 *
 * The functions (trigger bindings and senders), the local runtime (broker entities, Event Grid
 * subscriptions, functions host) and the Pulumi program all read this module, so an entity the
 * code uses cannot be missing or misnamed in any of them.
 */

export interface QueueDeclaration {
  readonly name: string;
  readonly description: string;
  /** Messages whose delivery count exceeds this go to the dead-letter sub-queue. */
  readonly maxDeliveryCount: number;
  readonly lockDurationSeconds: number;
  readonly duplicateDetectionWindowMinutes: number;
  readonly deadLetterOnExpiration: boolean;
  readonly defaultMessageTtlDays: number;
}

/** A subscription whose rule matches application properties exactly (a correlation filter). */
export interface SubscriptionDeclaration {
  readonly name: string;
  readonly description: string;
  /** Equality over application properties; rendered as a correlation filter in Azure. */
  readonly filter: Readonly<Record<string, string>>;
  readonly maxDeliveryCount: number;
  readonly lockDurationSeconds: number;
  readonly deadLetterOnExpiration: boolean;
  readonly deadLetterOnFilterEvaluationExceptions: boolean;
}

export interface TopicDeclaration {
  readonly name: string;
  readonly description: string;
  readonly duplicateDetectionWindowMinutes: number;
  readonly defaultMessageTtlDays: number;
  readonly subscriptions: readonly SubscriptionDeclaration[];
}

export interface EventGridTopicDeclaration {
  readonly name: string;
  readonly description: string;
  /** `system`: raised by Azure Storage for the staging account; `custom`: published by our code. */
  readonly source: "storage" | "custom";
  readonly eventTypes: readonly string[];
  readonly subscriptions: readonly EventGridSubscriptionDeclaration[];
}

export interface EventGridSubscriptionDeclaration {
  readonly name: string;
  readonly includedEventTypes: readonly string[];
  /** Subject prefix filter; `{stagingContainer}` is replaced by the configured container name. */
  readonly subjectBeginsWith?: string;
  /** Advanced filter on `data.api` (BlobCreated only). */
  readonly dataApiIn?: readonly string[];
  readonly maxDeliveryAttempts: number;
  readonly eventTimeToLiveMinutes: number;
}

const defaults = {
  maxDeliveryCount: 10,
  lockDurationSeconds: 60,
  duplicateDetectionWindowMinutes: 60,
  deadLetterOnExpiration: true,
  defaultMessageTtlDays: 14,
} as const;

export const queues = {
  incidentIntake: {
    name: "incident-intake",
    description: "Sentinel incident trigger bodies, sent by the playbook that the automation rule runs.",
    ...defaults,
  },
  liveResponseWatch: {
    name: "live-response-watch",
    description: "Scheduled polls of a running MDE Live Response action.",
    ...defaults,
  },
  analysisWatch: {
    name: "analysis-watch",
    description: "Scheduled polls of a running ANY.RUN task.",
    ...defaults,
  },
} as const satisfies Record<string, QueueDeclaration>;

/** Values of the `kind` application property on artifact commands. */
export const artifactKinds = { url: "url", file: "file" } as const;

export const topics = {
  artifactCommands: {
    name: "artifact-commands",
    description: "One command per artifact extracted from an incident; routed by the `kind` property.",
    duplicateDetectionWindowMinutes: defaults.duplicateDetectionWindowMinutes,
    defaultMessageTtlDays: defaults.defaultMessageTtlDays,
    subscriptions: [
      {
        name: "submit-url",
        description: "URL artifacts, submitted straight to ANY.RUN.",
        filter: { kind: artifactKinds.url },
        maxDeliveryCount: defaults.maxDeliveryCount,
        lockDurationSeconds: defaults.lockDurationSeconds,
        deadLetterOnExpiration: true,
        deadLetterOnFilterEvaluationExceptions: true,
      },
      {
        name: "collect-file",
        description: "File artifacts, collected from the endpoint with MDE Live Response.",
        filter: { kind: artifactKinds.file },
        maxDeliveryCount: defaults.maxDeliveryCount,
        lockDurationSeconds: defaults.lockDurationSeconds,
        deadLetterOnExpiration: true,
        deadLetterOnFilterEvaluationExceptions: true,
      },
    ],
  },
} as const satisfies Record<string, TopicDeclaration>;

export const eventTypes = {
  blobCreated: "Microsoft.Storage.BlobCreated",
  analysisCompleted: "AnyRun.Sandbox.AnalysisCompleted",
} as const;

export const eventGridTopics = {
  staging: {
    name: "staging-blob-events",
    description: "System topic of the staging storage account.",
    source: "storage",
    eventTypes: [eventTypes.blobCreated],
    subscriptions: [
      {
        name: "submit-file",
        includedEventTypes: [eventTypes.blobCreated],
        subjectBeginsWith: "/blobServices/default/containers/{stagingContainer}/blobs/",
        dataApiIn: ["PutBlob", "PutBlockList"],
        maxDeliveryAttempts: 30,
        eventTimeToLiveMinutes: 1440,
      },
    ],
  },
  analysis: {
    name: "analysis-events",
    description: "Custom topic: an ANY.RUN analysis reached a final state.",
    source: "custom",
    eventTypes: [eventTypes.analysisCompleted],
    subscriptions: [
      {
        name: "enrich-incident",
        includedEventTypes: [eventTypes.analysisCompleted],
        maxDeliveryAttempts: 30,
        eventTimeToLiveMinutes: 1440,
      },
    ],
  },
} as const satisfies Record<string, EventGridTopicDeclaration>;

/** Which function listens where. Trigger bindings and the local host are built from this. */
export type FunctionTrigger =
  | { readonly type: "serviceBusQueue"; readonly queue: string }
  | { readonly type: "serviceBusTopic"; readonly topic: string; readonly subscription: string }
  | { readonly type: "eventGrid"; readonly topic: string; readonly subscription: string }
  | {
      readonly type: "http";
      /** Route template under the host's `api/` prefix, e.g. `ops/deadletters/{action?}`. */
      readonly route: string;
      readonly methods: readonly ("GET" | "POST")[];
      /**
       * Functions keys are the authentication: `function` accepts a key of this function or a host
       * key (`x-functions-key` header or `code` query); `admin` only the master key.
       */
      readonly authLevel: "function" | "admin";
    };

export const functionTriggers = {
  intake: { type: "serviceBusQueue", queue: queues.incidentIntake.name },
  submitUrl: {
    type: "serviceBusTopic",
    topic: topics.artifactCommands.name,
    subscription: "submit-url",
  },
  collectFile: {
    type: "serviceBusTopic",
    topic: topics.artifactCommands.name,
    subscription: "collect-file",
  },
  watchLiveResponse: { type: "serviceBusQueue", queue: queues.liveResponseWatch.name },
  submitFile: { type: "eventGrid", topic: eventGridTopics.staging.name, subscription: "submit-file" },
  watchAnalysis: { type: "serviceBusQueue", queue: queues.analysisWatch.name },
  enrichIncident: { type: "eventGrid", topic: eventGridTopics.analysis.name, subscription: "enrich-incident" },
  /** Operators: list and resend dead letters (services/src/functions/replay.ts). */
  replay: { type: "http", route: "ops/deadletters/{action?}", methods: ["GET", "POST"], authLevel: "function" },
} as const satisfies Record<string, FunctionTrigger>;

export type FunctionName = keyof typeof functionTriggers;

/** Names of the app settings that hold connections (Functions `connection` property). */
export const connectionSettings = {
  serviceBus: "ServiceBusConnection",
} as const;

export const storageDefaults = {
  stagingContainer: "staging",
  jobsTable: "jobs",
  /** Live Response leases (one session per device, tenant-wide session cap, start-call window). */
  liveResponseTable: "liveresponse",
  eventGridDeadLetterContainer: "eventgrid-deadletters",
} as const;

export function allQueues(): QueueDeclaration[] {
  return Object.values(queues);
}

export function allTopics(): TopicDeclaration[] {
  return Object.values(topics);
}

export function allEventGridTopics(): EventGridTopicDeclaration[] {
  return Object.values(eventGridTopics);
}

export function subjectPrefixFor(sub: EventGridSubscriptionDeclaration, stagingContainer: string): string | undefined {
  return sub.subjectBeginsWith?.replace("{stagingContainer}", stagingContainer);
}
