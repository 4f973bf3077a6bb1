import { ApiError } from "@connector/shared/clients/http";
import { InvalidInputError } from "@connector/shared/errors";
import type { IncidentRef } from "@connector/shared/messages";
import type { SentinelClient } from "@connector/shared/clients/sentinel";
import type { IncidentPort } from "../core/ports.ts";

/**
 * The Sentinel client seen through the port the cores use. An incident Sentinel does not know
 * (404) will not appear by retrying the same message ten times: the message is dead-lettered at
 * once with the reason `IncidentNotFound`, and can be replayed once the cause is found.
 */
export function createIncidentPort(sentinel: SentinelClient): IncidentPort {
  const notFound = async <T>(ref: IncidentRef, call: () => Promise<T>): Promise<T> => {
    try {
      return await call();
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) {
        throw new InvalidInputError(
          `Sentinel has no incident ${ref.incidentId} in workspace ${ref.workspaceName} (resource group ${ref.resourceGroup}, subscription ${ref.subscriptionId}): ${err.code ?? "404"}`,
          "IncidentNotFound",
        );
      }
      throw err;
    }
  };
  return {
    listEntities: (ref) => notFound(ref, async () => (await sentinel.listEntities(ref)).entities),
    putComment: (ref, id, message) => notFound(ref, () => sentinel.putComment(ref, id, message)),
    listCommentIds: (ref) => notFound(ref, async () => (await sentinel.listComments(ref)).map((c) => c.name ?? "")),
    addLabels: (ref, labels) => notFound(ref, () => sentinel.addLabels(ref, labels)),
  };
}
