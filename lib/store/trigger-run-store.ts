import { ConditionalCheckFailedException } from '@aws-sdk/client-dynamodb';
import { DeleteCommand, GetCommand, PutCommand, UpdateCommand, type DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';

/**
 * The outcome of a claim on one trigger: `claimed` lets the caller send it,
 * `done` means it was sent (or given up on) before, and `busy` means another
 * delivery holds a live lease on it.
 */
export type TriggerClaim =
  | { kind: 'claimed'; owner: string }
  | { kind: 'done'; outcome: string }
  | { kind: 'busy'; leaseUntil: number };

/** How long finished trigger runs are kept, in seconds. It is far longer than SQS keeps a message (14 days at most). */
const FINISHED_RUN_TTL_SECONDS = 60 * 24 * 3600;

function runKey(scope: string, trigger: string) {
  return { pk: `TRIGGERS#${scope}`, sk: trigger };
}

/**
 * One item per trigger of a job or group, `TRIGGERS#<scope>` / `<trigger>`,
 * such as `TRIGGERS#JOB#12` / `manifest#0`. A sender claims the item with a
 * conditional write and a lease before it sends, and marks it done after,
 * so a redelivered queue message sends nothing twice. A lease that ran out
 * (its sender died) may be claimed again.
 */
export class TriggerRunStore {
  constructor(
    private readonly client: DynamoDBDocumentClient,
    private readonly tableName: string,
  ) {}

  /** Claims a trigger for `owner` until `leaseUntil` (ms since the epoch). */
  async claim(scope: string, trigger: string, owner: string, leaseUntil: number): Promise<TriggerClaim> {
    const now = Date.now();
    try {
      await this.client.send(
        new PutCommand({
          TableName: this.tableName,
          Item: { ...runKey(scope, trigger), state: 'sending', owner, leaseUntil, claimedAt: now },
          ConditionExpression: 'attribute_not_exists(pk) OR (#state = :sending AND leaseUntil < :now)',
          ExpressionAttributeNames: { '#state': 'state' },
          ExpressionAttributeValues: { ':sending': 'sending', ':now': now },
        }),
      );
      return { kind: 'claimed', owner };
    } catch (error) {
      if (!(error instanceof ConditionalCheckFailedException)) throw error;
    }

    const result = await this.client.send(
      new GetCommand({ TableName: this.tableName, Key: runKey(scope, trigger), ConsistentRead: true }),
    );
    const item = result.Item;
    if (item?.state === 'done') return { kind: 'done', outcome: String(item.outcome) };
    if (item?.state === 'sending') return { kind: 'busy', leaseUntil: Number(item.leaseUntil) };

    // The item changed between the write and the read, such as a lease released at that moment.
    return { kind: 'busy', leaseUntil: now };
  }

  /** Marks a claimed trigger done; returns false when `owner` no longer held the claim. */
  async complete(scope: string, trigger: string, owner: string, outcome: string): Promise<boolean> {
    const now = Date.now();
    try {
      await this.client.send(
        new UpdateCommand({
          TableName: this.tableName,
          Key: runKey(scope, trigger),
          UpdateExpression: 'SET #state = :done, outcome = :outcome, finishedAt = :now, expiresAt = :expiresAt REMOVE leaseUntil',
          ConditionExpression: '#owner = :owner',
          ExpressionAttributeNames: { '#state': 'state', '#owner': 'owner' },
          ExpressionAttributeValues: {
            ':done': 'done',
            ':outcome': outcome,
            ':now': now,
            ':owner': owner,
            ':expiresAt': Math.floor(now / 1000) + FINISHED_RUN_TTL_SECONDS,
          },
        }),
      );
      return true;
    } catch (error) {
      if (error instanceof ConditionalCheckFailedException) return false;
      throw error;
    }
  }

  /** Gives a claim up without sending, so that the next delivery may claim the trigger at once. */
  async release(scope: string, trigger: string, owner: string): Promise<void> {
    try {
      await this.client.send(
        new DeleteCommand({
          TableName: this.tableName,
          Key: runKey(scope, trigger),
          ConditionExpression: '#owner = :owner AND #state = :sending',
          ExpressionAttributeNames: { '#owner': 'owner', '#state': 'state' },
          ExpressionAttributeValues: { ':owner': owner, ':sending': 'sending' },
        }),
      );
    } catch (error) {
      if (!(error instanceof ConditionalCheckFailedException)) throw error;
    }
  }
}
