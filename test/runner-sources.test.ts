import { describe, expect, it } from 'vitest';
import { checkParsedSource, cloneCommands, parseSource, type ParsedSource } from '../lib/runner/sources.js';

describe('parseSource', () => {
  const cases: Array<[string, ParsedSource]> = [
    ['https://git.sr.ht/~sircmpwn/scdoc', { vcs: 'git', url: 'https://git.sr.ht/~sircmpwn/scdoc', ref: null, directory: 'scdoc' }],
    ['https://example.org/repo.git', { vcs: 'git', url: 'https://example.org/repo.git', ref: null, directory: 'repo' }],
    ['https://example.org/repo.git/', { vcs: 'git', url: 'https://example.org/repo.git/', ref: null, directory: 'repo' }],
    ['https://example.org/repo#v1.2', { vcs: 'git', url: 'https://example.org/repo', ref: 'v1.2', directory: 'repo' }],
    ['https://example.org/repo#', { vcs: 'git', url: 'https://example.org/repo', ref: null, directory: 'repo' }],
    ['src::https://example.org/repo#main', { vcs: 'git', url: 'https://example.org/repo', ref: 'main', directory: 'src' }],
    ['git+https://example.org/repo', { vcs: 'git', url: 'https://example.org/repo', ref: null, directory: 'repo' }],
    ['git+ssh://git@example.org/~u/repo.git', { vcs: 'git', url: 'ssh://git@example.org/~u/repo.git', ref: null, directory: 'repo' }],
    ['hg+https://hg.sr.ht/~u/proj#tip', { vcs: 'hg', url: 'https://hg.sr.ht/~u/proj', ref: 'tip', directory: 'proj' }],
    ['mine::hg+https://hg.sr.ht/~u/proj', { vcs: 'hg', url: 'https://hg.sr.ht/~u/proj', ref: null, directory: 'mine' }],
    ['git@git.sr.ht:~u/repo', { vcs: 'git', url: 'git@git.sr.ht:~u/repo', ref: null, directory: 'repo' }],
    ['git@github.com:owner/repo.git#abc123', { vcs: 'git', url: 'git@github.com:owner/repo.git', ref: 'abc123', directory: 'repo' }],
    ['file:///tmp/x/project.git', { vcs: 'git', url: 'file:///tmp/x/project.git', ref: null, directory: 'project' }],
    ['/srv/repos/project', { vcs: 'git', url: '/srv/repos/project', ref: null, directory: 'project' }],
    ['https://[::1]/repo', { vcs: 'git', url: 'https://[::1]/repo', ref: null, directory: 'repo' }],
  ];

  for (const [source, expected] of cases) {
    it(`parses ${source}`, () => {
      expect(parseSource(source)).toEqual(expected);
    });
  }
});

describe('checkParsedSource', () => {
  it('accepts a plain source', () => {
    expect(checkParsedSource(parseSource('https://example.org/repo'))).toBeNull();
  });

  it('rejects a folder outside HOME', () => {
    expect(checkParsedSource(parseSource('../up::https://example.org/repo'))).toMatch(/outside the build's HOME/);
    expect(checkParsedSource(parseSource('/abs::https://example.org/repo'))).toMatch(/outside the build's HOME/);
  });

  it('rejects a URL or ref read as an option', () => {
    expect(checkParsedSource(parseSource('x::--upload-pack=touch /tmp/pwned'))).toMatch(/starts with "-"/);
    expect(checkParsedSource(parseSource('https://example.org/repo#--orphan'))).toMatch(/starts with "-"/);
  });

  it('rejects a URL without a folder name', () => {
    expect(checkParsedSource(parseSource('https://example.org/'))).toMatch(/folder::url/);
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
