/**
 * The dead-letter sub-queues of the topology and where a dead letter goes back to.
 *
 * Every queue and every topic subscription of `shared/src/topology.ts` has one. A queue's dead
 * letter is re-sent to the queue. A subscription cannot be sent to (Service Bus only accepts sends
 * to queues and topics), so its dead letter is re-sent to the topic; the topic then hands a copy to
 * every subscription whose filter matches. The topology's filters are correlation filters on
 * application properties (`kind`), so a copy carrying the original properties matches exactly the
 * subscription it came from — `resendTarget` checks that against the declared filters for every
 * message, and refuses when another subscription would get the copy too or the original would not.
 */
import { allQueues, allTopics, type SubscriptionDeclaration } from "@connector/shared/topology";

export type DeadLetterEntity =
  | { readonly kind: "queue"; readonly name: string; readonly queue: string }
  | { readonly kind: "subscription"; readonly name: string; readonly topic: string; readonly subscription: string };

/** Queues first, then subscriptions, in topology order. `name` is `<queue>` or `<topic>/<subscription>`. */
export function deadLetterEntities(): DeadLetterEntity[] {
  return [
    ...allQueues().map((q): DeadLetterEntity => ({ kind: "queue", name: q.name, queue: q.name })),
    ...allTopics().flatMap((t) =>
      t.subscriptions.map((s): DeadLetterEntity => ({ kind: "subscription", name: `${t.name}/${s.name}`, topic: t.name, subscription: s.name })),
    ),
  ];
}

/** The Service Bus path of the entity's dead-letter sub-queue (for messages and logs). */
export function deadLetterPath(entity: DeadLetterEntity): string {
  return entity.kind === "queue" ? `${entity.queue}/$DeadLetterQueue` : `${entity.topic}/Subscriptions/${entity.subscription}/$DeadLetterQueue`;
}

export class UnknownEntityError extends Error {
  override name = "UnknownEntityError";
}

/**
 * Resolves what an operator typed: `incident-intake`, `artifact-commands/submit-url`,
 * `artifact-commands/Subscriptions/submit-url`, or a subscription name alone when it is unique.
 * Case-insensitive, as Service Bus paths are.
 */
export function resolveEntity(input: string): DeadLetterEntity {
  const wanted = input.trim().replace(/\/\$deadletterqueue$/i, "").toLowerCase();
  const all = deadLetterEntities();
  const canonical = wanted.replace(/\/subscriptions\//, "/");
  const exact = all.find((e) => e.name.toLowerCase() === canonical);
  if (exact) return exact;
  const bySubscription = all.filter((e) => e.kind === "subscription" && e.subscription.toLowerCase() === wanted);
  if (bySubscription.length === 1) return bySubscription[0]!;
  throw new UnknownEntityError(`Unknown entity '${input}'. Known: ${all.map((e) => e.name).join(", ")}`);
}

/** The entities asked for (all when none), in topology order. */
export function resolveEntities(inputs: readonly string[] | undefined): DeadLetterEntity[] {
  if (!inputs || inputs.length === 0) return deadLetterEntities();
  const wanted = new Set(inputs.map((input) => resolveEntity(input).name));
  return deadLetterEntities().filter((e) => wanted.has(e.name));
}

/** Correlation-filter semantics: every key present with exactly this value. */
export function filterMatches(filter: Readonly<Record<string, string>>, properties: Readonly<Record<string, unknown>>): boolean {
  return Object.entries(filter).every(([key, value]) => {
    const actual = properties[key];
    return typeof actual === "string" && actual === value;
  });
}

export type ResendTarget = { readonly ok: true; readonly entity: string } | { readonly ok: false; readonly reason: string };

/** Where the copy of a dead letter is sent, or why it cannot be sent back to that entity alone. */
export function resendTarget(entity: DeadLetterEntity, applicationProperties: Readonly<Record<string, unknown>>): ResendTarget {
  if (entity.kind === "queue") return { ok: true, entity: entity.queue };
  const topic = allTopics().find((t) => t.name === entity.topic);
  if (!topic) return { ok: false, reason: `topic ${entity.topic} is not in the topology` };
  const matching = topic.subscriptions.filter((s: SubscriptionDeclaration) => filterMatches(s.filter, applicationProperties));
  if (!matching.some((s) => s.name === entity.subscription)) {
    return { ok: false, reason: `a copy sent to topic ${entity.topic} would not match the filter of ${entity.subscription} (${JSON.stringify(topic.subscriptions.find((s) => s.name === entity.subscription)?.filter ?? {})})` };
  }
  const others = matching.filter((s) => s.name !== entity.subscription).map((s) => s.name);
  if (others.length > 0) return { ok: false, reason: `a copy sent to topic ${entity.topic} would also reach ${others.join(", ")}` };
  return { ok: true, entity: entity.topic };
}
