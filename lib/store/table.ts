import {
  CreateTableCommand,
  DescribeTableCommand,
  ResourceNotFoundException,
  type CreateTableCommandInput,
  type DynamoDBClient,
} from '@aws-sdk/client-dynamodb';
import { QueryCommand, type DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';

/**
 * Kiln keeps every record in one table keyed by `pk` and `sk`:
 *
 * - `JOB#<id>` / `JOB`: a job with its tasks inside the item, so that each state
 *   change is one conditional write (dynalite has no transactions).
 * - `TOKEN#<sha-256 of the token>` / `TOKEN`: an API token.
 * - `COUNTER` / `jobs`: the last job id handed out.
 * - `SLOTS` / `ALL` and `SLOTS` / `USER#<name>`: builds holding a running slot.
 * - `TRIGGERS#JOB#<id>` or `TRIGGERS#GROUP#<id>` / `<source>#<index>`: whether one
 *   trigger of a job or group was sent, so a redelivered message sends nothing twice.
 *
 * Index `byOwner` (`gsi1pk`, `gsi1sk`) lists a user's jobs and tokens; index
 * `active` (`activePk`, `activeSk`) is sparse and lists the jobs that have not ended.
 */
export const TABLE_KEYS = {
  partitionKey: 'pk',
  sortKey: 'sk',
  ownerIndex: { name: 'byOwner', partitionKey: 'gsi1pk', sortKey: 'gsi1sk' },
  activeIndex: { name: 'active', partitionKey: 'activePk', sortKey: 'activeSk' },
  timeToLive: 'expiresAt',
} as const;

export function tableDefinition(tableName: string): CreateTableCommandInput {
  const { ownerIndex, activeIndex } = TABLE_KEYS;

  return {
    TableName: tableName,
    BillingMode: 'PAY_PER_REQUEST',
    AttributeDefinitions: [
      { AttributeName: 'pk', AttributeType: 'S' },
      { AttributeName: 'sk', AttributeType: 'S' },
      { AttributeName: ownerIndex.partitionKey, AttributeType: 'S' },
      { AttributeName: ownerIndex.sortKey, AttributeType: 'S' },
      { AttributeName: activeIndex.partitionKey, AttributeType: 'S' },
      { AttributeName: activeIndex.sortKey, AttributeType: 'S' },
    ],
    KeySchema: [
      { AttributeName: 'pk', KeyType: 'HASH' },
      { AttributeName: 'sk', KeyType: 'RANGE' },
    ],
    GlobalSecondaryIndexes: [ownerIndex, activeIndex].map((index) => ({
      IndexName: index.name,
      KeySchema: [
        { AttributeName: index.partitionKey, KeyType: 'HASH' },
        { AttributeName: index.sortKey, KeyType: 'RANGE' },
      ],
      Projection: { ProjectionType: 'ALL' },
    })),
  };
}

/** Reads every item of one partition of the `byOwner` index, following the pages, in sort key order. */
export async function queryOwnerIndex(
  client: DynamoDBDocumentClient,
  tableName: string,
  partition: string,
): Promise<Array<Record<string, unknown>>> {
  const items: Array<Record<string, unknown>> = [];
  let startKey: Record<string, unknown> | undefined;
  do {
    const page = await client.send(
      new QueryCommand({
        TableName: tableName,
        IndexName: TABLE_KEYS.ownerIndex.name,
        KeyConditionExpression: '#pk = :partition',
        ExpressionAttributeNames: { '#pk': TABLE_KEYS.ownerIndex.partitionKey },
        ExpressionAttributeValues: { ':partition': partition },
        ExclusiveStartKey: startKey,
      }),
    );
    items.push(...(page.Items ?? []));
    startKey = page.LastEvaluatedKey;
  } while (startKey);

  return items;
}

/** Creates the table unless it exists; used by the local stack and tests. */
export async function ensureTable(client: DynamoDBClient, tableName: string): Promise<void> {
  try {
    await client.send(new DescribeTableCommand({ TableName: tableName }));
    return;
  } catch (error) {
    if (!(error instanceof ResourceNotFoundException)) throw error;
  }

  await client.send(new CreateTableCommand(tableDefinition(tableName)));
}
