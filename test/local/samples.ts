import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";

/**
 * The sample incidents `npm start` and the end-to-end test push through the pipeline. They are
 * built from the recorded trigger body (shape) and the real MDE Linux EICAR entities; the Windows
 * host, the URLs and the "malicious" sample are ours, chosen so that every path runs.
 */

const fixture = (name: string): unknown => JSON.parse(readFileSync(new URL(`../fixtures/microsoft/${name}`, import.meta.url), "utf8"));

/** The real EICAR test file: MDE quarantines it, and ANY.RUN's recorded verdict for it is "No threats detected". */
export const eicar = Buffer.from("X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*", "latin1");

/** A stand-in for a malicious Windows executable; the ANY.RUN double knows its SHA-256 as bad. */
export const maliciousSample = Buffer.concat([
  Buffer.from("MZ", "latin1"),
  Buffer.alloc(62, 0x90),
  Buffer.from("ANY.RUN connector local test sample - treated as malicious by the local sandbox double\n", "latin1"),
]);

/** A second, different malicious stand-in (the dropper of the mixed incident): every file has its own IoCs. */
export const maliciousDropper = Buffer.concat([maliciousSample, Buffer.from("dropper stage 2\n", "latin1")]);

/** SHA-256 of every sample the ANY.RUN double treats as malicious. */
export const knownBadSamples = (): string[] => [sha256(maliciousSample), sha256(maliciousDropper)];

export const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");
export const sha1 = (b: Buffer) => createHash("sha1").update(b).digest("hex");

export const devices = {
  windows: { id: "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678", name: "win-finance-07", osPlatform: "Windows11", osArchitecture: "64-bit" },
  linux: { id: "1111111111111111111111111111111111111111", name: "examplelinuxvm", osPlatform: "Linux", osArchitecture: "64-bit" },
} as const;

export const urls = {
  clean: "https://www.example.com/",
  malicious: "http://malware-delivery.example.net/payload/invoice.html",
} as const;

export interface QuarantinedFile {
  deviceId: string;
  originalPath: string;
  content: Buffer;
}

export interface SampleIncident {
  name: string;
  body: Record<string, unknown>;
  /** Files the fake Defender quarantine holds for this incident. */
  quarantine: QuarantinedFile[];
  /** What each analysed artifact should end as: verdict text per artifact kind+name. */
  expect: { artifact: string; outcome: "enriched" | "failed" | "not_collectable"; verdict?: string; minIndicators?: number; maxIndicators?: number }[];
}

const windowsPath = "C:\\Users\\alice\\Downloads";
const dropperHashEntity = "7d2f0c9e-1a3b-4c5d-8e6f-9a0b1c2d3e4f";

function host(device: { id: string; name: string }, osFamily: string) {
  return {
    id: `${armBase}/Entities/`,
    type: "Microsoft.SecurityInsights/Entities",
    kind: "Host",
    properties: { hostName: device.name, osFamily, additionalData: { MdatpDeviceId: device.id, HealthStatus: "active", OnboardingStatus: "onboarded" }, friendlyName: device.name },
  };
}
function file(device: { id: string }, directory: string, fileName: string, fileHashEntityIds?: string[]) {
  return {
    id: `${armBase}/Entities/`,
    type: "Microsoft.SecurityInsights/Entities",
    kind: "File",
    properties: {
      directory,
      fileName,
      ...(fileHashEntityIds ? { fileHashEntityIds } : {}),
      additionalData: { MdatpDeviceId: device.id, DetectionStatus: "prevented" },
      friendlyName: fileName,
    },
  };
}
function fileHash(algorithm: string, hashValue: string, entityGuid?: string) {
  return {
    id: `${armBase}/Entities/${entityGuid ?? ""}`,
    type: "Microsoft.SecurityInsights/Entities",
    kind: "FileHash",
    properties: { algorithm, hashValue, friendlyName: `${hashValue}(${algorithm})` },
  };
}
function url(u: string) {
  return { id: `${armBase}/Entities/`, type: "Microsoft.SecurityInsights/Entities", kind: "Url", properties: { url: u, friendlyName: u } };
}

const armBase =
  "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-example/providers/Microsoft.OperationalInsights/workspaces/example-workspace/providers/Microsoft.SecurityInsights";

/** A trigger body shaped like the recorded one, for a new incident id, number and entities. */
export function triggerBody(incidentId: string, incidentNumber: number, title: string, relatedEntities: unknown[]): Record<string, unknown> {
  const body = structuredClone(fixture("sentinel-incident-trigger-body.COMPOSITE.json")) as Record<string, any>;
  delete body["_comment"];
  body["eventUniqueId"] = incidentId;
  body["object"]["id"] = `${armBase}/Incidents/${incidentId}`;
  body["object"]["name"] = incidentId;
  body["object"]["properties"]["incidentNumber"] = incidentNumber;
  body["object"]["properties"]["title"] = title;
  body["object"]["properties"]["relatedEntities"] = relatedEntities;
  // A label an analyst set before the analysis: the connector must keep it.
  body["object"]["properties"]["labels"] = [{ labelName: "phishing-campaign-42", labelType: "User" }];
  body["object"]["properties"]["incidentUrl"] = `https://portal.azure.com/#asset/Microsoft_Azure_Security_Insights/Incident${armBase}/Incidents/${incidentId}`;
  return body;
}

export function sampleIncidents(): SampleIncident[] {
  const linuxEntities = fixture("sentinel-trigger-relatedEntities-mde-linux-eicar.json") as unknown[];
  return [
    {
      name: "URL incident (clean)",
      body: triggerBody("9e1c0001-0000-4000-8000-000000000001", 101, "Suspicious link clicked", [url(urls.clean)]),
      quarantine: [],
      expect: [{ artifact: urls.clean, outcome: "enriched", verdict: "No threats detected", maxIndicators: 0 }],
    },
    {
      name: "Quarantined file on a Windows host (malicious)",
      body: triggerBody("9e1c0002-0000-4000-8000-000000000002", 102, "'Wacatac' malware was prevented", [
        host(devices.windows, "Windows"),
        file(devices.windows, windowsPath, "invoice.exe"),
        fileHash("SHA256", sha256(maliciousSample).toUpperCase()),
      ]),
      quarantine: [{ deviceId: devices.windows.id, originalPath: `${windowsPath}\\invoice.exe`, content: maliciousSample }],
      expect: [{ artifact: "invoice.exe", outcome: "enriched", verdict: "Malicious activity", minIndicators: 1 }],
    },
    {
      name: "Quarantined EICAR on a Linux host (real MDE entities)",
      body: triggerBody("33333333-3333-3333-3333-333333333333", 9, "'EICAR_Test_File' malware was prevented", linuxEntities),
      quarantine: [{ deviceId: devices.linux.id, originalPath: "/home/azureuser/eicar.com", content: eicar }],
      expect: [{ artifact: "eicar.com", outcome: "enriched", verdict: "No threats detected", maxIndicators: 0 }],
    },
    {
      name: "URL, file and hash-only file together",
      body: triggerBody("9e1c0004-0000-4000-8000-000000000004", 104, "Multi-stage phishing", [
        url(urls.malicious),
        host(devices.windows, "Windows"),
        // Full entity ids (as the entities API returns them): the file's hash reference resolves.
        file(devices.windows, "C:\\Users\\bob\\AppData\\Local\\Temp", "dropper.exe", [`${armBase}/Entities/${dropperHashEntity}`]),
        fileHash("SHA256", sha256(maliciousDropper), dropperHashEntity),
        // A bare hash of some other file: no host, no path → reported, not collected.
        fileHash("MD5", "5d41402abc4b2a76b9719d911017c592", "0c7e4d1a-5b6f-4e2a-9d3c-8f1b2a4c6e00"),
      ]),
      quarantine: [{ deviceId: devices.windows.id, originalPath: "C:\\Users\\bob\\AppData\\Local\\Temp\\dropper.exe", content: maliciousDropper }],
      expect: [
        { artifact: urls.malicious, outcome: "enriched", verdict: "Malicious activity", minIndicators: 1 },
        { artifact: "dropper.exe", outcome: "enriched", verdict: "Malicious activity", minIndicators: 1 },
        { artifact: "5d41402abc4b2a76b9719d911017c592", outcome: "not_collectable" },
      ],
    },
  ];
}

/** The entity builders the samples use, for other generators of trigger bodies (campaigns). */
export const sampleEntities = { host, file, fileHash, url } as const;
