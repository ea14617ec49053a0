import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { JobView } from '../lib/api/job-view.js';
import { createToken } from '../lib/auth/tokens.js';
import { startTestStack, type TestStack } from './support/local-stack.js';

const MANIFEST = `image: alpine/latest
tasks:
  - hello: echo hello
`;

describe('job API', () => {
  let stack: TestStack;
  let readOnlyToken: string;

  beforeAll(async () => {
    stack = await startTestStack();
    ({ token: readOnlyToken } = await createToken(stack.context.stores.tokens, { user: 'reader', scopes: ['jobs:read'] }));
  });
  afterAll(async () => {
    await stack.destroy();
  });

  describe('POST /api/jobs', () => {
    it('returns the whole job with status 200', async () => {
      const response = await stack.api('POST', '/api/jobs', {
        body: { manifest: MANIFEST, note: 'first', tags: ['kiln', 'ci'], execute: false },
      });
      const job = (await response.json()) as JobView;

      expect(response.status).toBe(200);
      expect(job.status).toBe('pending');
      expect(job.note).toBe('first');
      expect(job.tags).toBe('kiln/ci');
      expect(job.owner).toEqual({ canonical_name: '~local', name: 'local' });
      expect(job.tasks).toEqual([{ name: 'hello', status: 'pending', log: null }]);
      expect(job.setup_log).toBeNull();
      expect(job.runner).toBeNull();
    });

    it('accepts a form-encoded body', async () => {
      const body = new URLSearchParams({ manifest: MANIFEST, execute: 'false', tags: 'one' }).toString();
      const response = await stack.api('POST', '/api/jobs', {
        body,
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
      });
      const job = (await response.json()) as JobView;

      expect(response.status).toBe(200);
      expect(job.status).toBe('pending');
      expect(job.tags).toBe('one');
    });

    it('accepts JSON with a charset parameter', async () => {
      const response = await stack.api('POST', '/api/jobs', {
        body: JSON.stringify({ manifest: MANIFEST, execute: false }),
        headers: { 'content-type': 'application/json; charset=utf-8' },
      });

      expect(response.status).toBe(200);
    });

    it('hands out distinct increasing ids to concurrent submits', async () => {
      const jobs = await Promise.all(
        Array.from({ length: 20 }, () => stack.submit({ manifest: MANIFEST, execute: false })),
      );
      const ids = jobs.map((job) => job.id);

      expect(new Set(ids).size).toBe(20);
      const later = await stack.submit({ manifest: MANIFEST, execute: false });
      expect(later.id).toBeGreaterThan(Math.max(...ids));
    });

    it.each([
      ['missing manifest', { note: 'x' }, 'manifest'],
      ['manifest not a string', { manifest: 42 }, 'manifest'],
      ['tab indentation', { manifest: 'image: alpine/latest\ntasks:\n\t- a: echo' }, 'manifest'],
      ['unknown image', { manifest: 'image: plan9/latest\ntasks:\n  - a: echo' }, 'image'],
      ['bad tag', { manifest: MANIFEST, tags: ['has space'] }, 'tags'],
      ['bad execute', { manifest: MANIFEST, execute: 'maybe' }, 'execute'],
      ['long note', { manifest: MANIFEST, note: 'x'.repeat(4097) }, 'note'],
      ['bad access list', { manifest: MANIFEST, 'access:read': ['not a name'] }, 'access:read'],
    ])('rejects %s with a 400 on its field', async (_case, body, field) => {
      const response = await stack.api('POST', '/api/jobs', { body });
      const result = (await response.json()) as { errors: Array<{ field?: string; reason: string }> };

      expect(response.status).toBe(400);
      expect(result.errors.map((error) => error.field)).toContain(field);
      expect(result.errors.every((error) => error.reason.length > 10)).toBe(true);
    });

    it('gives the line and column of a YAML error', async () => {
      const response = await stack.api('POST', '/api/jobs', {
        body: { manifest: 'image: alpine/latest\ntasks:\n\t- a: echo' },
      });
      const result = (await response.json()) as { errors: Array<{ field?: string; reason: string }> };

      expect(result.errors[0].reason).toMatch(/line 3, column \d+/);
    });

    it.each([
      ['not JSON', '{"manifest": '],
      ['a JSON list', '[1, 2]'],
      ['a JSON string', '"manifest"'],
    ])('rejects a body that is %s', async (_case, body) => {
      const response = await stack.api('POST', '/api/jobs', { body, headers: { 'content-type': 'application/json' } });
      const result = (await response.json()) as { errors: Array<{ field?: string; reason: string }> };

      expect(response.status).toBe(400);
      expect(result.errors[0].field).toBeUndefined();
    });

    it('rejects a body over 1 MiB with 413', async () => {
      const response = await stack.api('POST', '/api/jobs', { body: { manifest: 'x'.repeat(1024 * 1024 + 1) } });

      expect(response.status).toBe(413);
      expect(((await response.json()) as { errors: unknown[] }).errors).toHaveLength(1);
    });
  });

  describe('authentication', () => {
    it.each([
      ['no header', null, /No token/],
      ['an unknown token', 'kiln_unknown', /Unknown token/],
    ])('answers 401 for %s', async (_case, token, reason) => {
      const response = await stack.api('GET', '/api/jobs/1', { token });
      const result = (await response.json()) as { errors: Array<{ reason: string }> };

      expect(response.status).toBe(401);
      expect(result.errors[0].reason).toMatch(reason);
    });

    it('answers 401 for a malformed header', async () => {
      const response = await stack.api('GET', '/api/jobs/1', { token: null, headers: { authorization: 'Basic abc' } });

      expect(response.status).toBe(401);
      expect(((await response.json()) as { errors: Array<{ reason: string }> }).errors[0].reason).toMatch(/Malformed/);
    });

    it('accepts a Bearer token', async () => {
      const job = await stack.submit({ manifest: MANIFEST, execute: false });
      const response = await stack.api('GET', `/api/jobs/${job.id}`, {
        token: null,
        headers: { authorization: `Bearer ${stack.token}` },
      });

      expect(response.status).toBe(200);
    });

    it('answers 403 naming the missing scope', async () => {
      const response = await stack.api('POST', '/api/jobs', { token: readOnlyToken, body: { manifest: MANIFEST } });
      const result = (await response.json()) as { errors: Array<{ reason: string }> };

      expect(response.status).toBe(403);
      expect(result.errors[0].reason).toContain('jobs:write');
    });
  });

  describe('GET /api/jobs/:id/manifest', () => {
    it('returns the manifest exactly as submitted', async () => {
      const manifest = `# ünïcode comment\r\nimage: alpine/latest\r\ntasks:\r\n  - a: echo "x"\r\n`;
      const job = await stack.submit({ manifest, execute: false });
      const response = await stack.api('GET', `/api/jobs/${job.id}/manifest`);

      expect(response.status).toBe(200);
      expect(response.headers.get('content-type')).toMatch(/^text\/plain/);
      expect(await response.text()).toBe(manifest);
    });
  });

  describe('POST /api/jobs/:id/start', () => {
    it('moves a pending job to queued once among racing calls', async () => {
      const job = await stack.submit({ manifest: MANIFEST, execute: false });
      const responses = await Promise.all(Array.from({ length: 8 }, () => stack.api('POST', `/api/jobs/${job.id}/start`)));
      const statuses = responses.map((response) => response.status).sort();

      expect(statuses.filter((status) => status === 200)).toHaveLength(1);
      expect(statuses.filter((status) => status === 400)).toHaveLength(7);
      const rejected = responses.find((response) => response.status === 400)!;
      expect(((await rejected.json()) as { errors: Array<{ reason: string }> }).errors[0].reason).toMatch(
        /^This job is already (queued|running|complete)/,
      );
    });

    it('returns an empty object', async () => {
      const job = await stack.submit({ manifest: MANIFEST, execute: false });
      const response = await stack.api('POST', `/api/jobs/${job.id}/start`);

      expect(response.status).toBe(200);
      expect(await response.json()).toEqual({});
    });
  });

  describe('unknown ids and routes', () => {
    it.each(['/api/jobs/999999', '/api/jobs/abc', '/api/jobs/1.5', '/api/jobs/-1', '/api/nothing'])('answers 404 for %s', async (route) => {
      const response = await stack.api('GET', route);
      const result = (await response.json()) as { errors: Array<{ reason: string }> };

      expect(response.status).toBe(404);
      expect(result.errors).toHaveLength(1);
    });

    it('answers 405 for a method the route lacks', async () => {
      const response = await stack.api('DELETE', '/api/jobs/1');
      const result = (await response.json()) as { errors: Array<{ reason: string }> };

      expect(response.status).toBe(405);
      expect(response.headers.get('allow')).toBe('GET');
      expect(result.errors[0].reason).toContain('DELETE is not allowed');
    });

    it('answers 404 for the log of a job that has not been dispatched', async () => {
      const job = await stack.submit({ manifest: MANIFEST, execute: false });
      const response = await stack.api('GET', `/api/jobs/${job.id}/log`);

      expect(response.status).toBe(404);
    });
  });
});
