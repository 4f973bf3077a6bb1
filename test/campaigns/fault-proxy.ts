import http from "node:http";
import type { AddressInfo, Socket } from "node:net";

/**
 * A loopback reverse proxy in front of one double that injects faults into a share of the
 * requests, the same way for every double:
 *
 * - `5xx`: answers 500, 502 or 503 with the API's own error envelope, without forwarding;
 * - `429`: answers 429 with `Retry-After` (and, for Sentinel TI, the service's "Try again in N
 *   seconds" text), without forwarding;
 * - `timeout`: the client never gets an answer. The sandbox submission POST (and, with
 *   `lostAnswerWrites`, every POST/PUT) is forwarded and its answer thrown away (`lostAnswer`: the
 *   double did the work, the client does not know; 2/3) or dropped unprocessed (`reset`; 1/3) — a
 *   submission is never held: a file upload's client timeout is 10 minutes. Other requests are held
 *   past the client's timeout and then dropped (`hang`, a share `hangShare`: each costs the run
 *   30 s) or dropped at once (`reset`).
 *
 * Everything else is forwarded unchanged (method, path, headers, body) and answered as the double
 * answered. One request in every block of ten (rate 0.1) gets a fault, at a position and of a kind
 * drawn from a seeded PRNG per proxy, so a run's fault plan is reproducible up to request order.
 */

export type FaultKind = "5xx" | "429" | "timeout";
export type TimeoutMode = "hang" | "reset" | "lostAnswer";
export type DoubleName = "anyrun" | "mde" | "arm" | "ti";

export interface FaultDecision {
  kind: FaultKind;
  status?: number;
  timeoutMode?: TimeoutMode;
}

export interface FaultPolicyOptions {
  /** Share of requests that get a fault (0.1 = 10 %). */
  rate: number;
  random: () => number;
  /** Retry-After seconds sent with an injected 429. */
  retryAfterSeconds: number;
  /** How long a `hang` holds the request before dropping it: past the connector's 30 s client timeout. */
  hangMs: number;
  /** Share of the (non-submission) timeouts that hang; the others drop the connection at once. */
  hangShare: number;
  /** Timeouts of every POST/PUT (not only the sandbox submission) may be processed with the answer lost. */
  lostAnswerWrites?: boolean;
  /** Targeted experiments: decides every request itself instead of the 1-in-10 schedule. */
  decide?: (double: DoubleName, req: ProxiedRequest) => FaultDecision | undefined;
}

export interface ProxiedRequest {
  method: string;
  path: string;
}

export interface FaultRecord {
  double: DoubleName;
  method: string;
  path: string;
  kind: FaultKind;
  status?: number;
  timeoutMode?: TimeoutMode;
  at: number;
}

export interface FaultProxy {
  readonly double: DoubleName;
  readonly url: string;
  /** Requests seen and faults injected. */
  stats(): { requests: number; faults: FaultRecord[] };
  /** Stops injecting (requests are still forwarded). */
  setEnabled(enabled: boolean): void;
  close(): Promise<void>;
}

const isSubmission = (double: DoubleName, req: ProxiedRequest) => double === "anyrun" && req.method === "POST" && req.path === "/v1/analysis";

/**
 * Which requests get a fault: exactly one in every block of round(1 / rate) consecutive requests, at
 * a random position in the block — so each double gets its share however few requests it sees.
 */
export function faultSchedule(rate: number, random: () => number): (index: number) => boolean {
  const block = Math.max(1, Math.round(1 / rate));
  let current = -1;
  let position = 0;
  return (index) => {
    if (rate <= 0) return false;
    const b = Math.floor(index / block);
    if (b !== current) {
      current = b;
      position = Math.floor(random() * block);
    }
    return index % block === position;
  };
}

export function decideFault(double: DoubleName, req: ProxiedRequest, policy: FaultPolicyOptions): FaultDecision {
  const pick = policy.random();
  if (pick < 1 / 3) return { kind: "5xx", status: [500, 502, 503][Math.floor(policy.random() * 3)]! };
  if (pick < 2 / 3) return { kind: "429", status: 429 };
  const draw = policy.random();
  if (isSubmission(double, req) || (policy.lostAnswerWrites && (req.method === "POST" || req.method === "PUT"))) {
    return { kind: "timeout", timeoutMode: draw < 2 / 3 ? "lostAnswer" : "reset" };
  }
  return { kind: "timeout", timeoutMode: draw < policy.hangShare ? "hang" : "reset" };
}

/** The error body each API sends for a status (shapes from the reference notes / the doubles). */
function errorBody(double: DoubleName, status: number, retryAfterSeconds: number): unknown {
  const message = status === 429 ? "Rate limit is exceeded" : "Injected server error";
  switch (double) {
    case "anyrun":
      return { error: true, message };
    case "mde":
      return { error: { code: status === 429 ? "TooManyRequests" : "InternalServerError", message, target: "campaign-fault" } };
    case "arm":
      return { error: { code: status === 429 ? "TooManyRequests" : "InternalServerError", message } };
    case "ti":
      return { statusCode: status, message: status === 429 ? `Rate limit is exceeded. Try again in ${retryAfterSeconds} seconds.` : message };
  }
}

const hopByHop = new Set(["connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade", "te", "trailer", "host", "content-length"]);

export async function startFaultProxy(double: DoubleName, target: string, policy: FaultPolicyOptions): Promise<FaultProxy> {
  const targetUrl = new URL(target);
  const faults: FaultRecord[] = [];
  let requests = 0;
  let enabled = true;
  const sockets = new Set<Socket>();
  const timers = new Set<NodeJS.Timeout>();
  let closed = false;
  const faulted = faultSchedule(policy.rate, policy.random);

  const forward = (req: http.IncomingMessage, body: Buffer) =>
    new Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }>((resolve, reject) => {
      const headers: http.OutgoingHttpHeaders = {};
      for (const [k, v] of Object.entries(req.headers)) if (!hopByHop.has(k.toLowerCase()) && v !== undefined) headers[k] = v;
      headers["content-length"] = String(body.length);
      const upstream = http.request(
        { host: targetUrl.hostname, port: targetUrl.port, method: req.method, path: req.url, headers, agent: false },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("end", () => resolve({ status: res.statusCode ?? 502, headers: res.headers, body: Buffer.concat(chunks) }));
          res.on("error", reject);
        },
      );
      upstream.on("error", reject);
      upstream.end(body);
    });

  const reply = (res: http.ServerResponse, status: number, headers: Record<string, string | string[]>, body: Buffer) => {
    res.writeHead(status, { ...headers, "content-length": String(body.length) });
    res.end(body);
  };

  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      void (async () => {
        const index = requests++;
        const body = Buffer.concat(chunks);
        const path = new URL(req.url ?? "/", "http://proxy").pathname;
        const request = { method: req.method ?? "GET", path };
        const decision = !enabled ? undefined : policy.decide ? policy.decide(double, request) : faulted(index) ? decideFault(double, request, policy) : undefined;
        if (decision) faults.push({ double, ...request, ...decision, at: Date.now() });
        if (decision?.kind === "5xx" || decision?.kind === "429") {
          const status = decision.status!;
          const headers: Record<string, string> = { "content-type": "application/json; charset=utf-8" };
          if (status === 429) headers["retry-after"] = String(policy.retryAfterSeconds);
          reply(res, status, headers, Buffer.from(JSON.stringify(errorBody(double, status, policy.retryAfterSeconds))));
          return;
        }
        if (decision?.timeoutMode === "reset") {
          req.socket.destroy();
          return;
        }
        if (decision?.timeoutMode === "hang") {
          const timer = setTimeout(() => {
            timers.delete(timer);
            req.socket.destroy();
          }, policy.hangMs);
          timers.add(timer);
          return;
        }
        const answer = await forward(req, body);
        if (decision?.timeoutMode === "lostAnswer") {
          req.socket.destroy();
          return;
        }
        const headers: Record<string, string | string[]> = {};
        for (const [k, v] of Object.entries(answer.headers)) if (!hopByHop.has(k.toLowerCase()) && v !== undefined) headers[k] = v;
        reply(res, answer.status, headers, answer.body);
      })().catch(() => {
        if (!res.headersSent && !closed) reply(res, 502, { "content-type": "text/plain" }, Buffer.from("proxy could not reach the double"));
        else req.socket.destroy();
      });
    });
  });
  server.on("connection", (socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}${targetUrl.pathname.replace(/\/$/, "")}`;
  return {
    double,
    url,
    stats: () => ({ requests, faults: [...faults] }),
    setEnabled(value) {
      enabled = value;
    },
    async close() {
      closed = true;
      for (const t of timers) clearTimeout(t);
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
