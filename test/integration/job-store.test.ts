import { randomUUID } from "node:crypto";
import { TableClient } from "@azure/data-tables";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { JobStore } from "@connector/shared/job-store";
import { createLogger } from "@connector/shared/logger";
import { startAzurite, type AzuriteInstance } from "@connector/local/azurite";

/** JobStore against Azurite's Table storage: real etags, real 409/412 answers. */

let azurite: AzuriteInstance;
let jobs: JobStore;

beforeAll(async () => {
  azurite = await startAzurite({ logger: createLogger({ level: "error", sink: () => {} }) });
  jobs = new JobStore(TableClient.fromConnectionString(azurite.connectionString, "jobs", { allowInsecureConnection: true }));
  await jobs.ensureTable();
});

afterAll(async () => {
  await azurite?.close();
});

const incident = (incidentId: string) => ({ subscriptionId: "s", resourceGroup: "rg", workspaceName: "ws", workspaceId: "w", incidentId });

describe("JobStore analysis budget", () => {
  it("hands out at most max artifacts to concurrent intakes of one incident, and keeps what it gave", async () => {
    const incidentId = randomUUID();
    const claims = await Promise.all(
      Array.from({ length: 6 }, (_, i) => jobs.admit(incidentId, [`url-${i}a`, `url-${i}b`], 4)),
    );
    const everAdmitted = new Set(claims.flatMap((c) => [...c]));
    expect(everAdmitted.size).toBe(4);
    // A later intake (an update, a redelivery) sees the same four and adds nothing.
    const later = await jobs.admit(incidentId, ["url-new"], 4);
    expect([...later].sort()).toEqual([...everAdmitted].sort());
  });

  it("counts what an earlier trigger admitted, and the budget row is not listed as a job", async () => {
    const incidentId = randomUUID();
    await jobs.admit(incidentId, ["url-old"], 2);
    await jobs.create({
      incidentId,
      artifactId: "url-old",
      status: "queued",
      incident: incident(incidentId),
      artifact: { kind: "url", artifactId: "url-old", url: "https://old.example/" },
    });
    const admitted = await jobs.admit(incidentId, ["url-1", "url-2"], 2);
    expect([...admitted].sort()).toEqual(["url-1", "url-old"]);
    expect((await jobs.listByIncident(incidentId)).map((j) => j.artifactId)).toEqual(["url-old"]);
  });
});
