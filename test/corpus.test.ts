import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { type FieldError, ValidationError } from '../lib/errors.js';
import { offeredImageNames, parseManifest } from '../lib/manifest/index.js';

// Real manifests from public projects, kept beside the repository and never
// copied into it. EXPECTED.tsv gives each file's verdict.
const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const corpusDir = path.resolve(repoRoot, '..', 'shared', 'corpus', 'manifests');

type Verdict = 'linux' | 'linux-eol' | 'unsupported-os' | 'invalid-yaml';

interface CorpusCase {
  file: string;
  image: string;
  expected: Verdict;
}

function readTable(name: string): Array<Record<string, string>> {
  const [header, ...rows] = readFileSync(path.join(corpusDir, name), 'utf8').trimEnd().split('\n');
  const columns = (header ?? '').split('\t');
  return rows.map((row) => {
    const cells = row.split('\t');
    return Object.fromEntries(columns.map((column, index) => [column, cells[index] ?? '']));
  });
}

function readCases(): CorpusCase[] {
  return readTable('EXPECTED.tsv').map((row) => ({
    file: row.file ?? '',
    image: row.image ?? '',
    expected: row.expected as Verdict,
  }));
}

function readFeatures(): Map<string, string> {
  return new Map(readTable('SOURCES.tsv').map((row) => [row.file ?? '', row.features ?? '']));
}

/** Returns the errors that parseManifest raises for the text, or null when it accepts it. */
function errorsOf(text: string): FieldError[] | null {
  try {
    parseManifest(text);
    return null;
  } catch (error) {
    if (error instanceof ValidationError) return error.errors;
    throw error;
  }
}

const OFFERED = offeredImageNames().join(', ');
const corpusExists = existsSync(corpusDir);
const cases = corpusExists ? readCases() : [];
const features = corpusExists ? readFeatures() : new Map<string, string>();

describe.skipIf(!corpusExists)('manifest corpus', () => {
  it('lists every manifest in EXPECTED.tsv', () => {
    const listed = new Set(cases.map((entry) => entry.file));
    const files = readFileSync(path.join(corpusDir, 'SOURCES.tsv'), 'utf8')
      .trimEnd()
      .split('\n')
      .slice(1)
      .map((row) => row.split('\t')[0]);
    expect(files.filter((file) => file !== undefined && !listed.has(file))).toEqual([]);
  });

  it.each(cases.filter((entry) => entry.expected === 'linux').map((entry) => [entry.file, entry] as const))(
    'accepts %s',
    (file, entry) => {
      const text = readFileSync(path.join(corpusDir, file), 'utf8');
      const errors = errorsOf(text);
      expect(errors, `features: ${features.get(file)}`).toBeNull();
      expect(parseManifest(text).image).toBe(entry.image);
    },
  );

  it.each(cases.filter((entry) => entry.expected === 'linux-eol').map((entry) => [entry.file] as const))(
    'accepts %s or rejects its image',
    (file) => {
      const errors = errorsOf(readFileSync(path.join(corpusDir, file), 'utf8'));
      if (errors === null) return;
      const imageError = errors.find((error) => error.field === 'image');
      expect(imageError?.reason).toContain(OFFERED);
      expect(errors.filter((error) => error.field !== 'image')).toEqual([]);
    },
  );

  it.each(cases.filter((entry) => entry.expected === 'unsupported-os').map((entry) => [entry.file] as const))(
    'rejects the image of %s',
    (file) => {
      const errors = errorsOf(readFileSync(path.join(corpusDir, file), 'utf8'));
      const imageError = errors?.find((error) => error.field === 'image');
      expect(imageError?.reason).toContain('Linux containers');
      expect(imageError?.reason).toContain(OFFERED);
    },
  );

  it.each(cases.filter((entry) => entry.expected === 'invalid-yaml').map((entry) => [entry.file] as const))(
    'rejects the syntax of %s',
    (file) => {
      const errors = errorsOf(readFileSync(path.join(corpusDir, file), 'utf8'));
      const manifestError = errors?.find((error) => error.field === 'manifest');
      expect(manifestError?.reason).toMatch(/line \d+, column \d+/);
    },
  );
});
