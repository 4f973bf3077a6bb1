/**
 * A transparent HTTP reverse proxy in front of Azurite's blob endpoint that plays the storage
 * account's Event Grid system topic: Azurite raises no events, so every committed block blob write
 * that passes through here (Put Blob, Put Block List answered 201) raises `Microsoft.Storage.BlobCreated`.
 *
 * Requests and responses are forwarded byte for byte (streamed, raw headers, SAS query included);
 * only the event's `url` drops the query string. Nothing secret is logged.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import { BlobServiceClient, StorageSharedKeyCredential } from "@azure/storage-blob";
import type { EventGridEvent } from "@azure/functions";
import type { Logger } from "@connector/shared/logger";
import { buildBlobCreatedEvent, type ResourceScope } from "./events.ts";

export interface BlobProxyOptions {
  /** Azurite blob endpoint, e.g. http://127.0.0.1:10000/devstoreaccount1 (the proxy keeps the account path). */
  readonly targetBlobUrl: string;
  readonly accountName: string;
  readonly accountKey: string;
  readonly scope: ResourceScope;
  readonly onBlobCreated: (event: EventGridEvent) => void;
  readonly logger: Logger;
}

export interface BlobProxy {
  /** `http://127.0.0.1:<port>/<account>` */
  readonly blobEndpoint: string;
  readonly port: number;
  /** Resolves when every event whose upload already answered has been raised. */
  settled(): Promise<void>;
  close(): Promise<void>;
}

function header(req: http.IncomingMessage, name: string): string | undefined {
  const value = req.headers[name];
  return Array.isArray(value) ? value[0] : value;
}

type BlobWrite = { api: "PutBlob" | "PutBlockList"; container: string; blobPath: string; pathname: string };

/** Classifies a request as a BlobCreated-raising write (path-style URL: /<account>/<container>/<blob>). */
function classify(req: http.IncomingMessage, accountName: string): BlobWrite | undefined {
  if (req.method !== "PUT" || !req.url) return undefined;
  const url = new URL(req.url, "http://proxy.invalid");
  const segments = url.pathname.split("/");
  // ["", account, container, ...blob]
  if (segments.length < 4 || segments[1] !== accountName) return undefined;
  const container = segments[2] ?? "";
  const blobPath = segments.slice(3).join("/");
  if (!container || !blobPath) return undefined;
  const comp = url.searchParams.get("comp");
  if (comp === null) {
    if ((header(req, "x-ms-blob-type") ?? "").toLowerCase() !== "blockblob") return undefined;
    if (header(req, "x-ms-copy-source") !== undefined) return undefined; // Put Blob From URL: not raised here
    return { api: "PutBlob", container, blobPath, pathname: url.pathname };
  }
  if (comp.toLowerCase() === "blocklist") return { api: "PutBlockList", container, blobPath, pathname: url.pathname };
  return undefined;
}

export async function startBlobProxy(options: BlobProxyOptions): Promise<BlobProxy> {
  const target = new URL(options.targetBlobUrl);
  const agent = new http.Agent({ keepAlive: true });
  const direct = new BlobServiceClient(
    options.targetBlobUrl,
    new StorageSharedKeyCredential(options.accountName, options.accountKey),
  );
  const pendingEvents = new Set<Promise<void>>();
  let publicOrigin = "";

  const raise = async (req: http.IncomingMessage, res: http.IncomingMessage, write: BlobWrite, bytes: number) => {
    const blobName = decodeURIComponent(write.blobPath);
    const eTag = res.headers.etag;
    let contentType = header(req, "x-ms-blob-content-type") ?? header(req, "content-type") ?? "application/octet-stream";
    let contentLength = bytes;
    let accessTier = header(req, "x-ms-access-tier") ?? "Default";
    try {
      const props = await direct.getContainerClient(write.container).getBlobClient(blobName).getProperties();
      if (!eTag || props.etag === eTag) {
        contentType = props.contentType ?? contentType;
        if (write.api === "PutBlockList") contentLength = props.contentLength ?? 0;
        accessTier = props.accessTier ?? accessTier;
      } else if (write.api === "PutBlockList") {
        // Overwritten in between: the committed length of *this* version is no longer readable.
        contentLength = props.contentLength ?? 0;
      }
    } catch (err) {
      options.logger.warn("blob properties for BlobCreated unavailable", { container: write.container, error: err });
    }
    const event = buildBlobCreatedEvent({
      scope: options.scope,
      account: options.accountName,
      container: write.container,
      blobName,
      api: write.api,
      clientRequestId: header(req, "x-ms-client-request-id"),
      requestId: typeof res.headers["x-ms-request-id"] === "string" ? res.headers["x-ms-request-id"] : undefined,
      eTag,
      contentType,
      contentLength,
      accessTier,
      url: `${publicOrigin}${write.pathname}`,
    });
    options.logger.debug("BlobCreated raised", { subject: event.subject, api: write.api });
    options.onBlobCreated(event);
  };

  const server = http.createServer((req, res) => {
    const write = classify(req, options.accountName);
    let bytes = 0;
    const upstream = http.request(
      {
        host: target.hostname,
        port: target.port,
        method: req.method,
        path: req.url,
        headers: req.rawHeaders,
        agent,
      },
      (up) => {
        res.writeHead(up.statusCode ?? 502, up.statusMessage, up.rawHeaders);
        up.pipe(res);
        up.on("end", () => {
          if (write && up.statusCode === 201) {
            const p = raise(req, up, write, bytes).catch((err) =>
              options.logger.error("raising BlobCreated failed", { error: err }),
            );
            pendingEvents.add(p);
            void p.finally(() => pendingEvents.delete(p));
          }
        });
        up.on("error", () => res.destroy());
      },
    );
    upstream.on("error", (err) => {
      options.logger.warn("blob proxy upstream error", { method: req.method, error: err });
      if (!res.headersSent) {
        res.writeHead(502, { "content-type": "text/plain" });
        res.end("Bad gateway");
      } else {
        res.destroy();
      }
    });
    if (write) req.on("data", (chunk: Buffer) => (bytes += chunk.length));
    req.pipe(upstream);
    res.on("close", () => {
      if (!res.writableFinished) upstream.destroy();
    });
  });
  server.keepAliveTimeout = 5000;

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  publicOrigin = `http://127.0.0.1:${port}`;
  const blobEndpoint = `${publicOrigin}${target.pathname.replace(/\/$/, "")}`;

  return {
    blobEndpoint,
    port,
    async settled() {
      while (pendingEvents.size > 0) await Promise.allSettled([...pendingEvents]);
    },
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await Promise.allSettled([...pendingEvents]);
      agent.destroy();
    },
  };
}
