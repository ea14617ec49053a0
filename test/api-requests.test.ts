import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { JobView } from '../lib/api/job-view.js';
import { createToken, type Scope } from '../lib/auth/tokens.js';
import type { JobStatus } from '../lib/jobs/state.js';
import { startTestStack, type TestStack, recordServerErrors, type ErrorBody } from './support/local-stack.js';

const MANIFEST = `image: alpine/latest
tasks:
  - build: echo build
  - test: echo test
`;

const FORM = { 'content-type': 'application/x-www-form-urlencoded' };
const MIB = 1024 * 1024;

function form(fields: Array<[string, string]>): string {
  return new URLSearchParams(fields).toString();
}

describe('API requests and responses', () => {
  let stack: TestStack;
  let serverErrors: string[];
  const tokens = new Map<string, string>();

  async function tokenFor(user: string, scopes: Scope[] = ['jobs:read', 'jobs:write']): Promise<string> {
    const key = `${user} ${scopes.join(',')}`;
    if (!tokens.has(key)) tokens.set(key, (await createToken(stack.context.stores.tokens, { user, scopes })).token);

    return tokens.get(key)!;
  }

  async function post(body: unknown, headers?: Record<string, string>): Promise<Response> {
    return stack.api('POST', '/api/jobs', { body, headers });
  }

  async function submitted(body: unknown, headers?: Record<string, string>): Promise<JobView> {
    const response = await post(body, headers);
    if (response.status !== 200) throw new Error(`submit: ${response.status} ${await response.text()}`);

    return (await response.json()) as JobView;
  }

  async function errorsOf(response: Response): Promise<ErrorBody['errors']> {
    return ((await response.json()) as ErrorBody).errors;
  }

  /** Sets a job's state directly in the store, as a finished build leaves it. */
  async function forceStatus(id: number, status: JobStatus): Promise<void> {
    await stack.context.stores.jobs.transition(id, (job) => ({ ...job, status, finishedAt: Date.now() }));
  }

  beforeAll(async () => {
    stack = await startTestStack();
    serverErrors = recordServerErrors(stack);
  });
  afterEach(() => {
    expect(serverErrors.splice(0)).toEqual([]);
  });
  afterAll(async () => {
    await stack?.destroy();
  });

  describe('JSON bodies', () => {
    it.each([
      ['application/json'],
      ['application/json; charset=utf-8'],
      ['application/json;charset=UTF-8'],
      ['Application/JSON; Charset=UTF-8'],
    ])('accepts content type %s', async (contentType) => {
      const response = await post(JSON.stringify({ manifest: MANIFEST, execute: false }), { 'content-type': contentType });

      expect(response.status).toBe(200);
      expect(((await response.json()) as JobView).status).toBe('pending');
    });

    it('accepts JSON sent without a content type', async () => {
      // fetch sends a string body as text/plain, so the body goes as bytes, which get no content type.
      const response = await fetch(`${stack.apiUrl}/api/jobs`, {
        method: 'POST',
        headers: { authorization: `token ${stack.token}` },
        body: new TextEncoder().encode(JSON.stringify({ manifest: MANIFEST, execute: false })),
      });

      expect(response.status).toBe(200);
    });

    it.each([
      ['a list', '[1, 2]'],
      ['a string', '"manifest"'],
      ['a number', '42'],
      ['null', 'null'],
      ['a boolean', 'true'],
      ['cut off', '{"manifest": "image'],
      ['single-quoted', "{'manifest': 'x'}"],
      ['followed by garbage', '{"manifest": "x"} trailing'],
    ])('rejects a JSON body that is %s with a 400 without a field', async (_case, body) => {
      const response = await post(body, { 'content-type': 'application/json' });
      const errors = await errorsOf(response);

      expect(response.status).toBe(400);
      expect(errors).toHaveLength(1);
      expect(errors[0]).not.toHaveProperty('field');
      expect(errors[0].reason).toMatch(/JSON/);
    });

    it('rejects an empty body as a request without a manifest', async () => {
      const response = await post('', { 'content-type': 'application/json' });
      const errors = await errorsOf(response);

      expect(response.status).toBe(400);
      expect(errors.map((error) => error.field)).toEqual(['manifest']);
    });
  });

  describe('form-encoded bodies', () => {
    it.each([
      ['false', 'pending'],
      ['true', 'queued'],
    ])('reads execute=%s as a boolean', async (execute, status) => {
      const response = await post(form([['manifest', MANIFEST], ['execute', execute]]), FORM);
      const job = (await response.json()) as JobView;

      expect(response.status).toBe(200);
      expect(job.status).toBe(status);
    });

    it('reads secrets=false and a note', async () => {
      const job = await submitted(form([['manifest', MANIFEST], ['execute', 'false'], ['secrets', 'false'], ['note', 'from a form']]), FORM);
      const record = await stack.context.stores.jobs.get(job.id);

      expect(job.note).toBe('from a form');
      expect(record.secretsEnabled).toBe(false);
    });

    it('accepts a charset parameter', async () => {
      const response = await post(form([['manifest', MANIFEST], ['execute', 'false']]), {
        'content-type': 'application/x-www-form-urlencoded; charset=UTF-8',
      });

      expect(response.status).toBe(200);
    });

    it.each(['yes', '1', 'True', 'on'])('rejects execute=%s with a 400 on execute', async (execute) => {
      const response = await post(form([['manifest', MANIFEST], ['execute', execute]]), FORM);
      const errors = await errorsOf(response);

      expect(response.status).toBe(400);
      expect(errors.map((error) => error.field)).toEqual(['execute']);
      expect(errors[0].reason).toContain(execute);
    });
  });

  describe('tags', () => {
    it.each([
      ['a JSON list', { tags: ['kiln', 'ci'] }, 'kiln/ci'],
      ['a JSON string', { tags: 'release' }, 'release'],
      ['an empty list', { tags: [] }, null],
      ['an empty string', { tags: '' }, null],
      ['null', { tags: null }, null],
      ['absent', {}, null],
      ['every allowed character', { tags: ['Az09_.:-'] }, 'Az09_.:-'],
    ])('accepts tags as %s', async (_case, fields, expected) => {
      const job = await submitted({ manifest: MANIFEST, execute: false, ...fields });

      expect(job.tags).toBe(expected);
    });

    it.each([
      ['repeated keys', [['tags', 'one'], ['tags', 'two']], 'one/two'],
      ['one key', [['tags', 'solo']], 'solo'],
    ] as Array<[string, Array<[string, string]>, string]>)('accepts form-encoded tags as %s', async (_case, tagFields, expected) => {
      const job = await submitted(form([['manifest', MANIFEST], ['execute', 'false'], ...tagFields]), FORM);

      expect(job.tags).toBe(expected);
    });

    it.each([
      ['has space'],
      ['a/b'],
      ['ünïcode'],
      [''],
      ['semi;colon'],
      ['tab\there'],
      ['new\nline'],
      ['plus+sign'],
    ])('rejects the tag %j with a 400 on tags naming it', async (tag) => {
      const response = await post({ manifest: MANIFEST, tags: ['good', tag] });
      const errors = await errorsOf(response);

      expect(response.status).toBe(400);
      expect(errors.map((error) => error.field)).toEqual(['tags']);
      expect(errors[0].reason).toContain(JSON.stringify(tag));
    });

    it('rejects a bad tag sent as one string', async () => {
      const response = await post({ manifest: MANIFEST, tags: 'two words' });
      const errors = await errorsOf(response);

      expect(response.status).toBe(400);
      expect(errors[0].field).toBe('tags');
      expect(errors[0].reason).toContain('"two words"');
    });

    it.each([
      ['a number', 5],
      ['a mapping', { a: 1 }],
      ['a list with a number', ['ok', 7]],
      ['a list with a list', [['nested']]],
    ])('rejects tags that are %s with a 400 on tags', async (_case, tags) => {
      const response = await post({ manifest: MANIFEST, tags });

      expect(response.status).toBe(400);
      expect((await errorsOf(response)).map((error) => error.field)).toEqual(['tags']);
    });
  });

  describe('access lists', () => {
    async function canRead(user: string, id: number): Promise<boolean> {
      const response = await stack.api('GET', `/api/jobs/${id}`, { token: await tokenFor(user) });
      expect([200, 404]).toContain(response.status);

      return response.status === 200;
    }

    it('makes access:read default to everyone with a token', async () => {
      const job = await submitted({ manifest: MANIFEST, execute: false });
      const record = await stack.context.stores.jobs.get(job.id);

      expect(record.accessRead).toEqual(['*']);
      expect(await canRead('passerby', job.id)).toBe(true);
    });

    it('keeps a job private with an empty access:read', async () => {
      const job = await submitted({ manifest: MANIFEST, execute: false, 'access:read': [] });

      expect(await canRead('passerby', job.id)).toBe(false);
      expect(await canRead('local', job.id)).toBe(true);
    });

    it.each([
      ['JSON names with ~', { 'access:read': ['~friend'] }],
      ['JSON names without ~', { 'access:read': ['friend'] }],
      ['one JSON string with ~', { 'access:read': '~friend' }],
    ])('reads access:read from %s', async (_case, fields) => {
      const job = await submitted({ manifest: MANIFEST, execute: false, ...fields });

      expect((await stack.context.stores.jobs.get(job.id)).accessRead).toEqual(['friend']);
      expect(await canRead('friend', job.id)).toBe(true);
      expect(await canRead('passerby', job.id)).toBe(false);
    });

    it('reads form-encoded access lists with ~', async () => {
      const body = form([
        ['manifest', MANIFEST],
        ['execute', 'false'],
        ['access:read', '~friend'],
        ['access:write', '~helper'],
      ]);
      const job = await submitted(body, FORM);
      const record = await stack.context.stores.jobs.get(job.id);

      expect(record.accessRead).toEqual(['friend']);
      expect(record.accessWrite).toEqual(['helper']);
      expect(await canRead('helper', job.id)).toBe(true);
      const start = await stack.api('POST', `/api/jobs/${job.id}/start`, { token: await tokenFor('helper') });
      expect(start.status).toBe(200);
    });

    it.each([
      ['access:read', ['Upper']],
      ['access:read', ['two words']],
      ['access:read', ['~']],
      ['access:read', [42]],
      ['access:write', ['~~double']],
      ['access:write', { name: 'x' }],
    ])('rejects %s %j with a 400 on that field', async (field, names) => {
      const response = await post({ manifest: MANIFEST, [field]: names });

      expect(response.status).toBe(400);
      expect((await errorsOf(response)).map((error) => error.field)).toEqual([field]);
    });
  });

  describe('body size', () => {
    it('rejects a JSON body over 1 MiB with 413', async () => {
      const response = await post({ manifest: 'x'.repeat(MIB + 1) });
      const errors = await errorsOf(response);

      expect(response.status).toBe(413);
      expect(errors).toHaveLength(1);
      expect(errors[0]).not.toHaveProperty('field');
    });

    it('rejects a form-encoded body over 1 MiB with 413', async () => {
      const response = await post(`manifest=${'x'.repeat(MIB)}`, FORM);

      expect(response.status).toBe(413);
    });

    it('rejects a chunked body over 1 MiB that declares no length', async () => {
      const chunk = new TextEncoder().encode('x'.repeat(64 * 1024));
      let sent = 0;
      const body = new ReadableStream<Uint8Array>({
        pull(controller) {
          if (sent > MIB + chunk.length) {
            controller.close();
            return;
          }
          sent += chunk.length;
          controller.enqueue(chunk);
        },
      });
      const response = await fetch(`${stack.apiUrl}/api/jobs`, {
        method: 'POST',
        headers: { authorization: `token ${stack.token}`, 'content-type': 'application/json' },
        body,
        duplex: 'half',
      } as RequestInit);

      expect(response.status).toBe(413);
    });

    it('reads a body of exactly 1 MiB', async () => {
      const empty = JSON.stringify({ manifest: MANIFEST, execute: false, note: '' });
      const body = JSON.stringify({ manifest: MANIFEST, execute: false, note: ' '.repeat(MIB - Buffer.byteLength(empty)) });
      expect(Buffer.byteLength(body)).toBe(MIB);

      const response = await post(body, { 'content-type': 'application/json' });

      // The note is over its limit, so the body was read and validated rather than cut off.
      expect(response.status).toBe(400);
      expect((await errorsOf(response)).map((error) => error.field)).toEqual(['note']);
    });

    it('serves the next request on a new connection after a 413', async () => {
      expect((await post({ manifest: 'x'.repeat(MIB + 1) })).status).toBe(413);

      expect((await post({ manifest: MANIFEST, execute: false })).status).toBe(200);
    });

    it.each([
      ['many tags', { tags: Array.from({ length: 150_000 }, () => 'ab') }],
      ['one long tag', { tags: ['a'.repeat(900_000)] }],
      ['many access names', { 'access:read': Array.from({ length: 100_000 }, (_, index) => `u${index}`) }],
      ['many triggers', { triggers: Array.from({ length: 10_000 }, () => ({ action: 'email', condition: 'always', to: 'ci@example.org' })) }],
    ])('rejects a job too large to store, with %s, with a 400', async (_case, fields) => {
      const response = await post({ manifest: MANIFEST, execute: false, ...fields });
      const errors = await errorsOf(response);

      expect(response.status).toBe(400);
      expect(errors).toHaveLength(1);
      expect(errors[0].reason).toMatch(/bytes to store/);
    });

    it('rejects a manifest whose aliases expand past the storable size', async () => {
      const long = 'x'.repeat(5000);
      const variables = Array.from({ length: 700 }, (_, index) => `  V${index}: *l`).join('\n');
      const manifest = `image: alpine/latest\nanchors: &l "${long}"\nenvironment:\n${variables}\ntasks:\n  - a: echo\n`;
      expect(manifest.length).toBeLessThan(16_384);

      const response = await post({ manifest, execute: false });

      expect(response.status).toBe(400);
      expect((await errorsOf(response))[0].reason).toMatch(/bytes to store/);
    });

    it('rejects a job group too large to store with a 400 on triggers', async () => {
      const job = await submitted({ manifest: MANIFEST, execute: false });
      const triggers = Array.from({ length: 10_000 }, () => ({ action: 'email', condition: 'always', to: 'ci@example.org' }));

      const response = await stack.api('POST', '/api/job-group', { body: { jobs: [job.id], triggers } });
      const errors = await errorsOf(response);

      expect(response.status).toBe(400);
      expect(errors[0].field).toBe('triggers');
      const group = await stack.api('POST', '/api/job-group', { body: { jobs: [job.id] } });
      expect(group.status).toBe(200);
    });
  });

  describe('responses', () => {
    it('answers POST /api/jobs with exactly 200 and the job', async () => {
      const response = await post({ manifest: MANIFEST, execute: false, tags: ['a', 'b'], note: 'n' });
      const job = (await response.json()) as JobView;

      expect(response.status).toBe(200);
      expect(response.headers.get('content-type')).toMatch(/^application\/json/);
      expect(Object.keys(job).sort()).toEqual(['id', 'note', 'owner', 'runner', 'setup_log', 'status', 'tags', 'tasks']);
      expect(job.tags).toBe('a/b');
      expect(job.note).toBe('n');
      expect(job.owner).toEqual({ canonical_name: '~local', name: 'local' });
      expect(job.status).toBe('pending');
      expect(job.tasks).toEqual([
        { name: 'build', status: 'pending', log: null },
        { name: 'test', status: 'pending', log: null },
      ]);
    });

    it('shows tags as null and the owner of another user', async () => {
      const response = await stack.api('POST', '/api/jobs', {
        token: await tokenFor('someone_else'),
        body: { manifest: MANIFEST, execute: false },
      });
      const job = (await response.json()) as JobView;

      expect(job.tags).toBeNull();
      expect(job.owner).toEqual({ canonical_name: '~someone_else', name: 'someone_else' });
    });

    it.each(['pending', 'queued', 'running', 'success', 'failed', 'timeout', 'cancelled'] as const)(
      'shows the %s status in lowercase',
      async (status) => {
        const job = await submitted({ manifest: MANIFEST, execute: false });
        await forceStatus(job.id, status);

        const view = (await (await stack.api('GET', `/api/jobs/${job.id}`)).json()) as JobView;

        expect(view.status).toBe(status);
      },
    );
  });

  describe('not found', () => {
    const jobRoutes: Array<[string, string]> = [
      ['GET', ''],
      ['GET', '/manifest'],
      ['GET', '/log'],
      ['GET', '/tasks/build/log'],
      ['GET', '/artifacts'],
      ['POST', '/start'],
      ['POST', '/cancel'],
    ];
    const ids = ['999999', 'abc', '1.5', '-1', '0', '01', '1e3', '0x1', '99999999999999999999'];
    const cases = jobRoutes.flatMap(([method, suffix]) => ids.map((id) => ({ method, route: `/api/jobs/${id}${suffix}` })));

    it.each(cases)('answers 404 to $method $route in the error shape', async ({ method, route }) => {
      const response = await stack.api(method, route);
      const body = (await response.json()) as ErrorBody;

      expect(response.status).toBe(404);
      expect(Object.keys(body)).toEqual(['errors']);
      expect(body.errors).toHaveLength(1);
      expect(Object.keys(body.errors[0])).toEqual(['reason']);
      expect(body.errors[0].reason).toMatch(/not found/);
    });

    it.each([
      ['GET', '/api/nothing'],
      ['GET', '/api'],
      ['GET', '/api/'],
      ['POST', '/api/nothing'],
      ['GET', '/api/jobs/1/nothing'],
    ])('answers 404 to %s %s in the error shape', async (method, route) => {
      const response = await stack.api(method, route);
      const body = (await response.json()) as ErrorBody;

      expect(response.status).toBe(404);
      expect(Object.keys(body)).toEqual(['errors']);
      expect(body.errors).toHaveLength(1);
      expect(body.errors[0]).not.toHaveProperty('field');
    });

    it.each([
      ['GET', '/api/job-group', 'POST'],
      ['DELETE', '/api/jobs', 'GET, POST'],
      ['PUT', '/api/jobs/1', 'GET'],
    ])('answers 405 to %s %s with the allowed methods', async (method, route, allow) => {
      const response = await stack.api(method, route);
      const body = (await response.json()) as ErrorBody;

      expect(response.status).toBe(405);
      expect(response.headers.get('allow')).toBe(allow);
      expect(body.errors).toHaveLength(1);
      expect(body.errors[0]).not.toHaveProperty('field');
    });

    it('answers 404 for a task the job does not have', async () => {
      const job = await submitted({ manifest: MANIFEST, execute: false });
      const response = await stack.api('GET', `/api/jobs/${job.id}/tasks/nothing/log`);

      expect(response.status).toBe(404);
      expect((await errorsOf(response))[0].reason).toContain('nothing');
    });
  });

  describe('starting a job that is not pending', () => {
    it.each([
      ['success', /^This job is already complete \(success\)/],
      ['failed', /^This job is already complete \(failed\)/],
      ['timeout', /^This job is already complete \(timeout\)/],
      ['cancelled', /^This job is already cancelled/],
      ['queued', /^This job is already queued/],
      ['running', /^This job is already running/],
    ] as Array<[JobStatus, RegExp]>)('names the %s state', async (status, reason) => {
      const job = await submitted({ manifest: MANIFEST, execute: false });
      await forceStatus(job.id, status);

      const response = await stack.api('POST', `/api/jobs/${job.id}/start`, { body: {} });
      const errors = await errorsOf(response);

      expect(response.status).toBe(400);
      expect(errors).toHaveLength(1);
      expect(errors[0].reason).toMatch(reason);
      expect(errors[0].reason).not.toMatch(/None/);
      expect(errors[0]).not.toHaveProperty('field');
    });

    it('names the cancelled state after a cancel through the API', async () => {
      const job = await submitted({ manifest: MANIFEST, execute: false });
      expect((await stack.api('POST', `/api/jobs/${job.id}/cancel`)).status).toBe(200);

      const response = await stack.api('POST', `/api/jobs/${job.id}/start`);
      const errors = await errorsOf(response);

      expect(response.status).toBe(400);
      expect(errors[0].reason).toMatch(/already cancelled/);
      expect(errors[0].reason).not.toMatch(/None/);
    });
  });

  describe('authentication errors', () => {
    let expired: string;
    let revoked: string;

    beforeAll(async () => {
      const store = stack.context.stores.tokens;
      ({ token: expired } = await createToken(store, { user: 'local', scopes: ['jobs:read'], expiresAt: Date.now() - 60_000 }));
      const revokedToken = await createToken(store, { user: 'local', scopes: ['jobs:read'] });
      revoked = revokedToken.token;
      await store.revoke(revokedToken.record.hash, Date.now());
    });

    it.each([
      ['missing', () => ({ token: null }), /No token/],
      ['malformed: Basic', () => ({ token: null, headers: { authorization: 'Basic dXNlcjpwYXNz' } }), /Malformed/],
      ['malformed: no token', () => ({ token: null, headers: { authorization: 'token' } }), /Malformed/],
      ['malformed: two words', () => ({ token: null, headers: { authorization: 'token a b' } }), /Malformed/],
      ['malformed: bare token', () => ({ token: null, headers: { authorization: 'kiln_abc' } }), /Malformed/],
      ['unknown', () => ({ token: 'kiln_unknown' }), /Unknown token/],
      ['revoked', () => ({ token: revoked }), /revoked/],
      ['expired', () => ({ token: expired }), /expired/],
    ] as Array<[string, () => { token: string | null; headers?: Record<string, string> }, RegExp]>)(
      'answers 401 saying the token is %s',
      async (_case, options, reason) => {
        for (const route of ['/api/jobs', '/api/jobs/1']) {
          const response = await stack.api('GET', route, options());
          const errors = await errorsOf(response);

          expect(response.status).toBe(401);
          expect(errors).toHaveLength(1);
          expect(errors[0].reason).toMatch(reason);
          expect(errors[0]).not.toHaveProperty('field');
        }
      },
    );

    it('names jobs:read when a token lacks it', async () => {
      const token = await tokenFor('local', ['jobs:write']);
      for (const route of ['/api/jobs', '/api/jobs/1', '/api/jobs/1/manifest', '/api/jobs/1/artifacts']) {
        const response = await stack.api('GET', route, { token });
        const errors = await errorsOf(response);

        expect(response.status).toBe(403);
        expect(errors[0].reason).toContain('jobs:read');
        expect(errors[0]).not.toHaveProperty('field');
      }
    });

    it('names jobs:write when a token lacks it', async () => {
      const token = await tokenFor('local', ['jobs:read']);
      const job = await submitted({ manifest: MANIFEST, execute: false });
      for (const route of ['/api/jobs', `/api/jobs/${job.id}/start`, `/api/jobs/${job.id}/cancel`, '/api/job-group']) {
        const response = await stack.api('POST', route, { token, body: { manifest: MANIFEST, jobs: [job.id] } });
        const errors = await errorsOf(response);

        expect(response.status).toBe(403);
        expect(errors[0].reason).toContain('jobs:write');
      }
    });
  });
});
