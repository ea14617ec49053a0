import { AuthenticationError } from '../errors.js';
import type { Logger } from '../logger.js';
import { hashToken, SCOPES, type Principal } from './tokens.js';

/** How long an introspection result is reused, so a burst of requests costs one call. */
export const INTROSPECTION_CACHE_MS = 30_000;
const MAX_CACHE_ENTRIES = 10_000;
const INTROSPECTION_TIMEOUT_MS = 5_000;

/** SourceHut's OAuth 2.0 grants for builds, mapped to Kiln's scopes. */
const SOURCEHUT_GRANTS: Record<string, string[]> = {
  'JOBS:RO': ['jobs:read'],
  'JOBS:RW': ['jobs:read', 'jobs:write'],
  'SECRETS:RO': ['secrets:read'],
  'SECRETS:RW': ['secrets:read', 'secrets:write'],
};

/**
 * Maps an introspection `scope` string to Kiln's scopes. It accepts Kiln's own
 * names (`jobs:read`) and SourceHut's grants with or without the service
 * prefix (`builds.sr.ht/JOBS:RW`, `JOBS:RW`); other scopes are ignored.
 */
export function mapIntrospectedScopes(scope: unknown): string[] {
  if (typeof scope !== 'string') return [];

  const scopes = new Set<string>();
  for (const entry of scope.split(/\s+/).filter(Boolean)) {
    if ((SCOPES as readonly string[]).includes(entry)) scopes.add(entry);
    const grant = entry.replace(/^[a-z.]+\//, '').toUpperCase();
    for (const mapped of SOURCEHUT_GRANTS[grant] ?? []) scopes.add(mapped);
  }

  return [...scopes];
}

interface CacheEntry {
  principal: Principal | AuthenticationError;
  until: number;
}

/** Validates bearer tokens by OAuth 2.0 token introspection (RFC 7662) with a short cache. */
export class TokenIntrospector {
  private readonly cache = new Map<string, CacheEntry>();
  /** Introspection calls under way by token hash, so that concurrent requests with one token share a call. */
  private readonly inFlight = new Map<string, Promise<CacheEntry>>();

  constructor(
    private readonly url: string,
    private readonly logger: Logger,
    private readonly fetchImpl: typeof fetch = fetch,
  ) {}

  async introspect(token: string, now = Date.now()): Promise<Principal> {
    const key = hashToken(token);
    const cached = this.cache.get(key);
    if (cached && cached.until > now) {
      if (cached.principal instanceof AuthenticationError) throw cached.principal;
      return cached.principal;
    }

    let pending = this.inFlight.get(key);
    if (!pending) {
      pending = this.request(token, now).finally(() => this.inFlight.delete(key));
      this.inFlight.set(key, pending);
    }
    const result = await pending;
    if (this.cache.size >= MAX_CACHE_ENTRIES) this.cache.clear();
    this.cache.set(key, result);
    if (result.principal instanceof AuthenticationError) throw result.principal;

    return result.principal;
  }

  private async request(token: string, now: number): Promise<CacheEntry> {
    let body: Record<string, unknown>;
    try {
      const response = await this.fetchImpl(this.url, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
        body: new URLSearchParams({ token, token_type_hint: 'access_token' }).toString(),
        signal: AbortSignal.timeout(INTROSPECTION_TIMEOUT_MS),
      });
      if (!response.ok) throw new Error(`introspection endpoint returned HTTP ${response.status}`);
      const parsed: unknown = await response.json();
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
        throw new Error('introspection endpoint returned JSON that is not an object');
      }
      body = parsed as Record<string, unknown>;
    } catch (error) {
      this.logger.error({ err: error }, 'token introspection failed');
      // Not cached: the next request tries again.
      throw new AuthenticationError('The token could not be checked: the OAuth introspection endpoint failed; try again');
    }

    const until = now + INTROSPECTION_CACHE_MS;
    if (body.active !== true) return { principal: new AuthenticationError('This token is not active: it is unknown, revoked or expired'), until };
    if (typeof body.exp === 'number' && body.exp * 1000 <= now) {
      return { principal: new AuthenticationError('This token expired'), until };
    }
    if (typeof body.username !== 'string' || body.username === '') {
      return { principal: new AuthenticationError('The introspection response names no username for this token'), until };
    }

    const expiry = typeof body.exp === 'number' ? Math.min(until, body.exp * 1000) : until;
    return {
      principal: { user: body.username.replace(/^~/, ''), scopes: mapIntrospectedScopes(body.scope) },
      until: expiry,
    };
  }
}
