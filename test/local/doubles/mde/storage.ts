import {
  BlobSASPermissions,
  BlobServiceClient,
  generateBlobSASQueryParameters,
  SASProtocol,
  StorageSharedKeyCredential,
} from "@azure/storage-blob";
import type { AzuriteInstance } from "../../azurite.ts";

/**
 * Staging blobs for Live Response tests against Azurite: a container and a blob-scoped SAS URL
 * like the one the connector hands to the collection script (create/write only, short expiry).
 */

export async function ensureContainer(azurite: AzuriteInstance, container: string): Promise<BlobServiceClient> {
  const service = BlobServiceClient.fromConnectionString(azurite.connectionString);
  await service.getContainerClient(container).createIfNotExists();
  return service;
}

export function blobSasUrl(
  azurite: AzuriteInstance,
  container: string,
  blobName: string,
  options: { permissions?: string; expiresOn?: Date; startsOn?: Date } = {},
): string {
  const credential = new StorageSharedKeyCredential(azurite.accountName, azurite.accountKey);
  const sas = generateBlobSASQueryParameters(
    {
      containerName: container,
      blobName,
      permissions: BlobSASPermissions.parse(options.permissions ?? "cw"),
      startsOn: options.startsOn ?? new Date(Date.now() - 60_000),
      expiresOn: options.expiresOn ?? new Date(Date.now() + 30 * 60_000),
      // Azurite serves http only; production SAS are https-only.
      protocol: SASProtocol.HttpsAndHttp,
    },
    credential,
  ).toString();
  return `${azurite.blobUrl}/${container}/${encodeURIComponent(blobName)}?${sas}`;
}

/** The bytes of a blob, or undefined when it does not exist. */
export async function readBlob(service: BlobServiceClient, container: string, blobName: string): Promise<Buffer | undefined> {
  const blob = service.getContainerClient(container).getBlobClient(blobName);
  if (!(await blob.exists())) return undefined;
  return blob.downloadToBuffer();
}
