import { describe, expect, it } from "vitest";
import { createMultipartBody } from "@connector/shared/anyrun/multipart";

async function collect(stream: ReadableStream<Uint8Array>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  const reader = stream.getReader();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return Buffer.concat(chunks);
    chunks.push(Buffer.from(value));
  }
}

function streamOf(...parts: Uint8Array[]): ReadableStream<Uint8Array> {
  return new ReadableStream({
    start(controller) {
      for (const p of parts) controller.enqueue(p);
      controller.close();
    },
  });
}

const fields = [
  ["obj_type", "file"],
  ["opt_network_connect", "false"],
] as const;

describe("createMultipartBody", () => {
  it("produces a body a standard parser reads back, with the exact length announced", async () => {
    const sample = Buffer.alloc(200_000, 7); // larger than one 64 KiB slice
    const body = createMultipartBody(fields, { name: "file", fileName: "sample.exe", content: sample });
    const bytes = await collect(body.body);
    expect(body.length).toBe(bytes.byteLength);
    expect(body.contentType).toBe(`multipart/form-data; boundary=${body.boundary}`);

    const form = await new Response(bytes, { headers: { "content-type": body.contentType } }).formData();
    expect(form.get("obj_type")).toBe("file");
    expect(form.get("opt_network_connect")).toBe("false");
    const file = form.get("file") as File;
    expect(file.name).toBe("sample.exe");
    expect(file.type).toBe("application/octet-stream");
    expect(Buffer.from(await file.arrayBuffer()).equals(sample)).toBe(true);
  });

  it("streams a ReadableStream; length only when a size is declared", async () => {
    const a = new TextEncoder().encode("hello ");
    const b = new TextEncoder().encode("world");
    const unsized = createMultipartBody(fields, { name: "file", fileName: "x.txt", content: streamOf(a, b) });
    expect(unsized.length).toBeUndefined();
    const form = await new Response(await collect(unsized.body), { headers: { "content-type": unsized.contentType } }).formData();
    expect(await (form.get("file") as File).text()).toBe("hello world");

    const sized = createMultipartBody(fields, { name: "file", fileName: "x.txt", content: streamOf(a, b), size: 11 });
    expect(sized.length).toBe((await collect(sized.body)).byteLength);
  });

  it("errors the body when a stream yields other than its declared size", async () => {
    const body = createMultipartBody(fields, { name: "file", fileName: "x.bin", content: streamOf(new Uint8Array(3)), size: 10 });
    await expect(collect(body.body)).rejects.toThrow("sample stream yielded 3 bytes, 10 declared");
  });

  it("rejects a declared size that contradicts a Blob or Buffer", () => {
    expect(() => createMultipartBody(fields, { name: "file", fileName: "x", content: new Blob(["abc"]), size: 4 })).toThrow(RangeError);
    expect(() => createMultipartBody(fields, { name: "file", fileName: "x", content: Buffer.from("abc"), size: 3 })).not.toThrow();
  });

  it("escapes quotes and line breaks in the filename", async () => {
    const body = createMultipartBody([], { name: "file", fileName: 'in"voice\r\n.pdf', content: new Blob(["%PDF"]) });
    const text = (await collect(body.body)).toString("utf8");
    expect(text).toContain('filename="in%22voice%0D%0A.pdf"');
    expect(text.endsWith(`\r\n--${body.boundary}--\r\n`)).toBe(true);
  });
});
