/**
 * The few places where the broker reaches past rhea's published typings. Each one is documented
 * here so that a rhea upgrade has exactly one file to check.
 *
 * - `message.accepted/rejected/modified`: outcome constructors that exist at runtime but are not
 *   in `typings/message.d.ts`.
 * - `link.local.attach`: the attach frame rhea will send in answer to a peer's attach. A broker
 *   must echo the settle modes and advertise `max-message-size` there.
 * - `sender.credit` / `sender.delivery_count`: rhea decrements credit only when a transfer is
 *   actually written (on the next tick), so the broker keeps its own count of queued sends.
 * - `sender._get_drain` / `_draining` / `_drained`: rhea answers a drain only while it still
 *   holds credit; a receiver whose credit is already used up would then wait for a drain reply
 *   that never comes (the Service Bus SDK closes its link after that timeout). The broker
 *   replaces `_get_drain` per link so that every drain request is answered.
 * - `delivery.remote_settled`: in rcv-settle-mode `second` the receiving peer never settles after
 *   the broker does, so rhea would keep each delivery in its session buffer for ever.
 * - `session.outgoing.available()`: free slots in rhea's per-session outgoing delivery buffer.
 * - `connection._register()`: asks rhea to write pending frames (after a deferred drain answer).
 */
import rhea from "rhea";
import type { Delivery, Sender, Session, link as RheaLink } from "rhea";

export interface AttachFrameFields {
  snd_settle_mode?: number;
  rcv_settle_mode?: number;
  max_message_size?: number;
}

interface LinkInternals {
  local: { attach: AttachFrameFields };
}

interface SenderInternals extends LinkInternals {
  credit: number;
  delivery_count: number;
  _draining: boolean;
  _drained: boolean;
  _get_drain: () => boolean;
}

interface SessionInternals {
  outgoing: { available(): number };
}

export interface OutcomeFactory {
  accepted(): { described(): unknown };
  rejected(fields: { error?: { condition: string; description?: string; info?: Record<string, unknown> } }): {
    described(): unknown;
  };
  modified(fields: {
    delivery_failed?: boolean;
    undeliverable_here?: boolean;
    message_annotations?: Record<string, unknown>;
  }): { described(): unknown };
}

export const outcomes = rhea.message as unknown as OutcomeFactory;

export function localAttach(link: RheaLink): AttachFrameFields {
  return (link as unknown as LinkInternals).local.attach;
}

export function senderCredit(sender: Sender): { credit: number; deliveryCount: number } {
  const s = sender as unknown as SenderInternals;
  return { credit: s.credit, deliveryCount: s.delivery_count };
}

export function sessionOutgoingAvailable(session: Session): number {
  return (session as unknown as SessionInternals).outgoing.available();
}

/**
 * Makes the sender answer every drain request with a flow frame carrying `drain=true` and no
 * credit, even when it has no credit left. `onConsumed` learns how many credits were given up so
 * the caller's own accounting stays aligned with rhea's `delivery_count`.
 */
export function installDrainResponder(sender: Sender, onConsumed: (credits: number) => void): void {
  const s = sender as unknown as SenderInternals;
  s._get_drain = function getDrain(this: SenderInternals): boolean {
    if (this._draining && this._drained) {
      const consumed = this.credit;
      this.delivery_count += consumed;
      this.credit = 0;
      this._draining = false;
      this._drained = false;
      onConsumed(consumed);
      return true;
    }
    return false;
  };
}

export function isDraining(sender: Sender): boolean {
  return (sender as unknown as SenderInternals)._draining;
}

/** Settles a delivery from the broker side and lets rhea drop it from its buffer. */
export function settleDelivery(delivery: Delivery, state?: unknown): void {
  delivery.update(true, state);
  (delivery as unknown as { remote_settled: boolean }).remote_settled = true;
}

/** Makes rhea write pending frames of the link's connection on the next tick. */
export function requestProcessing(link: RheaLink): void {
  (link.connection as unknown as { _register(): void })._register();
}
