/**
 * A local Service Bus broker that the unchanged `@azure/service-bus` SDK connects to over plain
 * AMQP 1.0 (`UseDevelopmentEmulator=true`), built on rhea.
 *
 * Link roles, seen from the broker:
 * - receiver with target `<queue|topic>`: an SDK sender (single and batched sends);
 * - sender with source `<queue|subscription|…/$DeadLetterQueue>`: an SDK receiver;
 * - receiver with target `$cbs` / `<entity>/$management` + sender with the same source and the
 *   client's reply address as target: request/response pairs.
 */
import type { AddressInfo, Server, Socket } from "node:net";
import rhea from "rhea";
import type { Connection, EventContext, Receiver, Sender, Session, link as RheaLink } from "rhea";
import { createLogger, type Logger, type LogLevel } from "@connector/shared/logger";
import { allQueues, allTopics } from "@connector/shared/topology";
import { batchMessageFormat, conditions, decodeBody, displayMessageId, toDate, unpackBatch, type AmqpMessage } from "./codec.ts";
import { ConsumerLink } from "./consumer-link.ts";
import { EntityRegistry, type ResolvedAddress } from "./entities.ts";
import { handleCbsRequest, handleManagementRequest, type ManagementResponse } from "./management.ts";
import type { MessageStore, StoredMessage } from "./message-store.ts";
import { localAttach } from "./rhea-internals.ts";
// One disposition frame per delivery (rhea 3.0.5 merges the second delivery into the first one's outcome).
import "./rhea-dispositions.ts";
import type {
  EntityStats,
  InspectedMessage,
  LocalServiceBusBroker,
  MessageListKind,
  QueueSpec,
  ServiceBusBrokerOptions,
  TopicSpec,
} from "./types.ts";

const defaultMaxMessageSize = 256 * 1024;
const managementSuffix = "/$management";
const cbsAddress = "$cbs";

interface ConnectionState {
  readonly id: number;
  readonly consumers: Set<ConsumerLink>;
  readonly consumerByLink: Map<RheaLink, ConsumerLink>;
  /** Reply senders by target address and by link name (CBS reply links may have no target). */
  readonly replySenders: Map<string, Sender>;
  readonly pendingReplies: Map<Sender, AmqpMessage[]>;
}

export async function startServiceBusBroker(options: ServiceBusBrokerOptions = {}): Promise<LocalServiceBusBroker> {
  const broker = new ServiceBusBroker(options);
  await broker.listen(options.port ?? 0);
  return broker;
}

class ServiceBusBroker implements LocalServiceBusBroker {
  readonly host: string;
  private listeningPort = 0;
  private readonly logger: Logger;
  private readonly registry: EntityRegistry;
  private readonly releaseLocksOnDetach: boolean;
  private readonly maxMessageSize: number;
  private readonly container = rhea.create_container({
    id: `local-servicebus-${process.pid}-${Math.random().toString(16).slice(2, 8)}`,
    // Sends and requests are accepted explicitly once handled.
    autoaccept: false,
    // A modified outcome means abandon or defer here, never "released".
    treat_modified_as_released: false,
  });
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  private readonly connections = new Map<Connection, ConnectionState>();
  private nextConnectionId = 1;
  private closing: Promise<void> | undefined;

  constructor(options: ServiceBusBrokerOptions) {
    this.host = options.host ?? "127.0.0.1";
    // Quiet unless asked: tests start many brokers. LOG_LEVEL still wins when set.
    this.logger = options.logger ?? createLogger({ service: "servicebus-broker", level: (process.env.LOG_LEVEL as LogLevel | undefined) ?? "warn" });
    this.releaseLocksOnDetach = options.releaseLocksOnDetach ?? false;
    this.maxMessageSize = options.maxMessageSizeBytes ?? defaultMaxMessageSize;
    this.registry = new EntityRegistry(this.logger);
    const queues = new Map<string, QueueSpec>();
    const topics = new Map<string, TopicSpec>();
    if (options.includeTopology ?? true) {
      for (const q of allQueues()) queues.set(q.name.toLowerCase(), q);
      for (const t of allTopics()) topics.set(t.name.toLowerCase(), t);
    }
    for (const q of options.queues ?? []) queues.set(q.name.toLowerCase(), q);
    for (const t of options.topics ?? []) topics.set(t.name.toLowerCase(), t);
    for (const q of queues.values()) this.registry.addQueue(q);
    for (const t of topics.values()) this.registry.addTopic(t);
    this.wireContainer();
  }

  get port(): number {
    return this.listeningPort;
  }

  get connectionString(): string {
    return (
      `Endpoint=sb://${this.host}:${this.listeningPort};SharedAccessKeyName=RootManageSharedAccessKey;` +
      `SharedAccessKey=local-development-key;UseDevelopmentEmulator=true`
    );
  }

  async listen(port: number): Promise<void> {
    const server = this.container.listen({ host: this.host, port, transport: "tcp" }) as Server;
    this.server = server;
    server.on("connection", (socket: Socket) => {
      this.sockets.add(socket);
      socket.on("close", () => this.sockets.delete(socket));
    });
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error) => reject(err);
      server.once("error", onError);
      server.once("listening", () => {
        server.off("error", onError);
        resolve();
      });
    });
    server.on("error", (err: Error) => this.logger.error("broker server error", { error: err }));
    this.listeningPort = (server.address() as AddressInfo).port;
    this.logger.info("service bus broker listening", { host: this.host, port: this.listeningPort, entities: this.registry.paths().length });
  }

  // ---- inspection API ------------------------------------------------------------------------

  stats(entityPath: string): EntityStats {
    const resolved = this.resolveOrThrow(entityPath);
    if (resolved.kind === "topic") {
      const total: EntityStats = {
        active: 0,
        locked: 0,
        scheduled: resolved.topic.scheduledMessages().length,
        deferred: 0,
        deadLetter: 0,
        receivers: 0,
      };
      for (const sub of resolved.topic.subscriptions.values()) {
        const s = storeStats(sub.store, 0);
        total.active += s.active;
        total.locked += s.locked;
        total.deferred += s.deferred;
        total.deadLetter += s.deadLetter;
        total.receivers += s.receivers;
      }
      return total;
    }
    if (resolved.kind === "queue") return storeStats(resolved.store, resolved.queue.scheduledMessages().length);
    return storeStats(resolved.store, 0);
  }

  deadLetters(entityPath: string): InspectedMessage[] {
    const resolved = this.resolveOrThrow(entityPath);
    if (resolved.kind === "topic") throw new Error(`'${entityPath}' is a topic; use a subscription path`);
    const dlq = resolved.kind === "deadLetter" ? resolved.store : resolved.store.deadLetterQueue;
    return dlq ? dlq.list("active").map(inspect) : [];
  }

  messages(entityPath: string, kind: MessageListKind = "active"): InspectedMessage[] {
    const resolved = this.resolveOrThrow(entityPath);
    if (kind === "scheduled") {
      const target = resolved.kind === "queue" ? resolved.queue : resolved.kind === "topic" ? resolved.topic : undefined;
      return (target?.scheduledMessages() ?? []).map((s) =>
        inspectMessage(s.amqp, { sequenceNumber: s.sequenceNumber, enqueuedTimeUtc: s.scheduledAt, deliveryCount: 0, locked: false }),
      );
    }
    if (resolved.kind === "topic") throw new Error(`'${entityPath}' is a topic; use a subscription path`);
    if (kind === "deadLetter") return this.deadLetters(entityPath);
    return resolved.store.list(kind).map(inspect);
  }

  async waitFor(entityPath: string, predicate: (stats: EntityStats) => boolean, timeoutMs = 5000): Promise<EntityStats> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const stats = this.stats(entityPath);
      if (predicate(stats)) return stats;
      if (Date.now() >= deadline) {
        throw new Error(`Timed out after ${timeoutMs} ms waiting on '${entityPath}'; last stats ${JSON.stringify(stats)}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }

  entityPaths(): string[] {
    return this.registry.paths();
  }

  connectionCount(): number {
    return this.connections.size;
  }

  close(): Promise<void> {
    this.closing ??= this.doClose();
    return this.closing;
  }

  private async doClose(): Promise<void> {
    for (const [connection, state] of this.connections) {
      this.dropConnection(connection, state, "broker closing");
      try {
        connection.close({ condition: "amqp:connection:forced", description: "The local broker is shutting down." });
      } catch (err) {
        this.logger.debug("error closing connection", { error: err });
      }
    }
    this.registry.close();
    const server = this.server;
    if (server) {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      // Give close frames a moment to reach clients, then cut what is left.
      await new Promise((resolve) => setTimeout(resolve, 50));
      for (const socket of this.sockets) socket.destroy();
      await closed;
    }
    // The container keeps its listeners: late socket events must not reach an 'error' event
    // without a listener (which would throw).
    this.logger.info("service bus broker closed", { port: this.listeningPort });
  }

  private resolveOrThrow(entityPath: string): ResolvedAddress {
    const resolved = this.registry.resolve(entityPath);
    if (!resolved) throw new Error(`Unknown entity '${entityPath}'. Known: ${this.registry.paths().join(", ")}`);
    return resolved;
  }

  // ---- AMQP wiring ---------------------------------------------------------------------------

  private wireContainer(): void {
    const c = this.container;
    c.on("connection_open", (ctx: EventContext) => {
      const state: ConnectionState = {
        id: this.nextConnectionId++,
        consumers: new Set(),
        consumerByLink: new Map(),
        replySenders: new Map(),
        pendingReplies: new Map(),
      };
      this.connections.set(ctx.connection, state);
      this.logger.debug("connection open", { connection: state.id, container: ctx.connection.container_id });
    });
    c.on("connection_close", (ctx: EventContext) => this.onConnectionGone(ctx.connection, "closed"));
    c.on("connection_error", (ctx: EventContext) => {
      this.logger.debug("connection error", { error: ctx.connection.error });
    });
    c.on("disconnected", (ctx: EventContext) => this.onConnectionGone(ctx.connection, "disconnected"));
    c.on("protocol_error", (err: unknown) => this.logger.warn("amqp protocol error", { error: err }));
    c.on("error", (err: unknown) => this.logger.debug("amqp error", { error: err }));
    c.on("session_close", (ctx: EventContext) => this.onSessionGone(ctx.connection, ctx.session));
    c.on("session_error", (ctx: EventContext) => this.logger.debug("session error", { error: ctx.session?.error }));
    c.on("sender_open", (ctx: EventContext) => this.guard("sender attach", () => this.onSenderOpen(ctx.sender as Sender)));
    c.on("receiver_open", (ctx: EventContext) => this.guard("receiver attach", () => this.onReceiverOpen(ctx.receiver as Receiver)));
    c.on("sender_close", (ctx: EventContext) => this.onLinkGone(ctx.connection, ctx.sender as Sender));
    c.on("receiver_close", (ctx: EventContext) => this.onLinkGone(ctx.connection, ctx.receiver as Receiver));
    c.on("sender_error", (ctx: EventContext) => this.logger.debug("sender link error", { error: ctx.sender?.error }));
    c.on("receiver_error", (ctx: EventContext) => this.logger.debug("receiver link error", { error: ctx.receiver?.error }));
  }

  private guard(what: string, fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.logger.error(`failure handling ${what}`, { error: err });
    }
  }

  private state(connection: Connection): ConnectionState {
    let state = this.connections.get(connection);
    if (!state) {
      state = {
        id: this.nextConnectionId++,
        consumers: new Set(),
        consumerByLink: new Map(),
        replySenders: new Map(),
        pendingReplies: new Map(),
      };
      this.connections.set(connection, state);
    }
    return state;
  }

  /** Echoes the peer's attach (terminus and settle modes) so that the link opens as asked. */
  private echoAttach(link: Sender | Receiver): void {
    const attach = localAttach(link);
    // rhea exposes the peer's terminus as a composite with accessors; copy just the address.
    if (link.source) link.set_source({ address: link.source.address });
    if (link.target) link.set_target({ address: link.target.address });
    if (link.snd_settle_mode !== undefined) attach.snd_settle_mode = link.snd_settle_mode;
    if (link.rcv_settle_mode !== undefined) attach.rcv_settle_mode = link.rcv_settle_mode;
  }

  private refuse(link: Sender | Receiver, condition: string, description: string): void {
    this.logger.debug("link refused", { link: link.name, condition, description });
    link.close({ condition, description });
  }

  private onSenderOpen(sender: Sender): void {
    const state = this.state(sender.connection);
    this.echoAttach(sender);
    const address = sender.source?.address ?? "";
    if (address === cbsAddress || address.toLowerCase().endsWith(managementSuffix)) {
      const target = sender.target?.address;
      if (target) state.replySenders.set(target, sender);
      state.replySenders.set(sender.name, sender);
      sender.on("sendable", () => this.flushReplies(state, sender));
      return;
    }
    const resolved = this.registry.resolve(address);
    if (!resolved) {
      this.refuse(sender, conditions.notFound, `The messaging entity '${address}' could not be found.`);
      return;
    }
    if (resolved.kind === "topic") {
      this.refuse(sender, conditions.notAllowed, `Cannot receive from topic '${address}'; receive from one of its subscriptions.`);
      return;
    }
    const filter = sender.source?.filter as Record<string, unknown> | undefined;
    if (filter && Object.keys(filter).some((k) => k.startsWith("com.microsoft:session-filter"))) {
      this.refuse(sender, conditions.notImplemented, "Sessions are not supported by the local broker.");
      return;
    }
    const mode = sender.snd_settle_mode === 1 ? "receiveAndDelete" : "peekLock";
    const consumer = new ConsumerLink(sender, resolved.store, mode, this.logger.child({ connection: state.id }), this.releaseLocksOnDetach);
    state.consumers.add(consumer);
    state.consumerByLink.set(sender, consumer);
    this.logger.debug("receiver attached", { connection: state.id, entity: resolved.store.path, link: sender.name, mode });
    resolved.store.addConsumer(consumer);
  }

  private onReceiverOpen(receiver: Receiver): void {
    const state = this.state(receiver.connection);
    this.echoAttach(receiver);
    localAttach(receiver).max_message_size = this.maxMessageSize;
    const address = receiver.target?.address ?? "";
    if (address === cbsAddress) {
      receiver.on("message", (ctx: EventContext) => this.onRequest(state, ctx, () => handleCbsRequest(ctx.message as AmqpMessage)));
      return;
    }
    if (address.toLowerCase().endsWith(managementSuffix)) {
      const entityPath = address.slice(0, -managementSuffix.length);
      const resolved = this.registry.resolve(entityPath);
      if (!resolved) {
        this.refuse(receiver, conditions.notFound, `The messaging entity '${entityPath}' could not be found.`);
        return;
      }
      const logger = this.logger.child({ connection: state.id, entity: entityPath });
      receiver.on("message", (ctx: EventContext) =>
        this.onRequest(state, ctx, () => handleManagementRequest(resolved, ctx.message as AmqpMessage, logger)),
      );
      return;
    }
    const resolved = this.registry.resolve(address);
    if (!resolved) {
      this.refuse(receiver, conditions.notFound, `The messaging entity '${address}' could not be found.`);
      return;
    }
    if (resolved.kind !== "queue" && resolved.kind !== "topic") {
      this.refuse(receiver, conditions.notAllowed, `Cannot send to '${address}'; send to a queue or topic.`);
      return;
    }
    const target = resolved.kind === "queue" ? resolved.queue : resolved.topic;
    this.logger.debug("sender attached", { connection: state.id, entity: target.path, link: receiver.name });
    receiver.on("message", (ctx: EventContext) => {
      const delivery = ctx.delivery;
      if (!delivery) return;
      try {
        const messages = this.decodeSend(ctx);
        for (const m of messages) {
          const result = target.accept(m);
          this.logger.debug("message received", {
            entity: target.path,
            sequenceNumber: result.sequenceNumber,
            duplicate: result.duplicate,
            scheduled: result.scheduled,
          });
        }
        delivery.accept();
      } catch (err) {
        const condition = err instanceof SendRejected ? err.condition : conditions.internalError;
        this.logger.debug("send rejected", { entity: target.path, condition, error: err });
        delivery.reject({ condition, description: err instanceof Error ? err.message : String(err) });
      }
    });
  }

  private decodeSend(ctx: EventContext): AmqpMessage[] {
    const format = (ctx as { format?: number }).format;
    if (format === undefined || format === 0) {
      const message = ctx.message as AmqpMessage;
      const size = rhea.message.encode(message).length;
      if (size > this.maxMessageSize) {
        throw new SendRejected(conditions.messageSizeExceeded, `The message (${size} bytes) exceeds the limit of ${this.maxMessageSize} bytes.`);
      }
      return [message];
    }
    if (format === batchMessageFormat) {
      const payload = ctx.message as unknown as Buffer;
      if (payload.length > this.maxMessageSize) {
        throw new SendRejected(conditions.messageSizeExceeded, `The batch (${payload.length} bytes) exceeds the limit of ${this.maxMessageSize} bytes.`);
      }
      return unpackBatch(payload);
    }
    throw new SendRejected(conditions.notImplemented, `Message format ${format} is not supported.`);
  }

  private onRequest(state: ConnectionState, ctx: EventContext, handle: () => ManagementResponse): void {
    const request = ctx.message as AmqpMessage;
    ctx.delivery?.accept();
    let response: ManagementResponse;
    try {
      response = handle();
    } catch (err) {
      this.logger.error("request handler crashed", { error: err });
      response = { statusCode: 500, statusDescription: String(err), errorCondition: conditions.internalError };
    }
    const isCbs = ctx.receiver?.target?.address === cbsAddress;
    const props: Record<string, unknown> = isCbs
      ? { "status-code": response.statusCode, "status-description": response.statusDescription }
      : { statusCode: response.statusCode, statusDescription: response.statusDescription };
    if (response.errorCondition) props[isCbs ? "error-condition" : "errorCondition"] = response.errorCondition;
    const reply: AmqpMessage = {
      correlation_id: request.message_id,
      to: request.reply_to,
      application_properties: props,
      body: response.body,
    } as AmqpMessage;
    const replyTo = typeof request.reply_to === "string" ? request.reply_to : "";
    const sender = state.replySenders.get(replyTo) ?? this.findReplySender(ctx.session, ctx.receiver?.target?.address);
    if (!sender) {
      this.logger.warn("no reply link for request", { replyTo, connection: state.id });
      return;
    }
    const queue = state.pendingReplies.get(sender) ?? [];
    queue.push(reply);
    state.pendingReplies.set(sender, queue);
    this.flushReplies(state, sender);
  }

  /** Fallback: the sender on the request's session whose source is the request address. */
  private findReplySender(session: Session | undefined, address: string | undefined): Sender | undefined {
    if (!session || !address) return undefined;
    return session.find_sender((s: Sender) => s.source?.address === address) as Sender | undefined;
  }

  private flushReplies(state: ConnectionState, sender: Sender): void {
    const queue = state.pendingReplies.get(sender);
    if (!queue) return;
    while (queue.length > 0 && sender.is_open() && sender.sendable()) {
      sender.send(queue.shift() as AmqpMessage);
      // rhea takes credit when the transfer is written; send one reply per tick at most when
      // credit is 1, otherwise rely on the SDK's generous credit window.
      if (queue.length > 0) {
        setImmediate(() => this.flushReplies(state, sender));
        break;
      }
    }
    if (queue.length === 0) state.pendingReplies.delete(sender);
  }

  private onLinkGone(connection: Connection, link: Sender | Receiver): void {
    const state = this.connections.get(connection);
    if (!state) return;
    const consumer = state.consumerByLink.get(link);
    if (consumer) {
      consumer.detach();
      state.consumers.delete(consumer);
      state.consumerByLink.delete(link);
    }
    for (const [key, sender] of state.replySenders) if (sender === link) state.replySenders.delete(key);
    state.pendingReplies.delete(link as Sender);
  }

  private onSessionGone(connection: Connection, session: Session | undefined): void {
    const state = this.connections.get(connection);
    if (!state || !session) return;
    for (const [link, consumer] of state.consumerByLink) {
      if (link.session === session) {
        consumer.detach();
        state.consumers.delete(consumer);
        state.consumerByLink.delete(link);
      }
    }
    for (const [key, sender] of state.replySenders) {
      if (sender.session === session) {
        state.replySenders.delete(key);
        state.pendingReplies.delete(sender);
      }
    }
  }

  private onConnectionGone(connection: Connection, why: string): void {
    const state = this.connections.get(connection);
    if (state) this.dropConnection(connection, state, why);
  }

  private dropConnection(connection: Connection, state: ConnectionState, why: string): void {
    for (const consumer of state.consumers) consumer.detach();
    state.consumers.clear();
    state.consumerByLink.clear();
    state.replySenders.clear();
    state.pendingReplies.clear();
    this.connections.delete(connection);
    this.logger.debug("connection gone", { connection: state.id, why });
  }
}

class SendRejected extends Error {
  readonly condition: string;
  constructor(condition: string, message: string) {
    super(message);
    this.condition = condition;
  }
}

function storeStats(store: MessageStore, scheduled: number): EntityStats {
  const counts = store.counts();
  const deadLetter = store.deadLetterQueue ? store.deadLetterQueue.counts() : undefined;
  return {
    active: counts.active,
    locked: counts.locked,
    scheduled,
    deferred: counts.deferred,
    deadLetter: deadLetter ? deadLetter.active + deadLetter.deferred : 0,
    receivers: store.consumerCount(),
  };
}

function inspect(m: StoredMessage): InspectedMessage {
  return inspectMessage(m.amqp, {
    sequenceNumber: m.sequenceNumber,
    enqueuedTimeUtc: m.enqueuedTimeUtc,
    deliveryCount: m.deliveryCount,
    locked: m.lock !== undefined,
    expiresAt: m.expiresAt,
  });
}

function inspectMessage(
  amqp: AmqpMessage,
  meta: { sequenceNumber: number; enqueuedTimeUtc: number; deliveryCount: number; locked: boolean; expiresAt?: number },
): InspectedMessage {
  const props = { ...((amqp.application_properties ?? {}) as Record<string, unknown>) };
  const out: InspectedMessage = {
    sequenceNumber: meta.sequenceNumber,
    body: decodeBody(amqp),
    applicationProperties: props,
    deliveryCount: meta.deliveryCount,
    enqueuedTimeUtc: new Date(meta.enqueuedTimeUtc),
    locked: meta.locked,
  };
  const messageId = displayMessageId(amqp.message_id);
  if (messageId !== undefined) out.messageId = messageId;
  const correlationId = displayMessageId(amqp.correlation_id);
  if (correlationId !== undefined) out.correlationId = correlationId;
  if (typeof amqp.subject === "string") out.subject = amqp.subject;
  if (typeof amqp.content_type === "string") out.contentType = amqp.content_type;
  const scheduled = toDate(amqp.message_annotations?.["x-opt-scheduled-enqueue-time"]);
  if (scheduled) out.scheduledEnqueueTimeUtc = scheduled;
  if (meta.expiresAt !== undefined && Number.isFinite(meta.expiresAt)) out.expiresAtUtc = new Date(meta.expiresAt);
  if (typeof props.DeadLetterReason === "string") out.deadLetterReason = props.DeadLetterReason;
  if (typeof props.DeadLetterErrorDescription === "string") out.deadLetterErrorDescription = props.DeadLetterErrorDescription;
  return out;
}
