/**
 * Makes a Flex Consumption app run the package and settings it was just given, through ARM:
 *
 * 1. restart: the host reads the new package from its deployment container and resolves its Key
 *    Vault references again, now that its identity holds the roles (they are granted after the
 *    app exists, since the system-assigned identity only exists then);
 * 2. sync triggers: a package placed in the deployment container by anything but OneDeploy must
 *    have its triggers synced by hand (Functions deployment docs), or the scale controller never
 *    learns about the Service Bus triggers and ARM lists no functions;
 * 3. wait until ARM lists every function of the topology (restarting and syncing again now and
 *    then while some are missing): Event Grid validates an Azure Function destination when a
 *    subscription is created, so the subscriptions are created only after this.
 *
 * Self-contained on purpose (global fetch, injected token): the Pulumi dynamic provider that calls
 * it is serialized into the provider process.
 */

export interface ActivationRequest {
  /** ARM id of the Function App. */
  appId: string;
  /** Function names the package registers (the topology's functions). */
  expectedFunctions: readonly string[];
  /** e.g. https://management.azure.com */
  armBaseUrl: string;
  /** How long to wait for the functions to be listed. Default 10 minutes. */
  timeoutMs?: number;
  /** Between two listings. Default 10 s. */
  pollMs?: number;
  /** Sync triggers again this often while functions are missing. Default 60 s. */
  resyncMs?: number;
  /**
   * Restart again this often while functions are missing. Default 3 minutes: a role granted just
   * before the first restart may not have reached Key Vault yet, and a host whose Key Vault
   * reference did not resolve refuses its settings and indexes no function until it restarts.
   */
  restartMs?: number;
}

export interface ActivationDeps {
  getToken(): Promise<string>;
  fetch?: typeof fetch;
  sleep?: (ms: number) => Promise<void>;
  now?: () => number;
}

export interface ActivationResult {
  functions: string[];
  syncCalls: number;
  restarts: number;
}

const apiVersion = "2024-04-01";

export async function activateFunctionApp(request: ActivationRequest, deps: ActivationDeps): Promise<ActivationResult> {
  const fetchImpl = deps.fetch ?? fetch;
  const sleep = deps.sleep ?? ((ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms)));
  const now = deps.now ?? Date.now;
  const timeoutMs = request.timeoutMs ?? 10 * 60_000;
  const pollMs = request.pollMs ?? 10_000;
  const resyncMs = request.resyncMs ?? 60_000;
  const base = `${request.armBaseUrl.replace(/\/$/, "")}${request.appId}`;

  const call = async (method: "GET" | "POST", action: string): Promise<Response> =>
    fetchImpl(`${base}${action}?api-version=${apiVersion}`, {
      method,
      headers: { Authorization: `Bearer ${await deps.getToken()}`, "Content-Type": "application/json" },
      ...(method === "POST" ? { body: "{}" } : {}),
    });
  const refused = (action: string, response: Response) =>
    new Error(`ARM refused ${action} on the Function App (${response.status}): the deploying identity needs Website Contributor or Contributor on it`);
  let lastProblem = "";
  const note = async (action: string, response: Response) => {
    lastProblem = `${action} answered ${response.status}: ${(await response.text()).slice(0, 200)}`;
  };

  const started = now();
  const timedOut = () => now() - started >= timeoutMs;

  const restartMs = request.restartMs ?? 3 * 60_000;
  let restarts = 0;
  let lastRestart = 0;
  // A host that is still starting answers 400/409/429/5xx for a while: every step retries until the deadline.
  const restart = async () => {
    for (;;) {
      const response = await call("POST", "/restart");
      if (response.status === 200 || response.status === 204) break;
      if (response.status === 401 || response.status === 403) throw refused("restart", response);
      await note("restart", response);
      if (timedOut()) throw new Error(`The Function App could not be restarted within ${Math.round(timeoutMs / 1000)} s (${lastProblem})`);
      await sleep(pollMs);
    }
    restarts++;
    lastRestart = now();
  };
  await restart();

  let syncCalls = 0;
  const sync = async () => {
    const response = await call("POST", "/syncfunctiontriggers");
    syncCalls++;
    if (response.status === 401 || response.status === 403) throw refused("syncfunctiontriggers", response);
    if (response.status >= 300) await note("syncfunctiontriggers", response);
  };
  const listFunctions = async (): Promise<string[] | undefined> => {
    const response = await call("GET", "/functions");
    if (response.status === 401 || response.status === 403) throw refused("the function listing", response);
    if (response.status !== 200) {
      await note("the function listing", response);
      return undefined;
    }
    const body = (await response.json()) as { value?: { name?: string; properties?: { name?: string } }[] };
    // ARM names a function `<app>/<function>`; properties.name is the bare name.
    return (body.value ?? []).map((f) => f.properties?.name ?? f.name?.split("/").pop() ?? "").filter(Boolean);
  };

  let lastSync = Number.NEGATIVE_INFINITY;
  let listed: string[] = [];
  for (;;) {
    if (now() - lastRestart >= restartMs) {
      await restart();
      lastSync = Number.NEGATIVE_INFINITY;
    }
    if (now() - lastSync >= resyncMs) {
      await sync();
      lastSync = now();
    }
    listed = (await listFunctions()) ?? listed;
    const missing = request.expectedFunctions.filter((name) => !listed.includes(name));
    if (missing.length === 0) return { functions: listed, syncCalls, restarts };
    if (timedOut()) {
      throw new Error(
        `The Function App did not list ${missing.join(", ")} within ${Math.round(timeoutMs / 1000)} s after restart and trigger sync ` +
          `(listed: ${listed.join(", ") || "none"}${lastProblem ? `; last: ${lastProblem}` : ""}). Check the host's logs in Application Insights (package readable? settings valid?), then run pulumi up again.`,
      );
    }
    await sleep(pollMs);
  }
}
