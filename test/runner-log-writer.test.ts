import { isUtf8 } from 'node:buffer';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { LogWriter, Utf8Sanitizer, characterBoundary, uploadDelayMs } from '../lib/runner/log-writer.js';
import type { LogUrlResponse } from '../lib/runner/protocol.js';

const silent = pino({ level: 'silent' });

/** Decodes the whole stream at once with the WHATWG decoder and returns the result as UTF-8. */
function reference(bytes: Uint8Array): Buffer {
  return Buffer.from(new TextDecoder('utf-8').decode(bytes), 'utf8');
}

function sanitizeInChunks(bytes: Buffer, cuts: number[]): Buffer {
  const sanitizer = new Utf8Sanitizer();
  const parts: Buffer[] = [];
  let start = 0;
  for (const cut of [...cuts, bytes.length]) {
    parts.push(Buffer.from(sanitizer.push(bytes.subarray(start, cut))));
    start = cut;
  }
  parts.push(sanitizer.end());
  return Buffer.concat(parts);
}

describe('Utf8Sanitizer', () => {
  const samples: Array<[string, Buffer]> = [
    ['valid text', Buffer.from('plain é ✓ 🚀 end', 'utf8')],
    ['lone bytes', Buffer.from([0x61, 0xff, 0xfe, 0x62, 0x80, 0x63])],
    ['cut sequences', Buffer.from([0xe2, 0x82, 0x41, 0xf0, 0x9f, 0x9a, 0x42, 0xc3])],
    ['overlong and surrogate', Buffer.from([0xc0, 0xaf, 0xe0, 0x80, 0xaf, 0xed, 0xa0, 0x80, 0xf4, 0x90, 0x80, 0x80])],
    ['unfinished at the end', Buffer.from([0x41, 0xf0, 0x9f, 0x9a])],
  ];

  for (const [label, bytes] of samples) {
    it(`matches TextDecoder at every split of ${label}`, () => {
      const expected = reference(bytes);
      for (let first = 0; first <= bytes.length; first += 1) {
        for (let second = first; second <= bytes.length; second += 1) {
          expect(sanitizeInChunks(bytes, [first, second]).equals(expected), `cuts ${first}, ${second}`).toBe(true);
        }
      }
    });
  }

  it('matches TextDecoder on random bytes in random chunks', () => {
    // Bytes drawn mostly from UTF-8 lead and continuation ranges make split sequences common.
    const alphabet = [0x41, 0x0a, 0x80, 0x9f, 0xa0, 0xbf, 0xc2, 0xc3, 0xdf, 0xe0, 0xe2, 0xed, 0xef, 0xf0, 0xf4, 0xf5, 0xff];
    let seed = 12345;
    const random = (limit: number): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % limit;
    };
    for (let round = 0; round < 500; round += 1) {
      const bytes = Buffer.from(Array.from({ length: 1 + random(40) }, () => alphabet[random(alphabet.length)]));
      const cuts = Array.from({ length: random(5) }, () => random(bytes.length + 1)).sort((a, b) => a - b);
      const output = sanitizeInChunks(bytes, cuts);
      expect(output.equals(reference(bytes)), `bytes ${bytes.toString('hex')} cuts ${cuts.join(',')}`).toBe(true);
      expect(isUtf8(output)).toBe(true);
    }
  });

  it('passes valid chunks through without a copy', () => {
    const chunk = Buffer.from('abc');
    expect(new Utf8Sanitizer().push(chunk)).toBe(chunk);
  });
});

describe('characterBoundary', () => {
  it('never splits a character', () => {
    const bytes = Buffer.from('a🚀b', 'utf8');
    expect([0, 1, 2, 3, 4, 5, 6].map((limit) => characterBoundary(bytes, limit))).toEqual([0, 1, 1, 1, 1, 5, 6]);
  });
});

describe('uploadDelayMs', () => {
  it('grows with the size between its bounds', () => {
    expect(uploadDelayMs(0)).toBe(2_000);
    expect(uploadDelayMs(10 * 1024 * 1024)).toBe(10_000);
    expect(uploadDelayMs(1024 * 1024 * 1024)).toBe(30_000);
  });
});

interface ReceivedPut {
  path: string;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

describe('LogWriter', () => {
  let server: http.Server;
  let baseUrl: string;
  let folder: string;
  let puts: ReceivedPut[];
  /** Status codes for the next PUTs; 200 once the list is empty. */
  let plannedStatuses: number[];

  beforeAll(async () => {
    server = http.createServer((request, response) => {
      const chunks: Buffer[] = [];
      request.on('data', (chunk: Buffer) => chunks.push(chunk));
      request.on('end', () => {
        const status = plannedStatuses.shift() ?? 200;
        if (status === 200) {
          puts.push({ path: request.url ?? '', headers: request.headers, body: Buffer.concat(chunks) });
        }
        response.writeHead(status).end(status === 200 ? '' : '<Error><Code>InternalError</Code></Error>');
      });
    });
    server.listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    folder = await mkdtemp(path.join(os.tmpdir(), 'kiln-log-writer-'));
  });

  afterAll(async () => {
    await new Promise((resolve) => server.close(resolve));
    await rm(folder, { recursive: true, force: true });
  });

  beforeEach(() => {
    puts = [];
    plannedStatuses = [];
  });

  function urlProvider(lifetimeMs = 15 * 60_000): { requests: number; provide: () => Promise<LogUrlResponse> } {
    const state = {
      requests: 0,
      provide: async (): Promise<LogUrlResponse> => {
        state.requests += 1;
        return {
          url: `${baseUrl}/log?X-Amz-Signature=secret${state.requests}`,
          headers: { 'content-type': 'text/plain; charset=utf-8' },
          expiresAt: new Date(Date.now() + lifetimeMs).toISOString(),
        };
      },
    };
    return state;
  }

  async function openWriter(name: string, maxBytes: number, provider = urlProvider()): Promise<LogWriter> {
    return LogWriter.open({
      name,
      file: path.join(folder, `${name}.log`),
      maxBytes,
      requestUploadUrl: provider.provide,
      logger: silent,
      finalRetryWindowMs: 10_000,
    });
  }

  it('uploads the whole file with the signed headers', async () => {
    const writer = await openWriter('whole', 1_000_000);
    writer.write(Buffer.from('first\n'));
    writer.writeLine('second');
    await writer.finish();

    const last = puts.at(-1)!;
    expect(last.body.toString('utf8')).toBe('first\nsecond\n');
    expect(last.headers['content-type']).toBe('text/plain; charset=utf-8');
    expect(last.headers['content-length']).toBe('13');
    expect(last.path).toBe('/log?X-Amz-Signature=secret1');
    expect(await readFile(path.join(folder, 'whole.log'), 'utf8')).toBe('first\nsecond\n');
  });

  it('uploads new output before finish', async () => {
    const writer = await openWriter('periodic', 1_000_000);
    writer.write(Buffer.from('early output\n'));
    while (puts.length === 0) {
      await sleep(100);
    }
    expect(puts[0].body.toString('utf8')).toBe('early output\n');
    await writer.finish();
  });

  it('reuses the URL until it nears expiry', async () => {
    const lasting = urlProvider();
    const writer = await openWriter('reuse', 1_000_000, lasting);
    writer.write(Buffer.from('a\n'));
    while (puts.length === 0) {
      await sleep(100);
    }
    await writer.finish();
    expect(puts.length).toBe(2);
    expect(lasting.requests).toBe(1);

    const expiring = urlProvider(0);
    const shortLived = await openWriter('expiring', 1_000_000, expiring);
    shortLived.write(Buffer.from('b\n'));
    while (puts.length === 2) {
      await sleep(100);
    }
    await shortLived.finish();
    // One request when the writer opens, then one for each of the two uploads.
    expect(expiring.requests).toBe(3);
  });

  it('cuts the log at the cap on a character boundary', async () => {
    const writer = await openWriter('capped', 10);
    expect(writer.write(Buffer.from('123456789🚀 more', 'utf8'))).toBe(true);
    writer.write(Buffer.from('discarded\n'));
    writer.writeLine('discarded too');
    await writer.finish();

    const text = puts.at(-1)!.body.toString('utf8');
    expect(text).toBe('123456789\n[kiln] This log was cut at 10 bytes (KILN_LOG_MAX_BYTES); the rest of the output was discarded.\n');
    expect(writer.isCut).toBe(true);
  });

  it('replaces invalid UTF-8 across writes', async () => {
    const writer = await openWriter('invalid', 1_000_000);
    writer.write(Buffer.from([0x61, 0xf0, 0x9f]));
    writer.write(Buffer.from([0x9a, 0x80, 0xff, 0xe2]));
    writer.writeLine('');
    await writer.finish();
    expect(puts.at(-1)!.body.toString('utf8')).toBe('a🚀\uFFFD\uFFFD\n');
  });

  it('retries a failed final upload', async () => {
    const writer = await openWriter('retried', 1_000_000);
    writer.writeLine('kept');
    plannedStatuses = [500, 500];
    await writer.finish();
    expect(puts.at(-1)!.body.toString('utf8')).toBe('kept\n');
  });

  it('stops uploading when shouldRetry rejects the error', async () => {
    let requests = 0;
    const writer = await LogWriter.open({
      name: 'ended',
      file: path.join(folder, 'ended.log'),
      maxBytes: 1_000,
      requestUploadUrl: async () => {
        requests += 1;
        throw new Error('job ended');
      },
      shouldRetry: () => false,
      logger: silent,
    });
    writer.writeLine('lost');
    await writer.finish();
    // The request when the writer opens fails quietly, and the final upload's request is the last one.
    expect(requests).toBe(2);
    expect(puts).toEqual([]);
  });
});
