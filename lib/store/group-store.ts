import { GetCommand, PutCommand, UpdateCommand, type DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import type { Trigger } from '../manifest/types.js';
import { nextCounterValue } from './job-store.js';

/** A job group: jobs that start together and whose triggers run once all of them have ended. */
export interface GroupRecord {
  id: number;
  owner: string;
  note: string | null;
  triggers: Trigger[];
  jobIds: number[];
  createdAt: number;
  /** When the group's triggers ran, ms since the epoch; null until every job has ended. */
  triggersRunAt: number | null;
}

function groupKey(id: number) {
  return { pk: `GROUP#${id}`, sk: 'GROUP' };
}

export class GroupStore {
  constructor(
    private readonly client: DynamoDBDocumentClient,
    private readonly tableName: string,
  ) {}

  nextGroupId(): Promise<number> {
    return nextCounterValue(this.client, this.tableName, 'groups');
  }

  async create(group: GroupRecord): Promise<void> {
    await this.client.send(
      new PutCommand({
        TableName: this.tableName,
        Item: { ...groupKey(group.id), ...group },
        ConditionExpression: 'attribute_not_exists(pk)',
      }),
    );
  }

  async find(id: number): Promise<GroupRecord | null> {
    const result = await this.client.send(
      new GetCommand({ TableName: this.tableName, Key: groupKey(id), ConsistentRead: true }),
    );
    if (!result.Item) return null;

    const { pk, sk, ...group } = result.Item;
    void pk, sk;
    return group as GroupRecord;
  }

  /** Records that the group's triggers ran; returns false when another caller recorded it first. */
  async markTriggersRun(id: number, at: number): Promise<boolean> {
    try {
      await this.client.send(
        new UpdateCommand({
          TableName: this.tableName,
          Key: groupKey(id),
          UpdateExpression: 'SET triggersRunAt = :at',
          ConditionExpression: 'attribute_exists(pk) AND triggersRunAt = :unset',
          ExpressionAttributeValues: { ':at': at, ':unset': null },
        }),
      );
      return true;
    } catch (error) {
      if ((error as Error).name === 'ConditionalCheckFailedException') return false;
      throw error;
    }
  }
}
