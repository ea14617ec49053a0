import { isIPv4, isIPv6 } from 'node:net';

/**
 * What an IP address is, as far as webhook delivery cares. `metadata` and
 * `link-local` addresses are never reached; `public` always may be; the
 * rest only when private targets are allowed.
 */
export type AddressCategory =
  | 'public'
  | 'loopback'
  | 'private'
  | 'unspecified'
  | 'multicast'
  | 'reserved'
  | 'link-local'
  | 'metadata'
  | 'invalid';

/** Categories that webhooks never reach, whatever the settings say. */
const ALWAYS_REJECTED: ReadonlySet<AddressCategory> = new Set(['metadata', 'link-local', 'invalid']);

/** Categories that webhooks reach only when KILN_WEBHOOK_ALLOW_PRIVATE is true. */
const PRIVATE_CATEGORIES: ReadonlySet<AddressCategory> = new Set(['loopback', 'private', 'unspecified', 'multicast', 'reserved']);

const CATEGORY_NAMES: Record<AddressCategory, string> = {
  public: 'a public address',
  loopback: 'a loopback address',
  private: 'a private address',
  unspecified: 'an unspecified address',
  multicast: 'a multicast address',
  reserved: 'a reserved address',
  'link-local': 'a link-local address',
  metadata: 'a cloud metadata address',
  invalid: 'not an IP address',
};

interface Range {
  /** Network address as bytes: 4 for IPv4, 16 for IPv6. */
  network: Uint8Array;
  prefixLength: number;
  category: AddressCategory;
}

function range(cidr: string, category: AddressCategory): Range {
  const [address, prefix] = cidr.split('/');
  const network = isIPv4(address) ? parseIPv4(address) : parseIPv6(address);
  if (network === null) throw new Error(`invalid range ${cidr}`);

  return { network, prefixLength: Number(prefix), category };
}

/** IPv4 ranges, the narrower before the wider ones that contain them. */
const IPV4_RANGES: readonly Range[] = [
  // EC2 instance metadata (also used by other clouds) and the ECS task metadata and credentials endpoint.
  range('169.254.169.254/32', 'metadata'),
  range('169.254.170.2/32', 'metadata'),
  range('169.254.0.0/16', 'link-local'),
  // On Linux a connection to any address in 0.0.0.0/8 reaches this host.
  range('0.0.0.0/8', 'unspecified'),
  range('10.0.0.0/8', 'private'),
  range('100.64.0.0/10', 'private'),
  range('127.0.0.0/8', 'loopback'),
  range('172.16.0.0/12', 'private'),
  range('192.0.0.0/24', 'reserved'),
  range('192.0.2.0/24', 'reserved'),
  range('192.88.99.0/24', 'reserved'),
  range('192.168.0.0/16', 'private'),
  range('198.18.0.0/15', 'reserved'),
  range('198.51.100.0/24', 'reserved'),
  range('203.0.113.0/24', 'reserved'),
  range('224.0.0.0/4', 'multicast'),
  // 240.0.0.0/4 is reserved for future use and contains the broadcast address 255.255.255.255.
  range('240.0.0.0/4', 'reserved'),
];

/** IPv6 ranges that carry no IPv4 address, the narrower before the wider ones that contain them. */
const IPV6_RANGES: readonly Range[] = [
  range('::/128', 'unspecified'),
  range('::1/128', 'loopback'),
  // AWS serves instance metadata (fd00:ec2::254), DNS and time sync from this network on Nitro instances.
  range('fd00:ec2::/64', 'metadata'),
  range('64:ff9b:1::/48', 'private'),
  range('100::/64', 'reserved'),
  range('2001:db8::/32', 'reserved'),
  range('fc00::/7', 'private'),
  range('fe80::/10', 'link-local'),
  range('fec0::/10', 'private'),
  range('ff00::/8', 'multicast'),
];

/**
 * IPv6 prefixes whose addresses carry an IPv4 address that a connection
 * reaches in the end; such an address gets the category of its IPv4 address.
 */
const IPV4_CARRYING_PREFIXES: ReadonlyArray<{ range: Range; offset: number }> = [
  // IPv4-mapped, ::ffff:a.b.c.d.
  { range: range('::ffff:0:0/96', 'public'), offset: 12 },
  // IPv4-translated (RFC 2765), ::ffff:0:a.b.c.d.
  { range: range('::ffff:0:0:0/96', 'public'), offset: 12 },
  // IPv4-compatible (deprecated), ::a.b.c.d; :: and ::1 are matched before this.
  { range: range('::/96', 'public'), offset: 12 },
  // The NAT64 well-known prefix (RFC 6052).
  { range: range('64:ff9b::/96', 'public'), offset: 12 },
  // 6to4 (RFC 3056), 2002:AABB:CCDD::/48.
  { range: range('2002::/16', 'public'), offset: 2 },
];

function parseIPv4(text: string): Uint8Array | null {
  if (!isIPv4(text)) return null;

  return Uint8Array.from(text.split('.').map(Number));
}

/** Parses an IPv6 address, with or without a zone index (`%eth0`) and an embedded IPv4 tail, into 16 bytes. */
function parseIPv6(text: string): Uint8Array | null {
  const address = text.split('%')[0];
  if (!isIPv6(address)) return null;

  let groups = address.split(':');
  const tail = groups[groups.length - 1];
  if (tail.includes('.')) {
    const ipv4 = parseIPv4(tail);
    if (ipv4 === null) return null;
    groups = [...groups.slice(0, -1), ((ipv4[0] << 8) | ipv4[1]).toString(16), ((ipv4[2] << 8) | ipv4[3]).toString(16)];
  }

  const gap = groups.indexOf('');
  if (gap !== -1) {
    const head = groups.slice(0, gap).filter((group) => group !== '');
    const rest = groups.slice(gap).filter((group) => group !== '');
    groups = [...head, ...new Array<string>(8 - head.length - rest.length).fill('0'), ...rest];
  }

  const bytes = new Uint8Array(16);
  groups.forEach((group, index) => {
    const value = parseInt(group, 16);
    bytes[index * 2] = value >> 8;
    bytes[index * 2 + 1] = value & 0xff;
  });

  return bytes;
}

function inRange(bytes: Uint8Array, candidate: Range): boolean {
  if (bytes.length !== candidate.network.length) return false;

  let bits = candidate.prefixLength;
  for (let index = 0; bits > 0; index++, bits -= 8) {
    const mask = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
    if ((bytes[index] & mask) !== (candidate.network[index] & mask)) return false;
  }

  return true;
}

function classifyBytes(bytes: Uint8Array): AddressCategory {
  if (bytes.length === 4) return IPV4_RANGES.find((candidate) => inRange(bytes, candidate))?.category ?? 'public';

  const direct = IPV6_RANGES.find((candidate) => inRange(bytes, candidate));
  if (direct) return direct.category;

  const carrier = IPV4_CARRYING_PREFIXES.find((prefix) => inRange(bytes, prefix.range));
  if (carrier) return classifyBytes(bytes.subarray(carrier.offset, carrier.offset + 4));

  return 'public';
}

/**
 * Classifies an IPv4 or IPv6 address in text form. IPv6 addresses that
 * carry an IPv4 address (mapped, translated, compatible, NAT64, 6to4) get
 * the category of the IPv4 address. Anything that is not an IP address is
 * `invalid`.
 */
export function classifyAddress(address: string): AddressCategory {
  const bytes = parseIPv4(address) ?? parseIPv6(address);
  if (bytes === null) return 'invalid';

  return classifyBytes(bytes);
}

/**
 * Returns why a webhook must not connect to `address`, or null when it may.
 * Metadata and link-local addresses are rejected always; loopback, private,
 * unspecified, multicast and reserved ones unless `allowPrivate` is true.
 */
export function addressRejection(address: string, allowPrivate: boolean): string | null {
  const category = classifyAddress(address);
  if (ALWAYS_REJECTED.has(category)) {
    return `${address} is ${CATEGORY_NAMES[category]}, which webhooks never reach`;
  }
  if (PRIVATE_CATEGORIES.has(category) && !allowPrivate) {
    return `${address} is ${CATEGORY_NAMES[category]}, which webhooks reach only when KILN_WEBHOOK_ALLOW_PRIVATE=true`;
  }

  return null;
}
