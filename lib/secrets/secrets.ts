import { randomUUID } from 'node:crypto';
import type { Principal } from '../auth/tokens.js';
import type { ServiceContext } from '../context.js';
import { NotFoundError, ValidationError, type FieldError } from '../errors.js';
import type { RunnerSecret, SecretType } from '../runner/protocol.js';
import type { JobRecord, SecretRecord } from '../store/index.js';

export const SECRET_TYPES: readonly SecretType[] = ['ssh_key', 'pgp_key', 'plaintext_file'];
/** Largest secret value accepted, in bytes. */
export const MAX_SECRET_BYTES = 64 * 1024;
const SECRET_NAME = /^[A-Za-z0-9_.-]{1,64}$/;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
/** Paths under the build's home that the runner itself writes; a secret file there would break the build. */
const RESERVED_PATHS = ['~/.buildenv', '~/.kiln'];
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export interface SecretRequest {
  name: string;
  type: SecretType;
  value: Buffer;
  path: string | null;
  mode: number | null;
}

/** The listing shape: never the value. */
export interface SecretView {
  id: string;
  name: string;
  type: SecretType;
  path: string | null;
  mode: string | null;
  created: string;
}

/**
 * Validates a `POST /api/secrets` body: `name`, `type`, the value as `secret`
 * (text) or `secret_base64`, and for `plaintext_file` a `path` and an octal
 * `mode` string such as "600".
 */
export function validateSecretRequest(body: Record<string, unknown>): SecretRequest {
  const errors: FieldError[] = [];
  const name = typeof body.name === 'string' ? body.name : '';
  if (!SECRET_NAME.test(name) || UUID.test(name)) {
    errors.push({
      field: 'name',
      reason: 'name is required: 1 to 64 letters, digits, "_", "." or "-", and not shaped like a secret id (a UUID)',
    });
  }

  const type = body.type as SecretType;
  if (!SECRET_TYPES.includes(type)) errors.push({ field: 'type', reason: `type must be one of ${SECRET_TYPES.join(', ')}` });

  let value = Buffer.alloc(0);
  if (body.secret !== undefined && body.secret_base64 !== undefined) {
    errors.push({ field: 'secret', reason: 'send the value either as "secret" (text) or as "secret_base64", not both' });
  } else if (typeof body.secret === 'string') {
    value = Buffer.from(body.secret, 'utf8');
  } else if (typeof body.secret_base64 === 'string') {
    if (!BASE64.test(body.secret_base64)) {
      errors.push({ field: 'secret_base64', reason: 'secret_base64 is not valid base64: use A-Z, a-z, 0-9, "+" and "/", padded with "="' });
    } else {
      value = Buffer.from(body.secret_base64, 'base64');
    }
  }
  if (value.length === 0 && !errors.some((error) => error.field?.startsWith('secret'))) {
    errors.push({ field: 'secret', reason: 'the secret value is missing or empty: send it as "secret" (text) or "secret_base64"' });
  }
  if (value.length > MAX_SECRET_BYTES) errors.push({ field: 'secret', reason: `secret is ${value.length} bytes; the limit is ${MAX_SECRET_BYTES}` });

  let path: string | null = null;
  let mode: number | null = null;
  if (type === 'plaintext_file') {
    if (typeof body.path !== 'string' || !/^(~\/|\/)[^\0]*[^/]$/.test(body.path) || body.path.split('/').includes('..')) {
      errors.push({
        field: 'path',
        reason: 'path is required for plaintext_file: a file path that is absolute or starts with ~/, without ".." and not ending in "/"',
      });
    } else if (RESERVED_PATHS.some((reserved) => body.path === reserved || (body.path as string).startsWith(`${reserved}/`))) {
      errors.push({ field: 'path', reason: `${body.path} is where the runner keeps the build's own files; choose another path` });
    } else {
      path = body.path;
    }
    const modeText = body.mode === undefined ? '600' : String(body.mode);
    if (!/^0?[0-7]{3}$/.test(modeText)) errors.push({ field: 'mode', reason: `mode must be an octal string such as "600", not ${JSON.stringify(body.mode)}` });
    else mode = parseInt(modeText, 8);
  } else if (body.path != null || body.mode != null) {
    errors.push({ field: 'path', reason: 'path and mode apply only to plaintext_file secrets' });
  }
  if (errors.length > 0) throw new ValidationError(errors);

  return { name, type, value, path, mode };
}

function encryptionContext(id: string, owner: string): Record<string, string> {
  return { secretId: id, owner };
}

export function renderSecret(secret: SecretRecord): SecretView {
  return {
    id: secret.id,
    name: secret.name,
    type: secret.type,
    path: secret.path,
    mode: secret.mode === null ? null : secret.mode.toString(8).padStart(3, '0'),
    created: new Date(secret.createdAt).toISOString(),
  };
}

export async function createSecret(context: ServiceContext, principal: Principal, request: SecretRequest): Promise<SecretRecord> {
  const id = randomUUID();
  const secret: SecretRecord = {
    id,
    owner: principal.user,
    name: request.name,
    type: request.type,
    path: request.path,
    mode: request.mode,
    value: await context.secretCipher.encrypt(request.value, encryptionContext(id, principal.user)),
    createdAt: Date.now(),
  };
  await context.stores.secrets.create(secret);
  context.logger.info({ secretId: id, owner: principal.user, type: secret.type }, 'secret created');

  return secret;
}

/** Loads a secret of the caller's; other users' secrets are reported as not found. */
export async function loadOwnSecret(context: ServiceContext, principal: Principal, id: string): Promise<SecretRecord> {
  const secret = UUID.test(id) ? await context.stores.secrets.findById(id) : null;
  if (!secret || secret.owner !== principal.user) throw new NotFoundError(`Secret ${id} not found`);

  return secret;
}

/**
 * Resolves the secrets a job's manifest names, by id or by name, among its
 * owner's secrets, and decrypts them for the runner. Returns none when the
 * job was submitted with `secrets: false`. A name that matches none of the
 * owner's secrets is a ValidationError naming it.
 */
export async function resolveJobSecrets(context: ServiceContext, job: JobRecord): Promise<RunnerSecret[]> {
  if (!job.secretsEnabled) return [];

  const resolved: RunnerSecret[] = [];
  const missing: string[] = [];
  for (const reference of job.spec.secrets) {
    const secret = UUID.test(reference)
      ? await context.stores.secrets.findById(reference.toLowerCase())
      : await context.stores.secrets.findByName(job.owner, reference);
    if (!secret || secret.owner !== job.owner) {
      missing.push(reference);
      continue;
    }

    const value = await context.secretCipher.decrypt(secret.value, encryptionContext(secret.id, secret.owner));
    resolved.push({
      id: secret.id,
      name: secret.name,
      type: secret.type,
      value: value.toString('base64'),
      ...(secret.path === null ? {} : { path: secret.path }),
      ...(secret.mode === null ? {} : { mode: secret.mode }),
    });
  }
  if (missing.length > 0) {
    throw ValidationError.of('secrets', `The manifest names secrets that ~${job.owner} does not have: ${missing.join(', ')}`);
  }

  return resolved;
}
