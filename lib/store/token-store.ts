import { GetCommand, PutCommand, UpdateCommand, type DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { queryOwnerIndex, TABLE_KEYS } from './table.js';

/** An API token as stored: only its SHA-256 hash, never the token. */
export interface TokenRecord {
  /** Public id, for listing and revoking. */
  id: string;
  hash: string;
  user: string;
  scopes: string[];
  createdAt: number;
  /** ms since the epoch, or null for no expiry. */
  expiresAt: number | null;
  revokedAt: number | null;
}

function tokenKey(hash: string) {
  return { pk: `TOKEN#${hash}`, sk: 'TOKEN' };
}

export class TokenStore {
  constructor(
    private readonly client: DynamoDBDocumentClient,
    private readonly tableName: string,
  ) {}

  /**
   * Stores a token and a pointer from its public id to its hash. The pointer is
   * written first, so a failure in between leaves only a harmless dangling pointer.
   */
  async create(token: TokenRecord): Promise<void> {
    const { ownerIndex } = TABLE_KEYS;
    await this.client.send(
      new PutCommand({
        TableName: this.tableName,
        Item: { pk: `TOKENID#${token.id}`, sk: 'TOKENID', hash: token.hash },
        ConditionExpression: 'attribute_not_exists(pk)',
      }),
    );
    await this.client.send(
      new PutCommand({
        TableName: this.tableName,
        Item: {
          ...tokenKey(token.hash),
          ...token,
          // The token's expiry is not the table's TTL attribute, so an expired token stays listable.
          tokenExpiresAt: token.expiresAt,
          expiresAt: undefined,
          revokedAt: token.revokedAt ?? undefined,
          [ownerIndex.partitionKey]: `TOKENS#${token.user}`,
          [ownerIndex.sortKey]: `${String(token.createdAt).padStart(15, '0')}#${token.id}`,
        },
        ConditionExpression: 'attribute_not_exists(pk)',
      }),
    );
  }

  async findByHash(hash: string): Promise<TokenRecord | null> {
    const result = await this.client.send(
      new GetCommand({ TableName: this.tableName, Key: tokenKey(hash), ConsistentRead: true }),
    );

    return result.Item ? fromItem(result.Item) : null;
  }

  async findById(id: string): Promise<TokenRecord | null> {
    const pointer = await this.client.send(
      new GetCommand({ TableName: this.tableName, Key: { pk: `TOKENID#${id}`, sk: 'TOKENID' }, ConsistentRead: true }),
    );
    if (!pointer.Item) return null;

    return this.findByHash(String(pointer.Item.hash));
  }

  /** Lists a user's tokens, oldest first. */
  async listByUser(user: string): Promise<TokenRecord[]> {
    const items = await queryOwnerIndex(this.client, this.tableName, `TOKENS#${user}`);

    return items.map(fromItem);
  }

  async revoke(hash: string, at: number): Promise<void> {
    await this.client.send(
      new UpdateCommand({
        TableName: this.tableName,
        Key: tokenKey(hash),
        UpdateExpression: 'SET revokedAt = :at',
        ConditionExpression: 'attribute_exists(pk) AND attribute_not_exists(revokedAt)',
        ExpressionAttributeValues: { ':at': at },
      }),
    );
  }
}

function fromItem(item: Record<string, unknown>): TokenRecord {
  return {
    id: String(item.id),
    hash: String(item.hash),
    user: String(item.user),
    scopes: (item.scopes as string[]) ?? [],
    createdAt: Number(item.createdAt),
    expiresAt: item.tokenExpiresAt == null ? null : Number(item.tokenExpiresAt),
    revokedAt: item.revokedAt == null ? null : Number(item.revokedAt),
  };
}
