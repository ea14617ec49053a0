import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { type FieldError, ValidationError } from '../lib/errors.js';
import {
  IMAGES,
  MAX_MANIFEST_LENGTH,
  RETIRED_IMAGES,
  findImage,
  offeredImageNames,
  parseManifest,
  parseSource,
  validateTriggers,
} from '../lib/manifest/index.js';

const OFFERED = offeredImageNames().join(', ');

/** Returns the errors that parseManifest raises, and fails the test when it accepts the text. */
function errorsOf(text: string): FieldError[] {
  try {
    parseManifest(text);
  } catch (error) {
    if (error instanceof ValidationError) return error.errors;
    throw error;
  }
  throw new Error(`parseManifest accepted a manifest that should fail:\n${text}`);
}

/** Returns the reason of the error on `field`, and fails the test when there is none. */
function reasonFor(text: string, field: string): string {
  const errors = errorsOf(text);
  const error = errors.find((candidate) => candidate.field === field);
  expect(error, `no error on ${field}; errors: ${JSON.stringify(errors)}`).toBeDefined();
  return error?.reason ?? '';
}

/** Returns the errors of `validateTriggers`, and fails the test when it accepts the value. */
function triggerErrorsOf(value: unknown): FieldError[] {
  try {
    validateTriggers(value, 'triggers');
  } catch (error) {
    if (error instanceof ValidationError) return error.errors;
    throw error;
  }
  throw new Error(`validateTriggers accepted ${JSON.stringify(value)}`);
}

/** Builds a valid manifest with `lines` inserted between the image and the tasks. */
function withLines(...lines: string[]): string {
  return ['image: alpine/edge', ...lines, 'tasks:', '  - build: make', ''].join('\n');
}

describe('manifest text', () => {
  it('rejects empty text', () => {
    expect(reasonFor('', 'manifest')).toContain('empty');
  });

  it('rejects whitespace only', () => {
    expect(reasonFor('  \n\n\t\n', 'manifest')).toContain('empty');
  });

  it('rejects comments only', () => {
    expect(reasonFor('# nothing here\n', 'manifest')).toContain('only comments');
  });

  it('rejects a non-string', () => {
    expect(reasonFor(42 as unknown as string, 'manifest')).toContain('the number 42');
  });

  it('accepts exactly the maximum length', () => {
    const base = withLines();
    const text = `${base}#${'x'.repeat(MAX_MANIFEST_LENGTH - base.length - 1)}`;
    expect(text.length).toBe(16384);
    expect(parseManifest(text).canonicalImage).toBe('alpine/edge');
  });

  it('rejects one character over the maximum', () => {
    const base = withLines();
    const text = `${base}#${'x'.repeat(MAX_MANIFEST_LENGTH - base.length)}`;
    expect(text.length).toBe(16385);
    const reason = reasonFor(text, 'manifest');
    expect(reason).toContain('16385 characters');
    expect(reason).toContain('limit is 16384');
  });

  it('counts a character outside the BMP once', () => {
    const base = withLines();
    const emoji = '\u{1F525}';
    const text = `${base}#${emoji}${'x'.repeat(MAX_MANIFEST_LENGTH - base.length - 2)}`;
    expect(text.length).toBe(16385);
    expect(parseManifest(text).tasks).toHaveLength(1);
  });

  it('reports only the length for a long manifest', () => {
    const errors = errorsOf(`image: freebsd/latest\n#${'x'.repeat(MAX_MANIFEST_LENGTH)}`);
    expect(errors).toHaveLength(1);
  });
});

describe('YAML syntax', () => {
  it.each([
    ['tabs as indentation', 'image: alpine/edge\ntasks:\n\t- build: make\n', 3, 1],
    ['a tab inside a block scalar', 'image: alpine/edge\ntasks:\n  - build: |\n\tmake\n', 4, 1],
    ['bad indentation', 'image: alpine/edge\ntasks:\n  - build: make\n   - test: make\n', 4, 4],
    ['a missing colon', 'image: alpine/edge\nsources\n  - https://git.sr.ht/~a/b\ntasks:\n  - build: make\n', 2, 1],
    ['an unclosed flow list', 'image: alpine/edge\npackages: [gcc, make\ntasks:\n  - build: make\n', 3, 1],
  ])('rejects %s with line and column', (_case, text, line, column) => {
    const reason = reasonFor(text, 'manifest');
    expect(reason).toContain(`Invalid YAML at line ${line}, column ${column}: `);
    expect(reason).toContain("Fix the manifest's syntax and submit it again.");
  });

  it('rejects tabs as indentation', () => {
    expect(reasonFor('image: alpine/edge\ntasks:\n\t- build: make\n', 'manifest')).toContain('Tabs are not allowed as indentation');
  });

  it('names a tab that breaks a block scalar', () => {
    expect(reasonFor('image: alpine/edge\ntasks:\n  - build: |\n\tmake\n', 'manifest')).toContain('Line 4 is indented with a tab');
  });

  it('keeps only the first line of the parser message', () => {
    const errors = errorsOf('image: alpine/edge\ntasks:\n\t- build: make\n');
    for (const error of errors) {
      expect(error.reason).not.toContain('\n');
      expect(error.reason).not.toContain('^');
    }
  });

  it('reports one error per line', () => {
    const errors = errorsOf('image: alpine/edge\ntasks:\n  - build: |\n\tmake\n');
    expect(errors).toHaveLength(1);
  });

  it('rejects several documents', () => {
    const reason = reasonFor('image: alpine/edge\n---\ntasks:\n  - build: make\n', 'manifest');
    expect(reason).toContain('2 YAML documents');
    expect(reason).toContain('line 2');
  });

  it('accepts a document start and end marker', () => {
    expect(parseManifest('---\nimage: alpine/edge\ntasks:\n  - build: make\n...\n').tasks).toHaveLength(1);
  });

  it.each([
    ['a list', '- image: alpine/edge\n'],
    ['the string "alpine/edge"', 'alpine/edge\n'],
    ['the number 3', '3\n'],
    ['empty', '---\n'],
  ])('rejects a document that is %s', (found, text) => {
    const reason = reasonFor(text, 'manifest');
    expect(reason).toContain('must be a YAML mapping');
    expect(reason).toContain(`its document is ${found}`);
  });

  it('rejects a merge key that names a scalar', () => {
    expect(reasonFor(withLines('environment:', '  <<: 3'), 'environment')).toContain('merge key must name a mapping');
  });

  it('rejects a merge key that names its own mapping', () => {
    expect(reasonFor(withLines('environment: &env', '  <<: *env'), 'environment')).toContain('refer to themselves');
  });
});

describe('duplicate keys', () => {
  const options = { version: '1.1', uniqueKeys: false } as const;

  it('keeps the later top-level key in the yaml package', () => {
    expect(parseYaml('a: 1\nb: 2\na: 3\n', options)).toEqual({ a: 3, b: 2 });
  });

  it('keeps the later nested key in the yaml package', () => {
    expect(parseYaml('m:\n  x: 1\n  x: 2\n', options)).toEqual({ m: { x: 2 } });
  });

  it('keeps the later top-level key', () => {
    const manifest = parseManifest('image: ubuntu/bionic\nimage: alpine/edge\ntasks:\n  - build: make\n');
    expect(manifest.image).toBe('alpine/edge');
  });

  it('keeps the later nested key', () => {
    const manifest = parseManifest(withLines('environment:', '  A: first', '  A: second'));
    expect(manifest.environment).toEqual({ A: 'second' });
  });

  it('keeps the later key inside a task', () => {
    const manifest = parseManifest('image: alpine/edge\ntasks:\n  - build: first\n    build: second\n');
    expect(manifest.tasks).toEqual([{ name: 'build', script: 'second' }]);
  });

  it('keeps the later tasks list', () => {
    const manifest = parseManifest('image: alpine/edge\ntasks:\n  - a: x\ntasks:\n  - b: y\n');
    expect(manifest.tasks.map((task) => task.name)).toEqual(['b']);
  });
});

describe('line endings and encodings', () => {
  const crlf = 'image: alpine/edge\r\nenvironment:\r\n  A: one\r\ntasks:\r\n  - build: |\r\n      make\r\n      make check\r\n  - test: make test\r\n';

  it('parses a CRLF manifest', () => {
    expect(parseManifest(crlf).tasks.map((task) => task.name)).toEqual(['build', 'test']);
  });

  it('gives CRLF scripts LF line endings', () => {
    expect(parseManifest(crlf).tasks[0]?.script).toBe('make\nmake check\n');
  });

  it('drops CR from CRLF values', () => {
    expect(parseManifest(crlf).environment).toEqual({ A: 'one' });
  });

  it('accepts a JSON manifest', () => {
    const manifest = parseManifest('{"image": "debian/stable", "packages": ["gcc"], "tasks": [{"build": "make"}]}');
    expect(manifest.packages).toEqual(['gcc']);
  });

  it('accepts a manifest without a trailing newline', () => {
    expect(parseManifest('image: alpine/edge\ntasks:\n  - build: make').tasks).toHaveLength(1);
  });

  it('accepts a byte order mark', () => {
    expect(parseManifest('\uFEFFimage: alpine/edge\ntasks:\n  - build: make\n').image).toBe('alpine/edge');
  });

  it('keeps unicode in scripts and values', () => {
    const manifest = parseManifest('# Build — with ünïcode\nimage: alpine/edge\nenvironment:\n  GREETING: héllo 🔥\ntasks:\n  - build: echo "日本語"\n');
    expect(manifest.environment.GREETING).toBe('héllo 🔥');
    expect(manifest.tasks[0]?.script).toBe('echo "日本語"');
  });

  it('accepts one-space indentation', () => {
    const manifest = parseManifest('image: alpine/edge\npackages:\n - gcc\ntasks:\n - build: |\n     make\n');
    expect(manifest.tasks[0]?.script).toBe('make\n');
  });

  it('accepts spaces after a block indicator', () => {
    const manifest = parseManifest('image: alpine/edge\ntasks:\n  - build: |  \n      make\n');
    expect(manifest.tasks[0]?.script).toBe('make\n');
  });
});

describe('YAML 1.1 scalars', () => {
  it.each([
    ['yes', true],
    ['Yes', true],
    ['on', true],
    ['ON', true],
    ['true', true],
    ['no', false],
    ['off', false],
    ['Off', false],
    ['false', false],
  ])('reads shell: %s as a boolean', (written, expected) => {
    expect(parseManifest(withLines(`shell: ${written}`)).shell).toBe(expected);
  });

  it.each(['y', 'Y', 'n', 'N'])('reads %s as a string, as PyYAML does', (written) => {
    expect(parseManifest(withLines('environment:', `  ANSWER: ${written}`)).environment.ANSWER).toBe(written);
  });

  it('reads a quoted "on" as a string', () => {
    expect(parseManifest(withLines('environment:', '  GO111MODULE: "on"')).environment.GO111MODULE).toBe('on');
  });

  it('reads an unquoted on as a boolean', () => {
    expect(parseManifest(withLines('environment:', '  FLAG: on')).environment.FLAG).toBe(true);
  });

  it.each([
    ['1.10', '1.10'],
    ['0x1F', '0x1F'],
    ['010', '010'],
    ['0o17', '0o17'],
    ['1_000', '1_000'],
    ['1e3', '1e3'],
    ['-0.50', '-0.50'],
    ['.inf', '.inf'],
    ['12:30:00', '12:30:00'],
    ['2020-01-01', '2020-01-01'],
    ['"1.10"', '1.10'],
  ])('keeps the environment value %s as written', (written, expected) => {
    expect(parseManifest(withLines('environment:', `  VERSION: ${written}`)).environment.VERSION).toBe(expected);
  });

  it('keeps numbers in environment lists as written', () => {
    expect(parseManifest(withLines('environment:', '  VERSIONS: [1.10, 2.0, a, on, ~]')).environment.VERSIONS).toEqual([
      '1.10',
      '2.0',
      'a',
      true,
      null,
    ]);
  });

  it('reads an empty environment value as null', () => {
    expect(parseManifest(withLines('environment:', '  EMPTY:')).environment.EMPTY).toBeNull();
  });

  it('keeps a number script as written', () => {
    expect(parseManifest('image: alpine/edge\ntasks:\n  - build: 1.10\n').tasks[0]?.script).toBe('1.10');
  });

  it('keeps a boolean script as written', () => {
    expect(parseManifest('image: alpine/edge\ntasks:\n  - build: yes\n').tasks[0]?.script).toBe('yes');
  });

  it('keeps a task name that YAML 1.1 reads as a boolean', () => {
    expect(parseManifest('image: alpine/edge\ntasks:\n  - on: make\n').tasks[0]?.name).toBe('on');
  });

  it('keeps a numeric task name as written', () => {
    expect(parseManifest('image: alpine/edge\ntasks:\n  - 010: make\n').tasks[0]?.name).toBe('010');
  });

  it('applies merge keys with explicit keys winning', () => {
    const manifest = parseManifest(withLines('defaults: &defaults', '  A: 1', '  B: 2', 'environment:', '  <<: *defaults', '  B: 3'));
    expect(manifest.environment).toEqual({ A: '1', B: '3' });
  });

  it('follows aliases', () => {
    const manifest = parseManifest(withLines('packages: &list [gcc, make]', 'x-copy: *list'));
    expect(manifest.packages).toEqual(['gcc', 'make']);
  });
});

describe('defaults and unknown keys', () => {
  it('fills in defaults', () => {
    expect(parseManifest('image: alpine/edge\ntasks:\n  - build: make\n')).toEqual({
      image: 'alpine/edge',
      canonicalImage: 'alpine/edge',
      arch: 'x86_64',
      packages: [],
      repositories: {},
      sources: [],
      environment: {},
      secrets: [],
      shell: false,
      artifacts: [],
      oauth: null,
      tasks: [{ name: 'build', script: 'make' }],
      triggers: [],
    });
  });

  it('treats null settings as absent', () => {
    const manifest = parseManifest(withLines('arch:', 'packages:', 'repositories:', 'sources:', 'environment:', 'secrets:', 'shell:', 'artifacts:', 'oauth:', 'triggers:'));
    expect(manifest.packages).toEqual([]);
    expect(manifest.arch).toBe('x86_64');
    expect(manifest.oauth).toBeNull();
  });

  it('ignores unknown top-level keys', () => {
    expect(parseManifest(withLines('visibility: public', 'foo: [1, {a: b}]', '42: x')).tasks).toHaveLength(1);
  });

  it('lists every problem at once', () => {
    const errors = errorsOf('image: plan9\narch: sparc\npackages: [1]\nshell: maybe\ntasks: x\n');
    expect(errors.map((error) => error.field)).toEqual(['image', 'arch', 'packages[0]', 'shell', 'tasks']);
  });
});

describe('image', () => {
  it.each([
    ['alpine/edge', 'alpine/edge'],
    ['alpine/latest', 'alpine/latest'],
    ['alpine/3.22', 'alpine/3.22'],
    ['alpine/3.23', 'alpine/3.23'],
    ['debian/stable', 'debian/stable'],
    ['debian/testing', 'debian/testing'],
    ['debian/unstable', 'debian/sid'],
    ['debian/bookworm', 'debian/bookworm'],
    ['debian/trixie', 'debian/trixie'],
    ['debian/forky', 'debian/forky'],
    ['ubuntu/lts', 'ubuntu/lts'],
    ['ubuntu/latest', 'ubuntu/latest'],
    ['ubuntu/jammy', 'ubuntu/22.04'],
    ['ubuntu/noble', 'ubuntu/24.04'],
    ['ubuntu/resolute', 'ubuntu/26.04'],
    ['fedora/latest', 'fedora/latest'],
    ['fedora/rawhide', 'fedora/rawhide'],
    ['rockylinux/latest', 'rockylinux/10'],
    ['rockylinux/8', 'rockylinux/8'],
    ['archlinux', 'archlinux'],
    ['nixos/latest', 'nixos/unstable'],
  ])('resolves %s to %s', (written, canonical) => {
    const manifest = parseManifest(`image: ${written}\ntasks:\n  - build: make\n`);
    expect(manifest.image).toBe(written);
    expect(manifest.canonicalImage).toBe(canonical);
  });

  it.each(['freebsd/latest', 'freebsd/14.x', 'openbsd/7.6', 'netbsd/9.x', '9front', 'guix', 'guix/latest'])(
    'rejects %s as a virtual machine system',
    (name) => {
      const reason = reasonFor(`image: ${name}\ntasks:\n  - build: make\n`, 'image');
      expect(reason).toContain(JSON.stringify(name));
      expect(reason).toContain('Kiln runs builds in Linux containers on AWS Fargate');
      expect(reason).toContain('boots as a virtual machine on build.sr.ht');
      expect(reason).toContain(OFFERED);
    },
  );

  it.each([
    'ubuntu/bionic',
    'ubuntu/18.04',
    'ubuntu/focal',
    'ubuntu/questing',
    'alpine/3.18',
    'alpine/3.21',
    'debian/buster',
    'debian/bullseye',
    'fedora/38',
    'fedora/42',
    'centos/7',
    'nixos/25.11',
  ])('rejects %s as no longer supported', (name) => {
    const reason = reasonFor(`image: ${name}\ntasks:\n  - build: make\n`, 'image');
    expect(reason).toContain(JSON.stringify(name));
    expect(reason).toContain('no longer supported by its distribution');
    expect(reason).toContain(OFFERED);
  });

  it.each(['windows/2022', 'ubuntu', 'Ubuntu/22.04', 'alpine/3.99', 'debian/stable '])('rejects %j as not in the catalog', (name) => {
    const reason = reasonFor(`image: "${name}"\ntasks:\n  - build: make\n`, 'image');
    expect(reason).toContain(JSON.stringify(name));
    expect(reason).toContain("not in Kiln's image catalog");
    expect(reason).toContain(OFFERED);
  });

  it('rejects a missing image', () => {
    expect(reasonFor('tasks:\n  - build: make\n', 'image')).toContain(`no image. Use one of these images: ${OFFERED}`);
  });

  it('rejects a non-string image', () => {
    expect(reasonFor('image: 22.04\ntasks:\n  - build: make\n', 'image')).toContain('the number 22.04');
  });
});

describe('arch', () => {
  it.each([
    ['x86_64', 'x86_64'],
    ['amd64', 'x86_64'],
    ['arm64', 'arm64'],
    ['aarch64', 'arm64'],
  ])('normalizes %s to %s', (written, expected) => {
    expect(parseManifest(withLines(`arch: ${written}`)).arch).toBe(expected);
  });

  it('rejects an unknown architecture', () => {
    const reason = reasonFor(withLines('arch: ppc64le'), 'arch');
    expect(reason).toContain('"ppc64le"');
    expect(reason).toContain('x86_64');
    expect(reason).toContain('arm64');
  });

  it('rejects an architecture the image lacks', () => {
    const reason = reasonFor('image: archlinux\narch: aarch64\ntasks:\n  - build: make\n', 'arch');
    expect(reason).toContain('"archlinux"');
    expect(reason).toContain('offered for x86_64 only, not for arm64');
  });

  it('accepts archlinux on x86_64', () => {
    expect(parseManifest('image: archlinux\narch: amd64\ntasks:\n  - build: make\n').arch).toBe('x86_64');
  });
});

describe('packages', () => {
  it('reads a list of names', () => {
    expect(parseManifest(withLines('packages:', '  - gcc', '  - python3.12', '  - tacacs+', '  - "perl(Foo::Bar)"')).packages).toEqual([
      'gcc',
      'python3.12',
      'tacacs+',
      'perl(Foo::Bar)',
    ]);
  });

  it('ignores comments between items', () => {
    expect(parseManifest(withLines('packages:', '  - gcc # the compiler', '  # - clang', '  - make')).packages).toEqual(['gcc', 'make']);
  });

  it.each([
    ['packages[2]', 'packages: [gcc, make, 3]', 'the number 3'],
    ['packages[0]', 'packages: [1.10]', 'the number 1.10'],
    ['packages[0]', 'packages: [yes]', 'the boolean yes'],
    ['packages[1]', 'packages: [gcc, ~]', 'empty value'],
    ['packages[0]', 'packages: [[gcc]]', 'a list'],
    ['packages[0]', 'packages: ["gcc make"]', '"gcc make" contains whitespace'],
    ['packages[0]', 'packages: ["-oAPT::Update::Pre-Invoke::=id"]', 'starts with "-"'],
    ['packages[0]', 'packages: [""]', 'empty'],
    ['packages', 'packages: gcc make', 'Expected a list of package names, got the string "gcc make"'],
  ])('rejects %s in %s', (field, line, expected) => {
    expect(reasonFor(withLines(line), field)).toContain(expected);
  });

  it('suggests quoting a number', () => {
    expect(reasonFor(withLines('packages: [3]'), 'packages[0]')).toContain('Quote it if it is meant as text, as in "3"');
  });
});

describe('repositories', () => {
  it('reads names and source lines', () => {
    const manifest = parseManifest(withLines('repositories:', '  sr.ht: https://mirror.sr.ht/debian/ sid main 6B12', '  folded: >', '    https://a/', '    key.rsa.pub'));
    expect(manifest.repositories).toEqual({ 'sr.ht': 'https://mirror.sr.ht/debian/ sid main 6B12', folded: 'https://a/ key.rsa.pub\n' });
  });

  it.each([
    ['repositories.x', 'repositories:\n  x: 3', 'the number 3'],
    ['repositories.x', 'repositories:\n  x:', 'empty value'],
    ['repositories.../etc', 'repositories:\n  ../etc: https://a/', 'Invalid repository name "../etc"'],
    ['repositories', 'repositories: [a]', 'Expected a mapping'],
  ])('rejects %s', (field, lines, expected) => {
    expect(reasonFor(withLines(lines), field)).toContain(expected);
  });
});

describe('sources', () => {
  it.each([
    'https://git.sr.ht/~sircmpwn/hare',
    'http://example.org/repo.git',
    'git://c9x.me/qbe.git',
    'ssh://git@git.sr.ht/~user/repo',
    'git+https://git.sr.ht/~user/repo',
    'git+ssh://git@git.sr.ht/~mlb/linkhut',
    'hg+https://hg.sr.ht/~mahlon/ruby-mdbx',
    'hg+http://hg.example.org/repo',
    'git@github.com:gioui/gio.git',
    'https://gitlab.freedesktop.org/wlroots/wlroots.git#0.16.0',
    'https://github.com/emersion/go-imap#v2',
    'https://git.sr.ht/~user/repo#0123456789abcdef0123456789abcdef01234567',
    'mydir::https://git.sr.ht/~user/repo',
    'mydir::git@github.com:a/b#feature/x',
  ])('accepts %s', (source) => {
    expect(parseManifest(withLines('sources:', `  - "${source}"`)).sources).toEqual([source]);
  });

  it('ignores a comment after a source', () => {
    expect(parseManifest(withLines('sources:', '  - https://git.sr.ht/~a/b # mirror')).sources).toEqual(['https://git.sr.ht/~a/b']);
  });

  it.each([
    ['', 'empty string'],
    ['https://git.sr.ht/~a/b c', 'whitespace or a control character at character 23'],
    ['https://git.sr.ht/~a/b\\u0007', 'control character'],
    ['-uhttps://git.sr.ht/~a/b', 'starts with "-"'],
    ['x::-uhttps://git.sr.ht/~a/b', 'starts with "-"'],
    ['ssh://-oProxyCommand=id/path', 'starts with "-"'],
    ['ssh://-oProxyCommand=id@host/path', 'starts with "-"'],
    ['-oProxyCommand=id@host:path', 'starts with "-"'],
    ['git@-oProxyCommand=id:path', 'starts with "-"'],
    ['https://git.sr.ht/~a/b#-b', 'invalid ref "-b"'],
    ['https://git.sr.ht/~a/b#', 'invalid ref ""'],
    ['https://git.sr.ht/~a/b#a..b', 'invalid ref "a..b"'],
    ['.::https://git.sr.ht/~a/b', 'invalid folder name "."'],
    ['..::https://git.sr.ht/~a/b', 'invalid folder name ".."'],
    ['a/b::https://git.sr.ht/~a/b', 'contains a slash'],
    ['::https://git.sr.ht/~a/b', 'invalid folder name ""'],
    ['-x::https://git.sr.ht/~a/b', 'invalid folder name "-x"'],
    ['file:///etc/passwd', 'scheme "file"'],
    ['ext::sh -c id', 'whitespace'],
    ['ftp://example.org/repo', 'scheme "ftp"'],
    ['git.sr.ht/~a/b', 'not a URL that Kiln can clone'],
    ['https:///path', 'no host name'],
    ['https://git.sr.ht/', 'no usable folder name'],
    ['https://git.sr.ht/..', 'no usable folder name'],
  ])('rejects %j', (source, expected) => {
    const reason = reasonFor(withLines('sources:', `  - "${source}"`), 'sources[0]');
    expect(reason).toContain(expected);
  });

  it('names the bad source', () => {
    expect(reasonFor(withLines('sources:', '  - https://a/b', '  - ftp://example.org/repo'), 'sources[1]')).toContain('"ftp://example.org/repo"');
  });

  it('rejects a number', () => {
    expect(reasonFor(withLines('sources: [42]'), 'sources[0]')).toContain('the number 42');
  });
});

describe('parseSource', () => {
  it.each([
    ['https://git.sr.ht/~sircmpwn/hare', { vcs: 'git', url: 'https://git.sr.ht/~sircmpwn/hare', ref: null, directory: 'hare' }],
    ['git://c9x.me/qbe.git', { vcs: 'git', url: 'git://c9x.me/qbe.git', ref: null, directory: 'qbe' }],
    ['https://example.org/repo.git/', { vcs: 'git', url: 'https://example.org/repo.git/', ref: null, directory: 'repo' }],
    ['git+ssh://git@git.sr.ht/~mlb/linkhut', { vcs: 'git', url: 'ssh://git@git.sr.ht/~mlb/linkhut', ref: null, directory: 'linkhut' }],
    ['hg+https://hg.sr.ht/~mahlon/ruby-mdbx', { vcs: 'hg', url: 'https://hg.sr.ht/~mahlon/ruby-mdbx', ref: null, directory: 'ruby-mdbx' }],
    ['https://github.com/emersion/go-imap#v2', { vcs: 'git', url: 'https://github.com/emersion/go-imap', ref: 'v2', directory: 'go-imap' }],
    ['git@github.com:gioui/gio.git#main', { vcs: 'git', url: 'git@github.com:gioui/gio.git', ref: 'main', directory: 'gio' }],
    ['src::https://git.sr.ht/~a/b#v1.0', { vcs: 'git', url: 'https://git.sr.ht/~a/b', ref: 'v1.0', directory: 'src' }],
    ['https://example.org/repo?x=1', { vcs: 'git', url: 'https://example.org/repo?x=1', ref: null, directory: 'repo' }],
  ])('splits %s', (source, expected) => {
    expect(parseSource(source)).toEqual(expected);
  });

  it('throws a ValidationError on the given field', () => {
    let thrown: unknown;
    try {
      parseSource('-x', 'sources[3]');
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeInstanceOf(ValidationError);
    expect((thrown as ValidationError).errors[0]?.field).toBe('sources[3]');
  });
});

describe('environment', () => {
  it('reads strings, booleans and lists', () => {
    const manifest = parseManifest(withLines('environment:', '  PATH: /usr/bin:/bin', '  _private: "x y"', '  DEBUG: true', '  LIST: [a, b]'));
    expect(manifest.environment).toEqual({ PATH: '/usr/bin:/bin', _private: 'x y', DEBUG: true, LIST: ['a', 'b'] });
  });

  it.each(['1ABC', 'A-B', 'A.B', 'A B', 'É'])('rejects the name %j', (name) => {
    const reason = reasonFor(withLines('environment:', `  "${name}": x`), `environment.${name}`);
    expect(reason).toContain(`Invalid variable name ${JSON.stringify(name)}`);
  });

  it('rejects a nested mapping', () => {
    expect(reasonFor(withLines('environment:', '  NESTED:', '    A: b'), 'environment.NESTED')).toContain('Nested mappings are not allowed');
  });

  it('rejects a mapping inside a list', () => {
    expect(reasonFor(withLines('environment:', '  LIST: [a, {b: c}]'), 'environment.LIST[1]')).toContain('a mapping');
  });

  it('rejects a list inside a list', () => {
    expect(reasonFor(withLines('environment:', '  LIST: [a, [b]]'), 'environment.LIST[1]')).toContain('a list');
  });

  it('rejects a non-mapping', () => {
    expect(reasonFor(withLines('environment: [A=b]'), 'environment')).toContain('Expected a mapping');
  });

  it('stores __proto__ as a plain key', () => {
    const manifest = parseManifest(withLines('environment:', '  __proto__: x'));
    expect(Object.keys(manifest.environment)).toEqual(['__proto__']);
    expect(Object.getPrototypeOf(manifest.environment)).toBe(Object.prototype);
  });
});

describe('secrets', () => {
  it('reads ids with trailing comments', () => {
    const manifest = parseManifest(withLines('secrets:', '  - fa00a8d3-7b63-42d5-8060-3bb31c3e3018 # ssh deploy key (~user)', '  -  my-secret-name'));
    expect(manifest.secrets).toEqual(['fa00a8d3-7b63-42d5-8060-3bb31c3e3018', 'my-secret-name']);
  });

  it('rejects a number', () => {
    expect(reasonFor(withLines('secrets: [a, 12345]'), 'secrets[1]')).toContain('the number 12345');
  });

  it('rejects whitespace', () => {
    expect(reasonFor(withLines('secrets: ["a b"]'), 'secrets[0]')).toContain('"a b" contains whitespace');
  });
});

describe('shell and tasks presence', () => {
  it('defaults shell to false', () => {
    expect(parseManifest(withLines()).shell).toBe(false);
  });

  it('rejects a quoted boolean', () => {
    expect(reasonFor(withLines('shell: "true"'), 'shell')).toContain('the string "true"');
  });

  it('accepts no tasks with shell: true', () => {
    expect(parseManifest('image: alpine/edge\nshell: true\n').tasks).toEqual([]);
  });

  it('accepts an empty task list with shell: true', () => {
    expect(parseManifest('image: alpine/edge\nshell: true\ntasks: []\n').tasks).toEqual([]);
  });

  it('rejects a missing task list', () => {
    expect(reasonFor('image: alpine/edge\n', 'tasks')).toContain('A manifest needs at least one task');
  });

  it('rejects an empty task list', () => {
    expect(reasonFor('image: alpine/edge\ntasks: []\n', 'tasks')).toContain('A manifest needs at least one task');
  });

  it('rejects a missing task list with shell: false', () => {
    expect(reasonFor('image: alpine/edge\nshell: false\n', 'tasks')).toContain('unless it sets shell: true');
  });
});

describe('artifacts', () => {
  const paths = (count: number) => Array.from({ length: count }, (_, index) => `  - out/file${index}.tar.gz`);

  it('accepts eight artifacts', () => {
    expect(parseManifest(withLines('artifacts:', ...paths(8))).artifacts).toHaveLength(8);
  });

  it('rejects nine artifacts', () => {
    const reason = reasonFor(withLines('artifacts:', ...paths(9)), 'artifacts');
    expect(reason).toContain('lists 9 artifacts');
    expect(reason).toContain('the limit is 8');
  });

  it('rejects a repeated file name', () => {
    const reason = reasonFor(withLines('artifacts:', '  - a/out.tar', '  - b/c', '  - b/out.tar'), 'artifacts[2]');
    expect(reason).toContain('"out.tar"');
    expect(reason).toContain('artifacts[0]');
  });

  it('rejects a folder', () => {
    expect(reasonFor(withLines('artifacts: [public/]'), 'artifacts[0]')).toContain('names a folder');
  });

  it('rejects a number', () => {
    expect(reasonFor(withLines('artifacts: [7]'), 'artifacts[0]')).toContain('the number 7');
  });
});

describe('oauth', () => {
  it('reads scopes', () => {
    expect(parseManifest(withLines('oauth: pages.sr.ht/PAGES:RW git.sr.ht/OBJECTS:RO')).oauth).toBe('pages.sr.ht/PAGES:RW git.sr.ht/OBJECTS:RO');
  });

  it('rejects a list', () => {
    expect(reasonFor(withLines('oauth: [pages.sr.ht/PAGES:RW]'), 'oauth')).toContain('got a list');
  });
});

describe('tasks', () => {
  it('keeps order and scripts', () => {
    const manifest = parseManifest('image: alpine/edge\ntasks:\n  - build: |\n      make\n      make install\n  - check: make check\n');
    expect(manifest.tasks).toEqual([
      { name: 'build', script: 'make\nmake install\n' },
      { name: 'check', script: 'make check' },
    ]);
  });

  it('reads a null script as empty', () => {
    expect(parseManifest('image: alpine/edge\ntasks:\n  - nothing:\n').tasks).toEqual([{ name: 'nothing', script: '' }]);
  });

  it('folds a plain multi-line script', () => {
    const manifest = parseManifest('image: alpine/edge\ntasks:\n  - invalidate:\n      aws cloudfront create-invalidation\n      --paths /\n');
    expect(manifest.tasks[0]?.script).toBe('aws cloudfront create-invalidation --paths /');
  });

  it('keeps heredocs and shell comments', () => {
    const script = 'cat <<EOF > x\n  indented: yes\nEOF\n# a comment\n';
    const manifest = parseManifest(`image: alpine/edge\ntasks:\n  - build: |\n${script.replace(/^/gm, '      ').replace(/ +$/, '')}`);
    expect(manifest.tasks[0]?.script).toBe(script);
  });

  it.each(['environment', 'image', 'tasks', 'a', '0', 'build_all-2'])('accepts the name %s', (name) => {
    expect(parseManifest(`image: alpine/edge\ntasks:\n  - ${name}: make\n`).tasks[0]?.name).toBe(name);
  });

  it('accepts a name of 128 characters', () => {
    const name = 'a'.repeat(128);
    expect(parseManifest(`image: alpine/edge\ntasks:\n  - ${name}: make\n`).tasks[0]?.name).toBe(name);
  });

  it('rejects a name of 129 characters', () => {
    const reason = reasonFor(`image: alpine/edge\ntasks:\n  - ${'a'.repeat(129)}: make\n`, 'tasks[0]');
    expect(reason).toContain('129 characters long');
    expect(reason).toContain('limit is 128');
  });

  it.each(['Build', 'build.all', 'build all', 'bûild', '../x', ''])('rejects the name %j', (name) => {
    expect(reasonFor(`image: alpine/edge\ntasks:\n  - ok: make\n  - "${name}": make\n`, 'tasks[1]')).toContain(
      `Invalid task name ${JSON.stringify(name)}`,
    );
  });

  it('rejects a repeated name', () => {
    const reason = reasonFor('image: alpine/edge\ntasks:\n  - build: a\n  - test: b\n  - build: c\n', 'tasks[2]');
    expect(reason).toContain('"build" is already used by tasks[0]');
  });

  it('rejects a task with two keys', () => {
    const reason = reasonFor('image: alpine/edge\ntasks:\n  - build: make\n    test: make test\n', 'tasks[0]');
    expect(reason).toContain('has 2 keys: "build", "test"');
  });

  it('rejects a task that is a string', () => {
    expect(reasonFor('image: alpine/edge\ntasks:\n  - make\n', 'tasks[0]')).toContain('the string "make"');
  });

  it('rejects a list script', () => {
    expect(reasonFor('image: alpine/edge\ntasks:\n  - build: [make]\n', 'tasks[0]')).toContain('must be text, got a list');
  });

  it('rejects a mapping of tasks', () => {
    expect(reasonFor('image: alpine/edge\ntasks:\n  build: make\n', 'tasks')).toContain('Expected a list of tasks, got a mapping');
  });
});

describe('triggers', () => {
  it('reads email and webhook triggers', () => {
    const manifest = parseManifest(
      withLines(
        'triggers:',
        '  - action: email',
        '    condition: failure',
        '    to: Example Dev <dev@example.org>',
        '    cc: other@example.org',
        '    in_reply_to: <123@example.org>',
        '  - action: webhook',
        '    condition: always',
        '    url: https://hooks.example.org/kiln',
      ),
    );
    expect(manifest.triggers).toEqual([
      { action: 'email', condition: 'failure', to: 'Example Dev <dev@example.org>', cc: 'other@example.org', in_reply_to: '<123@example.org>' },
      { action: 'webhook', condition: 'always', url: 'https://hooks.example.org/kiln' },
    ]);
  });

  it('reports triggers in the manifest by index', () => {
    const reason = reasonFor(withLines('triggers:', '  - action: email', '    condition: failure', '    to: a@example.org', '  - action: email', '    condition: sometimes', '    to: a@example.org'), 'triggers[1].condition');
    expect(reason).toContain('"sometimes"');
  });
});

describe('validateTriggers', () => {
  it('accepts null and undefined as no triggers', () => {
    expect(validateTriggers(null, 'triggers')).toEqual([]);
    expect(validateTriggers(undefined, 'triggers')).toEqual([]);
  });

  it.each([
    ['triggers[0].action', [{ action: 'sms', condition: 'always' }], 'Use one of: email, webhook'],
    ['triggers[0].action', [{ condition: 'always', to: 'a@example.org' }], 'is missing'],
    ['triggers[0].condition', [{ action: 'email', condition: 'never', to: 'a@example.org' }], 'Use one of: success, failure, always'],
    ['triggers[0].condition', [{ action: 'email', to: 'a@example.org' }], 'is missing'],
    ['triggers[0].to', [{ action: 'email', condition: 'always' }], 'needs "to"'],
    ['triggers[0].to', [{ action: 'email', condition: 'always', to: 5 }], 'the number 5'],
    ['triggers[0].to', [{ action: 'email', condition: 'always', to: 'a@example.org\r\nBcc: x@example.org' }], 'line break'],
    ['triggers[0].cc', [{ action: 'email', condition: 'always', to: 'a@example.org', cc: ['b@example.org'] }], 'a list'],
    ['triggers[0].in_reply_to', [{ action: 'email', condition: 'always', to: 'a@example.org', in_reply_to: '' }], 'non-empty string'],
    ['triggers[0].url', [{ action: 'webhook', condition: 'success' }], 'needs "url"'],
    ['triggers[0].url', [{ action: 'webhook', condition: 'success', url: 'ftp://example.org/x' }], '"ftp://example.org/x" is not a valid http or https URL'],
    ['triggers[0].url', [{ action: 'webhook', condition: 'success', url: 'not a url' }], 'not a valid http or https URL'],
    ['triggers[1]', [{ action: 'email', condition: 'always', to: 'a@example.org' }, 'email'], 'Expected a trigger mapping'],
    ['triggers', { action: 'email' }, 'Expected a list of triggers'],
  ])('rejects %s', (field, value, expected) => {
    const error = triggerErrorsOf(value).find((candidate) => candidate.field === field);
    expect(error?.reason).toContain(expected);
  });

  it('lists every problem of a trigger', () => {
    const fields = triggerErrorsOf([{ action: 'sms', condition: 'never' }]).map((error) => error.field);
    expect(fields).toEqual(['triggers[0].action', 'triggers[0].condition']);
  });
});

describe('image catalog', () => {
  const names = IMAGES.flatMap((image) => [image.name, ...image.aliases]);

  it('has unique names and aliases', () => {
    expect(new Set(names).size).toBe(names.length);
  });

  it('retires no offered name', () => {
    const retired = RETIRED_IMAGES.flatMap((image) => [image.name, ...image.aliases]);
    expect(retired.filter((name) => names.includes(name))).toEqual([]);
  });

  it.each(IMAGES.map((image) => [image.name, image] as const))('describes %s completely', (_name, image) => {
    expect(image.baseImage).toMatch(/^[a-z0-9./-]+(:[a-z0-9._-]+)?$/);
    expect(['apk', 'apt', 'dnf', 'pacman', 'nix']).toContain(image.packageManager);
    expect(image.architectures.length).toBeGreaterThan(0);
  });

  it('offers archlinux on x86_64 only', () => {
    expect(findImage('archlinux')?.architectures).toEqual(['x86_64']);
  });

  it('finds an image by alias and architecture', () => {
    expect(findImage('ubuntu/noble', 'arm64')?.baseImage).toBe('ubuntu:24.04');
  });

  it('finds no image for a missing architecture', () => {
    expect(findImage('archlinux', 'arm64')).toBeUndefined();
  });
});

describe('alias expansion', () => {
  const laughs = (name: string) => {
    const lines = ['l0: &l0 [a, a, a, a, a, a, a, a, a]'];
    for (let level = 1; level <= 9; level++) {
      const previous = `*l${level - 1}`;
      lines.push(`l${level}: &l${level} [${Array(9).fill(previous).join(', ')}]`);
    }
    return withLines(...lines, `${name}: *l9`);
  };

  it('rejects a billion laughs in triggers', () => {
    expect(reasonFor(laughs('triggers'), 'manifest')).toContain('expand to more than 100000 values');
  });

  it('rejects exponential merge keys', () => {
    const lines = ['m0: &m0 {A: 1}'];
    for (let level = 1; level <= 12; level++) {
      const previous = `*m${level - 1}`;
      lines.push(`m${level}: &m${level}`, `  <<: [${Array(9).fill(previous).join(', ')}]`);
    }
    lines.push('environment:', '  <<: *m12');
    expect(reasonFor(withLines(...lines), 'manifest')).toContain('expand to more than 100000 values');
  });
});
