import { isMap, isScalar, isSeq } from 'yaml';
import type { EnvironmentValue } from '../runner/protocol.js';
import type { ManifestTask } from './types.js';
import { type ManifestReader, type ValueNode, describeNode, quote } from './yaml.js';

/** build.sr.ht uploads at most this many artifacts per job. */
export const MAX_ARTIFACTS = 8;

export const MAX_TASK_NAME_LENGTH = 128;

const TASK_NAME = /^[a-z0-9_-]+$/;
const ENVIRONMENT_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
/** Repository names become file names in the package manager's configuration. */
const REPOSITORY_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
const CONTROL_CHARACTER = /[\u0000-\u001f\u007f-\u009f]/;

/** Advice for a scalar that YAML read as a number, boolean or date where text was expected. */
function quoteAdvice(node: ValueNode): string {
  return isScalar(node) ? ` Quote it if it is meant as text, as in "${node.source ?? String(node.value)}".` : '';
}

/**
 * Reads a list of strings. A missing or empty value gives an empty list.
 * `check` returns the reason an item is invalid, or null.
 */
export function readStringList(
  reader: ManifestReader,
  node: unknown,
  field: string,
  itemName: string,
  check: (value: string) => string | null,
): string[] {
  const list = reader.resolve(node);
  if (list === null) return [];
  if (!isSeq(list)) {
    reader.fail(
      field,
      `Expected a list of ${itemName}s, got ${describeNode(list)}. Write each ${itemName} as a list item starting with "- ".`,
    );
    return [];
  }

  const values: string[] = [];
  list.items.forEach((item, index) => {
    const itemField = `${field}[${index}]`;
    const value = reader.resolve(item);
    if (value === null) {
      reader.fail(itemField, `Expected a ${itemName}, got an empty value. Remove the empty item or fill it in.`);
      return;
    }
    if (!isScalar(value) || typeof value.value !== 'string') {
      reader.fail(itemField, `Expected a ${itemName} as a string, got ${describeNode(value)}.${quoteAdvice(value)}`);
      return;
    }
    const problem = check(value.value);
    if (problem !== null) {
      reader.fail(itemField, problem);
      return;
    }
    values.push(value.value);
  });
  return values;
}

/** Reads `repositories`, a mapping of repository name to the package manager's source line. */
export function readRepositories(reader: ManifestReader, node: unknown): Record<string, string> {
  const map = reader.resolve(node);
  const repositories: Record<string, string> = {};
  if (map === null) return repositories;
  if (!isMap(map)) {
    reader.fail(
      'repositories',
      `Expected a mapping of repository name to source line, got ${describeNode(map)}. Write each as "name: url ...".`,
    );
    return repositories;
  }

  for (const [name, valueNode] of reader.entries(map, 'repositories')) {
    const field = `repositories.${name}`;
    if (!REPOSITORY_NAME.test(name)) {
      reader.fail(
        field,
        `Invalid repository name ${quote(name)}. Use letters, digits, ".", "_" and "-", starting with a letter or digit.`,
      );
      continue;
    }
    const value = reader.resolve(valueNode);
    if (value === null || !isScalar(value) || typeof value.value !== 'string' || value.value.trim() === '') {
      reader.fail(field, `Expected the repository's source line as a non-empty string, got ${describeNode(value)}.`);
      continue;
    }
    defineEntry(repositories, name, value.value);
  }
  return repositories;
}

/**
 * Reads `environment`. Numbers, dates and other non-string scalars keep the
 * text the manifest wrote (`1.10` stays "1.10", `0x1F` stays "0x1F"), strings
 * stay strings and booleans stay booleans.
 */
export function readEnvironment(reader: ManifestReader, node: unknown): Record<string, EnvironmentValue> {
  const map = reader.resolve(node);
  const environment: Record<string, EnvironmentValue> = {};
  if (map === null) return environment;
  if (!isMap(map)) {
    reader.fail(
      'environment',
      `Expected a mapping of variable names to values, got ${describeNode(map)}. Write each variable as "NAME: value".`,
    );
    return environment;
  }

  for (const [name, valueNode] of reader.entries(map, 'environment')) {
    const field = `environment.${name}`;
    if (!ENVIRONMENT_NAME.test(name)) {
      reader.fail(
        field,
        `Invalid variable name ${quote(name)}. A name starts with a letter or "_" and contains only letters, digits and "_".`,
      );
      continue;
    }
    const value = reader.resolve(valueNode);
    if (isMap(value)) {
      reader.fail(
        field,
        'Expected a string, number, boolean or list, got a mapping. Nested mappings are not allowed: flatten them into separate variables.',
      );
      continue;
    }
    if (!isSeq(value)) {
      defineEntry(environment, name, environmentScalar(reader, value));
      continue;
    }

    const items: Array<string | boolean | null> = [];
    value.items.forEach((item, index) => {
      const itemValue = reader.resolve(item);
      if (isMap(itemValue) || isSeq(itemValue)) {
        reader.fail(
          `${field}[${index}]`,
          `Expected a string, number or boolean, got ${describeNode(itemValue)}. A list item cannot be a list or mapping.`,
        );
        return;
      }
      items.push(environmentScalar(reader, itemValue));
    });
    defineEntry(environment, name, items);
  }
  return environment;
}

function environmentScalar(reader: ManifestReader, node: ValueNode | null): string | boolean | null {
  if (node === null || !isScalar(node)) return null;
  if (typeof node.value === 'boolean') return node.value;
  return reader.text(node);
}

/** Reads `artifacts`: at most {@link MAX_ARTIFACTS} file paths whose file names are unique. */
export function readArtifacts(reader: ManifestReader, node: unknown): string[] {
  const artifacts = readStringList(reader, node, 'artifacts', 'file path', (path) => {
    if (path === '') return 'The artifact path is empty. Write the path of a file to keep after the build.';
    if (CONTROL_CHARACTER.test(path)) return `Artifact path ${quote(path)} contains a control character. Remove it.`;
    if (path.endsWith('/')) {
      return `Artifact path ${quote(path)} ends with "/", so it names a folder. Name a file, such as an archive of the folder.`;
    }
    return null;
  });

  const list = reader.resolve(node);
  const count = isSeq(list) ? list.items.length : 0;
  if (count > MAX_ARTIFACTS) {
    reader.fail(
      'artifacts',
      `The manifest lists ${count} artifacts, but the limit is ${MAX_ARTIFACTS}. Remove ${count - MAX_ARTIFACTS}, or pack several files into one archive.`,
    );
  }

  const firstIndexByName = new Map<string, number>();
  if (isSeq(list)) {
    list.items.forEach((item, index) => {
      const value = reader.resolve(item);
      if (!isScalar(value) || typeof value.value !== 'string' || value.value === '') return;
      const fileName = value.value.slice(value.value.lastIndexOf('/') + 1);
      const first = firstIndexByName.get(fileName);
      if (first === undefined) {
        firstIndexByName.set(fileName, index);
        return;
      }
      reader.fail(
        `artifacts[${index}]`,
        `Artifact ${quote(value.value)} has the file name ${quote(fileName)}, like artifacts[${first}]. Artifacts are stored by file name, so rename or archive one of them.`,
      );
    });
  }
  return artifacts;
}

/**
 * Reads `tasks`: a list of one-key mappings from task name to script. The list
 * may be missing or empty only when `shell` is true.
 */
export function readTasks(reader: ManifestReader, node: unknown, shell: boolean): ManifestTask[] {
  const list = reader.resolve(node);
  const noTasks = 'A manifest needs at least one task, unless it sets shell: true. Add a task such as "- build: make".';
  if (list === null) {
    if (!shell) reader.fail('tasks', `The manifest has no tasks. ${noTasks}`);
    return [];
  }
  if (!isSeq(list)) {
    reader.fail(
      'tasks',
      `Expected a list of tasks, got ${describeNode(list)}. Write each task as a list item "- name: script".`,
    );
    return [];
  }
  if (list.items.length === 0 && !shell) reader.fail('tasks', `The task list is empty. ${noTasks}`);

  const tasks: ManifestTask[] = [];
  const firstIndexByName = new Map<string, number>();
  list.items.forEach((item, index) => {
    const field = `tasks[${index}]`;
    const task = readTask(reader, item, field);
    if (task === null) return;
    const first = firstIndexByName.get(task.name);
    if (first !== undefined) {
      reader.fail(
        field,
        `Task name ${quote(task.name)} is already used by tasks[${first}]. Task names must be unique: rename one of them.`,
      );
      return;
    }
    firstIndexByName.set(task.name, index);
    tasks.push(task);
  });
  return tasks;
}

function readTask(reader: ManifestReader, item: unknown, field: string): ManifestTask | null {
  const map = reader.resolve(item);
  if (!isMap(map)) {
    reader.fail(
      field,
      `Expected a task as a mapping from its name to its script, as in "- build: make", got ${describeNode(map)}.`,
    );
    return null;
  }

  const entries = [...reader.entries(map, field)];
  const [entry] = entries;
  if (entry === undefined || entries.length !== 1) {
    const keys = entries.map(([key]) => quote(key)).join(', ');
    reader.fail(
      field,
      `A task must be a mapping with exactly one key, its name, but this one has ${entries.length} keys${keys ? `: ${keys}` : ''}. ` +
        'Start each task with "- ", and indent a multi-line script under its name after "|".',
    );
    return null;
  }

  const [name, scriptNode] = entry;
  if (name.length > MAX_TASK_NAME_LENGTH) {
    reader.fail(
      field,
      `Task name ${quote(name)} is ${name.length} characters long, but the limit is ${MAX_TASK_NAME_LENGTH}. Shorten it.`,
    );
    return null;
  }
  if (!TASK_NAME.test(name)) {
    reader.fail(field, `Invalid task name ${quote(name)}. Use only lowercase letters, digits, "_" and "-".`);
    return null;
  }

  const script = reader.resolve(scriptNode);
  if (script === null) return { name, script: '' };
  if (!isScalar(script)) {
    reader.fail(
      field,
      `The script of task ${quote(name)} must be text, got ${describeNode(script)}. Write a multi-line script as a block after "|".`,
    );
    return null;
  }
  return { name, script: reader.text(script) };
}

/** Adds a key to a record, safely for the key `__proto__`, which plain assignment would treat as the prototype. */
function defineEntry<T>(record: Record<string, T>, key: string, value: T): void {
  Object.defineProperty(record, key, { value, enumerable: true, writable: true, configurable: true });
}
