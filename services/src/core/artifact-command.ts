import { artifactCommandSchema, type ArtifactCommand, type FileArtifact, type UrlArtifact } from "@connector/shared/messages";
import { describeIssues, InvalidInputError } from "@connector/shared/errors";
import type { Logger } from "@connector/shared/logger";

type ArtifactOfKind = { url: UrlArtifact; file: FileArtifact };
export type CommandOfKind<K extends keyof ArtifactOfKind> = ArtifactCommand & { artifact: ArtifactOfKind[K] };

/**
 * Parses an artifact command at a subscription's boundary. Malformed input is invalid (dead-
 * lettered with the problems); a valid command of the other kind can only arrive through a missing
 * subscription filter (a leftover `$Default` rule): it is not ours and not poison, so it is skipped.
 */
export function artifactCommandOf<K extends keyof ArtifactOfKind>(body: unknown, kind: K, logger: Logger): CommandOfKind<K> | undefined {
  const parsed = artifactCommandSchema.safeParse(body);
  if (!parsed.success) throw new InvalidInputError(`Not an artifact command: ${describeIssues(parsed.error)}`);
  if (parsed.data.artifact.kind !== kind) {
    logger.warn(`a ${parsed.data.artifact.kind} command reached the ${kind} subscription; its correlation filter is missing`, {
      artifactId: parsed.data.artifact.artifactId,
    });
    return undefined;
  }
  return parsed.data as CommandOfKind<K>;
}
