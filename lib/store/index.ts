import { DynamoDBClient, type DynamoDBClientConfig } from '@aws-sdk/client-dynamodb';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { GroupStore } from './group-store.js';
import { JobStore } from './job-store.js';
import { LockStore } from './lock-store.js';
import { SecretStore } from './secret-store.js';
import { SlotStore } from './slot-store.js';
import { TokenStore } from './token-store.js';
import { TriggerRunStore } from './trigger-run-store.js';

export { ConcurrencyError, JobStore, type ArtifactRecord, type JobRecord, type TaskRecord } from './job-store.js';
export { GroupStore, type GroupRecord } from './group-store.js';
export { LockStore } from './lock-store.js';
export { DuplicateSecretNameError, SecretStore, type SecretRecord } from './secret-store.js';
export { SlotStore } from './slot-store.js';
export { TokenStore, type TokenRecord } from './token-store.js';
export { TriggerRunStore, type TriggerClaim } from './trigger-run-store.js';
export { ensureTable, tableDefinition, TABLE_KEYS } from './table.js';

/** The stores over one table. */
export interface Stores {
  dynamodb: DynamoDBClient;
  jobs: JobStore;
  groups: GroupStore;
  tokens: TokenStore;
  secrets: SecretStore;
  slots: SlotStore;
  locks: LockStore;
  triggerRuns: TriggerRunStore;
}

export function createStores(tableName: string, config: DynamoDBClientConfig = {}): Stores {
  const dynamodb = new DynamoDBClient(config);
  const documents = DynamoDBDocumentClient.from(dynamodb, {
    marshallOptions: { removeUndefinedValues: true, convertClassInstanceToMap: false },
  });

  return {
    dynamodb,
    jobs: new JobStore(documents, tableName),
    groups: new GroupStore(documents, tableName),
    tokens: new TokenStore(documents, tableName),
    secrets: new SecretStore(documents, tableName),
    slots: new SlotStore(documents, tableName),
    locks: new LockStore(documents, tableName),
    triggerRuns: new TriggerRunStore(documents, tableName),
  };
}
