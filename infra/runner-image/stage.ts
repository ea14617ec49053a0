/**
 * Stages the Docker build context of the runner image: the Dockerfile, the
 * image setup script and the runner bundled by esbuild into one ES module.
 * The CDK stack calls this at synthesis, so a clean clone synthesizes
 * without a separate build step; `npm run build:runner` runs it alone.
 */
import { buildSync } from 'esbuild';
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const IMAGE_SOURCE_DIR = path.dirname(fileURLToPath(import.meta.url));
const REPOSITORY_ROOT = path.resolve(IMAGE_SOURCE_DIR, '../..');

/** The runner's entry point. */
export const RUNNER_ENTRY = path.join(REPOSITORY_ROOT, 'lib/runner/main.ts');

/** The folder that build contexts are staged in; git ignores `dist/`. */
export const DEFAULT_STAGE_ROOT = path.join(REPOSITORY_ROOT, 'dist/runner-image');

/** The files of this folder that go into the build context next to the bundle. */
const IMAGE_FILES = ['Dockerfile', 'entrypoint.mjs', 'setup-image.sh'];

/**
 * Node.js lets an ES module call `require` only through createRequire, which
 * the CommonJS packages in the bundle (pino among them) need for Node.js's
 * built-in modules.
 */
export const ESM_REQUIRE_BANNER = "import { createRequire } from 'node:module'; const require = createRequire(import.meta.url);";

/**
 * Bundles the runner and stages it with the image files in a folder under
 * `root` named by the SHA-256 of the contents, and returns that folder. The
 * folder is written under a temporary name and renamed into place, so
 * concurrent syntheses never see a half-written context, and the image
 * asset's hash changes only when the contents do.
 */
export function stageRunnerImage(root: string = DEFAULT_STAGE_ROOT): string {
  const result = buildSync({
    entryPoints: [RUNNER_ENTRY],
    outfile: 'runner.mjs',
    write: false,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node22',
    sourcemap: true,
    sourcesContent: false,
    // Paths in the source map are relative to the output, so they do not depend on where the repository is checked out.
    sourceRoot: '',
    banner: { js: ESM_REQUIRE_BANNER },
    logLevel: 'silent',
  });
  if (result.errors.length > 0) {
    throw new Error(`failed to bundle the runner: ${result.errors.map((error) => error.text).join('; ')}`);
  }

  const files = new Map<string, Uint8Array>();
  for (const output of result.outputFiles) files.set(path.basename(output.path), output.contents);
  for (const file of IMAGE_FILES) files.set(file, readFileSync(path.join(IMAGE_SOURCE_DIR, file)));

  const hash = createHash('sha256');
  for (const [name, contents] of [...files].sort(([a], [b]) => a.localeCompare(b))) {
    hash.update(`${name}\0${contents.length}\0`).update(contents);
  }
  const directory = path.join(root, hash.digest('hex').slice(0, 16));
  if (existsSync(directory)) return directory;

  mkdirSync(root, { recursive: true });
  const staging = mkdtempSync(path.join(root, '.staging-'));
  chmodSync(staging, 0o755);
  for (const [name, contents] of files) {
    writeFileSync(path.join(staging, name), contents, { mode: name.endsWith('.sh') ? 0o755 : 0o644 });
  }
  try {
    renameSync(staging, directory);
  } catch (error) {
    // Another synthesis staged the same contents first.
    rmSync(staging, { recursive: true, force: true });
    if (!existsSync(directory)) throw error;
  }

  return directory;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const directory = stageRunnerImage(process.argv[2] ? path.resolve(process.argv[2]) : DEFAULT_STAGE_ROOT);
  console.log(`staged the runner image build context in ${directory}`);
}
