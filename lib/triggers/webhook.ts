import { lookup } from 'node:dns/promises';
import http from 'node:http';
import https from 'node:https';
import { isIP, type LookupFunction } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { addressRejection } from './address-policy.js';

/** One address of a host name, as `dns.lookup` returns it. */
export interface ResolvedAddress {
  address: string;
  family: 4 | 6;
}

/** Resolves a host name to its addresses; tests inject one that returns made-up addresses. */
export type HostResolver = (hostname: string) => Promise<ResolvedAddress[]>;

/** Resolves through the system resolver, as a plain connection would. */
export const systemResolver: HostResolver = async (hostname) => {
  const addresses = await lookup(hostname, { all: true, verbatim: true });

  return addresses.map((entry) => ({ address: entry.address, family: entry.family === 6 ? 6 : 4 }));
};

export interface WebhookRequestOptions {
  resolveHost: HostResolver;
  /** Whether loopback, private and other non-public addresses may be reached. */
  allowPrivate: boolean;
  /** Limit of one attempt, from resolving to the response headers, in ms. */
  timeoutMs: number;
}

/** Outcome of one attempt. `rejected` is an address check that failed, before anything was sent. */
export type AttemptOutcome =
  | { kind: 'delivered'; status: number }
  | { kind: 'rejected'; reason: string }
  | { kind: 'failed'; reason: string; retry: boolean };

/** Describes a URL for logs without its user info, query and fragment, which may carry credentials. */
export function describeUrl(url: string): string {
  try {
    const parsed = new URL(url);
    return `${parsed.origin}${parsed.pathname}`;
  } catch {
    return '(invalid URL)';
  }
}

/**
 * Resolves the URL's host and checks every address it has, so that a name
 * with one private address among public ones is rejected too. Returns the
 * address to connect to, or why none may be used.
 */
export async function resolveWebhookTarget(
  url: URL,
  options: WebhookRequestOptions,
): Promise<{ target: ResolvedAddress } | { rejected: string } | { failed: string }> {
  const hostname = url.hostname.replace(/^\[(.*)\]$/, '$1');
  let addresses: ResolvedAddress[];
  if (isIP(hostname) !== 0) {
    addresses = [{ address: hostname, family: isIP(hostname) === 6 ? 6 : 4 }];
  } else {
    try {
      addresses = await options.resolveHost(hostname);
    } catch (error) {
      return { failed: `failed to resolve ${hostname}: ${(error as Error).message}` };
    }
  }
  if (addresses.length === 0) return { failed: `failed to resolve ${hostname}: no addresses` };

  for (const entry of addresses) {
    const reason = addressRejection(entry.address, options.allowPrivate);
    if (reason !== null) {
      const via = entry.address === hostname ? '' : ` (${hostname} resolves to ${entry.address})`;
      return { rejected: `rejected${via}: ${reason}` };
    }
  }

  return { target: addresses[0] };
}

/** A lookup function for `http.request` that returns the checked address, whatever name it is asked for. */
function pinnedLookup(target: ResolvedAddress): LookupFunction {
  return (_hostname, options, callback) => {
    if (options.all) {
      (callback as (error: null, addresses: ResolvedAddress[]) => void)(null, [target]);
    } else {
      callback(null, target.address, target.family);
    }
  };
}

/**
 * POSTs `body` once to `url`, connecting only to the address that passed
 * the check, so a DNS answer that changes between check and connect cannot
 * redirect the request. The Host header and the TLS server name are still
 * the URL's host. Redirects are not followed.
 */
export async function postWebhookOnce(
  url: string,
  body: Buffer,
  headers: Record<string, string>,
  options: WebhookRequestOptions,
): Promise<AttemptOutcome> {
  const parsed = new URL(url);
  const deadline = AbortSignal.timeout(options.timeoutMs);
  const resolved = await Promise.race([
    resolveWebhookTarget(parsed, options),
    new Promise<{ failed: string }>((resolve) =>
      deadline.addEventListener('abort', () => resolve({ failed: `timed out after ${options.timeoutMs} ms while resolving the host` })),
    ),
  ]);
  if ('rejected' in resolved) return { kind: 'rejected', reason: resolved.rejected };
  if ('failed' in resolved) return { kind: 'failed', reason: resolved.failed, retry: true };

  try {
    const status = await sendRequest(parsed, resolved.target, body, headers, deadline, options.timeoutMs);
    if (status >= 200 && status < 300) return { kind: 'delivered', status };
    if (status >= 300 && status < 400) return { kind: 'failed', reason: `HTTP ${status}; redirects are not followed`, retry: false };

    return { kind: 'failed', reason: `HTTP ${status}`, retry: status >= 500 || status === 408 || status === 429 };
  } catch (error) {
    return { kind: 'failed', reason: (error as Error).message, retry: true };
  }
}

function sendRequest(
  url: URL,
  target: ResolvedAddress,
  body: Buffer,
  headers: Record<string, string>,
  deadline: AbortSignal,
  timeoutMs: number,
): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    const client = url.protocol === 'https:' ? https : http;
    const request = client.request(url, {
      method: 'POST',
      headers: { ...headers, 'content-length': String(body.length) },
      agent: false,
      lookup: pinnedLookup(target),
    });
    const onTimeout = () => request.destroy(new Error(`timed out after ${timeoutMs} ms`));
    deadline.addEventListener('abort', onTimeout, { once: true });

    request.on('response', (response) => {
      resolve(response.statusCode ?? 0);
      // The body is not used; reading it lets the connection close, and the deadline still cuts an endless one.
      response.resume();
      response.on('close', () => deadline.removeEventListener('abort', onTimeout));
    });
    request.on('error', (error) => {
      deadline.removeEventListener('abort', onTimeout);
      reject(error);
    });
    request.end(body);
  });
}

export interface WebhookDeliveryOptions extends WebhookRequestOptions {
  /** Pauses before the second, third, ... attempt, in ms; their count plus one is the number of attempts. */
  retryDelaysMs: readonly number[];
  /** Builds the headers of each attempt, so that each gets its own nonce. */
  headers: () => Record<string, string>;
  /** Called after each attempt, for the setup log. */
  onAttempt: (attempt: number, attempts: number, outcome: AttemptOutcome) => Promise<void>;
}

/**
 * Delivers a webhook with retries. A network error, a timeout, HTTP 408, 429
 * or 5xx is tried again after the next delay. A rejected address, a redirect
 * or another 4xx ends the delivery at once. Returns the last outcome.
 */
export async function deliverWebhook(url: string, body: Buffer, options: WebhookDeliveryOptions): Promise<AttemptOutcome> {
  const attempts = options.retryDelaysMs.length + 1;
  let outcome: AttemptOutcome = { kind: 'failed', reason: 'not attempted', retry: false };
  for (let attempt = 1; attempt <= attempts; attempt++) {
    if (attempt > 1) await sleep(options.retryDelaysMs[attempt - 2]);

    outcome = await postWebhookOnce(url, body, options.headers(), options);
    await options.onAttempt(attempt, attempts, outcome);
    if (outcome.kind !== 'failed' || !outcome.retry) break;
  }

  return outcome;
}
