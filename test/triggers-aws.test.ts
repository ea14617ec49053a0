import { GetSecretValueCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { SendEmailCommand, SESv2Client } from '@aws-sdk/client-sesv2';
import { SendMessageCommand, SQSClient } from '@aws-sdk/client-sqs';
import type { SQSRecord } from 'aws-lambda';
import { mockClient } from 'aws-sdk-client-mock';
import { generateKeyPairSync, verify } from 'node:crypto';
import { chmod, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { consumeTriggerRecords } from '../functions/run-triggers.js';
import type { ServiceContext } from '../lib/context.js';
import type { JobRecord } from '../lib/store/index.js';
import { TRIGGER_DEFAULTS } from '../lib/triggers/actions.js';
import { createAwsTriggerParts, readAwsTriggerConfig } from '../lib/triggers/aws.js';
import { checkEmail, EmailRejectedError, type TriggerEmail } from '../lib/triggers/email.js';
import { SesMailer } from '../lib/triggers/mailers.js';
import { conditionMatches } from '../lib/triggers/run-triggers.js';
import { systemResolver } from '../lib/triggers/webhook.js';
import {
  FileWebhookKey,
  keyPairFromSecret,
  MIN_DERIVATION_SECRET_LENGTH,
  SecretsManagerWebhookKey,
  signWebhookBody,
  WebhookKeyError,
} from '../lib/triggers/webhook-key.js';
import { quietLogger } from './support/local-stack.js';

const EMAIL: TriggerEmail = {
  from: 'Kiln <ci@example.org>',
  to: 'Alice <alice@example.org>, bob@example.org',
  cc: 'carol@example.org',
  inReplyTo: 'patch-1@example.org',
  subject: '[kiln] ~alice/main #12 failed',
  text: 'Job #12 (~alice/main) failed.\n\nTasks:\n  build  failed\n',
  messageId: '<kiln.job-12.manifest-0@ci.example.org>',
  date: new Date('2025-01-02T03:04:05Z'),
};

/** The message that EMAIL renders to, as SES receives it. */
const EMAIL_RAW = [
  'From: Kiln <ci@example.org>',
  'To: Alice <alice@example.org>, bob@example.org',
  'Cc: carol@example.org',
  'In-Reply-To: <patch-1@example.org>',
  'References: <patch-1@example.org>',
  'Subject: [kiln] ~alice/main #12 failed',
  'Message-ID: <kiln.job-12.manifest-0@ci.example.org>',
  'Date: Thu, 02 Jan 2025 03:04:05 +0000',
  'Content-Transfer-Encoding: 7bit',
  'MIME-Version: 1.0',
  'Content-Type: text/plain; charset=utf-8',
  '',
  'Job #12 (~alice/main) failed.',
  '',
  'Tasks:',
  '  build  failed',
  '',
].join('\r\n');

describe('SesMailer', () => {
  const ses = mockClient(SESv2Client);
  afterEach(() => ses.reset());

  it('sends the raw message with its envelope', async () => {
    ses.on(SendEmailCommand).resolves({ MessageId: 'ses-message-1' });

    const outcome = await new SesMailer(new SESv2Client({ region: 'eu-west-1' })).send(EMAIL);

    expect(outcome).toBe('sent through Amazon SES, message id ses-message-1');
    const calls = ses.commandCalls(SendEmailCommand);
    expect(calls).toHaveLength(1);
    const input = calls[0].args[0].input;
    expect(input).toEqual({
      FromEmailAddress: 'ci@example.org',
      Destination: { ToAddresses: ['alice@example.org', 'bob@example.org'], CcAddresses: ['carol@example.org'] },
      Content: { Raw: { Data: Buffer.from(EMAIL_RAW) } },
    });
  });

  it('leaves out CcAddresses without a copy recipient', async () => {
    ses.on(SendEmailCommand).resolves({ MessageId: 'ses-message-2' });

    await new SesMailer(new SESv2Client({ region: 'eu-west-1' })).send({ ...EMAIL, cc: null });

    expect(ses.commandCalls(SendEmailCommand)[0].args[0].input.Destination).toEqual({
      ToAddresses: ['alice@example.org', 'bob@example.org'],
    });
  });

  it('sends nothing with a line break in a header value', async () => {
    const mailer = new SesMailer(new SESv2Client({ region: 'eu-west-1' }));

    await expect(mailer.send({ ...EMAIL, to: 'alice@example.org\r\nBcc: eve@example.org' })).rejects.toThrow(EmailRejectedError);
    expect(ses.commandCalls(SendEmailCommand)).toHaveLength(0);
  });
});

describe('checkEmail', () => {
  it.each([
    ['to', { to: 'a@example.org\nBcc: eve@example.org' }, /To header value .* line break/],
    ['cc', { cc: 'b@example.org\r' }, /Cc header value/],
    ['inReplyTo', { inReplyTo: '<x@example.org>\r\nX-Evil: 1' }, /In-Reply-To header value/],
    ['subject', { subject: 'done\nBcc: eve@example.org' }, /Subject header value/],
    ['from', { from: 'ci@example.org\u0000' }, /From header value/],
    ['a recipient without an address', { to: 'Nobody' }, /To value "Nobody" contains no address|not a valid email address/],
    ['an invalid address', { to: 'alice@@example.org' }, /not a valid email address/],
  ])('rejects %s', (_case, change, message) => {
    expect(() => checkEmail({ ...EMAIL, ...change })).toThrow(message);
  });

  it('returns the bare addresses', () => {
    expect(checkEmail(EMAIL)).toEqual({
      from: 'ci@example.org',
      to: ['alice@example.org', 'bob@example.org'],
      cc: ['carol@example.org'],
    });
  });
});

describe('SecretsManagerWebhookKey', () => {
  const secrets = mockClient(SecretsManagerClient);
  const secretArn = 'arn:aws:secretsmanager:eu-west-1:111122223333:secret:KilnWebhookKey-AbCdEf';
  const generated = 'q'.repeat(20) + 'Z7'.repeat(22);
  afterEach(() => secrets.reset());

  it('derives a stable Ed25519 key from the generated secret and reads it once', async () => {
    secrets.on(GetSecretValueCommand).resolves({ SecretString: generated });
    const source = new SecretsManagerWebhookKey(new SecretsManagerClient({ region: 'eu-west-1' }), secretArn);

    const first = await source.keyPair();
    const second = await source.keyPair();

    expect(secrets.commandCalls(GetSecretValueCommand).map((call) => call.args[0].input)).toEqual([{ SecretId: secretArn }]);
    expect(second).toBe(first);
    expect(first.privateKey.asymmetricKeyType).toBe('ed25519');
    expect(Buffer.from(first.publicKeyBase64, 'base64')).toHaveLength(32);
    expect(keyPairFromSecret(generated, 'test').publicKeyBase64).toBe(first.publicKeyBase64);
    expect(keyPairFromSecret(`${generated}x`, 'test').publicKeyBase64).not.toBe(first.publicKeyBase64);
    const body = Buffer.from('{"id":1}');
    const { nonce, signature } = signWebhookBody(first.privateKey, body);
    expect(verify(null, Buffer.concat([body, Buffer.from(nonce)]), first.publicKey, Buffer.from(signature, 'base64'))).toBe(true);
  });

  it('uses a PKCS#8 PEM key as it is', async () => {
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    secrets.on(GetSecretValueCommand).resolves({ SecretString: privateKey.export({ format: 'pem', type: 'pkcs8' }) as string });

    const pair = await new SecretsManagerWebhookKey(new SecretsManagerClient({ region: 'eu-west-1' }), secretArn).keyPair();

    expect(pair.publicKey.export({ format: 'der', type: 'spki' })).toEqual(publicKey.export({ format: 'der', type: 'spki' }));
  });

  it('rejects a secret too short to derive a key from', async () => {
    secrets.on(GetSecretValueCommand).resolves({ SecretString: 'short' });
    const source = new SecretsManagerWebhookKey(new SecretsManagerClient({ region: 'eu-west-1' }), secretArn);

    await expect(source.keyPair()).rejects.toThrow(`contains 5 characters; store an Ed25519 private key in PKCS#8 PEM, or a random string of at least ${MIN_DERIVATION_SECRET_LENGTH} characters`);
  });

  it('tries again after a failed read', async () => {
    secrets.on(GetSecretValueCommand).rejectsOnce(new Error('throttled')).resolves({ SecretString: generated });
    const source = new SecretsManagerWebhookKey(new SecretsManagerClient({ region: 'eu-west-1' }), secretArn);

    await expect(source.keyPair()).rejects.toThrow(WebhookKeyError);
    await expect(source.keyPair()).resolves.toHaveProperty('publicKeyBase64');
    expect(secrets.commandCalls(GetSecretValueCommand)).toHaveLength(2);
  });

  it('rejects a PEM key of another type', () => {
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });

    expect(() => keyPairFromSecret(privateKey.export({ format: 'pem', type: 'pkcs8' }) as string, 'the test secret')).toThrow(
      'the test secret contains an ec key, not an Ed25519 key',
    );
  });
});

describe('FileWebhookKey', () => {
  let folder: string;
  beforeAll(async () => {
    folder = await mkdtemp(path.join(os.tmpdir(), 'kiln-webhook-key-'));
  });
  afterAll(async () => {
    await rm(folder, { recursive: true, force: true });
  });

  it('creates the key with mode 600 and reads the same key again', async () => {
    const file = path.join(folder, 'created');
    const first = await new FileWebhookKey(file).keyPair();
    const second = await new FileWebhookKey(file).keyPair();

    expect((await stat(file)).mode & 0o777).toBe(0o600);
    expect(second.publicKeyBase64).toBe(first.publicKeyBase64);
  });

  it('makes a readable key file private', async () => {
    const file = path.join(folder, 'readable');
    await new FileWebhookKey(file).keyPair();
    await chmod(file, 0o644);

    await new FileWebhookKey(file).keyPair();

    expect((await stat(file)).mode & 0o777).toBe(0o600);
  });

  it('rejects an empty key file and says what to do', async () => {
    const file = path.join(folder, 'empty');
    await writeFile(file, '', { mode: 0o600 });

    await expect(new FileWebhookKey(file).keyPair()).rejects.toThrow(`the webhook key file ${file} is empty: delete it to create a new key`);
  });
});

describe('createAwsTriggerParts', () => {
  const sqs = mockClient(SQSClient);
  const clients = { sqs: new SQSClient({ region: 'eu-west-1' }), secretsManager: new SecretsManagerClient({ region: 'eu-west-1' }) };
  const queueUrl = 'https://sqs.eu-west-1.amazonaws.com/111122223333/KilnTriggers';
  afterEach(() => sqs.reset());

  function job(change: Partial<JobRecord>): JobRecord {
    return { id: 7, spec: { triggers: [] }, triggers: [], groupId: null, ...change } as unknown as JobRecord;
  }

  it('queues an ended job that has triggers', async () => {
    sqs.on(SendMessageCommand).resolves({});
    const { jobEnd } = createAwsTriggerParts(readAwsTriggerConfig({ KILN_TRIGGERS_QUEUE_URL: queueUrl }), clients);

    await jobEnd.jobEnded(job({ triggers: [{ action: 'webhook', condition: 'always', url: 'https://example.org/hook' }] }));
    await jobEnd.jobEnded(job({ id: 8, groupId: 3 }));
    await jobEnd.jobEnded(job({ id: 9 }));

    expect(sqs.commandCalls(SendMessageCommand).map((call) => call.args[0].input)).toEqual([
      { QueueUrl: queueUrl, MessageBody: '{"jobId":7}', DelaySeconds: 0 },
      { QueueUrl: queueUrl, MessageBody: '{"jobId":8}', DelaySeconds: 0 },
    ]);
  });

  it('fails with the reason on a function without the queue or the key', async () => {
    const { jobEnd, webhookKey } = createAwsTriggerParts(readAwsTriggerConfig({}), clients);

    await expect(jobEnd.jobEnded(job({ groupId: 1 }))).rejects.toThrow('KILN_TRIGGERS_QUEUE_URL is not set on this function');
    await expect(webhookKey.keyPair()).rejects.toThrow('KILN_WEBHOOK_KEY_SECRET is not set on this function');
  });
});

describe('consumeTriggerRecords', () => {
  function record(messageId: string, body: string, receiveCount = '1'): SQSRecord {
    return { messageId, body, attributes: { ApproximateReceiveCount: receiveCount } } as unknown as SQSRecord;
  }

  it('reports only the records that failed', async () => {
    const context = {
      logger: quietLogger,
      stores: {
        jobs: {
          find: async (id: number) => {
            if (id === 2) throw new Error('table unavailable');
            return null;
          },
        },
      },
    } as unknown as ServiceContext;
    const runtime = { ...TRIGGER_DEFAULTS, mailer: { send: async () => 'unused' }, resolveHost: systemResolver };

    const response = await consumeTriggerRecords(
      context,
      runtime,
      [record('m1', '{"jobId":1}'), record('m2', '{"jobId":2}', '3'), record('m3', 'not json')],
      5,
    );

    expect(response).toEqual({ batchItemFailures: [{ itemIdentifier: 'm2' }] });
  });
});

describe('conditionMatches', () => {
  it.each([
    ['success', 'success', true],
    ['success', 'failed', false],
    ['success', 'cancelled', false],
    ['failure', 'failed', true],
    ['failure', 'timeout', true],
    ['failure', 'cancelled', true],
    ['failure', 'success', false],
    ['always', 'success', true],
    ['always', 'failed', true],
    ['always', 'timeout', true],
    ['always', 'cancelled', true],
  ] as const)('%s on %s is %s', (condition, status, expected) => {
    expect(conditionMatches(condition, status)).toBe(expected);
  });
});
