import { GetSecretValueCommand, type SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { createPrivateKey, createPublicKey, generateKeyPairSync, hkdfSync, randomBytes, sign, type KeyObject } from 'node:crypto';
import { chmod, readFile, stat, writeFile } from 'node:fs/promises';
import { KilnError } from '../errors.js';

/** The Ed25519 key pair that signs webhook bodies. */
export interface WebhookKeyPair {
  privateKey: KeyObject;
  publicKey: KeyObject;
  /** Base64 of the raw 32-byte public key, as `GET /api/webhooks/public-key` serves it. */
  publicKeyBase64: string;
}

/** Source of the webhook signing key, which stays the same across restarts and deploys. */
export interface WebhookKeySource {
  /** Loads the key pair on the first call, creating it where the source can, and returns the same pair after. */
  keyPair(): Promise<WebhookKeyPair>;
}

/** A webhook key that cannot be loaded: a broken key file, a missing or short secret. */
export class WebhookKeyError extends KilnError {
  override name = 'WebhookKeyError';
}

/** DER prefix of a PKCS#8 Ed25519 private key; the 32-byte seed follows it (RFC 8410). */
const ED25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');

/** Minimum length of a random secret to derive a key from. 40 alphanumeric characters carry about 238 bits. */
export const MIN_DERIVATION_SECRET_LENGTH = 40;

/** Builds an Ed25519 private key from its 32-byte seed. */
export function privateKeyFromSeed(seed: Buffer): KeyObject {
  if (seed.length !== 32) throw new WebhookKeyError(`an Ed25519 seed has 32 bytes, not ${seed.length}`);

  return createPrivateKey({ key: Buffer.concat([ED25519_PKCS8_PREFIX, seed]), format: 'der', type: 'pkcs8' });
}

function toKeyPair(privateKey: KeyObject, source: string): WebhookKeyPair {
  if (privateKey.asymmetricKeyType !== 'ed25519') {
    throw new WebhookKeyError(`${source} contains an ${privateKey.asymmetricKeyType ?? 'unknown'} key, not an Ed25519 key`);
  }
  const publicKey = createPublicKey(privateKey);
  const raw = Buffer.from(publicKey.export({ format: 'jwk' }).x as string, 'base64url');

  return { privateKey, publicKey, publicKeyBase64: raw.toString('base64') };
}

function readPem(pem: string, source: string): WebhookKeyPair {
  let key: KeyObject;
  try {
    key = createPrivateKey(pem);
  } catch (error) {
    throw new WebhookKeyError(`${source} does not hold a PKCS#8 PEM private key`, { cause: error });
  }

  return toKeyPair(key, source);
}

/** Caches the first successful load; a failed load is tried again on the next call. */
abstract class CachedKeySource implements WebhookKeySource {
  private loading: Promise<WebhookKeyPair> | null = null;

  keyPair(): Promise<WebhookKeyPair> {
    this.loading ??= this.load().catch((error: unknown) => {
      this.loading = null;
      throw error;
    });

    return this.loading;
  }

  protected abstract load(): Promise<WebhookKeyPair>;
}

/**
 * A key pair in a PKCS#8 PEM file, such as `$KILN_DATA_DIR/webhook-key`,
 * created with mode 600 on first use. The file is created exclusively, so
 * two processes starting at once end up with the same key.
 */
export class FileWebhookKey extends CachedKeySource {
  constructor(private readonly file: string) {
    super();
  }

  protected async load(): Promise<WebhookKeyPair> {
    const pem = generateKeyPairSync('ed25519').privateKey.export({ format: 'pem', type: 'pkcs8' }) as string;
    try {
      await writeFile(this.file, pem, { mode: 0o600, flag: 'wx' });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') {
        throw new WebhookKeyError(`failed to create the webhook key file ${this.file}`, { cause: error });
      }
    }

    if (((await stat(this.file)).mode & 0o077) !== 0) await chmod(this.file, 0o600);
    const source = `the webhook key file ${this.file}`;
    const text = await readFile(this.file, 'utf8');
    if (text.trim() === '') {
      throw new WebhookKeyError(`${source} is empty: delete it to create a new key, and give webhook receivers the new public key`);
    }

    return readPem(text, source);
  }
}

/**
 * A key pair kept in an AWS Secrets Manager secret. The secret contains either
 * an Ed25519 private key in PKCS#8 PEM, or a random string of at least
 * {@link MIN_DERIVATION_SECRET_LENGTH} characters, such as the one that the
 * CDK stack generates, from which the 32-byte seed is derived with
 * HKDF-SHA256. Any 32 uniformly random bytes are a valid Ed25519 seed, so the
 * derived key is as strong as the secret's randomness up to 256 bits.
 */
export class SecretsManagerWebhookKey extends CachedKeySource {
  constructor(
    private readonly client: SecretsManagerClient,
    private readonly secretId: string,
  ) {
    super();
  }

  protected async load(): Promise<WebhookKeyPair> {
    let secret: string | undefined;
    try {
      const result = await this.client.send(new GetSecretValueCommand({ SecretId: this.secretId }));
      secret = result.SecretString;
    } catch (error) {
      throw new WebhookKeyError(`failed to read the webhook key secret ${this.secretId}`, { cause: error });
    }

    return keyPairFromSecret(secret ?? '', `the webhook key secret ${this.secretId}`);
  }
}

/** Reads a key pair from a secret's text: a PKCS#8 PEM key, or a random string that the seed is derived from. */
export function keyPairFromSecret(secret: string, source: string): WebhookKeyPair {
  if (secret.trimStart().startsWith('-----BEGIN')) return readPem(secret, source);
  if (secret.length < MIN_DERIVATION_SECRET_LENGTH) {
    throw new WebhookKeyError(
      `${source} contains ${secret.length} characters; store an Ed25519 private key in PKCS#8 PEM, ` +
        `or a random string of at least ${MIN_DERIVATION_SECRET_LENGTH} characters`,
    );
  }

  const seed = Buffer.from(hkdfSync('sha256', secret, 'kiln webhook signing key', 'ed25519 seed v1', 32));
  return toKeyPair(privateKeyFromSeed(seed), source);
}

/** A key source for a deployment that has no webhook key; every use fails with the reason. */
export class MissingWebhookKey implements WebhookKeySource {
  constructor(private readonly reason: string) {}

  async keyPair(): Promise<WebhookKeyPair> {
    throw new WebhookKeyError(this.reason);
  }
}

/** The headers that carry a webhook body's signature. */
export interface WebhookSignature {
  /** `X-Payload-Nonce`: 16 hex digits, fresh for every request. */
  nonce: string;
  /** `X-Payload-Signature`: base64 of the Ed25519 signature over the body bytes followed by the nonce bytes. */
  signature: string;
}

/**
 * Signs a webhook body as build.sr.ht does: an Ed25519 signature over the
 * body bytes followed by the ASCII bytes of the nonce.
 */
export function signWebhookBody(privateKey: KeyObject, body: Buffer): WebhookSignature {
  const nonce = randomBytes(8).toString('hex');
  const signature = sign(null, Buffer.concat([body, Buffer.from(nonce, 'ascii')]), privateKey);

  return { nonce, signature: signature.toString('base64') };
}
