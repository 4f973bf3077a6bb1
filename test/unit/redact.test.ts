import { describe, expect, it } from "vitest";
import { createLogger, redact, redactValue, registerSecret } from "@connector/shared/logger";

describe("redact", () => {
  it("masks SAS signatures, also URL-encoded inside another URL, keys and tokens in any case", () => {
    const sas = "https://acct.blob.core.windows.net/staging/b.bin?sv=2021-04-10&sr=b&sp=cw&sig=AbC%2Bdef%3D";
    expect(redact(sas)).toBe("https://acct.blob.core.windows.net/staging/b.bin?sv=2021-04-10&sr=b&sp=cw&sig=REDACTED");
    const encoded = `https://example/next?target=${encodeURIComponent(sas)}&x=1`;
    expect(redact(encoded)).not.toContain("AbC");
    expect(redact(encoded)).toContain("sig%3DREDACTED");
    expect(redact(encoded)).toContain("&x=1");
    expect(redact("authorization: bearer eyJ0eXAiOiJKV1Qi.x.y")).toBe("authorization: bearer REDACTED");
    expect(redact("Authorization: Bearer eyJ0eXAiOiJKV1Qi.x.y")).toBe("Authorization: Bearer REDACTED");
    expect(redact("Endpoint=sb://x/;SharedAccessKeyName=k;SharedAccessKey=c2VjcmV0;")).toBe("Endpoint=sb://x/;SharedAccessKeyName=k;SharedAccessKey=REDACTED;");
    expect(redact("DefaultEndpointsProtocol=https;AccountName=a;AccountKey=c2VjcmV0PT0=;")).toBe("DefaultEndpointsProtocol=https;AccountName=a;AccountKey=REDACTED;");
    expect(redact('{"Authorization":"API-Key abcdef123456"}')).toBe('{"Authorization":"API-Key REDACTED"}');
  });

  it("masks Azure Functions keys and JSON properties that name a secret", () => {
    expect(redact("https://app.azurewebsites.net/api/replay?code=abc123XYZ==&x=1")).toBe("https://app.azurewebsites.net/api/replay?code=REDACTED&x=1");
    expect(redact('{"x-functions-key":"abc123XYZ"}')).toBe('{"x-functions-key":"REDACTED"}');
    expect(redact("x-functions-key: abc123XYZ")).toBe("x-functions-key: REDACTED");
    expect(redact('{"apiKey":"k1","client_secret":"s1","Password":"p1","access_token":"t1","name":"kept"}')).toBe(
      '{"apiKey":"REDACTED","client_secret":"REDACTED","Password":"REDACTED","access_token":"REDACTED","name":"kept"}',
    );
  });

  it("keeps a serialised log line valid JSON when a signature ends a quoted string inside a string", () => {
    const lines: string[] = [];
    const logger = createLogger({ level: "info", sink: (_l, line) => lines.push(line) });
    logger.info("body", { text: '{"sas":"https://a.blob.core.windows.net/c/b?sv=1&sig=SECRETLAST","key":"AccountKey=c2VjcmV0"}' });
    const parsed = JSON.parse(lines[0]!) as { text: string };
    expect(parsed.text).toBe('{"sas":"https://a.blob.core.windows.net/c/b?sv=1&sig=REDACTED","key":"AccountKey=REDACTED"}');
  });

  it("redacts every string inside a value before it is serialised", () => {
    const value = { a: ["x?sig=one", { b: "Bearer tok.en" }], n: 3, when: "2026-12-04" };
    expect(redactValue(value)).toEqual({ a: ["x?sig=REDACTED", { b: "Bearer REDACTED" }], n: 3, when: "2026-12-04" });
  });

  it("masks a registered literal secret wherever it appears", () => {
    registerSecret("literal-secret-0042");
    expect(redact("x literal-secret-0042 y")).toBe("x REDACTED y");
  });
});
