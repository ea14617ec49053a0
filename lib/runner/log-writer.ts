import { isUtf8 } from 'node:buffer';
import { once } from 'node:events';
import { createReadStream, createWriteStream, type WriteStream } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import type { LogUrlResponse } from './protocol.js';
import { SecretMasker, type SecretMatcher } from './secret-masker.js';

/** Minimum wait between new output and its upload, in milliseconds. */
const MIN_UPLOAD_DELAY_MS = 2_000;
/** Maximum wait between new output and its upload, in milliseconds. */
const MAX_UPLOAD_DELAY_MS = 30_000;
/**
 * Each upload sends the whole file again, so the wait grows with the size:
 * one second per MiB keeps the upload traffic of a growing log near 1 MiB/s.
 */
const UPLOAD_DELAY_MS_PER_MIB = 1_000;
/** How long the final upload keeps retrying before it gives up, in milliseconds. */
const FINAL_UPLOAD_RETRY_WINDOW_MS = 60_000;
/** A PUT that sends or receives nothing for this long fails, in milliseconds. */
const PUT_IDLE_TIMEOUT_MS = 60_000;
/** Write buffer size of the log file, larger than the default 16 KiB so that pipe reads of 64 KiB rarely wait. */
const FILE_HIGH_WATER_MARK = 1024 * 1024;

/** Returns how long to wait before uploading a log of `size` bytes that has new output. */
export function uploadDelayMs(size: number): number {
  const proportional = (size / (1024 * 1024)) * UPLOAD_DELAY_MS_PER_MIB;
  return Math.min(MAX_UPLOAD_DELAY_MS, Math.max(MIN_UPLOAD_DELAY_MS, proportional));
}

export interface LogWriterOptions {
  /** Name of the log in diagnostics, such as `setup` or `task build`. */
  name: string;
  /** File in the runner's state folder that stores the log. It is created or replaced. */
  file: string;
  /** Size cap in bytes. Output past it is discarded after one line that reports the cut. */
  maxBytes: number;
  /** Requests a presigned PUT URL for this log from the service. */
  requestUploadUrl: () => Promise<LogUrlResponse>;
  logger: Logger;
  /** Returns false for errors that no retry can fix, such as the job having ended; uploads then stop. */
  shouldRetry?: (error: unknown) => boolean;
  /** How long the final upload keeps retrying, in milliseconds. */
  finalRetryWindowMs?: number;
}

/** A PUT to a presigned URL that got a response other than 2xx, such as 403 after the URL expired. */
export class UploadRejectedError extends Error {
  override name = 'UploadRejectedError';

  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
  }
}

/**
 * Writes one log object. Output goes through the secret masker (once
 * {@link maskSecrets} is called), a UTF-8 sanitizer and the size cap, in
 * that order, into a file on disk. The whole file is uploaded with a
 * presigned PUT: a few seconds after new output while the log is small, less
 * often as it grows, never two uploads at once, and once more in
 * {@link finish}. Upload failures are retried and logged to stderr, and no
 * method throws them.
 */
export class LogWriter {
  private readonly sanitizer = new Utf8Sanitizer();
  /** Null until secrets are known, so output without secrets takes no extra step or copy. */
  private masker: SecretMasker | null = null;
  private readonly shouldRetry: (error: unknown) => boolean;
  private acceptedBytes = 0;
  private lastByte = 0x0a;
  private cut = false;
  private finishing = false;
  private finished: Promise<void> | null = null;

  private uploadTimer: NodeJS.Timeout | null = null;
  private uploadInFlight: Promise<void> | null = null;
  private uploadedBytes = -1;
  private uploadsDisabled = false;
  private consecutiveFailures = 0;
  private target: { response: LogUrlResponse; refreshAt: number } | null = null;
  private prefetch: Promise<void> | null = null;

  private constructor(
    private readonly options: LogWriterOptions,
    private readonly stream: WriteStream,
  ) {
    this.shouldRetry = options.shouldRetry ?? (() => true);
  }

  /**
   * Creates the log file and returns a writer for it. The upload URL is
   * requested at once, so the final upload can still use it when the
   * service has ended the job by then and hands out no more URLs.
   */
  static async open(options: LogWriterOptions): Promise<LogWriter> {
    const stream = createWriteStream(options.file, { flags: 'w', highWaterMark: FILE_HIGH_WATER_MARK });
    await once(stream, 'open');
    const writer = new LogWriter(options, stream);
    // A failure here is not logged, because the first upload requests the URL again and logs its own failure.
    writer.prefetch = writer.uploadTarget().then(
      () => undefined,
      () => undefined,
    );
    return writer;
  }

  /** Whether the log has reached its cap. */
  get isCut(): boolean {
    return this.cut;
  }

  /**
   * Appends raw output. Returns false when the file's write buffer is full,
   * and the caller then waits for {@link drained} before it writes more. Output
   * past the cap is dropped here, so the caller keeps reading its pipe.
   */
  write(chunk: Uint8Array): boolean {
    if (this.cut || this.finishing) {
      return true;
    }
    if (this.masker === null) {
      return this.append(this.sanitizer.push(chunk));
    }
    return this.append(this.sanitizer.push(this.masker.push(toBuffer(chunk))));
  }

  /**
   * Appends one line of text, masked as a whole. Raw output written before it
   * is flushed first: held-back bytes through the masker, and an unfinished
   * UTF-8 sequence through the sanitizer.
   */
  writeLine(text: string): void {
    if (this.cut || this.finishing) {
      return;
    }
    this.flushRawOutput();
    const line = Buffer.from(`${text}\n`, 'utf8');
    this.append(this.masker === null ? line : this.masker.mask(line));
  }

  /**
   * Replaces each of the matcher's secret patterns with `[masked]` in all
   * output from now on. A matcher without patterns changes nothing.
   */
  maskSecrets(matcher: SecretMatcher): void {
    if (matcher.maxLength === 0) {
      return;
    }
    this.flushRawOutput();
    this.masker = new SecretMasker(matcher);
  }

  private flushRawOutput(): void {
    if (this.masker !== null) {
      this.append(this.sanitizer.push(this.masker.end()));
    }
    this.append(this.sanitizer.end());
  }

  /** Resolves when the file's write buffer has room again. */
  async drained(): Promise<void> {
    if (this.stream.writableNeedDrain) {
      await once(this.stream, 'drain');
    }
  }

  /**
   * Flushes and closes the file, waits for an upload in progress, and uploads
   * the whole log a last time, retrying for up to a minute. Calling it again
   * returns the same promise.
   */
  finish(): Promise<void> {
    this.finished ??= this.finishOnce();
    return this.finished;
  }

  private async finishOnce(): Promise<void> {
    if (!this.cut) {
      this.flushRawOutput();
    }
    this.finishing = true;
    if (this.uploadTimer) {
      clearTimeout(this.uploadTimer);
      this.uploadTimer = null;
    }
    this.stream.end();
    await once(this.stream, 'close');
    await this.uploadInFlight;

    const window = this.options.finalRetryWindowMs ?? FINAL_UPLOAD_RETRY_WINDOW_MS;
    const started = Date.now();
    let delay = 1_000;
    for (let attempt = 1; !this.uploadsDisabled; attempt += 1) {
      try {
        await this.put(this.acceptedBytes);
        if (this.consecutiveFailures > 0) {
          this.options.logger.info({ log: this.options.name, attempt }, 'final log upload succeeded after retries');
        }
        return;
      } catch (error) {
        this.noteFailure(error);
        if (this.uploadsDisabled || Date.now() - started + delay > window) {
          this.options.logger.error(
            { log: this.options.name, attempt, err: errorMessage(error) },
            'giving up on the final log upload',
          );
          return;
        }
        await sleep(delay);
        delay = Math.min(delay * 2, 10_000);
      }
    }
  }

  /** Writes valid UTF-8 to the file, cutting it at the cap. All file writes go through here. */
  private append(bytes: Buffer): boolean {
    // After the cut, a flush of held-back bytes must not add a second notice.
    if (bytes.length === 0 || this.cut) {
      return true;
    }
    const room = this.options.maxBytes - this.acceptedBytes;
    let writable = true;
    if (bytes.length <= room) {
      writable = this.stream.write(bytes);
      this.acceptedBytes += bytes.length;
      this.lastByte = bytes[bytes.length - 1];
    } else {
      const head = bytes.subarray(0, characterBoundary(bytes, room));
      if (head.length > 0) {
        this.stream.write(head);
        this.acceptedBytes += head.length;
        this.lastByte = head[head.length - 1];
      }
      const separator = this.lastByte === 0x0a ? '' : '\n';
      const notice = Buffer.from(
        `${separator}[kiln] This log was cut at ${this.options.maxBytes} bytes (KILN_LOG_MAX_BYTES); the rest of the output was discarded.\n`,
        'utf8',
      );
      writable = this.stream.write(notice);
      this.acceptedBytes += notice.length;
      this.cut = true;
    }
    this.scheduleUpload();
    return writable;
  }

  private scheduleUpload(): void {
    if (this.uploadTimer || this.uploadInFlight || this.finishing || this.uploadsDisabled) {
      return;
    }
    const backoff = this.consecutiveFailures === 0 ? 0 : Math.min(2 ** this.consecutiveFailures * 1_000, MAX_UPLOAD_DELAY_MS);
    const delay = Math.max(uploadDelayMs(this.acceptedBytes), backoff);
    this.uploadTimer = setTimeout(() => {
      this.uploadTimer = null;
      this.uploadInFlight = this.periodicUpload().finally(() => {
        this.uploadInFlight = null;
        if (this.acceptedBytes !== this.uploadedBytes) {
          this.scheduleUpload();
        }
      });
    }, delay);
    // The final upload in finish() covers any output left, so a pending timer must not keep the process alive.
    this.uploadTimer.unref();
  }

  private async periodicUpload(): Promise<void> {
    if (this.finishing) {
      return;
    }
    try {
      // Only bytes that have reached the file can be read back, so the upload covers that prefix.
      await this.put(this.stream.bytesWritten);
      if (this.consecutiveFailures > 0) {
        this.options.logger.info(
          { log: this.options.name, failures: this.consecutiveFailures },
          'log upload succeeded after failures',
        );
        this.consecutiveFailures = 0;
      }
    } catch (error) {
      this.noteFailure(error);
    }
  }

  private noteFailure(error: unknown): void {
    this.consecutiveFailures += 1;
    if (!this.shouldRetry(error)) {
      this.uploadsDisabled = true;
      this.options.logger.warn({ log: this.options.name, err: errorMessage(error) }, 'log uploads stopped');
      return;
    }
    if (error instanceof UploadRejectedError && error.status === 403) {
      // S3 returns 403 for an expired signature, which a fresh URL fixes.
      this.target = null;
    }
    // The first failure and every tenth after it are logged, so a long outage does not flood stderr.
    if (this.consecutiveFailures === 1 || this.consecutiveFailures % 10 === 0) {
      this.options.logger.warn(
        { log: this.options.name, failures: this.consecutiveFailures, err: errorMessage(error) },
        'log upload failed, retrying',
      );
    }
  }

  /** Uploads the first `length` bytes of the file, replacing the object. */
  private async put(length: number): Promise<void> {
    const target = await this.uploadTarget();
    await putFile(target.url, target.headers, this.options.file, length);
    this.uploadedBytes = length;
  }

  /** Returns the cached presigned URL, or requests a new one when it expires soon. */
  private async uploadTarget(): Promise<LogUrlResponse> {
    if (this.prefetch) {
      const prefetch = this.prefetch;
      this.prefetch = null;
      await prefetch;
    }
    const now = Date.now();
    if (this.target && now < this.target.refreshAt) {
      return this.target.response;
    }
    const response = await this.options.requestUploadUrl();
    const expiresAt = Date.parse(response.expiresAt);
    const lifetime = Number.isNaN(expiresAt) ? 0 : expiresAt - now;
    // Renew a minute before expiry, or after three quarters of a shorter lifetime.
    const margin = Math.min(60_000, lifetime / 4);
    this.target = { response, refreshAt: now + lifetime - margin };
    return response;
  }
}

/**
 * Sends the first `length` bytes of a file with PUT, streaming it from disk
 * with a Content-Length header, which S3 requires. Errors name the URL
 * without its query, because the query contains the signature.
 */
export function putFile(url: string, headers: Record<string, string>, file: string, length: number): Promise<void> {
  return putStream(url, headers, length, () => createReadStream(file, { start: 0, end: length - 1 }));
}

/**
 * Sends `length` bytes from the stream that `openBody` returns with PUT and a
 * Content-Length header. `openBody` is not called when `length` is 0. A
 * stream that ends early or sends more fails the request with
 * {@link BodyLengthError}. Aborting `signal` destroys the request. A
 * response other than 2xx raises {@link UploadRejectedError} with its status.
 */
export function putStream(
  url: string,
  headers: Record<string, string>,
  length: number,
  openBody: () => Readable,
  signal?: AbortSignal,
): Promise<void> {
  const target = new URL(url);
  const shownUrl = `${target.origin}${target.pathname}`;
  const transport = target.protocol === 'https:' ? https : http;

  return new Promise<void>((resolve, reject) => {
    const request = transport.request(
      target,
      { method: 'PUT', headers: { ...headers, 'content-length': String(length) }, timeout: PUT_IDLE_TIMEOUT_MS },
      (response) => {
        let body = '';
        response.setEncoding('utf8');
        response.on('data', (text: string) => {
          if (body.length < 2_000) {
            body += text;
          }
        });
        response.on('error', reject);
        response.on('end', () => {
          const status = response.statusCode ?? 0;
          if (status >= 200 && status < 300) {
            resolve();
            return;
          }
          const code = /<Code>([^<]*)<\/Code>/.exec(body)?.[1] ?? 'no error code';
          reject(new UploadRejectedError(`PUT ${shownUrl} failed with HTTP ${status} (${code})`, status));
        });
      },
    );
    request.on('timeout', () => request.destroy(new Error(`PUT ${shownUrl} timed out`)));
    request.on('error', (error) => reject(new Error(`PUT ${shownUrl} failed: ${error.message}`)));
    if (signal !== undefined) {
      const onAbort = (): void => {
        request.destroy(new Error('the job was stopped'));
      };
      signal.addEventListener('abort', onAbort, { once: true });
      request.once('close', () => signal.removeEventListener('abort', onAbort));
      if (signal.aborted) {
        onAbort();
        return;
      }
    }

    if (length === 0) {
      request.end();
      return;
    }
    pipeline(openBody(), exactLength(length), request).catch((error: Error) => {
      const message = `PUT ${shownUrl} failed while sending the file: ${error.message}`;
      reject(error instanceof BodyLengthError ? new BodyLengthError(message) : new Error(message));
    });
  });
}

/**
 * Returns a pass-through stream that fails when the data is longer or
 * shorter than `length` bytes, before a wrong byte count reaches the request
 * that announced `length` in its Content-Length header.
 */
function exactLength(length: number): Transform {
  let seen = 0;
  return new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      seen += chunk.length;
      callback(seen > length ? new BodyLengthError(`the data is longer than the ${length} bytes announced`) : null, chunk);
    },
    flush(callback) {
      callback(seen < length ? new BodyLengthError(`the data ended after ${seen} of the ${length} bytes announced`) : null);
    },
  });
}

/** A PUT body of another length than its Content-Length, which no retry of the same data can fix. */
export class BodyLengthError extends Error {
  override name = 'BodyLengthError';
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * Turns a byte stream into valid UTF-8, replacing each invalid sequence with
 * U+FFFD exactly as a streaming `TextDecoder` would, including sequences that
 * are split across chunks. Valid chunks pass through without a copy, so the
 * common case costs one `isUtf8` scan.
 */
export class Utf8Sanitizer {
  /** The start of a valid but unfinished sequence at the end of the last chunk, at most 3 bytes. */
  private pending: Buffer = Buffer.alloc(0);

  /** Returns the valid UTF-8 for a chunk, holding back an unfinished sequence at its end. */
  push(chunk: Uint8Array): Buffer {
    const bytes = toBuffer(chunk);
    const input = this.pending.length === 0 ? bytes : Buffer.concat([this.pending, bytes]);
    const split = unfinishedTailStart(input);
    const body = split === input.length ? input : input.subarray(0, split);
    this.pending = split === input.length ? Buffer.alloc(0) : Buffer.from(input.subarray(split));
    return sanitizeComplete(body);
  }

  /** Returns U+FFFD for an unfinished sequence left at the end of the stream, or nothing, and resets the state. */
  end(): Buffer {
    if (this.pending.length === 0) {
      return Buffer.alloc(0);
    }
    const rest = sanitizeComplete(this.pending);
    this.pending = Buffer.alloc(0);
    return rest;
  }
}

function toBuffer(chunk: Uint8Array): Buffer {
  return Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
}

const fallbackDecoder = new TextDecoder('utf-8', { fatal: false });

/** Returns bytes that end at a sequence boundary as valid UTF-8; a non-streaming decode flushes a cut sequence as U+FFFD. */
function sanitizeComplete(bytes: Buffer): Buffer {
  if (isUtf8(bytes)) {
    return bytes;
  }
  return Buffer.from(fallbackDecoder.decode(bytes), 'utf8');
}

/**
 * Returns where a valid but unfinished UTF-8 sequence starts in the last 3
 * bytes, or `bytes.length` when there is none. A sequence that is already
 * invalid is not held back, because the decoder replaces it the same way
 * whatever follows.
 */
export function unfinishedTailStart(bytes: Uint8Array): number {
  const length = bytes.length;
  for (let index = length - 1; index >= 0 && index >= length - 3; index -= 1) {
    const byte = bytes[index];
    if ((byte & 0xc0) === 0x80) {
      continue;
    }
    const needed = sequenceLength(byte);
    if (needed <= length - index) {
      return length;
    }
    if (length - index >= 2 && !validSecondByte(byte, bytes[index + 1])) {
      return length;
    }
    return index;
  }
  return length;
}

/** Returns the length of the sequence that a lead byte starts; 0 means the byte can never start a multi-byte sequence. */
function sequenceLength(lead: number): number {
  if (lead >= 0xc2 && lead <= 0xdf) {
    return 2;
  }
  if (lead >= 0xe0 && lead <= 0xef) {
    return 3;
  }
  if (lead >= 0xf0 && lead <= 0xf4) {
    return 4;
  }
  return 0;
}

/** Checks the second byte against the narrower ranges after E0, ED, F0 and F4 (no overlongs, surrogates or code points past U+10FFFF). */
function validSecondByte(lead: number, second: number): boolean {
  switch (lead) {
    case 0xe0:
      return second >= 0xa0 && second <= 0xbf;
    case 0xed:
      return second >= 0x80 && second <= 0x9f;
    case 0xf0:
      return second >= 0x90 && second <= 0xbf;
    case 0xf4:
      return second >= 0x80 && second <= 0x8f;
    default:
      return second >= 0x80 && second <= 0xbf;
  }
}

/**
 * Returns the largest length of at most `limit` that does not split a UTF-8
 * sequence, for valid UTF-8 input.
 */
export function characterBoundary(bytes: Uint8Array, limit: number): number {
  if (limit >= bytes.length) {
    return bytes.length;
  }
  let cut = Math.max(0, limit);
  while (cut > 0 && (bytes[cut] & 0xc0) === 0x80) {
    cut -= 1;
  }
  return cut;
}
