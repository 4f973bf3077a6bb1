/**
 * Event Grid trigger of the local functions host: a `Deliver` target that invokes the function
 * once per event of the delivered array (a throw fails the whole delivery with 500, so Event Grid
 * retries), and — for the child-process host — the webhook endpoint Event Grid posts to, shaped like
 * the host's `/runtime/webhooks/eventgrid?functionName=<name>`.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import type { EventGridEvent } from "@azure/functions";
import type { EventGridFunctionDefinition } from "@connector/shared/function-definition";
import type { Logger } from "@connector/shared/logger";
import { DeliveryError, type Deliver } from "../eventgrid/delivery.ts";
import { createInvocationContext, type InvocationRecord } from "./invocation.ts";
import { eventGridTriggerMetadata } from "./trigger-metadata.ts";

export function eventGridDeliverer(
  definition: EventGridFunctionDefinition,
  logger: Logger,
  record: (r: InvocationRecord) => void,
): Deliver {
  const log = logger.child({ functionName: definition.name });
  return async (_subscription, events) => {
    for (const event of events) {
      const context = createInvocationContext({
        functionName: definition.name,
        triggerMetadata: eventGridTriggerMetadata(event),
        trigger: { type: "eventGridTrigger", name: "event" },
        logger: log,
      });
      const started = Date.now();
      const base = {
        functionName: definition.name,
        invocationId: context.invocationId,
        trigger: "eventGrid" as const,
        eventId: event.id,
        startedAt: new Date(started).toISOString(),
      };
      try {
        await definition.handler(event, context);
      } catch (err) {
        log.warn("function failed; delivery fails with 500", { invocationId: context.invocationId, eventId: event.id, error: err });
        record({ ...base, outcome: "failed", error: err instanceof Error ? err.message : String(err), durationMs: Date.now() - started });
        throw new DeliveryError(500, `function ${definition.name} failed`);
      }
      record({ ...base, outcome: "succeeded", durationMs: Date.now() - started });
    }
  };
}

export interface WebhookServer {
  /** `http://127.0.0.1:<port>` */
  readonly url: string;
  webhookUrl(functionName: string): string;
  close(): Promise<void>;
}

/** The Event Grid webhook of a child-process host. */
export async function startEventGridWebhook(targets: ReadonlyMap<string, Deliver>, logger: Logger, port = 0): Promise<WebhookServer> {
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      void (async () => {
        const url = new URL(req.url ?? "/", "http://host.invalid");
        const functionName = url.searchParams.get("functionName") ?? "";
        const target = targets.get(functionName);
        if (url.pathname !== "/runtime/webhooks/eventgrid" || req.method !== "POST" || !target) {
          res.writeHead(404).end();
          return;
        }
        let events: EventGridEvent[];
        try {
          const parsed: unknown = JSON.parse(Buffer.concat(chunks).toString("utf8"));
          events = (Array.isArray(parsed) ? parsed : [parsed]) as EventGridEvent[];
        } catch {
          res.writeHead(400).end();
          return;
        }
        if (req.headers["aeg-event-type"] === "SubscriptionValidation") {
          const code = (events[0]?.data as { validationCode?: string } | undefined)?.validationCode;
          res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ validationResponse: code }));
          return;
        }
        const subscription = String(req.headers["aeg-subscription-name"] ?? "").toLowerCase();
        const attempt = Number(req.headers["aeg-delivery-count"] ?? 0) + 1;
        try {
          await target(subscription, events, { attempt });
          res.writeHead(200).end();
        } catch (err) {
          const status = err instanceof DeliveryError ? err.status : 500;
          res.writeHead(status).end();
        }
      })().catch((err: unknown) => {
        logger.error("event grid webhook failed", { error: err });
        if (!res.headersSent) res.writeHead(500).end();
      });
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => resolve());
  });
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url: base,
    webhookUrl: (functionName) => `${base}/runtime/webhooks/eventgrid?functionName=${encodeURIComponent(functionName)}`,
    async close() {
      server.closeIdleConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
