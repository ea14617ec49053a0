import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { LogWriter } from '../lib/runner/log-writer.js';
import { MASK, SecretMasker, SecretMatcher, secretPatterns } from '../lib/runner/secret-masker.js';

/** Masks a whole input at once the slow way: every byte inside any occurrence is masked, and touching runs merge. */
function reference(input: string, patterns: string[]): string {
  const covered = new Array<boolean>(input.length).fill(false);
  for (const pattern of patterns) {
    for (let start = input.indexOf(pattern); start !== -1; start = input.indexOf(pattern, start + 1)) {
      covered.fill(true, start, start + pattern.length);
    }
  }
  let output = '';
  for (let index = 0; index < input.length; index += 1) {
    if (!covered[index]) {
      output += input[index];
    } else if (index === 0 || !covered[index - 1]) {
      output += MASK;
    }
  }
  return output;
}

/** Masks `input` fed in pieces split at `cuts`. A small `tableStates` makes the matcher use its edge lists. */
function maskInChunks(input: string, patterns: string[], cuts: number[], tableStates?: number): string {
  const masker = new SecretMasker(new SecretMatcher(patterns.map((pattern) => Buffer.from(pattern, 'latin1')), tableStates));
  const parts: Buffer[] = [];
  let start = 0;
  for (const cut of [...cuts, input.length]) {
    parts.push(masker.push(Buffer.from(input.slice(start, cut), 'latin1')));
    start = cut;
  }
  parts.push(masker.end());
  return Buffer.concat(parts).toString('latin1');
}

describe('secretPatterns', () => {
  const patterns = (value: string): string[] => secretPatterns([Buffer.from(value, 'utf8')]).map((pattern) => pattern.toString('utf8'));

  it('masks the value and each line', () => {
    const result = patterns('first-line\r\n  second line  \nabc\n');
    expect(result).toContain('first-line\r\n  second line  \nabc');
    expect(result).toContain('first-line');
    expect(result).toContain('second line');
    expect(result).toHaveLength(3);
  });

  it('skips values and lines under four bytes', () => {
    expect(patterns('abc')).toEqual([]);
    expect(patterns('abcd\nxyz')).not.toContain('xyz');
  });

  it('adds the set -x form of a quote', () => {
    expect(patterns("it's-secret")).toContain("it'\\''s-secret");
  });

  it('keeps multi-byte characters whole', () => {
    expect(patterns('clé secrète à garder\u00a0')).toContain('clé secrète à garder\u00a0');
  });
});

describe('SecretMasker', () => {
  it('masks a secret inside one chunk', () => {
    expect(maskInChunks('before hunter2-pw after', ['hunter2-pw'], [])).toBe(`before ${MASK} after`);
  });

  it('matches the reference at every split', () => {
    const cases: Array<[string, string[]]> = [
      ['xxsecretxx', ['secret']],
      ['secretsecret', ['secret']],
      ['abcdefgh', ['bcde', 'defg']],
      ['aaaaaaa', ['aaa']],
      ['one two three', ['one two three', 'two']],
      ['abxabcab', ['abc', 'xabc', 'bxab']],
      ['no secret here', ['absent']],
    ];
    for (const [input, patterns] of cases) {
      const expected = reference(input, patterns);
      for (let first = 0; first <= input.length; first += 1) {
        for (let second = first; second <= input.length; second += 1) {
          expect(maskInChunks(input, patterns, [first, second]), `${input} cut at ${first}, ${second}`).toBe(expected);
        }
      }
    }
  });

  it('matches the reference on random input', () => {
    let seed = 987654;
    const random = (limit: number): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % limit;
    };
    const word = (length: number): string => Array.from({ length }, () => 'abc'[random(3)]).join('');
    for (let round = 0; round < 400; round += 1) {
      const patterns = Array.from({ length: 1 + random(4) }, () => word(1 + random(6)));
      const input = word(random(80));
      const cuts = Array.from({ length: random(6) }, () => random(input.length + 1)).sort((a, b) => a - b);
      const expected = reference(input, patterns);
      for (const tableStates of [1, 3, 4096]) {
        const label = `${input} / ${patterns.join(',')} / cuts ${cuts.join(',')} / table states ${tableStates}`;
        expect(maskInChunks(input, patterns, cuts, tableStates), label).toBe(expected);
      }
    }
  });

  it('masks a secret fed one byte at a time', () => {
    const input = 'log line with top-secret-value in it';
    const cuts = Array.from({ length: input.length }, (_, index) => index);
    expect(maskInChunks(input, ['top-secret-value'], cuts)).toBe(`log line with ${MASK} in it`);
  });

  it('holds back fewer bytes than the longest pattern', () => {
    const masker = new SecretMasker(new SecretMatcher([Buffer.from('0123456789')]));
    expect(masker.push(Buffer.from('abcdefghijklmnop')).toString()).toBe('abcdefg');
    expect(masker.end().toString()).toBe('hijklmnop');
  });

  it('starts over after end', () => {
    const masker = new SecretMasker(new SecretMatcher([Buffer.from('secret')]));
    expect(Buffer.concat([masker.push(Buffer.from('sec')), masker.end()]).toString()).toBe('sec');
    expect(Buffer.concat([masker.push(Buffer.from('ret')), masker.end()]).toString()).toBe('ret');
    expect(masker.mask(Buffer.from('a secret b')).toString()).toBe(`a ${MASK} b`);
  });
});

describe('LogWriter with secrets', () => {
  async function writeLog(steps: (writer: LogWriter) => void): Promise<string> {
    const folder = await mkdtemp(path.join(os.tmpdir(), 'kiln-mask-'));
    try {
      const file = path.join(folder, 'log');
      const writer = await LogWriter.open({
        name: 'test',
        file,
        maxBytes: 1_000_000,
        logger: pino({ level: 'silent' }),
        requestUploadUrl: async () => {
          throw new Error('uploads are off in this test');
        },
        shouldRetry: () => false,
      });
      steps(writer);
      await writer.finish();
      return await readFile(file, 'utf8');
    } finally {
      await rm(folder, { recursive: true, force: true });
    }
  }

  const matcher = new SecretMatcher(secretPatterns([Buffer.from('sesame-открой\nsecond-line\n')]));

  it('masks raw output and lines', async () => {
    const text = await writeLog((writer) => {
      writer.maskSecrets(matcher);
      writer.write(Buffer.from('say sesame-откр'));
      writer.write(Buffer.from('ой now\n'));
      writer.writeLine('runner line with second-line inside');
    });

    expect(text).toBe(`say ${MASK} now\nrunner line with ${MASK} inside\n`);
  });

  it('leaves output before maskSecrets alone', async () => {
    const text = await writeLog((writer) => {
      writer.write(Buffer.from('second-line before\n'));
      writer.maskSecrets(matcher);
      writer.write(Buffer.from('second-line after\n'));
    });

    expect(text).toBe(`second-line before\n${MASK} after\n`);
  });

  it('masks before replacing invalid UTF-8', async () => {
    const binarySecret = Buffer.from([0x73, 0x65, 0xff, 0x63, 0x72, 0xfe]);
    const text = await writeLog((writer) => {
      writer.maskSecrets(new SecretMatcher(secretPatterns([binarySecret])));
      writer.write(Buffer.concat([Buffer.from('x '), binarySecret, Buffer.from(' y \xff\n', 'latin1')]));
    });

    expect(text).toBe(`x ${MASK} y \uFFFD\n`);
  });
});
