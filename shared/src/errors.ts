/**
 * Input that can never be processed, however often it is retried: a malformed message, an event of
 * the wrong shape, a reference to a job that does not exist. The Service Bus functions dead-letter
 * such a message at once, with `reason` as its DeadLetterReason and the message as description.
 */
export class InvalidInputError extends Error {
  override name = "InvalidInputError";
  constructor(
    message: string,
    readonly reason: string = "InvalidInput",
  ) {
    super(message);
  }
}

/**
 * Not ready yet, expectedly (a submission still in flight, the endpoint's own hash not there yet):
 * thrown to have the delivery retried later on the trigger's own schedule. Logged as info, not as
 * a failure.
 */
export class RetryLaterError extends Error {
  override name = "RetryLaterError";
}

/** The first problems of a failed zod parse, with their paths: "object.id: Invalid input; …". */
export function describeIssues(error: { issues: readonly { path: readonly PropertyKey[]; message: string }[] }, max = 5): string {
  return error.issues
    .slice(0, max)
    .map((i) => `${i.path.map(String).join(".") || "(root)"}: ${i.message}`)
    .join("; ");
}
