/**
 * A broker-side sender link serving one SDK receiver: credit, drain, deliveries and the
 * dispositions that settle them.
 *
 * Peek-lock (rcv-settle-mode second): each delivery carries its lock token as the delivery tag;
 * the receiver's disposition (accepted / modified / rejected / released) is applied to the store
 * and then settled by the broker, with `com.microsoft:message-lock-lost` when the lock had
 * already expired. Receive-and-delete (snd-settle-mode settled): deliveries go out pre-settled.
 */
import type { Delivery, EventContext, Sender } from "rhea";
import type { Logger } from "@connector/shared/logger";
import { conditions, encodeForDelivery, lockTokenToDeliveryTag, messageStates, newLockToken, plainProperties } from "./codec.ts";
import type { Consumer, MessageLock, MessageStore, ReceiveMode, Settlement, StoredMessage } from "./message-store.ts";
import {
  installDrainResponder,
  isDraining,
  outcomes,
  requestProcessing,
  senderCredit,
  sessionOutgoingAvailable,
  settleDelivery,
} from "./rhea-internals.ts";

type OutcomeKind = "accepted" | "rejected" | "modified" | "released";

export class ConsumerLink implements Consumer {
  readonly receiveMode: ReceiveMode;
  private readonly sender: Sender;
  private readonly store: MessageStore;
  private readonly logger: Logger;
  private readonly releaseLocksOnDetach: boolean;
  /** Sends queued on the link plus credits given up by drains; compared with rhea's delivery_count. */
  private sent = 0;
  private readonly lockTokens = new Map<Delivery, string>();
  private detached = false;
  private drainRetries = 0;

  constructor(sender: Sender, store: MessageStore, receiveMode: ReceiveMode, logger: Logger, releaseLocksOnDetach: boolean) {
    this.sender = sender;
    this.store = store;
    this.receiveMode = receiveMode;
    this.logger = logger;
    this.releaseLocksOnDetach = releaseLocksOnDetach;
    installDrainResponder(sender, (consumed) => {
      this.sent += consumed;
    });
    sender.on("sendable", () => this.store.pump());
    sender.on("sender_draining", () => this.onDraining());
    for (const kind of ["accepted", "rejected", "modified", "released"] as const) {
      sender.on(kind, (context: EventContext) => this.onOutcome(kind, context.delivery));
    }
  }

  get linkName(): string {
    return this.sender.name;
  }

  availableCredit(): number {
    if (this.detached || !this.sender.is_open()) return 0;
    const { credit } = senderCredit(this.sender);
    const room = sessionOutgoingAvailable(this.sender.session);
    return Math.max(0, Math.min(credit - this.untransferred(), room));
  }

  deliver(message: StoredMessage, lock: MessageLock | undefined): void {
    const payload = encodeForDelivery(message.amqp, {
      sequenceNumber: message.sequenceNumber,
      enqueuedTimeUtc: message.enqueuedTimeUtc,
      deliveryCount: message.deliveryCount,
      state: message.deferred ? messageStates.deferred : messageStates.active,
      lockedUntilUtc: lock?.lockedUntil,
    });
    const tag = lockTokenToDeliveryTag(lock ? lock.token : newLockToken());
    const delivery = this.sender.send(payload, tag, 0);
    this.sent++;
    if (lock) this.lockTokens.set(delivery, lock.token);
    this.logger.debug("delivered", {
      entity: this.store.path,
      link: this.sender.name,
      sequenceNumber: message.sequenceNumber,
      deliveryCount: message.deliveryCount,
      mode: this.receiveMode,
    });
  }

  /** The receiver link, its session or its connection went away. */
  detach(): void {
    if (this.detached) return;
    this.detached = true;
    this.store.removeConsumer(this);
    const tokens = [...this.lockTokens.values()].filter((t) => this.store.isLocked(t));
    this.lockTokens.clear();
    if (this.releaseLocksOnDetach) {
      for (const token of tokens) this.store.releaseLock(token);
    }
    this.logger.debug("receiver detached", {
      entity: this.store.path,
      link: this.sender.name,
      unsettled: tokens.length,
      released: this.releaseLocksOnDetach,
    });
  }

  private untransferred(): number {
    return this.sent - senderCredit(this.sender).deliveryCount;
  }

  private onDraining(): void {
    this.store.pump();
    this.drainRetries = 0;
    this.answerDrain();
  }

  /** Answers a drain once every queued delivery has been written (so no credit is taken from it). */
  private answerDrain(): void {
    if (this.detached || !isDraining(this.sender)) return;
    if (this.untransferred() > 0 && this.drainRetries < 50) {
      this.drainRetries++;
      setImmediate(() => this.answerDrain());
      return;
    }
    this.sender.set_drained(true);
    requestProcessing(this.sender);
  }

  private onOutcome(kind: OutcomeKind, delivery: Delivery | undefined): void {
    if (!delivery) return;
    if (delivery.settled) return; // pre-settled (receive-and-delete) or already answered
    const token = this.lockTokens.get(delivery);
    this.lockTokens.delete(delivery);
    const settlement = toSettlement(kind, delivery.remote_state);
    if (token !== undefined && this.store.settle(token, settlement)) {
      settleDelivery(delivery, finalOutcome(settlement));
      this.logger.debug("settled", { entity: this.store.path, link: this.sender.name, outcome: settlement.kind });
      return;
    }
    settleDelivery(
      delivery,
      outcomes
        .rejected({
          error: {
            condition: conditions.lockLost,
            description:
              "The lock supplied is invalid. Either the lock expired, or the message has already been removed from the queue.",
          },
        })
        .described(),
    );
    this.logger.debug("settlement refused: lock lost", { entity: this.store.path, link: this.sender.name, outcome: settlement.kind });
  }
}

/**
 * The outcome the broker settles with. A rejected outcome must carry no error: the SDK fails the
 * settlement call when the broker's final state has one.
 */
function finalOutcome(settlement: Settlement): unknown {
  switch (settlement.kind) {
    case "complete":
      return outcomes.accepted().described();
    case "abandon":
      return outcomes.modified({ delivery_failed: true, undeliverable_here: false }).described();
    case "defer":
      return outcomes.modified({ undeliverable_here: true }).described();
    case "deadLetter":
      return outcomes.rejected({}).described();
  }
}

interface RemoteOutcome {
  undeliverable_here?: boolean;
  message_annotations?: unknown;
  error?: { condition?: unknown; description?: unknown; info?: unknown };
}

/** Maps an AMQP outcome to the Service Bus settlement the SDK meant by it. */
export function toSettlement(kind: OutcomeKind, state: unknown): Settlement {
  const outcome = (state ?? {}) as RemoteOutcome;
  switch (kind) {
    case "accepted":
      return { kind: "complete" };
    case "released":
      return { kind: "abandon" };
    case "modified": {
      const properties = plainProperties(outcome.message_annotations);
      return outcome.undeliverable_here ? { kind: "defer", properties } : { kind: "abandon", properties };
    }
    case "rejected": {
      const info = plainProperties(outcome.error?.info);
      const reason = typeof info.DeadLetterReason === "string" ? info.DeadLetterReason : undefined;
      const description = typeof info.DeadLetterErrorDescription === "string" ? info.DeadLetterErrorDescription : undefined;
      delete info.DeadLetterReason;
      delete info.DeadLetterErrorDescription;
      if (outcome.error?.condition !== conditions.deadLetter && reason === undefined) {
        // A plain AMQP reject: dead-letter with the AMQP error as the reason, like Azure does.
        const condition = typeof outcome.error?.condition === "string" ? outcome.error.condition : undefined;
        const desc = typeof outcome.error?.description === "string" ? outcome.error.description : undefined;
        return { kind: "deadLetter", reason: condition, description: desc, properties: info };
      }
      return { kind: "deadLetter", reason, description, properties: info };
    }
  }
}
