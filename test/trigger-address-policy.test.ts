import { describe, expect, it } from 'vitest';
import { addressRejection, classifyAddress, type AddressCategory } from '../lib/triggers/address-policy.js';

const CASES: Array<[string, AddressCategory]> = [
  // IPv4
  ['93.184.215.14', 'public'],
  ['8.8.8.8', 'public'],
  ['1.1.1.1', 'public'],
  ['0.0.0.0', 'unspecified'],
  ['0.1.2.3', 'unspecified'],
  ['10.0.0.1', 'private'],
  ['10.255.255.255', 'private'],
  ['11.0.0.1', 'public'],
  ['100.63.255.255', 'public'],
  ['100.64.0.1', 'private'],
  ['100.127.255.255', 'private'],
  ['100.128.0.0', 'public'],
  ['127.0.0.1', 'loopback'],
  ['127.255.255.254', 'loopback'],
  ['128.0.0.1', 'public'],
  ['169.254.169.254', 'metadata'],
  ['169.254.170.2', 'metadata'],
  ['169.254.169.253', 'link-local'],
  ['169.254.0.1', 'link-local'],
  ['169.255.0.1', 'public'],
  ['172.15.255.255', 'public'],
  ['172.16.0.1', 'private'],
  ['172.31.255.255', 'private'],
  ['172.32.0.0', 'public'],
  ['192.0.0.192', 'reserved'],
  ['192.0.2.10', 'reserved'],
  ['192.167.255.255', 'public'],
  ['192.168.0.1', 'private'],
  ['192.168.255.255', 'private'],
  ['192.169.0.0', 'public'],
  ['198.18.0.1', 'reserved'],
  ['198.51.100.7', 'reserved'],
  ['203.0.113.9', 'reserved'],
  ['224.0.0.1', 'multicast'],
  ['239.255.255.250', 'multicast'],
  ['240.0.0.1', 'reserved'],
  ['255.255.255.255', 'reserved'],
  // IPv6
  ['2606:4700:4700::1111', 'public'],
  ['2a00:1450:4001:81b::200e', 'public'],
  ['::', 'unspecified'],
  ['0:0:0:0:0:0:0:0', 'unspecified'],
  ['::1', 'loopback'],
  ['0:0:0:0:0:0:0:1', 'loopback'],
  ['fd00:ec2::254', 'metadata'],
  ['FD00:EC2::254', 'metadata'],
  ['fd00:ec2:0:0:0:0:0:254', 'metadata'],
  ['fd00:ec2::253', 'metadata'],
  ['fd00:ec3::254', 'private'],
  ['fc00::1', 'private'],
  ['fdff:ffff::1', 'private'],
  ['fe80::1', 'link-local'],
  ['fe80::1%eth0', 'link-local'],
  ['febf:ffff::1', 'link-local'],
  ['fec0::1', 'private'],
  ['ff02::1', 'multicast'],
  ['2001:db8::1', 'reserved'],
  ['100::1', 'reserved'],
  ['64:ff9b:1::a', 'private'],
  // IPv6 forms that carry an IPv4 address
  ['::ffff:127.0.0.1', 'loopback'],
  ['::ffff:7f00:1', 'loopback'],
  ['::FFFF:7F00:0001', 'loopback'],
  ['::ffff:10.1.2.3', 'private'],
  ['::ffff:169.254.169.254', 'metadata'],
  ['::ffff:a9fe:a9fe', 'metadata'],
  ['0:0:0:0:0:ffff:a9fe:a9fe', 'metadata'],
  ['::ffff:169.254.170.2', 'metadata'],
  ['::ffff:169.254.1.1', 'link-local'],
  ['::ffff:0.0.0.0', 'unspecified'],
  ['::ffff:8.8.8.8', 'public'],
  ['::ffff:0:10.0.0.1', 'private'],
  ['::ffff:0:169.254.169.254', 'metadata'],
  ['::127.0.0.1', 'loopback'],
  ['::169.254.169.254', 'metadata'],
  ['::8.8.8.8', 'public'],
  ['64:ff9b::169.254.169.254', 'metadata'],
  ['64:ff9b::a9fe:a9fe', 'metadata'],
  ['64:ff9b::192.168.1.1', 'private'],
  ['64:ff9b::8.8.8.8', 'public'],
  ['2002:a9fe:a9fe::1', 'metadata'],
  ['2002:7f00:1::', 'loopback'],
  ['2002:808:808::1', 'public'],
  // Not IP addresses
  ['', 'invalid'],
  ['localhost', 'invalid'],
  ['example.com', 'invalid'],
  ['256.0.0.1', 'invalid'],
  ['1.2.3', 'invalid'],
  ['::ffff:300.1.1.1', 'invalid'],
  ['[::1]', 'invalid'],
  ['fe80::1::2', 'invalid'],
];

describe('classifyAddress', () => {
  it.each(CASES)('classifies %s as %s', (address, category) => {
    expect(classifyAddress(address)).toBe(category);
  });
});

describe('addressRejection', () => {
  it.each(['169.254.169.254', '169.254.170.2', 'fd00:ec2::254', '::ffff:169.254.169.254', 'fe80::1', '169.254.3.4', 'nonsense'])(
    'rejects %s even when private addresses are allowed',
    (address) => {
      expect(addressRejection(address, true)).toMatch(/never reach/);
      expect(addressRejection(address, false)).toMatch(/never reach/);
    },
  );

  it.each(['127.0.0.1', '::1', '10.0.0.1', '172.16.5.4', '192.168.1.1', 'fc00::1', '0.0.0.0', '::', '224.0.0.1', 'ff02::1', '::ffff:127.0.0.1', '198.18.0.1'])(
    'rejects %s unless private addresses are allowed',
    (address) => {
      expect(addressRejection(address, false)).toMatch(/KILN_WEBHOOK_ALLOW_PRIVATE=true/);
      expect(addressRejection(address, true)).toBeNull();
    },
  );

  it.each(['93.184.215.14', '2606:4700:4700::1111', '::ffff:8.8.8.8'])('accepts public %s', (address) => {
    expect(addressRejection(address, false)).toBeNull();
    expect(addressRejection(address, true)).toBeNull();
  });

  it('names the address and its category', () => {
    expect(addressRejection('10.1.2.3', false)).toBe(
      '10.1.2.3 is a private address, which webhooks reach only when KILN_WEBHOOK_ALLOW_PRIVATE=true',
    );
    expect(addressRejection('169.254.169.254', true)).toBe('169.254.169.254 is a cloud metadata address, which webhooks never reach');
  });
});
