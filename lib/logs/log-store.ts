import { GetObjectCommand, HeadObjectCommand, NoSuchKey, NotFound, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { LockStore } from '../store/lock-store.js';

export const LOG_CONTENT_TYPE = 'text/plain; charset=utf-8';

/** Lifetime of the PUT URLs handed to runners; they ask again before it runs out. */
export const LOG_UPLOAD_URL_TTL_SECONDS = 15 * 60;

export function setupLogKey(jobId: number): string {
  return `logs/${jobId}/setup.log`;
}

export function taskLogKey(jobId: number, task: string): string {
  return `logs/${jobId}/tasks/${task}.log`;
}

/** Serializes the service's own appends to one log; see {@link LogStore.append}. */
export interface LogLock {
  withLock<T>(key: string, work: () => Promise<T>): Promise<T>;
}

/**
 * Log objects in S3. The runner writes a job's logs through presigned PUT
 * URLs until it reports the final state; after that the service appends its
 * own notes (why a runner stopped) through {@link append}.
 */
export class LogStore {
  constructor(
    private readonly s3: S3Client,
    private readonly bucket: string,
    private readonly lock: LogLock,
  ) {}

  presignGet(key: string, ttlSeconds: number): Promise<string> {
    return getSignedUrl(this.s3, new GetObjectCommand({ Bucket: this.bucket, Key: key }), { expiresIn: ttlSeconds });
  }

  async presignPut(key: string): Promise<{ url: string; headers: Record<string, string>; expiresAt: string }> {
    const url = await getSignedUrl(
      this.s3,
      new PutObjectCommand({ Bucket: this.bucket, Key: key, ContentType: LOG_CONTENT_TYPE }),
      { expiresIn: LOG_UPLOAD_URL_TTL_SECONDS, signableHeaders: new Set(['content-type']) },
    );

    return {
      url,
      headers: { 'content-type': LOG_CONTENT_TYPE },
      expiresAt: new Date(Date.now() + LOG_UPLOAD_URL_TTL_SECONDS * 1000).toISOString(),
    };
  }

  /**
   * Signs a PUT URL for an artifact with its size in the signature, so S3
   * accepts exactly that many bytes.
   */
  async presignArtifactPut(key: string, size: number): Promise<{ url: string; headers: Record<string, string>; expiresAt: string }> {
    const url = await getSignedUrl(
      this.s3,
      new PutObjectCommand({ Bucket: this.bucket, Key: key, ContentLength: size, ContentType: 'application/octet-stream' }),
      { expiresIn: LOG_UPLOAD_URL_TTL_SECONDS, signableHeaders: new Set(['content-length', 'content-type']) },
    );

    return {
      url,
      headers: { 'content-length': String(size), 'content-type': 'application/octet-stream' },
      expiresAt: new Date(Date.now() + LOG_UPLOAD_URL_TTL_SECONDS * 1000).toISOString(),
    };
  }

  /** Returns an object's size in bytes, or null when it does not exist. */
  async objectSize(key: string): Promise<number | null> {
    try {
      const head = await this.s3.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key }));
      return head.ContentLength ?? 0;
    } catch (error) {
      if (error instanceof NotFound || error instanceof NoSuchKey) return null;
      throw new Error(`failed to read the size of ${key}`, { cause: error });
    }
  }

  /** Replaces a whole log object, for a copy that the service recovered from a runner's disk. */
  async put(key: string, body: Buffer): Promise<void> {
    await this.s3.send(new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: body, ContentType: LOG_CONTENT_TYPE }));
  }

  /** Reads a whole log; returns an empty string when it does not exist yet. */
  async read(key: string): Promise<string> {
    try {
      const result = await this.s3.send(new GetObjectCommand({ Bucket: this.bucket, Key: key }));
      return (await result.Body?.transformToString('utf-8')) ?? '';
    } catch (error) {
      if (error instanceof NoSuchKey) return '';
      throw new Error(`failed to read log ${key}`, { cause: error });
    }
  }

  /**
   * Appends lines to a log that no runner writes any more. S3 has no append,
   * so this reads and writes the whole object while holding the log's lock.
   */
  async append(key: string, text: string): Promise<void> {
    const line = text.endsWith('\n') ? text : `${text}\n`;
    await this.lock.withLock(key, async () => {
      const current = await this.read(key);
      const separator = current === '' || current.endsWith('\n') ? '' : '\n';
      await this.s3.send(
        new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: current + separator + line, ContentType: LOG_CONTENT_TYPE }),
      );
    });
  }
}

/** A lease per log in the table, taken with a conditional write and released when the work ends or the lease runs out. */
export class DynamoLogLock implements LogLock {
  constructor(
    private readonly locks: LockStore,
    private readonly leaseMs = 30_000,
  ) {}

  async withLock<T>(key: string, work: () => Promise<T>): Promise<T> {
    const owner = `${process.pid}-${randomUUID()}`;
    const giveUpAt = Date.now() + this.leaseMs * 2;
    while (!(await this.locks.acquire(key, owner, Date.now() + this.leaseMs))) {
      if (Date.now() > giveUpAt) throw new Error(`failed to lock log ${key}: another writer held it too long`);
      await sleep(100);
    }

    try {
      return await work();
    } finally {
      await this.locks.release(key, owner);
    }
  }
}
