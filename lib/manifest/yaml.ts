import {
  type Alias,
  type Document,
  LineCounter,
  type ParsedNode,
  type Scalar,
  type ScalarTag,
  type Tags,
  type YAMLError,
  type YAMLMap,
  type YAMLSeq,
  isAlias,
  isMap,
  isScalar,
  isSeq,
  parseAllDocuments,
} from 'yaml';
import { type FieldError, ValidationError } from '../errors.js';

/** A node after alias resolution: a scalar, a mapping or a sequence. */
export type ValueNode = Scalar | YAMLMap | YAMLSeq;

const SYNTAX_FIX = "Fix the manifest's syntax and submit it again.";

/** Syntax errors on more lines than this are summed up in one last entry, because later ones mostly follow from the first. */
const MAX_SYNTAX_ERRORS = 20;

/** Merge keys (`<<`) nested deeper than this are treated as a cycle. */
const MAX_MERGE_DEPTH = 16;

/** Collections nested deeper than this are cut off when converted to plain values. */
const MAX_PLAIN_DEPTH = 32;

/**
 * Mapping entries and values that one manifest may expand to. Aliases can
 * repeat a collection many times over (the "billion laughs" attack), while a
 * manifest of 16,384 characters contains fewer than 16,384 nodes of its own.
 */
const MAX_EXPANDED_NODES = 100_000;

// PyYAML, which build.sr.ht parses manifests with, reads only these words as
// YAML 1.1 booleans. The `yaml` package's 1.1 schema also reads y, Y, n and N,
// which would turn a task or variable named `y` into `true`.
const PYYAML_TRUE = /^(?:yes|Yes|YES|true|True|TRUE|on|On|ON)$/;
const PYYAML_FALSE = /^(?:no|No|NO|false|False|FALSE|off|Off|OFF)$/;

function withPyYamlBooleans(tags: Tags): Tags {
  return tags.map((tag): Tags[number] => {
    if (typeof tag === 'string' || 'collection' in tag || tag.tag !== 'tag:yaml.org,2002:bool') return tag;
    const scalarTag: ScalarTag = { ...tag, test: tag.identify?.(true) ? PYYAML_TRUE : PYYAML_FALSE };
    return scalarTag;
  });
}

function firstLine(message: string): string {
  const line = message.split('\n', 1)[0] ?? '';
  return line.replace(/ at line \d+, column \d+:?$/, '').replace(/\.$/, '');
}

function describeSyntaxError(error: YAMLError, text: string, lineCounter: LineCounter): FieldError {
  const { line, col } = lineCounter.linePos(error.pos[0]);
  let hint = '';
  const sourceLine = text.split(/\r?\n/)[line - 1] ?? '';
  const indentation = /^[ \t]*/.exec(sourceLine)?.[0] ?? '';
  if (error.code !== 'TAB_AS_INDENT' && indentation.includes('\t')) {
    hint = ` Line ${line} is indented with a tab, but YAML indentation must use spaces.`;
  }
  return {
    field: 'manifest',
    reason: `Invalid YAML at line ${line}, column ${col}: ${firstLine(error.message)}.${hint} ${SYNTAX_FIX}`,
  };
}

/**
 * Parses manifest text as one YAML 1.1 document whose root is a mapping.
 * Duplicate keys are allowed, and {@link ManifestReader.entries} keeps the
 * later one, as PyYAML does.
 *
 * @throws ValidationError on field `manifest` for syntax errors, which give
 *   line and column, for several documents, and for a root that is not a mapping.
 */
export function loadManifestDocument(text: string): { document: Document.Parsed; root: YAMLMap } {
  const lineCounter = new LineCounter();
  const parsed = parseAllDocuments(text, {
    version: '1.1',
    uniqueKeys: false,
    prettyErrors: false,
    lineCounter,
    customTags: withPyYamlBooleans,
  });
  const documents = Array.isArray(parsed) ? parsed : [];

  const syntaxErrors = documents.flatMap((document) => document.errors);
  if (syntaxErrors.length > 0) {
    // Keep the first error of each line: the others on a line mostly follow from it.
    const reportedLines = new Set<number>();
    const errors: FieldError[] = [];
    for (const error of syntaxErrors) {
      const { line } = lineCounter.linePos(error.pos[0]);
      if (reportedLines.has(line)) continue;
      reportedLines.add(line);
      errors.push(describeSyntaxError(error, text, lineCounter));
    }
    if (errors.length > MAX_SYNTAX_ERRORS) {
      const omitted = errors.length - MAX_SYNTAX_ERRORS;
      errors.splice(MAX_SYNTAX_ERRORS, omitted, {
        field: 'manifest',
        reason: `The YAML parser found errors on ${omitted} more lines after these. ${SYNTAX_FIX}`,
      });
    }
    throw new ValidationError(errors);
  }

  const [document, second] = documents;
  if (document === undefined) {
    throw ValidationError.of('manifest', 'The manifest contains only comments or blank lines. Write a YAML mapping with at least image and tasks.');
  }
  if (second !== undefined) {
    const { line } = lineCounter.linePos(second.range[0]);
    throw ValidationError.of(
      'manifest',
      `The manifest contains ${documents.length} YAML documents, and the second starts at line ${line}. ` +
        "A manifest must be a single document: remove the '---' separator and everything after it, or merge the documents.",
    );
  }

  const root = document.contents;
  if (!isMap(root)) {
    const found = root === null || (isScalar(root) && root.value === null) ? 'empty' : describeNode(root);
    throw ValidationError.of(
      'manifest',
      `The manifest must be a YAML mapping of settings such as image and tasks, but its document is ${found}. Write it as "key: value" lines.`,
    );
  }
  return { document, root };
}

/** Describes a node for an error message, with scalars as the manifest wrote them. */
export function describeNode(node: ValueNode | ParsedNode | null | undefined): string {
  if (node === null || node === undefined) return 'an empty value';
  if (isMap(node)) return 'a mapping';
  if (isSeq(node)) return 'a list';
  if (isAlias(node)) return 'an alias';
  const value: unknown = node.value;
  const written = node.source ?? String(value);
  if (typeof value === 'string') return `the string ${quote(value)}`;
  if (value === null) return 'an empty value';
  if (typeof value === 'boolean') return `the boolean ${written}`;
  if (typeof value === 'number' || typeof value === 'bigint') return `the number ${written}`;
  if (value instanceof Date) return `the date ${written}`;
  return `the value ${written}`;
}

/** Quotes a string for a message, cut to 80 characters. */
export function quote(value: string): string {
  const cut = value.length > 80 ? `${value.slice(0, 77)}...` : value;
  return JSON.stringify(cut);
}

/** Reads the nodes of a parsed manifest and collects the problems it finds. */
export class ManifestReader {
  readonly errors: FieldError[] = [];

  private expandedNodes = 0;

  private readonly aliasTargets = new Map<Alias, unknown>();

  constructor(private readonly document: Document.Parsed) {}

  /** @throws ValidationError once aliases have expanded the manifest past {@link MAX_EXPANDED_NODES}. */
  private countExpansion(count: number): void {
    this.expandedNodes += count;
    if (this.expandedNodes > MAX_EXPANDED_NODES) {
      throw ValidationError.of(
        'manifest',
        `The manifest's aliases expand to more than ${MAX_EXPANDED_NODES} values. Write the repeated parts out or use fewer nested aliases.`,
      );
    }
  }

  fail(field: string, reason: string): void {
    this.errors.push({ field, reason });
  }

  /** Follows aliases to the node they name. A missing value is null. */
  resolve(node: unknown): ValueNode | null {
    let current = node;
    if (isAlias(current)) {
      // Alias.resolve searches the whole document for the anchor, so its result is cached.
      if (!this.aliasTargets.has(current)) this.aliasTargets.set(current, current.resolve(this.document));
      current = this.aliasTargets.get(current);
    }
    if (isScalar(current)) return current.value === null ? null : current;
    if (isMap(current) || isSeq(current)) return current;
    return null;
  }

  /**
   * Returns the entries of a mapping by key. A later duplicate key replaces the
   * earlier value, and keys from `<<` merge keys fill in only what the mapping
   * lacks, as YAML 1.1 defines.
   */
  entries(map: YAMLMap, field: string, depth = 0): Map<string, unknown> {
    this.countExpansion(map.items.length);
    const explicit = new Map<string, unknown>();
    const mergeSources: unknown[] = [];

    for (const pair of map.items) {
      if (isMergeKey(pair.key)) {
        const source = this.resolve(pair.value);
        if (isSeq(source)) mergeSources.push(...source.items);
        else mergeSources.push(pair.value);
        continue;
      }
      explicit.set(this.keyName(pair.key), pair.value);
    }

    for (const item of mergeSources) {
      const source = this.resolve(item);
      if (depth >= MAX_MERGE_DEPTH) {
        this.fail(
          field || 'manifest',
          `"<<" merge keys nest more than ${MAX_MERGE_DEPTH} levels deep or refer to themselves. Remove the cycle.`,
        );
        break;
      }
      if (!isMap(source)) {
        this.fail(
          field || 'manifest',
          `A "<<" merge key must name a mapping or a list of mappings, but it names ${describeNode(source)}. Fix the merge key.`,
        );
        continue;
      }
      for (const [key, value] of this.entries(source, field, depth + 1)) {
        if (!explicit.has(key)) explicit.set(key, value);
      }
    }
    return explicit;
  }

  /** Returns a key's name: a string key gives its value, and another scalar (number, boolean) its text as written. */
  keyName(key: unknown): string {
    const node = this.resolve(key);
    if (node === null) return isScalar(key) ? (key.source ?? '') : '';
    if (isScalar(node)) return typeof node.value === 'string' ? node.value : (node.source ?? String(node.value));
    return JSON.stringify(this.plain(node));
  }

  /** Returns a scalar's text: strings as parsed, other scalars (numbers, booleans, dates) as written. */
  text(node: Scalar): string {
    return typeof node.value === 'string' ? node.value : (node.source ?? String(node.value));
  }

  /** Converts a node to plain JavaScript values, with the same key rules as {@link entries}. */
  plain(node: unknown, depth = 0): unknown {
    const resolved = this.resolve(node);
    if (resolved === null || depth > MAX_PLAIN_DEPTH) return null;
    this.countExpansion(1);
    if (isScalar(resolved)) return resolved.value;
    if (isSeq(resolved)) return resolved.items.map((item) => this.plain(item, depth + 1));
    const result: Record<string, unknown> = {};
    for (const [key, value] of this.entries(resolved, '')) {
      // defineProperty, because plain assignment of a `__proto__` key would replace the prototype.
      const property = { value: this.plain(value, depth + 1), enumerable: true, writable: true, configurable: true };
      Object.defineProperty(result, key, property);
    }
    return result;
  }
}

function isMergeKey(key: unknown): boolean {
  return isScalar(key) && typeof key.value === 'symbol' && key.value.description === '<<';
}
