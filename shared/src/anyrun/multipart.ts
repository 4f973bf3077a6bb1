import { randomBytes } from "node:crypto";
import type { SubmissionField } from "./options.ts";

/**
 * A streaming multipart/form-data body (RFC 7578): the option fields, then the sample as a part
 * named `file`, produced chunk by chunk while the request is sent. The sample is never copied into
 * one buffer here, so a large file held as a stream or a Blob is not held in memory twice.
 *
 * When the total length is known (a Blob or Buffer, or a stream with a declared `size`), it is
 * returned so the request can carry Content-Length; otherwise the body goes out chunked.
 */

export type SampleContent = ReadableStream<Uint8Array> | Blob | Uint8Array;

export interface MultipartFile {
  /** Form field name; ANY.RUN expects `file`. */
  name: string;
  fileName: string;
  content: SampleContent;
  /** Bytes in `content`; required for a stream to get a Content-Length. */
  size?: number;
  contentType?: string;
}

export interface MultipartBody {
  boundary: string;
  /** Value for the Content-Type header. */
  contentType: string;
  body: ReadableStream<Uint8Array>;
  /** Total body length in bytes when known. */
  length?: number;
}

const encoder = new TextEncoder();

/** Quoted-string escaping browsers use for multipart names and filenames. */
function escapeQuoted(value: string): string {
  return value.replace(/"/g, "%22").replace(/\r/g, "%0D").replace(/\n/g, "%0A");
}

function contentLengthOf(content: SampleContent, declared: number | undefined): number | undefined {
  if (content instanceof Uint8Array) return content.byteLength;
  if (content instanceof Blob) return content.size;
  return declared;
}

async function* chunksOf(content: SampleContent): AsyncGenerator<Uint8Array> {
  if (content instanceof Uint8Array) {
    // Slices share memory with the caller's buffer: no copy.
    const step = 64 * 1024;
    for (let offset = 0; offset < content.byteLength; offset += step) yield content.subarray(offset, offset + step);
    return;
  }
  const stream = content instanceof Blob ? (content.stream() as ReadableStream<Uint8Array>) : content;
  const reader = stream.getReader();
  let finished = false;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) {
        finished = true;
        return;
      }
      if (!(value instanceof Uint8Array)) throw new TypeError("sample stream must yield Uint8Array chunks");
      yield value;
    }
  } finally {
    // Abandoned (request failed or was cancelled): release the source too.
    if (!finished) await reader.cancel().catch(() => undefined);
    reader.releaseLock();
  }
}

export function createMultipartBody(fields: readonly SubmissionField[], file: MultipartFile): MultipartBody {
  const boundary = `----AnyRunConnector${randomBytes(16).toString("hex")}`;
  let head = "";
  for (const [name, value] of fields) {
    head += `--${boundary}\r\nContent-Disposition: form-data; name="${escapeQuoted(name)}"\r\n\r\n${value}\r\n`;
  }
  head +=
    `--${boundary}\r\nContent-Disposition: form-data; name="${escapeQuoted(file.name)}"; filename="${escapeQuoted(file.fileName)}"\r\n` +
    `Content-Type: ${file.contentType ?? "application/octet-stream"}\r\n\r\n`;
  const preamble = encoder.encode(head);
  const epilogue = encoder.encode(`\r\n--${boundary}--\r\n`);

  const fileLength = contentLengthOf(file.content, file.size);
  if (file.size !== undefined && fileLength !== file.size) {
    throw new RangeError(`declared size ${file.size} differs from the content's ${fileLength} bytes`);
  }

  async function* all(): AsyncGenerator<Uint8Array> {
    yield preamble;
    let sent = 0;
    for await (const chunk of chunksOf(file.content)) {
      sent += chunk.byteLength;
      yield chunk;
    }
    if (fileLength !== undefined && sent !== fileLength) {
      throw new RangeError(`sample stream yielded ${sent} bytes, ${fileLength} declared`);
    }
    yield epilogue;
  }
  const iterator = all();
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        const { value, done } = await iterator.next();
        if (done) controller.close();
        else controller.enqueue(value);
      } catch (err) {
        controller.error(err);
      }
    },
    async cancel() {
      await iterator.return(undefined);
    },
  });

  return {
    boundary,
    contentType: `multipart/form-data; boundary=${boundary}`,
    body,
    ...(fileLength !== undefined ? { length: preamble.byteLength + fileLength + epilogue.byteLength } : {}),
  };
}
