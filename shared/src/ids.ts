import { createHash, randomBytes } from "node:crypto";

/**
 * Deterministic identifiers. A redelivered message computes the same ids again, so a retried
 * write updates the same comment / indicator instead of adding a second one.
 */

/** The project's UUIDv5 namespace (a fixed random UUID; never change it, ids derive from it). */
export const projectNamespace = "5b0f2c1e-8d3a-4f6b-9c2e-7a1d4e8f3b60";

function uuidBytes(uuid: string): Buffer {
  const hex = uuid.replace(/-/g, "");
  if (!/^[0-9a-f]{32}$/i.test(hex)) throw new Error(`Not a UUID: ${uuid}`);
  return Buffer.from(hex, "hex");
}

function formatUuid(bytes: Buffer): string {
  const h = bytes.toString("hex");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

/** RFC 4122 version 5 (SHA-1, name-based) UUID. */
export function uuidV5(name: string, namespace = projectNamespace): string {
  const hash = createHash("sha1").update(uuidBytes(namespace)).update(name, "utf8").digest();
  const bytes = hash.subarray(0, 16);
  bytes[6] = (bytes[6]! & 0x0f) | 0x50;
  bytes[8] = (bytes[8]! & 0x3f) | 0x80;
  return formatUuid(bytes);
}

/** Short, table-key-safe digest of a string. */
export function shortDigest(value: string, length = 24): string {
  return createHash("sha256").update(value, "utf8").digest("hex").slice(0, length);
}

/** A random, URL-safe token (for blob names the endpoint cannot guess in advance). */
export function randomToken(bytes = 16): string {
  return randomBytes(bytes).toString("hex");
}
