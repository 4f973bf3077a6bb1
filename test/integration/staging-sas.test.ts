import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startAzurite, type AzuriteInstance } from "@connector/local/azurite";
import { StagingStore, newStagingBlobName, parseStagingBlobName } from "@connector/shared/staging";

let azurite: AzuriteInstance;
let staging: StagingStore;

beforeAll(async () => {
  azurite = await startAzurite({});
  staging = StagingStore.fromConfig({ STORAGE_CONNECTION: azurite.connectionString, STAGING_CONTAINER: "staging" });
  await staging.ensureContainer();
});
afterAll(async () => azurite?.close());

const put = (url: string, body: string) => fetch(url, { method: "PUT", headers: { "x-ms-blob-type": "BlockBlob", "x-ms-version": "2021-04-10" }, body });

describe("the endpoint's upload URL", () => {
  it("creates its one blob once and can never overwrite what was collected", async () => {
    const name = newStagingBlobName("33333333-3333-3333-3333-333333333333", "file-0123456789abcdef01234567");
    expect(parseStagingBlobName(name)).toEqual({ incidentId: "33333333-3333-3333-3333-333333333333", artifactId: "file-0123456789abcdef01234567" });
    const { url } = await staging.createUploadUrl(name, 5);
    expect(new URL(url).searchParams.get("sp")).toBe("c");
    expect(new URL(url).searchParams.get("sr")).toBe("b");
    expect((await put(url, "the collected sample")).status).toBe(201);
    expect((await put(url, "a swapped file")).status).toBe(403);
    expect((await staging.digest(name))?.size).toBe("the collected sample".length);
  });

  it("does not reach any other blob name", async () => {
    const { url } = await staging.createUploadUrl(newStagingBlobName("i-1", "file-0123456789abcdef01234567"), 5);
    const other = url.replace(/\/[0-9a-f]{32}\.bin\?/, `/${"f".repeat(32)}.bin?`);
    expect((await put(other, "x")).status).toBe(403);
  });

  it("reads only the version that was hashed", async () => {
    const name = newStagingBlobName("i-2", "file-0123456789abcdef01234567");
    await staging.container.getBlockBlobClient(name).upload("v1", 2);
    const digest = (await staging.digest(name))!;
    await staging.container.getBlockBlobClient(name).upload("v2!", 3);
    await expect(staging.openRead(name, digest.etag)).rejects.toMatchObject({ statusCode: 412 });
  });
});
