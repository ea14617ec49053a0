import { ConditionalCheckFailedException } from '@aws-sdk/client-dynamodb';
import { PutCommand, UpdateCommand, type DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';

/**
 * Counters of builds holding a running slot, for the whole service and per
 * user. A slot is taken with a conditional increment, so racing dispatchers
 * never exceed a limit, and given back when the job ends.
 */
export class SlotStore {
  constructor(
    private readonly client: DynamoDBDocumentClient,
    private readonly tableName: string,
  ) {}

  /** Takes one service slot and one of `owner`'s; returns false, taking nothing, when either limit is reached. */
  async acquire(owner: string, limits: { maxRunning: number; maxRunningPerUser: number }): Promise<boolean> {
    if (!(await this.increment('ALL', limits.maxRunning))) return false;

    if (!(await this.increment(`USER#${owner}`, limits.maxRunningPerUser))) {
      await this.decrement('ALL');
      return false;
    }

    return true;
  }

  async release(owner: string): Promise<void> {
    await this.decrement(`USER#${owner}`);
    await this.decrement('ALL');
  }

  /** Sets the counters to the given counts, for recovery after a crash between taking a slot and recording it. */
  async reset(runningByOwner: Map<string, number>): Promise<void> {
    let total = 0;
    for (const [owner, count] of runningByOwner) {
      total += count;
      await this.put(`USER#${owner}`, count);
    }
    await this.put('ALL', total);
  }

  private async increment(slot: string, max: number): Promise<boolean> {
    try {
      await this.client.send(
        new UpdateCommand({
          TableName: this.tableName,
          Key: { pk: 'SLOTS', sk: slot },
          UpdateExpression: 'ADD #running :one',
          ConditionExpression: 'attribute_not_exists(#running) OR #running < :max',
          ExpressionAttributeNames: { '#running': 'running' },
          ExpressionAttributeValues: { ':one': 1, ':max': max },
        }),
      );
      return true;
    } catch (error) {
      if (error instanceof ConditionalCheckFailedException) return false;
      throw error;
    }
  }

  private async decrement(slot: string): Promise<void> {
    try {
      await this.client.send(
        new UpdateCommand({
          TableName: this.tableName,
          Key: { pk: 'SLOTS', sk: slot },
          UpdateExpression: 'ADD #running :minusOne',
          ConditionExpression: '#running > :zero',
          ExpressionAttributeNames: { '#running': 'running' },
          ExpressionAttributeValues: { ':minusOne': -1, ':zero': 0 },
        }),
      );
    } catch (error) {
      if (!(error instanceof ConditionalCheckFailedException)) throw error;
    }
  }

  private async put(slot: string, running: number): Promise<void> {
    await this.client.send(
      new PutCommand({ TableName: this.tableName, Item: { pk: 'SLOTS', sk: slot, running } }),
    );
  }
}
