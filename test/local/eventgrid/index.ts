/**
 * Local Event Grid on loopback.
 *
 * - Custom topics (topology `source: "custom"`): `POST /topics/<name>/api/events`, Event Grid schema,
 *   `aeg-sas-key` checked (401), events validated (400/413), 200 on success. The real
 *   `EventGridPublisherClient(endpoint, "EventGrid", new AzureKeyCredential(key), { allowInsecureConnection: true })`
 *   publishes to `topicEndpoint(name)`.
 * - Storage system topic (`source: "storage"`): a reverse proxy in front of Azurite's blob endpoint
 *   raises `Microsoft.Storage.BlobCreated` for committed block blob writes; point the connector's
 *   storage connection string at `blobEndpoint` / `storageConnectionString`.
 * - Subscriptions and retry policies come from the topology; deliveries go to the subscriber
 *   registered with `setSubscriber` (in-process), via the admin webhook registration (child process
 *   functions host), or to `options.deliver`.
 * - Admin API (same key): `PUT /admin/subscriptions/<name>/webhook` `{ "url": "…" }` registers a
 *   webhook subscriber; `DELETE` on the same path removes it.
 */
import http from "node:http";
import { randomBytes, timingSafeEqual } from "node:crypto";
import type { AddressInfo } from "node:net";
import { BlobServiceClient, StorageSharedKeyCredential } from "@azure/storage-blob";
import type { EventGridEvent } from "@azure/functions";
import { createLogger, registerSecret, type Logger } from "@connector/shared/logger";
import {
  allEventGridTopics,
  storageDefaults,
  subjectPrefixFor,
  type EventGridTopicDeclaration,
} from "@connector/shared/topology";
import { storageConnectionString } from "../azurite.ts";
import { startBlobProxy, type BlobProxy } from "./blob-proxy.ts";
import {
  Dispatcher,
  webhookDeliverer,
  type DeadLetterRecord,
  type Deliver,
  type DeliveryRecord,
  type PublishedRecord,
  type DispatcherSubscription,
  type RetryPolicy,
} from "./delivery.ts";
import { customTopicResourceId, defaultScope, validatePublishedEvents, type ResourceScope } from "./events.ts";

export * from "./delivery.ts";
export * from "./events.ts";

/** What the local Event Grid needs from Azurite (an `AzuriteInstance` fits). */
export interface AzuriteEndpoints {
  readonly blobUrl: string;
  readonly tableUrl: string;
  readonly accountName: string;
  readonly accountKey: string;
}

export interface LocalEventGridOptions {
  readonly azurite: AzuriteEndpoints;
  /** Fallback subscriber for subscriptions without a registered one. */
  readonly deliver?: Deliver;
  /** Topic key expected in `aeg-sas-key`. Default: random. */
  readonly key?: string;
  /** Replaces `{stagingContainer}` in subject filters. Default: env STAGING_CONTAINER or "staging". */
  readonly stagingContainer?: string;
  /** Multiplier for retry delays and event TTL (e.g. 0.001 turns 10 s into 10 ms). Default 1. */
  readonly timeScale?: number;
  /** How long a delivery may take before it counts as timed out. Default 30 000 ms. */
  readonly deliveryTimeoutMs?: number;
  /** Random extra delay of up to 10 % per retry, as Event Grid adds. Default true. */
  readonly jitter?: boolean;
  /** Per-subscription overrides of the topology's retry policy (tests). */
  readonly retryPolicy?: Readonly<Record<string, Partial<RetryPolicy>>>;
  /** Topics and subscriptions. Default: `allEventGridTopics()`. */
  readonly topics?: readonly EventGridTopicDeclaration[];
  /** Container for dead-lettered events. Default: storageDefaults.eventGridDeadLetterContainer. */
  readonly deadLetterContainer?: string;
  readonly scope?: ResourceScope;
  readonly port?: number;
  readonly logger?: Logger;
}

export interface LocalEventGrid {
  /** `http://127.0.0.1:<port>` (topics and admin API). */
  readonly url: string;
  readonly key: string;
  /** Endpoint for EventGridPublisherClient, e.g. `http://127.0.0.1:<port>/topics/analysis-events/api/events`. */
  topicEndpoint(topicName: string): string;
  /** Blob endpoint through the event-raising proxy: `http://127.0.0.1:<proxyPort>/devstoreaccount1`. */
  readonly blobEndpoint: string;
  /** Storage connection string with BlobEndpoint = the proxy and TableEndpoint = Azurite. */
  readonly storageConnectionString: string;
  /** Registers the in-process subscriber of a subscription; returns the unregister function. */
  setSubscriber(subscriptionName: string, deliver: Deliver): () => void;
  /** Raises events on a topic directly (what the topic endpoint and the blob proxy do). Returns deliveries queued. */
  publish(topicName: string, events: readonly EventGridEvent[]): number;
  /** Every event accepted by a topic, before subscription filters (custom publishes and BlobCreated). */
  published(): PublishedRecord[];
  /** One record per delivery attempt. */
  deliveries(): DeliveryRecord[];
  deadLetters(): DeadLetterRecord[];
  /** Deliveries still waiting for an attempt or a retry. */
  pendingDeliveries(): { subscription: string; eventId: string; attempts: number; lastOutcome: string }[];
  /** Resolves when raised events have been handed to the dispatcher and no delivery is pending. */
  idle(): Promise<void>;
  close(): Promise<void>;
}

function keyMatches(given: string | string[] | undefined, expected: string): boolean {
  if (typeof given !== "string") return false;
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

function sendJson(res: http.ServerResponse, status: number, body?: unknown): void {
  if (body === undefined) {
    res.writeHead(status, { "content-length": "0" });
    res.end();
    return;
  }
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json; charset=utf-8", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

function sendError(res: http.ServerResponse, status: number, code: string, message: string): void {
  sendJson(res, status, { error: { code, message } });
}

async function readBody(req: http.IncomingMessage, limit: number): Promise<{ text: string; length: number }> {
  const chunks: Buffer[] = [];
  let length = 0;
  for await (const chunk of req) {
    length += (chunk as Buffer).length;
    if (length <= limit) chunks.push(chunk as Buffer);
  }
  return { text: Buffer.concat(chunks).toString("utf8"), length };
}

export async function startLocalEventGrid(options: LocalEventGridOptions): Promise<LocalEventGrid> {
  const logger = options.logger ?? createLogger({ service: "local-eventgrid" });
  const key = options.key ?? randomBytes(32).toString("base64");
  registerSecret(key);
  const scope = options.scope ?? defaultScope;
  const topics = options.topics ?? allEventGridTopics();
  const stagingContainer = options.stagingContainer ?? process.env.STAGING_CONTAINER ?? storageDefaults.stagingContainer;
  const deadLetterContainer = options.deadLetterContainer ?? storageDefaults.eventGridDeadLetterContainer;
  const timeScale = options.timeScale ?? 1;

  const subscribers = new Map<string, Deliver>();
  const subscriptions: DispatcherSubscription[] = topics.flatMap((topic) =>
    topic.subscriptions.map((declaration) => ({
      topic: topic.name,
      declaration,
      subjectBeginsWith: subjectPrefixFor(declaration, stagingContainer),
      policy: {
        maxDeliveryAttempts: options.retryPolicy?.[declaration.name]?.maxDeliveryAttempts ?? declaration.maxDeliveryAttempts,
        eventTimeToLiveMinutes:
          options.retryPolicy?.[declaration.name]?.eventTimeToLiveMinutes ?? declaration.eventTimeToLiveMinutes,
      },
    })),
  );
  const subscriptionNames = new Set(subscriptions.map((s) => s.declaration.name));

  // Dead letters are written straight to Azurite (not through the proxy), like a separate account.
  const deadLetterService = new BlobServiceClient(
    options.azurite.blobUrl,
    new StorageSharedKeyCredential(options.azurite.accountName, options.azurite.accountKey),
  );
  let containerReady: Promise<unknown> | undefined;
  const writeDeadLetter = async (container: string, blobName: string, content: string) => {
    const containerClient = deadLetterService.getContainerClient(container);
    containerReady ??= containerClient.createIfNotExists().catch((err: unknown) => {
      containerReady = undefined;
      throw err;
    });
    await containerReady;
    await containerClient.getBlockBlobClient(blobName).upload(content, Buffer.byteLength(content), {
      blobHTTPHeaders: { blobContentType: "application/json" },
    });
  };

  const dispatcher = new Dispatcher({
    subscriptions,
    resolveDeliverer: (name) => subscribers.get(name) ?? options.deliver,
    writeDeadLetter,
    deadLetterContainer,
    timeScale,
    deliveryTimeoutMs: options.deliveryTimeoutMs ?? 30_000,
    jitter: options.jitter ?? true,
    logger,
  });

  const customTopics = new Map(topics.filter((t) => t.source === "custom").map((t) => [t.name, t]));
  const storageTopics = topics.filter((t) => t.source === "storage").map((t) => t.name);

  const publish = (topicName: string, events: readonly EventGridEvent[]): number => dispatcher.publish(topicName, events);

  const server = http.createServer((req, res) => {
    void handle(req, res).catch((err) => {
      logger.error("local event grid request failed", { error: err });
      if (!res.headersSent) sendError(res, 500, "InternalServerError", "Internal error");
      else res.destroy();
    });
  });

  const handle = async (req: http.IncomingMessage, res: http.ServerResponse) => {
    const url = new URL(req.url ?? "/", "http://local.invalid");
    const topicMatch = /^\/topics\/([^/]+)\/api\/events\/?$/.exec(url.pathname);
    if (topicMatch) {
      const topicName = decodeURIComponent(topicMatch[1] ?? "");
      const topic = customTopics.get(topicName);
      if (!topic) {
        await readBody(req, 0);
        return sendError(res, 404, "NotFound", `Topic '${topicName}' does not exist.`);
      }
      if (req.method !== "POST") {
        await readBody(req, 0);
        return sendError(res, 405, "MethodNotAllowed", "Use POST to publish events.");
      }
      if (!keyMatches(req.headers["aeg-sas-key"], key)) {
        await readBody(req, 0);
        return sendError(res, 401, "Unauthorized", "The request authorization key is not authorized for this topic.");
      }
      const { text, length } = await readBody(req, 1024 * 1024 + 1);
      let body: unknown;
      try {
        body = length > 1024 * 1024 ? [] : JSON.parse(text);
      } catch {
        return sendError(res, 400, "InputJsonInvalid", "The request body is not valid JSON.");
      }
      const result = validatePublishedEvents(body, length, customTopicResourceId(scope, topic.name));
      if ("error" in result) return sendError(res, result.error.status, result.error.code, result.error.message);
      const queued = publish(topic.name, result.events);
      logger.debug("events published", { topic: topic.name, events: result.events.length, deliveries: queued });
      return sendJson(res, 200);
    }

    const adminMatch = /^\/admin\/subscriptions\/([^/]+)\/webhook\/?$/.exec(url.pathname);
    if (adminMatch) {
      const name = decodeURIComponent(adminMatch[1] ?? "");
      const { text } = await readBody(req, 64 * 1024);
      if (!keyMatches(req.headers["aeg-sas-key"], key)) return sendError(res, 401, "Unauthorized", "Wrong key.");
      if (!subscriptionNames.has(name)) return sendError(res, 404, "NotFound", `Subscription '${name}' does not exist.`);
      if (req.method === "DELETE") {
        subscribers.delete(name);
        return sendJson(res, 204);
      }
      if (req.method !== "PUT") return sendError(res, 405, "MethodNotAllowed", "Use PUT or DELETE.");
      let webhook: unknown;
      try {
        webhook = (JSON.parse(text) as { url?: unknown }).url;
      } catch {
        webhook = undefined;
      }
      if (typeof webhook !== "string" || !/^https?:\/\//.test(webhook)) {
        return sendError(res, 400, "BadRequest", "Body must be {\"url\": \"http://…\"}.");
      }
      subscribers.set(name, webhookDeliverer(webhook, options.deliveryTimeoutMs ?? 30_000));
      logger.info("webhook subscriber registered", { subscription: name });
      return sendJson(res, 200, { subscription: name, url: webhook });
    }

    await readBody(req, 0);
    return sendError(res, 404, "NotFound", "Unknown path.");
  };

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port ?? 0, "127.0.0.1", () => resolve());
  });
  const baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  let proxy: BlobProxy;
  try {
    proxy = await startBlobProxy({
      targetBlobUrl: options.azurite.blobUrl,
      accountName: options.azurite.accountName,
      accountKey: options.azurite.accountKey,
      scope,
      logger,
      onBlobCreated: (event) => {
        for (const topic of storageTopics) publish(topic, [event]);
      },
    });
  } catch (err) {
    await new Promise<void>((resolve) => server.close(() => resolve()));
    throw err;
  }

  logger.info("local event grid ready", { url: baseUrl, blobEndpoint: proxy.blobEndpoint, topics: topics.map((t) => t.name) });

  let closing: Promise<void> | undefined;
  return {
    url: baseUrl,
    key,
    topicEndpoint: (topicName) => `${baseUrl}/topics/${encodeURIComponent(topicName)}/api/events`,
    blobEndpoint: proxy.blobEndpoint,
    storageConnectionString: storageConnectionString({
      accountName: options.azurite.accountName,
      accountKey: options.azurite.accountKey,
      blobEndpoint: proxy.blobEndpoint,
      tableEndpoint: options.azurite.tableUrl,
    }),
    setSubscriber(subscriptionName, deliver) {
      if (!subscriptionNames.has(subscriptionName)) throw new Error(`Unknown Event Grid subscription ${subscriptionName}`);
      subscribers.set(subscriptionName, deliver);
      return () => {
        if (subscribers.get(subscriptionName) === deliver) subscribers.delete(subscriptionName);
      };
    },
    publish,
    published: () => dispatcher.published(),
    deliveries: () => dispatcher.deliveries(),
    pendingDeliveries: () => dispatcher.pendingDeliveries(),
    deadLetters: () => dispatcher.deadLetters(),
    async idle() {
      await proxy.settled();
      await dispatcher.idle();
    },
    close: () =>
      (closing ??= (async () => {
        server.closeAllConnections();
        await new Promise<void>((resolve) => server.close(() => resolve()));
        await proxy.close();
        await dispatcher.close();
      })()),
  };
}
