import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isEnded, startTestStack, type TestStack } from './support/local-stack.js';
import { startSmtpSink, type SmtpSink } from './support/smtp-sink.js';
import { manifestWithTriggers, waitForSetupLog } from './support/triggers.js';

interface ParsedEmail {
  headers: Map<string, string>;
  body: string;
}

/** Splits an RFC 5322 message into unfolded headers (lowercase names) and a body with quoted-printable decoded. */
function parseEmail(raw: string): ParsedEmail {
  const split = raw.indexOf('\r\n\r\n');
  const headers = new Map<string, string>();
  for (const line of raw.slice(0, split).replace(/\r\n[ \t]+/g, ' ').split('\r\n')) {
    const colon = line.indexOf(':');
    headers.set(line.slice(0, colon).toLowerCase(), line.slice(colon + 1).trim());
  }
  let body = raw.slice(split + 4);
  if (headers.get('content-transfer-encoding') === 'quoted-printable') {
    const bytes = body.replace(/=\r\n/g, '').replace(/=([0-9A-F]{2})/g, (_match, hex: string) => String.fromCharCode(parseInt(hex, 16)));
    body = Buffer.from(bytes, 'latin1').toString('utf8');
  }

  return { headers, body: body.replace(/\r\n/g, '\n') };
}

async function readMailFolder(dataDir: string): Promise<ParsedEmail[]> {
  const folder = path.join(dataDir, 'mail');
  const names = (await readdir(folder).catch(() => [] as string[])).filter((name) => name.endsWith('.eml')).sort();

  return Promise.all(names.map(async (name) => parseEmail(await readFile(path.join(folder, name), 'utf8'))));
}

async function waitForMail(dataDir: string, match: (email: ParsedEmail) => boolean, timeoutMs = 30_000): Promise<ParsedEmail[]> {
  const giveUpAt = Date.now() + timeoutMs;
  for (;;) {
    const found = (await readMailFolder(dataDir)).filter(match);
    if (found.length > 0) return found;
    if (Date.now() > giveUpAt) throw new Error('no matching .eml file appeared');
    await sleep(100);
  }
}

describe('email triggers as .eml files', () => {
  let stack: TestStack;

  beforeAll(async () => {
    stack = await startTestStack({}, undefined, { triggers: { retryDelaysMs: [100, 100] } });
  });
  afterAll(async () => {
    await stack?.destroy();
  });

  it('writes the subject, recipients and task links', async () => {
    const manifest = manifestWithTriggers(
      { _prepare: 'echo hidden', build: 'echo build', test: 'exit 1', deploy: 'echo never' },
      [
        {
          action: 'email',
          condition: 'failure',
          to: 'Alice <alice@example.org>, bob@example.org',
          cc: 'carol@example.org',
          in_reply_to: '<patch-1@example.org>',
        },
        { action: 'email', condition: 'success', to: 'never@example.org' },
      ],
    );
    const submitted = await stack.submit({ manifest, tags: ['kiln', 'main'], note: 'email test' });
    const job = await stack.waitForJob(submitted.id, isEnded);
    const [email] = await waitForMail(stack.dataDir, (mail) => mail.headers.get('subject')?.includes(`#${job.id} `) ?? false);
    const links = `${stack.apiUrl}/api/jobs/${job.id}`;

    expect(job.status).toBe('failed');
    expect(email.headers.get('subject')).toBe(`[kiln] ~local/kiln/main #${job.id} failed`);
    expect(email.headers.get('from')).toBe('Kiln <kiln@localhost>');
    expect(email.headers.get('to')).toBe('Alice <alice@example.org>, bob@example.org');
    expect(email.headers.get('cc')).toBe('carol@example.org');
    expect(email.headers.get('in-reply-to')).toBe('<patch-1@example.org>');
    expect(email.headers.get('references')).toBe('<patch-1@example.org>');
    expect(email.headers.get('message-id')).toBe(`<kiln.job-${job.id}.manifest-0@127.0.0.1>`);
    expect(email.body).toContain(`Job #${job.id} (~local/kiln/main) failed.`);
    expect(email.body).toContain('Note: email test');
    expect(email.body).toMatch(new RegExp(`^  build +success +${links}/tasks/build/log$`, 'm'));
    expect(email.body).toMatch(new RegExp(`^  test +failed +${links}/tasks/test/log$`, 'm'));
    expect(email.body).toMatch(/^ {2}deploy +skipped$/m);
    expect(email.body).not.toContain('_prepare');
    expect(email.body).toContain(`Setup log: ${links}/log`);
    expect(email.body).toContain(`Job: ${links}\n`);
    expect(email.body).not.toMatch(/X-Amz-|Signature=/);
    const log = await waitForSetupLog(stack, job.id, /Email to .* written to/);
    expect(log).toContain('Email to Alice <alice@example.org>, bob@example.org, cc carol@example.org (on failure): written to');
    expect((await readMailFolder(stack.dataDir)).filter((mail) => mail.headers.get('to') === 'never@example.org')).toHaveLength(0);
  });

  it('emails a job group once, after all its jobs', async () => {
    const ids: number[] = [];
    for (const script of ['echo a', 'echo b']) ids.push((await stack.submit({ manifest: manifestWithTriggers({ step: script }, []), execute: false })).id);
    const created = await stack.api('POST', '/api/job-group', {
      body: { jobs: ids, execute: true, triggers: [{ action: 'email', condition: 'success', to: 'group@example.org' }] },
    });
    const groupId = ((await created.json()) as { id: number }).id;
    for (const id of ids) await stack.waitForJob(id, isEnded);
    const [email] = await waitForMail(stack.dataDir, (mail) => mail.headers.get('to') === 'group@example.org');
    await sleep(1000);

    expect((await readMailFolder(stack.dataDir)).filter((mail) => mail.headers.get('to') === 'group@example.org')).toHaveLength(1);
    expect(email.headers.get('subject')).toBe(`[kiln] ~local job group #${groupId} success`);
    expect(email.body).toContain(`Job group #${groupId} (~local) success: all 2 jobs succeeded.`);
    for (const id of ids) {
      expect(email.body).toContain(`Job: ${stack.apiUrl}/api/jobs/${id}\n`);
      expect(email.body).toContain(`Setup log: ${stack.apiUrl}/api/jobs/${id}/log`);
    }
  });
});

describe('email triggers through SMTP', () => {
  let stack: TestStack;
  let sink: SmtpSink;

  beforeAll(async () => {
    sink = await startSmtpSink();
    stack = await startTestStack({ KILN_SMTP_URL: sink.url, KILN_EMAIL_FROM: 'CI <ci@example.org>' });
  });
  afterAll(async () => {
    await stack?.destroy();
    await sink?.close();
  });

  it('sends the message to every recipient', async () => {
    const manifest = manifestWithTriggers({ hi: 'echo hi' }, [
      { action: 'email', condition: 'always', to: 'Dev <dev@example.org>', cc: 'Lead <lead@example.org>, ops@example.org' },
    ]);
    const job = await stack.waitForJob((await stack.submit({ manifest })).id, isEnded);
    const [message] = await sink.waitFor(1);
    const email = parseEmail(message.data);

    expect(message.from).toBe('ci@example.org');
    expect(message.recipients).toEqual(['dev@example.org', 'lead@example.org', 'ops@example.org']);
    expect(email.headers.get('from')).toBe('CI <ci@example.org>');
    expect(email.headers.get('subject')).toBe(`[kiln] ~local #${job.id} success`);
    expect(email.headers.get('cc')).toBe('Lead <lead@example.org>, ops@example.org');
    expect(email.body).toContain(`${stack.apiUrl}/api/jobs/${job.id}/tasks/hi/log`);
    const log = await waitForSetupLog(stack, job.id, /Email to .*sent through SMTP server 127\.0\.0\.1:\d+/);
    expect(log).toMatch(/sent through SMTP server 127\.0\.0\.1:\d+: 250 2\.0\.0 queued/);
    expect(await readMailFolder(stack.dataDir)).toHaveLength(0);
  });
});
