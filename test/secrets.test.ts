import { DecryptCommand, GenerateDataKeyCommand, KMSClient } from '@aws-sdk/client-kms';
import { ScanCommand } from '@aws-sdk/client-dynamodb';
import { mockClient } from 'aws-sdk-client-mock';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createToken } from '../lib/auth/tokens.js';
import { KmsCipher } from '../lib/secrets/cipher.js';
import { startTestStack, type ErrorBody, type TestStack } from './support/local-stack.js';

describe('secrets API', () => {
  let stack: TestStack;
  let otherToken: string;
  let jobsOnlyToken: string;

  beforeAll(async () => {
    stack = await startTestStack();
    ({ token: otherToken } = await createToken(stack.context.stores.tokens, {
      user: 'mallory',
      scopes: ['secrets:read', 'secrets:write'],
    }));
    ({ token: jobsOnlyToken } = await createToken(stack.context.stores.tokens, { user: 'local', scopes: ['jobs:read'] }));
  });
  afterAll(async () => {
    await stack.destroy();
  });

  it('creates, lists and deletes a secret without ever returning its value', async () => {
    const created = await stack.api('POST', '/api/secrets', {
      body: { name: 'deploy-key', type: 'ssh_key', secret: '-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n' },
    });
    const secret = (await created.json()) as { id: string; name: string };

    expect(created.status).toBe(200);
    expect(secret.name).toBe('deploy-key');
    expect(JSON.stringify(secret)).not.toContain('OPENSSH');

    const listed = await stack.api('GET', '/api/secrets');
    const listText = await listed.text();
    expect(listed.status).toBe(200);
    expect(listText).toContain(secret.id);
    expect(listText).not.toContain('OPENSSH');

    const deleted = await stack.api('DELETE', `/api/secrets/${secret.id}`);
    expect(deleted.status).toBe(200);
    const after = (await (await stack.api('GET', '/api/secrets')).json()) as { results: Array<{ id: string }> };
    expect(after.results.map((entry) => entry.id)).not.toContain(secret.id);
  });

  it('stores the value encrypted', async () => {
    const plaintext = 'correct-horse-battery-staple-4711';
    await stack.api('POST', '/api/secrets', {
      body: { name: 'stored-encrypted', type: 'plaintext_file', secret: plaintext, path: '~/.netrc', mode: '600' },
    });
    const items = await stack.context.stores.dynamodb.send(new ScanCommand({ TableName: 'kiln' }));

    expect(JSON.stringify(items.Items)).toContain('stored-encrypted');
    expect(JSON.stringify(items.Items)).not.toContain(plaintext);
    expect(JSON.stringify(items.Items)).not.toContain(Buffer.from(plaintext).toString('base64'));
  });

  it('keeps the mode of a plaintext file', async () => {
    const response = await stack.api('POST', '/api/secrets', {
      body: { name: 'netrc', type: 'plaintext_file', secret: 'machine x', path: '~/.netrc', mode: '640' },
    });

    expect(await response.json()).toMatchObject({ type: 'plaintext_file', path: '~/.netrc', mode: '640' });
  });

  it.each([
    ['a missing name', { type: 'ssh_key', secret: 'x' }, 'name'],
    ['a name shaped like an id', { name: '0b6d1f4e-8d0c-4a43-9b8e-4f1f2a8d9c11', type: 'ssh_key', secret: 'x' }, 'name'],
    ['an unknown type', { name: 'a', type: 'password', secret: 'x' }, 'type'],
    ['an empty value', { name: 'a', type: 'pgp_key', secret: '' }, 'secret'],
    ['a file without a path', { name: 'a', type: 'plaintext_file', secret: 'x' }, 'path'],
    ['a relative path', { name: 'a', type: 'plaintext_file', secret: 'x', path: 'netrc' }, 'path'],
    ['a path with ..', { name: 'a', type: 'plaintext_file', secret: 'x', path: '~/../etc/passwd' }, 'path'],
    ['a bad mode', { name: 'a', type: 'plaintext_file', secret: 'x', path: '~/f', mode: '999' }, 'mode'],
    ['a path on a key', { name: 'a', type: 'ssh_key', secret: 'x', path: '~/f' }, 'path'],
    ['a folder path', { name: 'a', type: 'plaintext_file', secret: 'x', path: '~/dir/' }, 'path'],
    ['the buildenv path', { name: 'a', type: 'plaintext_file', secret: 'x', path: '~/.buildenv' }, 'path'],
    ['a path in the runner folder', { name: 'a', type: 'plaintext_file', secret: 'x', path: '~/.kiln/bin/bash' }, 'path'],
    ['invalid base64', { name: 'a', type: 'pgp_key', secret_base64: '!!!notb64' }, 'secret_base64'],
    ['both value fields', { name: 'a', type: 'pgp_key', secret: 'x', secret_base64: 'eA==' }, 'secret'],
  ])('rejects %s', async (_case, body, field) => {
    const response = await stack.api('POST', '/api/secrets', { body });
    const result = (await response.json()) as ErrorBody;

    expect(response.status).toBe(400);
    expect(result.errors.map((error) => error.field)).toContain(field);
  });

  it('rejects a second secret of the same name', async () => {
    const body = { name: 'twice', type: 'pgp_key', secret: 'key' };
    expect((await stack.api('POST', '/api/secrets', { body })).status).toBe(200);
    const second = await stack.api('POST', '/api/secrets', { body });

    expect(second.status).toBe(400);
    expect(((await second.json()) as ErrorBody).errors[0].reason).toContain('twice');
  });

  it('hides one user secrets from another', async () => {
    const created = await stack.api('POST', '/api/secrets', { body: { name: 'mine', type: 'pgp_key', secret: 'key' } });
    const { id } = (await created.json()) as { id: string };

    const listed = (await (await stack.api('GET', '/api/secrets', { token: otherToken })).json()) as { results: Array<{ id: string }> };
    const deleted = await stack.api('DELETE', `/api/secrets/${id}`, { token: otherToken });

    expect(listed.results.map((entry) => entry.id)).not.toContain(id);
    expect(deleted.status).toBe(404);
  });

  it('needs the secrets scopes', async () => {
    const listed = await stack.api('GET', '/api/secrets', { token: jobsOnlyToken });
    const created = await stack.api('POST', '/api/secrets', { token: jobsOnlyToken, body: { name: 'x', type: 'pgp_key', secret: 'k' } });

    expect(listed.status).toBe(403);
    expect(((await listed.json()) as ErrorBody).errors[0].reason).toContain('secrets:read');
    expect(created.status).toBe(403);
    expect(((await created.json()) as ErrorBody).errors[0].reason).toContain('secrets:write');
  });
});

describe('KmsCipher', () => {
  it('wraps each value in its own data key with the encryption context', async () => {
    const kms = mockClient(KMSClient);
    const dataKey = Buffer.alloc(32, 7);
    kms.on(GenerateDataKeyCommand).resolves({ Plaintext: new Uint8Array(dataKey), CiphertextBlob: Buffer.from('wrapped-key') });
    kms.on(DecryptCommand).resolves({ Plaintext: new Uint8Array(dataKey) });
    const cipher = new KmsCipher(new KMSClient({ region: 'us-east-1' }), 'alias/kiln-secrets');
    const context = { secretId: 'abc', owner: 'local' };

    const sealed = await cipher.encrypt(Buffer.from('top secret'), context);
    const opened = await cipher.decrypt(sealed, context);

    expect(kms.commandCalls(GenerateDataKeyCommand)[0].args[0].input).toEqual({
      KeyId: 'alias/kiln-secrets',
      KeySpec: 'AES_256',
      EncryptionContext: context,
    });
    expect(kms.commandCalls(DecryptCommand)[0].args[0].input).toEqual({
      KeyId: 'alias/kiln-secrets',
      CiphertextBlob: Buffer.from('wrapped-key'),
      EncryptionContext: context,
    });
    expect(sealed.encryptedKey).toBe(Buffer.from('wrapped-key').toString('base64'));
    expect(sealed.ciphertext).not.toContain(Buffer.from('top secret').toString('base64'));
    expect(opened.toString()).toBe('top secret');
    await expect(cipher.decrypt(sealed, { ...context, owner: 'mallory' })).rejects.toThrow();
    kms.restore();
  });
});
