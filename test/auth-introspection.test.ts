import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { JobView } from '../lib/api/job-view.js';
import { startTestStack, type TestStack, recordServerErrors, type ErrorBody } from './support/local-stack.js';

const MANIFEST = `image: alpine/latest
tasks:
  - hello: echo hello
`;

/** One request that the introspection server received. */
interface IntrospectionCall {
  method: string;
  contentType: string | undefined;
  token: string | null;
}

/**
 * How the introspection server responds. `json` sends the body stored in
 * `bodies` for the token, or {"active": false} for other tokens. `error`
 * responds 500, `garbage` sends a body that is not JSON, `hangup` closes the
 * connection without a response and `silent` never responds.
 */
type Mode = 'json' | 'error' | 'garbage' | 'hangup' | 'silent';

/** An RFC 7662 token introspection endpoint on 127.0.0.1 that counts its calls. */
class IntrospectionServer {
  readonly calls: IntrospectionCall[] = [];
  readonly bodies = new Map<string, unknown>();
  mode: Mode = 'json';
  private readonly server: Server;
  private readonly silentResponses = new Set<ServerResponse>();

  constructor() {
    this.server = createServer((request, response) => void this.handle(request, response));
  }

  async listen(): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));

    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/oauth2/introspect`;
  }

  callsFor(token: string): number {
    return this.calls.filter((call) => call.token === token).length;
  }

  async close(): Promise<void> {
    for (const response of this.silentResponses) response.destroy();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private async handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    let text = '';
    for await (const chunk of request) text += String(chunk);
    const token = new URLSearchParams(text).get('token');
    this.calls.push({ method: request.method ?? '', contentType: request.headers['content-type'], token });

    switch (this.mode) {
      case 'error':
        response.writeHead(500, { 'content-type': 'text/plain' }).end('internal error');
        return;
      case 'garbage':
        response.writeHead(200, { 'content-type': 'application/json' }).end('<html>not json</html>');
        return;
      case 'hangup':
        request.socket.destroy();
        return;
      case 'silent':
        this.silentResponses.add(response);
        return;
      case 'json': {
        const body = token !== null && this.bodies.has(token) ? this.bodies.get(token) : { active: false };
        response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));
      }
    }
  }
}

describe('OAuth token introspection', () => {
  let introspection: IntrospectionServer;
  let stack: TestStack;
  let serverErrors: string[];
  let tokenCount = 0;

  /** Creates a bearer token and stores the introspection response body for it. */
  function oauthToken(body: unknown): string {
    tokenCount += 1;
    const token = `oauth-${tokenCount}-${Math.random().toString(36).slice(2)}`;
    introspection.bodies.set(token, body);

    return token;
  }

  function bearer(token: string): { token: null; headers: Record<string, string> } {
    return { token: null, headers: { authorization: `Bearer ${token}` } };
  }

  async function reasonOf(response: Response): Promise<string> {
    const body = (await response.json()) as ErrorBody;
    expect(body.errors).toHaveLength(1);

    return body.errors[0].reason;
  }

  const inAnHour = () => Math.floor(Date.now() / 1000) + 3600;

  beforeAll(async () => {
    introspection = new IntrospectionServer();
    const url = await introspection.listen();
    stack = await startTestStack({ KILN_OAUTH_INTROSPECTION_URL: url });
    serverErrors = recordServerErrors(stack);
  });
  beforeEach(() => {
    introspection.mode = 'json';
  });
  afterEach(() => {
    expect(serverErrors.splice(0)).toEqual([]);
  });
  afterAll(async () => {
    await stack?.destroy();
    await introspection?.close();
  });

  describe('active tokens', () => {
    it('submits and reads jobs as the introspected user', async () => {
      const token = oauthToken({ active: true, scope: 'jobs:read jobs:write', username: 'oauth_user', exp: inAnHour() });

      const submit = await stack.api('POST', '/api/jobs', { ...bearer(token), body: { manifest: MANIFEST, execute: false } });
      const job = (await submit.json()) as JobView;

      expect(submit.status).toBe(200);
      expect(job.owner).toEqual({ canonical_name: '~oauth_user', name: 'oauth_user' });
      const read = await stack.api('GET', `/api/jobs/${job.id}`, bearer(token));
      expect(read.status).toBe(200);
      const list = await stack.api('GET', '/api/jobs', bearer(token));
      expect(((await list.json()) as { results: JobView[] }).results.map((result) => result.id)).toEqual([job.id]);
    });

    it('sends an RFC 7662 request: a form-encoded POST with the token', async () => {
      const token = oauthToken({ active: true, scope: 'jobs:read', username: 'format_user' });
      expect((await stack.api('GET', '/api/jobs', bearer(token))).status).toBe(200);

      const call = introspection.calls.find((candidate) => candidate.token === token);
      expect(call?.method).toBe('POST');
      expect(call?.contentType).toMatch(/^application\/x-www-form-urlencoded/);
    });

    it.each([
      ['builds.sr.ht/JOBS:RW', 200, 200],
      ['JOBS:RW', 200, 200],
      ['builds.sr.ht/JOBS:RO', 200, 403],
      ['jobs:read', 200, 403],
      ['jobs:write', 403, 200],
      ['meta.sr.ht/PROFILE:RO', 403, 403],
      ['', 403, 403],
    ])('maps the scope %j to reading %i and submitting %i', async (scope, readStatus, writeStatus) => {
      const token = oauthToken({ active: true, scope, username: 'scoped_user', exp: inAnHour() });

      const read = await stack.api('GET', '/api/jobs', bearer(token));
      const write = await stack.api('POST', '/api/jobs', { ...bearer(token), body: { manifest: MANIFEST, execute: false } });

      expect(read.status).toBe(readStatus);
      expect(write.status).toBe(writeStatus);
      if (readStatus === 403) expect(await reasonOf(read)).toContain('jobs:read');
      if (writeStatus === 403) expect(await reasonOf(write)).toContain('jobs:write');
    });

    it('treats a token without a scope as having none', async () => {
      const token = oauthToken({ active: true, username: 'no_scope' });
      const response = await stack.api('GET', '/api/jobs', bearer(token));

      expect(response.status).toBe(403);
      expect(await reasonOf(response)).toContain('jobs:read');
    });

    it('drops a leading ~ from the username', async () => {
      const token = oauthToken({ active: true, scope: 'builds.sr.ht/JOBS:RW', username: '~tilde_user' });
      const response = await stack.api('POST', '/api/jobs', { ...bearer(token), body: { manifest: MANIFEST, execute: false } });

      expect(response.status).toBe(200);
      expect(((await response.json()) as JobView).owner).toEqual({ canonical_name: '~tilde_user', name: 'tilde_user' });
    });
  });

  describe('rejected tokens', () => {
    it.each([
      ['inactive', { active: false }, /not active/],
      ['active as a string', { active: 'true', scope: 'jobs:read', username: 'someone' }, /not active/],
      ['expired', { active: true, scope: 'jobs:read', username: 'someone', exp: Math.floor(Date.now() / 1000) - 60 }, /expired/],
      ['without a username', { active: true, scope: 'jobs:read' }, /username/],
      ['with an empty username', { active: true, scope: 'jobs:read', username: '' }, /username/],
      ['with a null body', null, /introspection/],
      ['with a list body', [], /introspection/],
      ['with a string body', 'active', /introspection/],
    ])('answers 401 for a token %s', async (_case, body, reason) => {
      const token = oauthToken(body);
      const response = await stack.api('GET', '/api/jobs', bearer(token));

      expect(response.status).toBe(401);
      expect(await reasonOf(response)).toMatch(reason);
    });

    it.each([
      ['responds 500', 'error'],
      ['sends a body that is not JSON', 'garbage'],
      ['closes the connection', 'hangup'],
    ] as Array<[string, Mode]>)('answers 401 with a reason when the endpoint %s', async (_case, mode) => {
      const token = oauthToken({ active: true, scope: 'jobs:read', username: 'unlucky' });
      introspection.mode = mode;

      const response = await stack.api('GET', '/api/jobs', bearer(token));

      expect(response.status).toBe(401);
      expect(await reasonOf(response)).toMatch(/introspection/);
    });

    it('answers 401 when the endpoint times out', async () => {
      const token = oauthToken({ active: true, scope: 'jobs:read', username: 'patient' });
      introspection.mode = 'silent';

      const response = await stack.api('GET', '/api/jobs', bearer(token));

      expect(response.status).toBe(401);
      expect(await reasonOf(response)).toMatch(/introspection/);
    });

    it('asks again after a failed introspection', async () => {
      const token = oauthToken({ active: true, scope: 'jobs:read', username: 'retry_user' });
      introspection.mode = 'error';
      expect((await stack.api('GET', '/api/jobs', bearer(token))).status).toBe(401);

      introspection.mode = 'json';
      const response = await stack.api('GET', '/api/jobs', bearer(token));

      expect(response.status).toBe(200);
      expect(introspection.callsFor(token)).toBe(2);
    });
  });

  describe('cache', () => {
    it('introspects a token once for two quick requests', async () => {
      const token = oauthToken({ active: true, scope: 'jobs:read', username: 'cached_user', exp: inAnHour() });

      expect((await stack.api('GET', '/api/jobs', bearer(token))).status).toBe(200);
      expect((await stack.api('GET', '/api/jobs', bearer(token))).status).toBe(200);

      expect(introspection.callsFor(token)).toBe(1);
    });

    it('introspects a token once for a burst of concurrent requests', async () => {
      const token = oauthToken({ active: true, scope: 'jobs:read', username: 'burst_user', exp: inAnHour() });

      const responses = await Promise.all(Array.from({ length: 5 }, () => stack.api('GET', '/api/jobs', bearer(token))));

      expect(responses.map((response) => response.status)).toEqual([200, 200, 200, 200, 200]);
      expect(introspection.callsFor(token)).toBe(1);
    });

    it('caches an inactive result too', async () => {
      const token = oauthToken({ active: false });

      expect((await stack.api('GET', '/api/jobs', bearer(token))).status).toBe(401);
      expect((await stack.api('GET', '/api/jobs', bearer(token))).status).toBe(401);

      expect(introspection.callsFor(token)).toBe(1);
    });

    it('introspects each token separately', async () => {
      const first = oauthToken({ active: true, scope: 'jobs:read', username: 'first_user' });
      const second = oauthToken({ active: true, scope: 'jobs:read', username: 'second_user' });

      expect((await stack.api('GET', '/api/jobs', bearer(first))).status).toBe(200);
      expect((await stack.api('GET', '/api/jobs', bearer(second))).status).toBe(200);

      expect(introspection.callsFor(first)).toBe(1);
      expect(introspection.callsFor(second)).toBe(1);
    });

    it('stops accepting a cached token once its exp has passed', async () => {
      const exp = Math.floor(Date.now() / 1000) + 2;
      const token = oauthToken({ active: true, scope: 'jobs:read', username: 'short_lived', exp });
      expect((await stack.api('GET', '/api/jobs', bearer(token))).status).toBe(200);

      await new Promise((resolve) => setTimeout(resolve, exp * 1000 - Date.now() + 100));
      const response = await stack.api('GET', '/api/jobs', bearer(token));

      expect(response.status).toBe(401);
      expect(await reasonOf(response)).toMatch(/expired/);
    });
  });

  describe('tokens from the table', () => {
    it('checks "Authorization: token X" in the table, not by introspection', async () => {
      const before = introspection.calls.length;
      const response = await stack.api('GET', '/api/jobs', { token: stack.token });

      expect(response.status).toBe(200);
      expect(introspection.calls.length).toBe(before);
    });

    it('rejects an OAuth token sent with the token scheme as unknown', async () => {
      const token = oauthToken({ active: true, scope: 'jobs:read', username: 'wrong_scheme' });
      const response = await stack.api('GET', '/api/jobs', { token });

      expect(response.status).toBe(401);
      expect(await reasonOf(response)).toMatch(/Unknown token/);
      expect(introspection.callsFor(token)).toBe(0);
    });

    it('introspects a table token sent as a bearer token', async () => {
      const response = await stack.api('GET', '/api/jobs', bearer(stack.token));

      expect(response.status).toBe(401);
      expect(introspection.callsFor(stack.token)).toBe(1);
    });
  });

  // Runs last, because it stops the introspection server.
  describe('endpoint down', () => {
    it('answers 401 with a reason when nothing listens at the endpoint', async () => {
      const token = oauthToken({ active: true, scope: 'jobs:read', username: 'stranded' });
      await introspection.close();

      const response = await stack.api('GET', '/api/jobs', bearer(token));

      expect(response.status).toBe(401);
      expect(await reasonOf(response)).toMatch(/introspection/);
      const tableToken = await stack.api('GET', '/api/jobs', { token: stack.token });
      expect(tableToken.status).toBe(200);
    });
  });
});
