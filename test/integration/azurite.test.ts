import { existsSync } from "node:fs";
import net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BlobServiceClient } from "@azure/storage-blob";
import { TableClient } from "@azure/data-tables";
import { createLogger } from "@connector/shared/logger";
import { DEV_ACCOUNT_KEY, DEV_ACCOUNT_NAME, startAzurite, type AzuriteInstance } from "@connector/local/azurite";

const quiet = createLogger({ level: "error" });

function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: "127.0.0.1", port }, () => {
      socket.destroy();
      resolve(true);
    });
    socket.on("error", () => resolve(false));
  });
}

describe("startAzurite", () => {
  let azurite: AzuriteInstance;

  beforeAll(async () => {
    azurite = await startAzurite({ logger: quiet });
  });
  afterAll(async () => {
    await azurite?.close();
  });

  it("exposes loopback endpoints and a connection string with the dev account", () => {
    expect(azurite.blobPort).toBeGreaterThan(0);
    expect(azurite.tablePort).toBeGreaterThan(0);
    expect(azurite.blobPort).not.toBe(azurite.tablePort);
    expect(azurite.blobUrl).toBe(`http://127.0.0.1:${azurite.blobPort}/${DEV_ACCOUNT_NAME}`);
    expect(azurite.tableUrl).toBe(`http://127.0.0.1:${azurite.tablePort}/${DEV_ACCOUNT_NAME}`);
    expect(azurite.accountName).toBe(DEV_ACCOUNT_NAME);
    expect(azurite.accountKey).toBe(DEV_ACCOUNT_KEY);
    expect(azurite.connectionString).toBe(
      `DefaultEndpointsProtocol=http;AccountName=${DEV_ACCOUNT_NAME};AccountKey=${DEV_ACCOUNT_KEY};` +
        `BlobEndpoint=${azurite.blobUrl};TableEndpoint=${azurite.tableUrl};`,
    );
  });

  it("round-trips a blob", async () => {
    const service = BlobServiceClient.fromConnectionString(azurite.connectionString);
    const container = service.getContainerClient("roundtrip");
    await container.create();
    const content = Buffer.from("hello azurite \u00e9\u00e8", "utf8");
    await container.getBlockBlobClient("dir/a.txt").uploadData(content, {
      blobHTTPHeaders: { blobContentType: "text/plain; charset=utf-8" },
    });
    const downloaded = await container.getBlobClient("dir/a.txt").downloadToBuffer();
    expect(downloaded.equals(content)).toBe(true);
    const props = await container.getBlobClient("dir/a.txt").getProperties();
    expect(props.contentLength).toBe(content.length);
    expect(props.contentType).toBe("text/plain; charset=utf-8");
    const names: string[] = [];
    for await (const b of container.listBlobsFlat()) names.push(b.name);
    expect(names).toEqual(["dir/a.txt"]);
  });

  it("round-trips a table entity (allowInsecureConnection over http)", async () => {
    const table = TableClient.fromConnectionString(azurite.connectionString, "jobs", { allowInsecureConnection: true });
    await table.createTable();
    await table.createEntity({ partitionKey: "p1", rowKey: "r1", status: "submitted", attempts: 2 });
    const entity = await table.getEntity<{ status: string; attempts: number }>("p1", "r1");
    expect(entity.status).toBe("submitted");
    expect(entity.attempts).toBe(2);
  });

  it("stops both services and removes its temp location on close", async () => {
    const other = await startAzurite({ logger: quiet });
    expect(await portOpen(other.blobPort)).toBe(true);
    expect(await portOpen(other.tablePort)).toBe(true);
    expect(existsSync(other.location)).toBe(true);
    await other.close();
    expect(await portOpen(other.blobPort)).toBe(false);
    expect(await portOpen(other.tablePort)).toBe(false);
    expect(existsSync(other.location)).toBe(false);
  });
});
