import { ConditionalCheckFailedException } from '@aws-sdk/client-dynamodb';
import {
  GetCommand,
  PutCommand,
  QueryCommand,
  UpdateCommand,
  type DynamoDBDocumentClient,
} from '@aws-sdk/lib-dynamodb';
import { EventEmitter } from 'node:events';
import { KilnError, NotFoundError } from '../errors.js';
import type { JobStatus, TaskStatus } from '../jobs/state.js';
import { isFinal } from '../jobs/state.js';
import type { Manifest, Trigger } from '../manifest/types.js';
import { TABLE_KEYS } from './table.js';

/** An uploaded artifact: a file from the build's home, kept in S3. */
export interface ArtifactRecord {
  id: number;
  /** Path as the manifest listed it. */
  path: string;
  /** File name, unique within the job. */
  name: string;
  /** Object key in the bucket. */
  key: string;
  size: number;
  createdAt: number;
}

export interface TaskRecord {
  name: string;
  status: TaskStatus;
}

/** A job as stored. Tasks live inside the job so that one conditional write moves both. */
export interface JobRecord {
  id: number;
  owner: string;
  status: JobStatus;
  /** The manifest exactly as submitted. */
  manifest: string;
  /** The validated manifest. */
  spec: Manifest;
  note: string | null;
  tags: string[];
  accessRead: string[];
  accessWrite: string[];
  /** Triggers from the request; the manifest's own are in `spec`. */
  triggers: Trigger[];
  /** Whether the runner receives the owner's secrets that the manifest names. */
  secretsEnabled: boolean;
  tasks: TaskRecord[];
  /** Name of the job's runner (an ECS task id, or `local`); null until dispatched. */
  runner: string | null;
  /** Number of launches tried. */
  dispatchAttempt: number;
  /** When the current launch was recorded, ms since the epoch. */
  dispatchedAt: number | null;
  /** SHA-256 of the one-time job token, removed at the claim. */
  jobTokenHash: string | null;
  /** SHA-256 of the runner's session token, removed when the job ends. */
  sessionTokenHash: string | null;
  /** Whether the job counts against the running limits. */
  holdsSlot: boolean;
  createdAt: number;
  updatedAt: number;
  claimedAt: number | null;
  /** When the job times out, ms since the epoch; set at the claim. */
  deadline: number | null;
  finishedAt: number | null;
  /** Reason the service gave when it failed the job (runner gone, launch failed), or null. */
  failureReason: string | null;
  /** Artifacts uploaded after every task succeeded; absent on jobs stored before artifacts existed. */
  artifacts?: ArtifactRecord[];
  /** When the runner first fetched the job's secrets. */
  secretsFetchedAt?: number;
  /** The job group the job belongs to, or null. */
  groupId: number | null;
  /** Optimistic lock: every write requires the version it read and adds one. */
  version: number;
}

type StoredJob = Omit<JobRecord, 'spec'> & { spec: string } & Record<string, unknown>;

/** Raised when a write keeps losing races; the caller may retry the whole request. */
export class ConcurrencyError extends KilnError {
  override name = 'ConcurrencyError';
}

const MAX_TRANSITION_ATTEMPTS = 8;

/** Increments the counter `name` and returns its new value; atomic, so no two callers get the same value. */
export async function nextCounterValue(client: DynamoDBDocumentClient, tableName: string, name: string): Promise<number> {
  const result = await client.send(
    new UpdateCommand({
      TableName: tableName,
      Key: { pk: 'COUNTER', sk: name },
      UpdateExpression: 'ADD #value :one',
      ExpressionAttributeNames: { '#value': 'value' },
      ExpressionAttributeValues: { ':one': 1 },
      ReturnValues: 'UPDATED_NEW',
    }),
  );

  return Number(result.Attributes?.value);
}

function jobKey(id: number) {
  return { pk: `JOB#${id}`, sk: 'JOB' };
}

function paddedId(id: number): string {
  return String(id).padStart(12, '0');
}

function toItem(job: JobRecord): StoredJob {
  const { ownerIndex, activeIndex } = TABLE_KEYS;
  // The manifest is stored as JSON text: a DynamoDB map cannot hold every key
  // a manifest may use (`constructor`, `__proto__`), and JSON round-trips them.
  const { spec, ...rest } = job;
  const item: StoredJob = {
    ...jobKey(job.id),
    ...rest,
    spec: JSON.stringify(spec),
    [ownerIndex.partitionKey]: `JOBS#${job.owner}`,
    [ownerIndex.sortKey]: paddedId(job.id),
  };
  if (!isFinal(job.status)) {
    item[activeIndex.partitionKey] = 'ACTIVE';
    item[activeIndex.sortKey] = paddedId(job.id);
  }

  return item;
}

function fromItem(item: Record<string, unknown>): JobRecord {
  const { pk, sk, gsi1pk, gsi1sk, activePk, activeSk, spec, ...job } = item;
  void pk, sk, gsi1pk, gsi1sk, activePk, activeSk;

  return { ...job, spec: typeof spec === 'string' ? JSON.parse(spec) : spec } as unknown as JobRecord;
}

/** Events: `status` (job, previous status) after every committed status change. */
export class JobStore extends EventEmitter {
  constructor(
    private readonly client: DynamoDBDocumentClient,
    private readonly tableName: string,
  ) {
    super();
  }

  /** Hands out the next job id; one atomic counter, so concurrent submits never share an id. */
  nextJobId(): Promise<number> {
    return nextCounterValue(this.client, this.tableName, 'jobs');
  }

  async create(job: JobRecord): Promise<void> {
    await this.client.send(
      new PutCommand({
        TableName: this.tableName,
        Item: toItem(job),
        ConditionExpression: 'attribute_not_exists(pk)',
      }),
    );
    this.emit('status', job, null);
  }

  async find(id: number): Promise<JobRecord | null> {
    const result = await this.client.send(
      new GetCommand({ TableName: this.tableName, Key: jobKey(id), ConsistentRead: true }),
    );

    return result.Item ? fromItem(result.Item) : null;
  }

  async get(id: number): Promise<JobRecord> {
    const job = await this.find(id);
    if (!job) throw new NotFoundError(`Job ${id} not found`);

    return job;
  }

  /**
   * Applies `change` to the current job and writes the result on condition
   * that no other write came in between. After a conflicting write it retries
   * with a fresh read. `change` throws to reject the move, or returns null to leave the job
   * as it is. Returns the job as written, or as read when nothing changed.
   */
  async transition(id: number, change: (job: JobRecord) => JobRecord | null): Promise<JobRecord> {
    for (let attempt = 0; attempt < MAX_TRANSITION_ATTEMPTS; attempt++) {
      const current = await this.get(id);
      const next = change(structuredClone(current));
      if (next === null) return current;

      const written: JobRecord = { ...next, version: current.version + 1, updatedAt: Date.now() };
      try {
        await this.client.send(
          new PutCommand({
            TableName: this.tableName,
            Item: toItem(written),
            ConditionExpression: '#version = :version',
            ExpressionAttributeNames: { '#version': 'version' },
            ExpressionAttributeValues: { ':version': current.version },
          }),
        );
      } catch (error) {
        if (error instanceof ConditionalCheckFailedException) continue;
        throw error;
      }

      if (written.status !== current.status) this.emit('status', written, current.status);

      return written;
    }

    throw new ConcurrencyError(`Job ${id} changed ${MAX_TRANSITION_ATTEMPTS} times while this request updated it; try again`);
  }

  /**
   * Reads a user's jobs, newest first, starting at id `startId` (inclusive) when
   * given, one index page at a time. Returns the jobs read and whether more remain.
   */
  async *iterateByOwner(owner: string, startId?: number): AsyncGenerator<JobRecord> {
    const { ownerIndex } = TABLE_KEYS;
    let startKey: Record<string, unknown> | undefined;
    do {
      const page = await this.client.send(
        new QueryCommand({
          TableName: this.tableName,
          IndexName: ownerIndex.name,
          KeyConditionExpression:
            startId === undefined ? '#pk = :owner' : '#pk = :owner AND #sk <= :start',
          ExpressionAttributeNames: { '#pk': ownerIndex.partitionKey, ...(startId === undefined ? {} : { '#sk': ownerIndex.sortKey }) },
          ExpressionAttributeValues: { ':owner': `JOBS#${owner}`, ...(startId === undefined ? {} : { ':start': paddedId(startId) }) },
          ScanIndexForward: false,
          ExclusiveStartKey: startKey,
          Limit: 100,
        }),
      );
      for (const item of page.Items ?? []) yield fromItem(item);
      startKey = page.LastEvaluatedKey;
    } while (startKey);
  }

  /** Lists the jobs that have not ended, oldest first. */
  async listActive(): Promise<JobRecord[]> {
    const jobs: JobRecord[] = [];
    let startKey: Record<string, unknown> | undefined;
    do {
      const page = await this.client.send(
        new QueryCommand({
          TableName: this.tableName,
          IndexName: TABLE_KEYS.activeIndex.name,
          KeyConditionExpression: '#pk = :active',
          ExpressionAttributeNames: { '#pk': TABLE_KEYS.activeIndex.partitionKey },
          ExpressionAttributeValues: { ':active': 'ACTIVE' },
          ExclusiveStartKey: startKey,
        }),
      );
      jobs.push(...(page.Items ?? []).map(fromItem));
      startKey = page.LastEvaluatedKey;
    } while (startKey);

    return jobs;
  }
}
