import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { AuthenticationError, ForbiddenError, ValidationError } from '../errors.js';
import type { TokenRecord, TokenStore } from '../store/token-store.js';

export const SCOPES = ['jobs:read', 'jobs:write', 'secrets:read', 'secrets:write'] as const;
export type Scope = (typeof SCOPES)[number];

/** The user behind a request and what its token may do. */
export interface Principal {
  user: string;
  scopes: readonly string[];
}

const USER_NAME = /^[a-z_][a-z0-9_-]{0,63}$/;

export function hashToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

/** Creates a random token with a recognizable prefix; 32 random bytes. */
export function generateToken(prefix = 'kiln'): string {
  return `${prefix}_${randomBytes(32).toString('base64url')}`;
}

/** Validates a user name the way build.sr.ht's account names work: lowercase, digits, `_` and `-`. */
export function validateUserName(name: string): string {
  const user = name.startsWith('~') ? name.slice(1) : name;
  if (!USER_NAME.test(user)) {
    throw ValidationError.of(
      'user',
      `"${name}" is not a valid user name: use 1 to 64 lowercase letters, digits, "_" or "-", starting with a letter or "_"`,
    );
  }

  return user;
}

export function parseScopes(value: string): Scope[] {
  const scopes = value
    .split(/[\s,]+/)
    .map((scope) => scope.trim())
    .filter(Boolean);
  for (const scope of scopes) {
    if (!(SCOPES as readonly string[]).includes(scope)) {
      throw ValidationError.of('scopes', `"${scope}" is not a scope; use one or more of ${SCOPES.join(', ')}`);
    }
  }
  if (scopes.length === 0) {
    throw ValidationError.of('scopes', `no scope given; use one or more of ${SCOPES.join(', ')}`);
  }

  return [...new Set(scopes)] as Scope[];
}

/** Creates a token, stores its hash, and returns the token itself, which is shown once and never stored. */
export async function createToken(
  store: TokenStore,
  options: { user: string; scopes: Scope[]; expiresAt?: number | null },
): Promise<{ token: string; record: TokenRecord }> {
  const token = generateToken();
  const record: TokenRecord = {
    id: randomUUID(),
    hash: hashToken(token),
    user: validateUserName(options.user),
    scopes: options.scopes,
    createdAt: Date.now(),
    expiresAt: options.expiresAt ?? null,
    revokedAt: null,
  };
  await store.create(record);

  return { token, record };
}

/** A token from an `Authorization` header and the scheme it came with. */
export interface PresentedToken {
  scheme: 'token' | 'bearer';
  token: string;
}

/**
 * Reads the token from an `Authorization` header, in either form that
 * build.sr.ht clients send: `token X` or `Bearer X`. Returns null when the header is absent.
 */
export function readPresentedToken(header: string | undefined): PresentedToken | null {
  if (header === undefined || header.trim() === '') return null;

  const match = /^\s*(token|bearer)\s+(\S+)\s*$/i.exec(header);
  if (!match) {
    throw new AuthenticationError(
      'Malformed Authorization header: send "Authorization: token <your token>" or "Authorization: Bearer <your token>"',
    );
  }

  return { scheme: match[1].toLowerCase() as PresentedToken['scheme'], token: match[2] };
}

export function readAuthorizationHeader(header: string | undefined): string | null {
  return readPresentedToken(header)?.token ?? null;
}

/** Looks up a token by its hash and rejects unknown, revoked and expired ones. */
export async function authenticateToken(store: TokenStore, token: string, now = Date.now()): Promise<Principal> {
  const record = await store.findByHash(hashToken(token));
  if (!record) throw new AuthenticationError('Unknown token: check it, or create a new one with "kiln token create"');
  if (record.revokedAt !== null) throw new AuthenticationError('This token was revoked: create a new one');
  if (record.expiresAt !== null && record.expiresAt <= now) {
    throw new AuthenticationError(`This token expired at ${new Date(record.expiresAt).toISOString()}: create a new one`);
  }

  return { user: record.user, scopes: record.scopes };
}

export function requireScope(principal: Principal, scope: Scope): void {
  if (!principal.scopes.includes(scope)) {
    throw new ForbiddenError(`This token lacks the scope ${scope}; create a token with it`);
  }
}
