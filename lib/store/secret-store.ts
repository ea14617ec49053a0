import { ConditionalCheckFailedException } from '@aws-sdk/client-dynamodb';
import { DeleteCommand, GetCommand, PutCommand, type DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import type { SecretType } from '../runner/protocol.js';
import type { EncryptedValue } from '../secrets/cipher.js';
import { queryOwnerIndex, TABLE_KEYS } from './table.js';

/** A user's secret as stored; the value only encrypted. */
export interface SecretRecord {
  id: string;
  owner: string;
  name: string;
  type: SecretType;
  /** For `plaintext_file`: where the runner writes it. */
  path: string | null;
  /** For `plaintext_file`: the file mode. */
  mode: number | null;
  value: EncryptedValue;
  createdAt: number;
}

/** Raised when the owner already has a secret of that name. */
export class DuplicateSecretNameError extends Error {
  override name = 'DuplicateSecretNameError';
}

function secretKey(id: string) {
  return { pk: `SECRET#${id}`, sk: 'SECRET' };
}

function nameKey(owner: string, name: string) {
  return { pk: `SECRETNAME#${owner}#${name}`, sk: 'SECRETNAME' };
}

export class SecretStore {
  constructor(
    private readonly client: DynamoDBDocumentClient,
    private readonly tableName: string,
  ) {}

  /**
   * Stores a secret. A pointer item claims the name first, with a
   * conditional write, so two secrets of one owner never share a name.
   */
  async create(secret: SecretRecord): Promise<void> {
    try {
      await this.client.send(
        new PutCommand({
          TableName: this.tableName,
          Item: { ...nameKey(secret.owner, secret.name), id: secret.id },
          ConditionExpression: 'attribute_not_exists(pk)',
        }),
      );
    } catch (error) {
      if (error instanceof ConditionalCheckFailedException) {
        throw new DuplicateSecretNameError(`You already have a secret named "${secret.name}"`);
      }
      throw error;
    }

    const { ownerIndex } = TABLE_KEYS;
    await this.client.send(
      new PutCommand({
        TableName: this.tableName,
        Item: {
          ...secretKey(secret.id),
          ...secret,
          [ownerIndex.partitionKey]: `SECRETS#${secret.owner}`,
          [ownerIndex.sortKey]: `${String(secret.createdAt).padStart(15, '0')}#${secret.id}`,
        },
      }),
    );
  }

  async findById(id: string): Promise<SecretRecord | null> {
    const result = await this.client.send(
      new GetCommand({ TableName: this.tableName, Key: secretKey(id), ConsistentRead: true }),
    );

    return result.Item ? fromItem(result.Item) : null;
  }

  async findByName(owner: string, name: string): Promise<SecretRecord | null> {
    const pointer = await this.client.send(
      new GetCommand({ TableName: this.tableName, Key: nameKey(owner, name), ConsistentRead: true }),
    );
    if (!pointer.Item) return null;

    return this.findById(String(pointer.Item.id));
  }

  /** Lists an owner's secrets, oldest first. */
  async listByOwner(owner: string): Promise<SecretRecord[]> {
    const items = await queryOwnerIndex(this.client, this.tableName, `SECRETS#${owner}`);

    return items.map(fromItem);
  }

  async delete(secret: SecretRecord): Promise<void> {
    await this.client.send(new DeleteCommand({ TableName: this.tableName, Key: secretKey(secret.id) }));
    await this.client.send(new DeleteCommand({ TableName: this.tableName, Key: nameKey(secret.owner, secret.name) }));
  }
}

function fromItem(item: Record<string, unknown>): SecretRecord {
  return {
    id: String(item.id),
    owner: String(item.owner),
    name: String(item.name),
    type: item.type as SecretType,
    path: item.path == null ? null : String(item.path),
    mode: item.mode == null ? null : Number(item.mode),
    value: item.value as EncryptedValue,
    createdAt: Number(item.createdAt),
  };
}
