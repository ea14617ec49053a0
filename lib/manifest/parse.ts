import { isScalar } from 'yaml';
import { ValidationError } from '../errors.js';
import { readArtifacts, readEnvironment, readRepositories, readStringList, readTasks } from './fields.js';
import {
  type Architecture,
  type CatalogImage,
  describeUnavailableImage,
  findImage,
  normalizeArchitecture,
  offeredImageNames,
} from './images.js';
import { checkSource } from './sources.js';
import { collectTriggers, describeValue } from './triggers.js';
import type { Manifest } from './types.js';
import { ManifestReader, describeNode, loadManifestDocument, quote } from './yaml.js';

/**
 * The maximum manifest length in characters (Unicode code points), build.sr.ht's limit.
 * NOTE: if build.sr.ht counts UTF-8 bytes instead, a long manifest with
 * non-ASCII text can pass here and fail there.
 */
export const MAX_MANIFEST_LENGTH = 16384;

const CONTROL_CHARACTER = /[\u0000-\u001f\u007f-\u009f]/;
const WHITESPACE = /\s/;

/**
 * Parses and validates a build.sr.ht manifest, filling in defaults.
 *
 * @throws ValidationError listing every problem found, each with the field it
 *   concerns: `manifest` for the text and its YAML syntax, otherwise the
 *   setting, such as `image`, `packages[2]` or `triggers[0].condition`.
 */
export function parseManifest(text: string): Manifest {
  checkManifestText(text);
  const { document, root } = loadManifestDocument(text);
  const reader = new ManifestReader(document);
  const settings = reader.entries(root, 'manifest');

  const image = readImage(reader, settings.get('image'));
  const arch = readArch(reader, settings.get('arch'), image);
  const packages = readStringList(reader, settings.get('packages'), 'packages', 'package name', checkPackage);
  const repositories = readRepositories(reader, settings.get('repositories'));
  const sources = readStringList(reader, settings.get('sources'), 'sources', 'source URL', checkSourceText);
  const environment = readEnvironment(reader, settings.get('environment'));
  const secrets = readStringList(reader, settings.get('secrets'), 'secrets', 'secret', checkSecret);
  const shell = readShell(reader, settings.get('shell'));
  const artifacts = readArtifacts(reader, settings.get('artifacts'));
  const oauth = readOauth(reader, settings.get('oauth'));
  const tasks = readTasks(reader, settings.get('tasks'), shell);
  const triggers = collectTriggers(reader.plain(settings.get('triggers')), 'triggers', reader.errors);

  if (reader.errors.length > 0 || image === null) throw new ValidationError(reader.errors);
  return {
    image: image.written,
    canonicalImage: image.entry.name,
    arch,
    packages,
    repositories,
    sources,
    environment,
    secrets,
    shell,
    artifacts,
    oauth,
    tasks,
    triggers,
  };
}

function checkManifestText(text: unknown): asserts text is string {
  if (typeof text !== 'string') {
    throw ValidationError.of('manifest', `Expected the manifest as a string of YAML, got ${describeValue(text)}.`);
  }
  if (text.length > MAX_MANIFEST_LENGTH) {
    let characters = 0;
    for (const _character of text) characters++;
    if (characters > MAX_MANIFEST_LENGTH) {
      throw ValidationError.of(
        'manifest',
        `The manifest is ${characters} characters long, but the limit is ${MAX_MANIFEST_LENGTH}. ` +
          'Move long scripts into files in your repository and call them from the tasks.',
      );
    }
  }
  if (text.trim() === '') {
    throw ValidationError.of('manifest', 'The manifest is empty. Write a YAML mapping with at least image and tasks.');
  }
}

function readImage(reader: ManifestReader, node: unknown): { written: string; entry: CatalogImage } | null {
  const value = reader.resolve(node);
  const offered = `Use one of these images: ${offeredImageNames().join(', ')}.`;
  if (value === null) {
    reader.fail('image', `The manifest has no image. ${offered}`);
    return null;
  }
  if (!isScalar(value) || typeof value.value !== 'string') {
    reader.fail('image', `Expected the image name as a string, got ${describeNode(value)}. ${offered}`);
    return null;
  }
  const entry = findImage(value.value);
  if (entry === undefined) {
    reader.fail('image', describeUnavailableImage(value.value));
    return null;
  }
  return { written: value.value, entry };
}

function readArch(reader: ManifestReader, node: unknown, image: { written: string; entry: CatalogImage } | null): Architecture {
  const value = reader.resolve(node);
  let arch: Architecture = 'x86_64';
  if (value !== null) {
    const normalized = isScalar(value) && typeof value.value === 'string' ? normalizeArchitecture(value.value) : undefined;
    if (normalized === undefined) {
      reader.fail(
        'arch',
        `Unknown architecture: got ${describeNode(value)}. Use x86_64 (alias amd64) or arm64 (alias aarch64), or leave arch out for x86_64.`,
      );
      return arch;
    }
    arch = normalized;
  }
  if (image !== null && !image.entry.architectures.includes(arch)) {
    const offered = image.entry.architectures.join(', ');
    reader.fail(
      'arch',
      `Image ${JSON.stringify(image.written)} is offered for ${offered} only, not for ${arch}. Set arch to ${offered} or choose another image.`,
    );
  }
  return arch;
}

function readShell(reader: ManifestReader, node: unknown): boolean {
  const value = reader.resolve(node);
  if (value === null) return false;
  if (isScalar(value) && typeof value.value === 'boolean') return value.value;
  reader.fail(
    'shell',
    `Expected true or false, got ${describeNode(value)}. Write shell: true or shell: false without quotes.`,
  );
  return false;
}

function readOauth(reader: ManifestReader, node: unknown): string | null {
  const value = reader.resolve(node);
  if (value === null) return null;
  if (isScalar(value) && typeof value.value === 'string' && !CONTROL_CHARACTER.test(value.value)) return value.value;
  reader.fail(
    'oauth',
    `Expected OAuth scopes as one string, separated by spaces, got ${describeNode(value)}. Write them as in oauth: pages.sr.ht/PAGES:RW.`,
  );
  return null;
}

function checkPackage(name: string): string | null {
  const quoted = quote(name);
  if (name === '') return 'The package name is empty. Remove the item or write a package name.';
  if (WHITESPACE.test(name) || CONTROL_CHARACTER.test(name)) {
    return `Package name ${quoted} contains whitespace or a control character. List each package as its own item.`;
  }
  if (name.startsWith('-')) {
    return `Package name ${quoted} starts with "-", which the package manager would read as an option. Write the package name alone.`;
  }
  return null;
}

function checkSecret(id: string): string | null {
  if (id === '') return 'The secret is empty. Write the id (a UUID) or the name of a secret.';
  if (WHITESPACE.test(id) || CONTROL_CHARACTER.test(id)) {
    return `Secret ${quote(id)} contains whitespace or a control character. Write the id (a UUID) or the name of a secret alone.`;
  }
  return null;
}

function checkSourceText(source: string): string | null {
  const checked = checkSource(source);
  return checked.ok ? null : checked.reason;
}
