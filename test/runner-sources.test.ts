import { describe, expect, it } from 'vitest';
import { parseSource, type ParsedSource } from '../lib/manifest/index.js';
import { checkParsedSource, cloneCommands } from '../lib/runner/sources.js';

/** Returns a parsed source with the given fields, as one that skipped the manifest's validation could look. */
function source(fields: Partial<ParsedSource>): ParsedSource {
  return { vcs: 'git', url: 'https://example.org/repo', ref: null, directory: 'repo', ...fields };
}

describe('checkParsedSource', () => {
  it('accepts a source from the manifest parser', () => {
    expect(checkParsedSource(parseSource('https://example.org/repo'))).toBeNull();
  });

  it('rejects a folder outside HOME', () => {
    expect(checkParsedSource(source({ directory: '../up' }))).toMatch(/outside the build's HOME/);
    expect(checkParsedSource(source({ directory: '/abs' }))).toMatch(/outside the build's HOME/);
  });

  it('rejects a URL or ref read as an option', () => {
    expect(checkParsedSource(source({ url: '--upload-pack=touch /tmp/pwned' }))).toMatch(/starts with "-"/);
    expect(checkParsedSource(source({ ref: '--orphan' }))).toMatch(/starts with "-"/);
  });

  it('rejects a missing URL or folder', () => {
    expect(checkParsedSource(source({ url: '' }))).toMatch(/no URL/);
    expect(checkParsedSource(source({ directory: '' }))).toMatch(/folder::url/);
    expect(checkParsedSource(source({ directory: '.' }))).toMatch(/folder::url/);
  });
});

describe('cloneCommands', () => {
  it('clones git recursively and checks out the ref', () => {
    expect(cloneCommands(parseSource('dir::https://example.org/repo#v1'))).toEqual([
      ['git', 'clone', '--recursive', '--', 'https://example.org/repo', 'dir'],
      ['git', '-C', 'dir', 'checkout', '-q', 'v1', '--'],
      ['git', '-C', 'dir', 'submodule', 'update', '--init', '--recursive'],
    ]);
  });

  it('clones hg and updates to the ref', () => {
    expect(cloneCommands(parseSource('hg+https://example.org/proj#stable'))).toEqual([
      ['hg', 'clone', '--noninteractive', '--', 'https://example.org/proj', 'proj'],
      ['hg', '--cwd', 'proj', 'update', '--noninteractive', '--', 'stable'],
    ]);
  });
});
