import { createPublicKey, verify, type KeyObject } from 'node:crypto';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

/** One request that the receiver got. */
export interface ReceivedWebhook {
  path: string;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

/** An HTTP server on 127.0.0.1 that records every request and responds with the status codes planned per path. */
export interface WebhookReceiver {
  /** Base URL such as `http://127.0.0.1:40123`. */
  url: string;
  port: number;
  received: ReceivedWebhook[];
  /** Requests to `path` so far. */
  at(path: string): ReceivedWebhook[];
  /** Plans the status codes of the next requests to `path`, in order. Later requests get 200. */
  respond(path: string, statuses: number[]): void;
  /** Polls until `path` got `count` requests; fails after `timeoutMs`. */
  waitFor(path: string, count?: number, timeoutMs?: number): Promise<ReceivedWebhook[]>;
  close(): Promise<void>;
}

export async function startWebhookReceiver(): Promise<WebhookReceiver> {
  const received: ReceivedWebhook[] = [];
  const planned = new Map<string, number[]>();
  const server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const path = request.url ?? '/';
      received.push({ path, headers: request.headers, body: Buffer.concat(chunks) });
      const status = planned.get(path)?.shift() ?? 200;
      response.writeHead(status, { 'content-type': 'text/plain' }).end(`status ${status}\n`);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const at = (path: string) => received.filter((request) => request.path === path);

  return {
    url: `http://127.0.0.1:${port}`,
    port,
    received,
    at,
    respond: (path, statuses) => planned.set(path, [...statuses]),
    waitFor: async (path, count = 1, timeoutMs = 30_000) => {
      const giveUpAt = Date.now() + timeoutMs;
      while (at(path).length < count) {
        if (Date.now() > giveUpAt) throw new Error(`${path} got ${at(path).length} requests, expected ${count}`);
        await sleep(50);
      }
      return at(path);
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** Reads the key that `GET /api/webhooks/public-key` serves: base64 of the raw 32-byte Ed25519 public key. */
export function publicKeyFromBase64(text: string): KeyObject {
  const raw = Buffer.from(text, 'base64');
  if (raw.length !== 32) throw new Error(`public key has ${raw.length} bytes, expected 32`);

  return createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: raw.toString('base64url') }, format: 'jwk' });
}

/** Checks a request's `X-Payload-Signature`: Ed25519 over the body bytes followed by the `X-Payload-Nonce` bytes. */
export function hasValidSignature(request: ReceivedWebhook, publicKey: KeyObject): boolean {
  const nonce = request.headers['x-payload-nonce'];
  const signature = request.headers['x-payload-signature'];
  if (typeof nonce !== 'string' || typeof signature !== 'string') return false;

  return verify(null, Buffer.concat([request.body, Buffer.from(nonce)]), publicKey, Buffer.from(signature, 'base64'));
}
