import { createHash } from "node:crypto";
import {
  BlobSASPermissions,
  BlobServiceClient,
  SASProtocol,
  StorageSharedKeyCredential,
  generateBlobSASQueryParameters,
  type ContainerClient,
} from "@azure/storage-blob";
import { DefaultAzureCredential, type TokenCredential } from "@azure/identity";
import type { Hashes } from "./messages.ts";
import { randomToken } from "./ids.ts";

/**
 * The staging container: where an endpoint script uploads a collected sample, which the
 * BlobCreated event then hands to file submission. Blob names carry the incident and artifact
 * ids plus a random part, so a name cannot be guessed and maps back to exactly one job.
 */

export interface StagingBlobName {
  incidentId: string;
  artifactId: string;
}

const namePattern = /^([A-Za-z0-9-]{1,64})\/((?:file)-[0-9a-f]{8,64})\/([0-9a-f]{32})\.bin$/;

export function newStagingBlobName(incidentId: string, artifactId: string): string {
  return `${incidentId}/${artifactId}/${randomToken()}.bin`;
}

export function parseStagingBlobName(name: string): StagingBlobName | undefined {
  const m = namePattern.exec(name);
  return m ? { incidentId: m[1]!, artifactId: m[2]! } : undefined;
}

/** `/blobServices/default/containers/<c>/blobs/<name>` → { container, name }. */
export function parseBlobSubject(subject: string): { container: string; blobName: string } | undefined {
  const m = /^\/blobServices\/default\/containers\/([^/]+)\/blobs\/(.+)$/.exec(subject);
  return m ? { container: m[1]!, blobName: decodeURIComponent(m[2]!) } : undefined;
}

export interface BlobDigest {
  /** ETag of the version that was hashed. */
  etag: string;
  size: number;
  sha256: string;
  sha1: string;
  md5: string;
}

/** Compares the sample with the hash the incident carries (SHA-256, else SHA-1, else MD5). */
export function verifyHashes(expected: Hashes, actual: BlobDigest): { ok: true } | { ok: false; algorithm: string; expected: string; actual: string } {
  const pairs: [string, string | undefined, string][] = [
    ["SHA-256", expected.sha256, actual.sha256],
    ["SHA-1", expected.sha1, actual.sha1],
    ["MD5", expected.md5, actual.md5],
  ];
  for (const [algorithm, want, got] of pairs) {
    if (!want) continue;
    if (want.toLowerCase() !== got.toLowerCase()) return { ok: false, algorithm, expected: want.toLowerCase(), actual: got };
    return { ok: true };
  }
  return { ok: true };
}

/** The blob service of the connector's storage: a connection string locally, managed identity in Azure. */
export function blobServiceFromConfig(config: { STORAGE_CONNECTION?: string; STORAGE_BLOB_URL?: string }, credential?: TokenCredential): BlobServiceClient {
  if (config.STORAGE_CONNECTION) return BlobServiceClient.fromConnectionString(config.STORAGE_CONNECTION);
  if (!config.STORAGE_BLOB_URL) throw new Error("No blob storage configured");
  return new BlobServiceClient(config.STORAGE_BLOB_URL, credential ?? new DefaultAzureCredential());
}

export class StagingStore {
  constructor(
    private readonly service: BlobServiceClient,
    private readonly containerName: string,
    private readonly sharedKey?: StorageSharedKeyCredential,
  ) {}

  static fromConfig(
    config: { STORAGE_CONNECTION?: string; STORAGE_BLOB_URL?: string; STAGING_CONTAINER: string },
    credential?: TokenCredential,
  ): StagingStore {
    const service = blobServiceFromConfig(config, credential);
    const key = service.credential instanceof StorageSharedKeyCredential ? service.credential : undefined;
    return new StagingStore(service, config.STAGING_CONTAINER, key);
  }

  get container(): ContainerClient {
    return this.service.getContainerClient(this.containerName);
  }

  async ensureContainer(): Promise<void> {
    await this.container.createIfNotExists();
  }

  /**
   * A URL that lets its holder create this one blob and nothing else (create only, blob-scoped,
   * short expiry, https only unless the store itself is plain http as in the local runtime).
   */
  async createUploadUrl(blobName: string, expiresInMinutes: number): Promise<{ url: string; expiresOn: Date }> {
    const blob = this.container.getBlockBlobClient(blobName);
    const startsOn = new Date(Date.now() - 5 * 60_000);
    const expiresOn = new Date(Date.now() + expiresInMinutes * 60_000);
    const protocol = blob.url.startsWith("https://") ? SASProtocol.Https : SASProtocol.HttpsAndHttp;
    const values = {
      containerName: this.containerName,
      blobName,
      // Create only: the holder can write this blob once and never overwrite what was collected.
      permissions: BlobSASPermissions.parse("c"),
      startsOn,
      expiresOn,
      protocol,
    };
    let sas: string;
    if (this.sharedKey) {
      sas = generateBlobSASQueryParameters(values, this.sharedKey).toString();
    } else {
      const key = await this.service.getUserDelegationKey(startsOn, expiresOn);
      sas = generateBlobSASQueryParameters(values, key, this.service.accountName).toString();
    }
    return { url: `${blob.url}?${sas}`, expiresOn };
  }

  /** Size and digests of a staged blob, or undefined when it does not exist. */
  async digest(blobName: string): Promise<BlobDigest | undefined> {
    const blob = this.container.getBlobClient(blobName);
    if (!(await blob.exists())) return undefined;
    const download = await blob.download();
    const sha256 = createHash("sha256");
    const sha1 = createHash("sha1");
    const md5 = createHash("md5");
    let size = 0;
    for await (const chunk of download.readableStreamBody as AsyncIterable<Buffer>) {
      size += chunk.length;
      sha256.update(chunk);
      sha1.update(chunk);
      md5.update(chunk);
    }
    return { etag: download.etag ?? "", size, sha256: sha256.digest("hex"), sha1: sha1.digest("hex"), md5: md5.digest("hex") };
  }

  /** A stream of the blob's bytes (for the multipart upload to the sandbox). */
  async openRead(blobName: string, ifMatch?: string): Promise<NodeJS.ReadableStream> {
    const download = await this.container.getBlobClient(blobName).download(0, undefined, ifMatch ? { conditions: { ifMatch } } : {});
    if (!download.readableStreamBody) throw new Error(`Blob ${blobName} has no body`);
    return download.readableStreamBody;
  }

  async delete(blobName: string): Promise<void> {
    await this.container.getBlobClient(blobName).deleteIfExists();
  }
}
