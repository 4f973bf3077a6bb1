import { readFileSync } from "node:fs";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ApiError } from "@connector/shared/clients/http";
import {
  createSentinelClient,
  isEntityKind,
  maxCommentLength,
  toWriteBody,
  type Incident,
  type IncidentProperties,
  type SentinelClient,
  type SentinelClientOptions,
} from "@connector/shared/clients/sentinel";
import { LocalTokenCredential } from "@connector/shared/credentials";
import { createLogger } from "@connector/shared/logger";
import type { IncidentRef } from "@connector/shared/messages";
import { startSentinelDouble, type SentinelDouble } from "@connector/local/doubles/sentinel";

const fixture = <T = unknown>(name: string): T =>
  JSON.parse(readFileSync(new URL(`../fixtures/microsoft/${name}`, import.meta.url), "utf8")) as T;

const getResponse = fixture<Incident & { properties: IncidentProperties }>("sentinel-incident-get-response.json");
const putRequest = fixture<{ etag: string; properties: IncidentProperties }>("sentinel-incident-put-request.json");
const commentRequest = fixture<{ properties: { message: string } }>("sentinel-incident-comment-put-request.json");
const commentResponse = fixture<Record<string, unknown> & { properties: Record<string, unknown> }>(
  "sentinel-incident-comment-put-response-201.json",
);
const entitiesResponse = fixture<{ entities: unknown[]; metaData: unknown[] }>("sentinel-incident-entities-post-response.json");
const entityExamples = fixture<unknown[]>("sentinel-entity-examples-by-kind.json");
const triggerEntities = fixture<unknown[]>("sentinel-trigger-relatedEntities-mde-linux-eicar.json");

const scope = "https://management.azure.com/.default";
const apiVersion = "2025-09-01";
const ref: IncidentRef = {
  subscriptionId: "00000000-0000-0000-0000-000000000000",
  resourceGroup: "myRg",
  workspaceName: "myWorkspace",
  workspaceId: "22222222-2222-2222-2222-222222222222",
  incidentId: getResponse.name!,
};

let double: SentinelDouble;
let logLines: string[];
let delays: number[];
let client: SentinelClient;
const credential = new LocalTokenCredential();

function makeClient(overrides: Partial<SentinelClientOptions> = {}): SentinelClient {
  return createSentinelClient({
    baseUrl: double.armUrl,
    apiVersion,
    credential,
    scope,
    logger: createLogger({ level: "debug", sink: (_l, line) => logLines.push(line) }),
    random: () => 0.5,
    sleep: async (ms) => {
      delays.push(ms);
    },
    ...overrides,
  });
}

const incidentUrl = (id = ref.incidentId) =>
  `${double.armUrl}/subscriptions/${ref.subscriptionId}/resourceGroups/${ref.resourceGroup}/providers/Microsoft.OperationalInsights/workspaces/${ref.workspaceName}/providers/Microsoft.SecurityInsights/incidents/${id}`;

async function bearer(): Promise<string> {
  return (await credential.getToken(scope)).token;
}

beforeEach(async () => {
  double = await startSentinelDouble();
  logLines = [];
  delays = [];
  client = makeClient();
  double.seedIncident(ref, getResponse.properties);
});

afterEach(async () => {
  await double.close();
});

describe("incident GET / PUT", () => {
  it("returns the incident with every recorded field and an etag", async () => {
    const incident = await client.getIncident(ref);
    expect(incident.name).toBe(getResponse.name);
    expect(incident.id).toBe(getResponse.id);
    expect(incident.type).toBe("Microsoft.SecurityInsights/incidents");
    expect(incident.etag).toMatch(/^"[0-9a-f-]{36}"$/);
    expect(incident.properties).toEqual(getResponse.properties);
  });

  it("round-trips a full-body PUT without losing any field", async () => {
    const before = await client.getIncident(ref);
    const body = toWriteBody(before);
    // The rebuilt body has the fixture PUT's shape: writable fields only, etag from the GET.
    expect(body.etag).toBe(before.etag);
    expect(Object.keys(body.properties).sort()).toEqual(
      [...Object.keys(putRequest.properties), "labels"].sort(),
    );
    expect(body.properties).not.toHaveProperty("incidentNumber");
    expect(body.properties).not.toHaveProperty("additionalData");

    const written = await client.putIncident(ref, body);
    expect(written.etag).not.toBe(before.etag);
    const { lastModifiedTimeUtc: _a, ...writtenRest } = written.properties!;
    const { lastModifiedTimeUtc: _b, ...beforeRest } = before.properties!;
    expect(writtenRest).toEqual(beforeRest);
    expect((await client.getIncident(ref)).properties).toEqual(written.properties);
  });

  it("answers 409 Conflict with the service's text when the recorded (stale) etag is sent", async () => {
    const err = await client.putIncident(ref, putRequest).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect(err).toMatchObject({ status: 409, code: "Conflict", api: "sentinel", operation: "putIncident", transient: false });
    expect((err as ApiError).message).toContain(`Newer version of resource '${ref.incidentId}' exists. Data was not saved.`);
    expect(double.incident(ref.incidentId)!.properties!.classificationReason).toBe("InaccurateData");
  });

  it("accepts the recorded PUT body without an etag (200) and replaces the writable fields", async () => {
    const { etag: _etag, ...withoutEtag } = putRequest;
    const written = await client.putIncident(ref, withoutEtag);
    expect(written.properties).toMatchObject({
      classificationReason: "IncorrectAlertLogic",
      owner: { objectId: "2046feea-040d-4a46-9e2b-91c2941bfa70" },
      incidentNumber: 3177,
      labels: [],
    });
    expect(written.properties!.owner).toEqual({ objectId: "2046feea-040d-4a46-9e2b-91c2941bfa70" });
  });

  it("creates an incident with PUT (201), and rejects a body without title/severity/status (400)", async () => {
    const fresh = { ...ref, incidentId: "9d2ad37b-2a05-4f2f-8c3e-3a0f4e4b6a11" };
    const created = await client.putIncident(fresh, { properties: { title: "New", severity: "Low", status: "New" } });
    expect(created.name).toBe(fresh.incidentId);
    expect(created.properties).toMatchObject({ title: "New", severity: "Low", status: "New", labels: [] });
    expect(double.requests().at(-1)).toMatchObject({ method: "PUT", status: 201 });

    const res = await fetch(`${incidentUrl()}?api-version=${apiVersion}`, {
      method: "PUT",
      headers: { Authorization: `Bearer ${await bearer()}`, "Content-Type": "application/json" },
      body: JSON.stringify({ properties: { title: "No severity", status: "New" } }),
    });
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ error: { code: "BadRequest" } });
  });

  it("ignores labelType in a PUT and stores new labels as User", async () => {
    const body = toWriteBody(await client.getIncident(ref));
    const res = await fetch(`${incidentUrl()}?api-version=${apiVersion}`, {
      method: "PUT",
      headers: { Authorization: `Bearer ${await bearer()}`, "Content-Type": "application/json" },
      body: JSON.stringify({ ...body, properties: { ...body.properties, labels: [{ labelName: "x", labelType: "AutoAssigned" }] } }),
    });
    expect(res.status).toBe(200);
    expect(((await res.json()) as Incident).properties!.labels).toEqual([{ labelName: "x", labelType: "User" }]);
  });

  it("maps an unknown incident to a 404 ApiError", async () => {
    const err = await client.getIncident({ ...ref, incidentId: "missing" }).catch((e: unknown) => e);
    expect(err).toMatchObject({ status: 404, code: "NotFound", transient: false });
  });

  it("requires a bearer token and the api-version", async () => {
    const noToken = await fetch(`${incidentUrl()}?api-version=${apiVersion}`);
    expect(noToken.status).toBe(401);
    expect(await noToken.json()).toEqual({
      error: { code: "AuthenticationFailed", message: "Authentication failed. The 'Authorization' header is missing." },
    });

    const noVersion = await fetch(incidentUrl(), { headers: { Authorization: `Bearer ${await bearer()}` } });
    expect(noVersion.status).toBe(400);
    expect(await noVersion.json()).toMatchObject({ error: { code: "MissingApiVersionParameter" } });

    // A token for another audience (the MDE API) is refused too.
    const wrongAudience = makeClient({ scope: "https://api.securitycenter.microsoft.com/.default" });
    await expect(wrongAudience.getIncident(ref)).rejects.toMatchObject({ status: 401, code: "InvalidAuthenticationToken" });
  });

  it("reports a dropped connection as a transient ApiError with status 0", async () => {
    double.setFaults((req) => (req.method === "GET" ? { dropConnection: true } : undefined));
    const err = await client.getIncident(ref).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect(err).toMatchObject({ status: 0, transient: true, operation: "getIncident" });
  });

  it("never writes the bearer token into logs or errors", async () => {
    const token = await bearer();
    await client.addLabels(ref, ["anyrun"]);
    const err = await client.getIncident({ ...ref, incidentId: "missing" }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect(JSON.stringify({ ...(err as ApiError), message: (err as ApiError).message })).not.toContain(token);
    expect(logLines.length).toBeGreaterThan(0);
    for (const line of logLines) expect(line).not.toContain(token);
  });
});

describe("addLabels", () => {
  it("adds labels with one GET + PUT, keeping every other field", async () => {
    const before = double.incident(ref.incidentId)!;
    const labels = await client.addLabels(ref, ["ANY.RUN: malicious", "anyrun"]);
    expect(labels).toEqual(["ANY.RUN: malicious", "anyrun"]);
    const after = double.incident(ref.incidentId)!;
    expect(after.properties!.labels).toEqual([
      { labelName: "ANY.RUN: malicious", labelType: "User" },
      { labelName: "anyrun", labelType: "User" },
    ]);
    const { labels: _l1, lastModifiedTimeUtc: _m1, ...rest } = after.properties!;
    const { labels: _l2, lastModifiedTimeUtc: _m2, ...restBefore } = before.properties!;
    expect(rest).toEqual(restBefore);
    expect(double.requests().map((r) => `${r.method} ${r.status}`)).toEqual(["GET 200", "PUT 200"]);
  });

  it("skips the PUT when every label is already there (case-insensitively)", async () => {
    double.updateIncident(ref.incidentId, (p) => {
      p.labels = [{ labelName: "AnyRun", labelType: "AutoAssigned" }];
    });
    const labels = await client.addLabels(ref, ["anyrun", "ANYRUN"]);
    expect(labels).toEqual(["AnyRun"]);
    expect(double.requests().map((r) => r.method)).toEqual(["GET"]);
  });

  it("on 409 re-reads and retries, keeping a label an analyst added between GET and PUT", async () => {
    let edited = false;
    double.setFaults((req) => {
      if (req.method === "PUT" && !edited) {
        edited = true;
        double.updateIncident(ref.incidentId, (p) => {
          p.labels = [...(p.labels ?? []), { labelName: "analyst-escalated", labelType: "User" }];
          p.status = "Active";
        });
      }
      return undefined;
    });
    const labels = await client.addLabels(ref, ["anyrun-malicious"]);
    expect(labels).toEqual(["analyst-escalated", "anyrun-malicious"]);
    expect(double.incident(ref.incidentId)!.properties).toMatchObject({
      status: "Active",
      labels: [
        { labelName: "analyst-escalated", labelType: "User" },
        { labelName: "anyrun-malicious", labelType: "User" },
      ],
    });
    expect(double.requests().map((r) => `${r.method} ${r.status}`)).toEqual(["GET 200", "PUT 409", "GET 200", "PUT 200"]);
    expect(delays).toEqual([100]); // full jitter: random 0.5 × 200 ms base
    expect(logLines.some((l) => l.includes("incident changed while adding labels"))).toBe(true);
  });

  it("gives up after the bounded number of attempts with the 409", async () => {
    double.setFaults((req) => {
      if (req.method === "PUT") double.updateIncident(ref.incidentId, (p) => void (p.description = `edit ${Date.now()}`));
      return undefined;
    });
    const bounded = makeClient({ retry: { attempts: 3, baseDelayMs: 10, maxDelayMs: 15 } });
    const err = await bounded.addLabels(ref, ["anyrun"]).catch((e: unknown) => e);
    expect(err).toMatchObject({ status: 409, code: "Conflict" });
    expect(double.requests().filter((r) => r.method === "PUT").map((r) => r.status)).toEqual([409, 409, 409]);
    expect(delays).toEqual([5, 8]); // 0.5 × min(15, 10·2^n)
  });
});

describe("comments", () => {
  const commentId = "4bb36b7b-26ff-4d1c-9cbe-0d8ab3da0014";

  it("creates (201) then updates (200) the same client-chosen id without a duplicate", async () => {
    const first = await client.putComment(ref, commentId, commentRequest.properties.message);
    expect(first.created).toBe(true);
    expect(Object.keys(first.comment).sort()).toEqual(Object.keys(commentResponse).sort());
    expect(Object.keys(first.comment.properties!).sort()).toEqual(Object.keys(commentResponse.properties).sort());
    expect(first.comment).toMatchObject({
      id: `${getResponse.id}/comments/${commentId}`,
      name: commentId,
      type: commentResponse.type,
      properties: { message: "Some message" },
    });
    expect(first.comment.properties!.author).toMatchObject({ name: "ANY.RUN Sentinel connector" });

    const second = await client.putComment(ref, commentId, "<p><b>Verdict:</b> malicious</p>");
    expect(second.created).toBe(false);
    expect(second.comment.properties!.createdTimeUtc).toBe(first.comment.properties!.createdTimeUtc);
    expect(double.comments(ref.incidentId).map((c) => c.properties!.message)).toEqual(["<p><b>Verdict:</b> malicious</p>"]);
    // The recorded incident already counted 3 comments; one new comment, one update.
    expect(double.incident(ref.incidentId)!.properties!.additionalData!.commentsCount).toBe(4);

    const listed = await client.listComments(ref);
    expect(listed.map((c) => c.name)).toEqual([commentId]);
  });

  it("follows nextLink across comment pages", async () => {
    await double.close();
    double = await startSentinelDouble({ commentPageSize: 2 });
    client = makeClient();
    double.seedIncident(ref, getResponse.properties);
    const ids = ["a", "b", "c", "d", "e"].map((c) => `${c.repeat(8)}-0000-4000-8000-000000000000`);
    for (const id of ids) await client.putComment(ref, id, `comment ${id}`);
    expect((await client.listComments(ref)).map((c) => c.name)).toEqual(ids);
    expect(double.requests().filter((r) => r.method === "GET").length).toBe(3);
  });

  it("enforces 30,000 characters per comment", async () => {
    const atLimit = await client.putComment(ref, commentId, "x".repeat(maxCommentLength));
    expect(atLimit.created).toBe(true);
    await expect(client.putComment(ref, commentId, "x".repeat(maxCommentLength + 1))).rejects.toBeInstanceOf(RangeError);
    expect(double.requests().filter((r) => r.method === "PUT").length).toBe(1);

    // The service side of the limit.
    const res = await fetch(`${incidentUrl()}/comments/${commentId}?api-version=${apiVersion}`, {
      method: "PUT",
      headers: { Authorization: `Bearer ${await bearer()}`, "Content-Type": "application/json" },
      body: JSON.stringify({ properties: { message: "y".repeat(maxCommentLength + 1) } }),
    });
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ error: { code: "BadRequest" } });
    expect(double.comments(ref.incidentId)[0]!.properties!.message).toHaveLength(maxCommentLength);
  });

  it("refuses a 101st comment but still updates an existing one", async () => {
    for (let i = 0; i < 100; i++) await client.putComment(ref, `c-${i}`, `comment ${i}`);
    const err = await client.putComment(ref, "c-100", "one too many").catch((e: unknown) => e);
    expect(err).toMatchObject({ status: 400, code: "BadRequest", transient: false });
    expect((await client.putComment(ref, "c-7", "edited")).created).toBe(false);
    expect(double.comments(ref.incidentId)).toHaveLength(100);
  });

  it("answers 404 for a comment on an unknown incident", async () => {
    await expect(client.putComment({ ...ref, incidentId: "missing" }, commentId, "x")).rejects.toMatchObject({ status: 404 });
  });
});

describe("entities", () => {
  it("lists the recorded entities as a typed union with metaData counts", async () => {
    double.seedIncident(ref, getResponse.properties, [...entitiesResponse.entities, ...entityExamples, ...triggerEntities]);
    const { entities, metaData } = await client.listEntities(ref);
    expect(entities).toHaveLength(1 + entityExamples.length + triggerEntities.length);
    expect(metaData).toEqual([
      { entityKind: "Account", count: 1 },
      { entityKind: "File", count: 2 },
      { entityKind: "FileHash", count: 2 },
      { entityKind: "Url", count: 1 },
      { entityKind: "Host", count: 2 },
      { entityKind: "Malware", count: 1 },
      { entityKind: "Process", count: 1 },
      { entityKind: "Ip", count: 1 },
    ]);

    const account = entities.find((e) => isEntityKind(e, "Account"));
    expect(account && isEntityKind(account, "Account") && account.properties?.accountName).toBe("administrator");

    const files = entities.filter((e) => isEntityKind(e, "File"));
    expect(files.map((f) => (isEntityKind(f, "File") ? [f.properties?.directory, f.properties?.fileName] : []))).toEqual([
      ["C:\\Windows\\System32", "cmd.exe"],
      ["/home/azureuser", "eicar.com"],
    ]);
    const eicar = files[1]!;
    expect(isEntityKind(eicar, "File") && eicar.properties?.additionalData).toEqual({
      MdatpDeviceId: "1111111111111111111111111111111111111111",
      DetectionStatus: "prevented",
    });

    const hashes = entities.flatMap((e) => (isEntityKind(e, "FileHash") ? [[e.properties?.algorithm, e.properties?.hashValue]] : []));
    expect(hashes).toEqual([
      ["SHA256", "E923636F1093C414AAB39F846E9D7A372BEEFA7B628B28179197E539C56AA0F0"],
      ["SHA1", "3395856ce81f2b7382dee72602f798b642f14140"],
    ]);

    const urls = entities.flatMap((e) => (isEntityKind(e, "Url") ? [e.properties?.url] : []));
    expect(urls).toEqual(["https://www.example.com"]);

    const hosts = entities.flatMap((e) => (isEntityKind(e, "Host") ? [e.properties] : []));
    expect(hosts.map((h) => h?.hostName)).toEqual(["vm1", "examplelinuxvm"]);
    expect(hosts[1]).toMatchObject({ osFamily: "Unknown", additionalData: { MdatpDeviceId: "1111111111111111111111111111111111111111" } });
    expect(hosts[0]?.additionalData).toBeUndefined();
  });

  it("answers the recorded response shape for the recorded entity", async () => {
    double.seedIncident(ref, getResponse.properties, entitiesResponse.entities);
    const res = await fetch(`${incidentUrl()}/entities?api-version=${apiVersion}`, {
      method: "POST",
      headers: { Authorization: `Bearer ${await bearer()}` },
    });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual(entitiesResponse);
  });
});
