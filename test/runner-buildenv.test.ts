import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { quoteShellWord, renderBuildenv } from '../lib/runner/buildenv.js';
import type { EnvironmentValue } from '../lib/runner/protocol.js';

const execFileAsync = promisify(execFile);

/** Values whose bytes must survive quoting exactly. */
const TRICKY_STRINGS = [
  '',
  'plain',
  "it's",
  "''",
  'line one\nline two\n',
  '\n',
  '$HOME ${HOME} $(id) `id`',
  'back\\slash \\n \\',
  '"double" and \'single\'',
  'tab\tand spaces  ',
  'unicode: é ✓ 🚀 \u2028',
  '*.ts ? [a-z] ~ !event #hash ; & | < > ( ) { }',
  '-n',
];

let folder: string;

beforeAll(async () => {
  folder = await mkdtemp(path.join(os.tmpdir(), 'kiln-buildenv-'));
});

afterAll(async () => {
  await rm(folder, { recursive: true, force: true });
});

/** Writes a buildenv file, sources it in bash and runs `script`; returns stdout as bytes. */
async function sourceAndRun(text: string, script: string): Promise<Buffer> {
  const file = path.join(folder, `buildenv-${Math.random().toString(16).slice(2)}`);
  await writeFile(file, text);
  const { stdout } = await execFileAsync('bash', ['-c', `set -e; . "$1"; ${script}`, 'bash', file], {
    encoding: 'buffer',
    env: { PATH: process.env.PATH },
  });
  return stdout;
}

describe('quoteShellWord', () => {
  for (const value of TRICKY_STRINGS) {
    it(`round-trips ${JSON.stringify(value)} through bash`, async () => {
      const output = await sourceAndRun(`VALUE=${quoteShellWord(value)}\n`, `printf '%s' "$VALUE"`);
      expect(output.toString('utf8')).toBe(value);
    });
  }

  it('leaves safe words unquoted', () => {
    expect(quoteShellWord('a-b_c.d/e:f=g')).toBe('a-b_c.d/e:f=g');
  });
});

describe('renderBuildenv', () => {
  const environment: Record<string, EnvironmentValue> = {
    QUOTE: "it's",
    MULTILINE: 'one\ntwo\n',
    DOLLAR: '$HOME `id`',
    UNICODE: 'héllo ✓ 🚀',
    EMPTY: '',
    NOTHING: null,
    YES: true,
    NO: false,
    COUNT: 42,
    RATIO: 1.5,
    LIST: ['a', 'b c', "it's", '', true, 7, null, 'multi\nline'],
  };
  const job = { id: 7, url: "http://127.0.0.1:1/api/jobs/7?x='y'", environment };

  it('starts with the CI variables', () => {
    const lines = renderBuildenv(job).text.split('\n');
    expect(lines.slice(0, 4)).toEqual([
      'export CI=true',
      'export CI_NAME=kiln',
      'export JOB_ID=7',
      `export JOB_URL='http://127.0.0.1:1/api/jobs/7?x='\\''y'\\'''`,
    ]);
  });

  it('round-trips scalars through bash', async () => {
    const { text } = renderBuildenv(job);
    const names = ['CI', 'CI_NAME', 'JOB_ID', 'JOB_URL', 'QUOTE', 'MULTILINE', 'DOLLAR', 'UNICODE', 'EMPTY', 'NOTHING', 'YES', 'NO', 'COUNT', 'RATIO'];
    const script = names.map((name) => `printf '%s\\0' "$${name}"`).join('; ');
    const values = (await sourceAndRun(text, script)).toString('utf8').split('\0').slice(0, -1);
    expect(Object.fromEntries(names.map((name, index) => [name, values[index]]))).toEqual({
      CI: 'true',
      CI_NAME: 'kiln',
      JOB_ID: '7',
      JOB_URL: "http://127.0.0.1:1/api/jobs/7?x='y'",
      QUOTE: "it's",
      MULTILINE: 'one\ntwo\n',
      DOLLAR: '$HOME `id`',
      UNICODE: 'héllo ✓ 🚀',
      EMPTY: '',
      NOTHING: '',
      YES: 'true',
      NO: 'false',
      COUNT: '42',
      RATIO: '1.5',
    });
  });

  it('exports scalars to child processes', async () => {
    const output = await sourceAndRun(renderBuildenv(job).text, `bash -c 'printf "%s" "$QUOTE"'`);
    expect(output.toString('utf8')).toBe("it's");
  });

  it('declares lists as bash arrays', async () => {
    const output = await sourceAndRun(renderBuildenv(job).text, `printf '%s\\0' "\${#LIST[@]}" "\${LIST[@]}"`);
    const values = output.toString('utf8').split('\0').slice(0, -1);
    expect(values).toEqual(['8', 'a', 'b c', "it's", '', 'true', '7', '', 'multi\nline']);
  });

  it('drops NUL bytes and names the variable', async () => {
    const rendered = renderBuildenv({ id: 1, url: 'u', environment: { WITH_NUL: 'a\0b' } });
    expect(rendered.droppedNulIn).toEqual(['WITH_NUL']);
    const output = await sourceAndRun(rendered.text, `printf '%s' "$WITH_NUL"`);
    expect(output.toString('utf8')).toBe('ab');
  });
});
