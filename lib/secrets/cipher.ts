import { DecryptCommand, GenerateDataKeyCommand, type KMSClient } from '@aws-sdk/client-kms';
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { chmod, readFile, writeFile } from 'node:fs/promises';

/** A secret's value as stored: AES-256-GCM ciphertext, and the data key when it is wrapped by KMS. */
export interface EncryptedValue {
  /** base64 of iv (12 bytes), auth tag (16 bytes) and ciphertext. */
  ciphertext: string;
  /** base64 of the KMS-encrypted data key; absent for the local key file. */
  encryptedKey?: string;
}

/** Encrypts secrets at rest. `context` is bound into the encryption, so a value moved to another record fails to decrypt. */
export interface SecretCipher {
  encrypt(plaintext: Buffer, context: Record<string, string>): Promise<EncryptedValue>;
  decrypt(value: EncryptedValue, context: Record<string, string>): Promise<Buffer>;
}

function associatedData(context: Record<string, string>): Buffer {
  return Buffer.from(JSON.stringify(Object.entries(context).sort(([a], [b]) => a.localeCompare(b))));
}

function sealWithKey(key: Buffer, plaintext: Buffer, context: Record<string, string>): string {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', key, iv);
  cipher.setAAD(associatedData(context));
  const ciphertext = Buffer.concat([cipher.update(plaintext), cipher.final()]);

  return Buffer.concat([iv, cipher.getAuthTag(), ciphertext]).toString('base64');
}

function openWithKey(key: Buffer, sealed: string, context: Record<string, string>): Buffer {
  const bytes = Buffer.from(sealed, 'base64');
  const decipher = createDecipheriv('aes-256-gcm', key, bytes.subarray(0, 12));
  decipher.setAAD(associatedData(context));
  decipher.setAuthTag(bytes.subarray(12, 28));

  return Buffer.concat([decipher.update(bytes.subarray(28)), decipher.final()]);
}

/** AES-256-GCM with one key kept in a file of the local stack's data folder. */
export class LocalKeyCipher implements SecretCipher {
  private constructor(private readonly key: Buffer) {}

  /** Reads the key file, creating it with 32 random bytes and mode 600 on first use. */
  static async fromFile(file: string): Promise<LocalKeyCipher> {
    const existing = await readFile(file).catch(() => null);
    if (existing && existing.length === 32) return new LocalKeyCipher(existing);
    if (existing) throw new Error(`the secret key file ${file} is damaged: it must hold 32 bytes; restore it from a backup`);

    const key = randomBytes(32);
    await writeFile(file, key, { mode: 0o600, flag: 'wx' });
    await chmod(file, 0o600);

    return new LocalKeyCipher(key);
  }

  async encrypt(plaintext: Buffer, context: Record<string, string>): Promise<EncryptedValue> {
    return { ciphertext: sealWithKey(this.key, plaintext, context) };
  }

  async decrypt(value: EncryptedValue, context: Record<string, string>): Promise<Buffer> {
    return openWithKey(this.key, value.ciphertext, context);
  }
}

/**
 * Envelope encryption with AWS KMS: each secret gets its own data key from
 * GenerateDataKey, and only the KMS-encrypted copy of that key is stored.
 */
export class KmsCipher implements SecretCipher {
  constructor(
    private readonly kms: KMSClient,
    private readonly keyId: string,
  ) {}

  async encrypt(plaintext: Buffer, context: Record<string, string>): Promise<EncryptedValue> {
    const dataKey = await this.kms.send(
      new GenerateDataKeyCommand({ KeyId: this.keyId, KeySpec: 'AES_256', EncryptionContext: context }),
    );
    if (!dataKey.Plaintext || !dataKey.CiphertextBlob) throw new Error('failed to generate a data key: KMS returned no key');

    const key = Buffer.from(dataKey.Plaintext);
    try {
      return {
        ciphertext: sealWithKey(key, plaintext, context),
        encryptedKey: Buffer.from(dataKey.CiphertextBlob).toString('base64'),
      };
    } finally {
      key.fill(0);
    }
  }

  async decrypt(value: EncryptedValue, context: Record<string, string>): Promise<Buffer> {
    if (!value.encryptedKey) throw new Error('failed to decrypt secret: it has no KMS data key');

    const dataKey = await this.kms.send(
      new DecryptCommand({
        KeyId: this.keyId,
        CiphertextBlob: Buffer.from(value.encryptedKey, 'base64'),
        EncryptionContext: context,
      }),
    );
    if (!dataKey.Plaintext) throw new Error('failed to decrypt secret: KMS returned no key');

    const key = Buffer.from(dataKey.Plaintext);
    try {
      return openWithKey(key, value.ciphertext, context);
    } finally {
      key.fill(0);
    }
  }
}
