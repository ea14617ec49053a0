/**
 * Bundles every Lambda entry point under functions/ with the esbuild
 * settings that the CDK stack uses, then prints each bundle's size and how
 * long Node.js takes to load it, as a ratio to starting a bare `node -e 0`.
 *
 *   npx tsx bench/bundles.ts [--runs 10]
 *
 * The bare start and every bundle are timed in turns within each round, so
 * a busy machine slows all of them alike, and the median of the rounds is
 * reported. Each bundle runs as Lambda runs it, with NODE_OPTIONS
 * --enable-source-maps, and imports the AWS SDK from this repository's
 * node_modules, where the Lambda runtime would use its own copy. Loading
 * runs the module's top level only: no handler is called, so no SDK client
 * sends a request.
 */
import { build } from 'esbuild';
import { spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { LAMBDA_BUNDLING, PROJECT_ROOT } from '../infra/service-function.js';

/** Lambda's limit for one deployment package is 50 MB zipped; Kiln aims far lower so cold starts stay short. */
const SIZE_TARGET_BYTES = 1024 * 1024;

const OUTPUT_ROOT = path.join(PROJECT_ROOT, 'dist/bench-bundles');

interface Bundle {
  name: string;
  file: string;
  bytes: number;
  mapBytes: number;
  /** The packages the bundle leaves to the runtime, such as `@aws-sdk/client-s3`. */
  externals: string[];
}

/** Bundles one entry point the way NodejsFunction does with {@link LAMBDA_BUNDLING}. */
async function bundle(entry: string): Promise<Bundle> {
  const name = path.basename(entry, '.ts');
  const directory = path.join(OUTPUT_ROOT, name);
  const file = path.join(directory, 'index.mjs');
  rmSync(directory, { recursive: true, force: true });
  mkdirSync(directory, { recursive: true });

  const result = await build({
    entryPoints: [entry],
    outfile: file,
    bundle: true,
    platform: 'node',
    target: LAMBDA_BUNDLING.target,
    format: 'esm',
    minify: LAMBDA_BUNDLING.minify,
    sourcemap: LAMBDA_BUNDLING.sourceMap,
    sourcesContent: LAMBDA_BUNDLING.sourcesContent,
    mainFields: LAMBDA_BUNDLING.mainFields,
    external: LAMBDA_BUNDLING.externalModules,
    banner: { js: LAMBDA_BUNDLING.banner ?? '' },
    metafile: true,
    logLevel: 'warning',
  });
  const externals = Object.values(result.metafile.outputs)
    .flatMap((output) => output.imports)
    .filter((item) => item.external && !item.path.startsWith('node:'))
    .map((item) => item.path);

  return { name, file, bytes: statSync(file).size, mapBytes: statSync(`${file}.map`).size, externals: [...new Set(externals)].sort() };
}

/** Runs node with `args` and returns the wall time in ms; throws when node fails. */
function timeNode(args: string[], env: NodeJS.ProcessEnv): number {
  const start = process.hrtime.bigint();
  const result = spawnSync(process.execPath, args, { env, encoding: 'utf8', cwd: PROJECT_ROOT });
  const elapsed = Number(process.hrtime.bigint() - start) / 1e6;
  if (result.status !== 0) {
    throw new Error(`node ${args.join(' ')} failed with status ${result.status}: ${result.stderr.slice(0, 500)}`);
  }

  return elapsed;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);

  return sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { runs: { type: 'string', default: '10' } } });
  const runs = Number(values.runs);
  if (!Number.isInteger(runs) || runs < 1) throw new Error(`--runs takes a whole number of at least 1, not "${values.runs}"`);

  const entries = readdirSync(path.join(PROJECT_ROOT, 'functions'))
    .filter((file) => file.endsWith('.ts'))
    .sort()
    .map((file) => path.join(PROJECT_ROOT, 'functions', file));
  const bundles: Bundle[] = [];
  for (const entry of entries) bundles.push(await bundle(entry));

  const baseEnv = { PATH: process.env.PATH ?? '/usr/bin:/bin', AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' };
  const lambdaEnv = { ...baseEnv, NODE_OPTIONS: '--enable-source-maps' };
  const bareTimes: number[] = [];
  const loadTimes = new Map<string, number[]>(bundles.map((item) => [item.name, []]));
  const externalTimes = new Map<string, number[]>(bundles.map((item) => [item.name, []]));
  for (let round = 0; round < runs; round++) {
    bareTimes.push(timeNode(['-e', '0'], baseEnv));
    for (const item of bundles) {
      loadTimes.get(item.name)?.push(timeNode([item.file], lambdaEnv));
      const importExternals = `await Promise.all(${JSON.stringify(item.externals)}.map((name) => import(name)))`;
      externalTimes.get(item.name)?.push(timeNode(['--input-type=module', '-e', importExternals], lambdaEnv));
    }
  }

  const bare = median(bareTimes);
  console.log(`node ${process.version} on ${os.cpus()[0]?.model ?? 'unknown CPU'} (${os.cpus().length} CPUs), ${runs} runs, medians`);
  console.log(`bare "node -e 0": ${bare.toFixed(1)} ms`);
  console.log('');
  console.log('"SDK ms" is the time to import only the packages that the bundle leaves to the runtime.');
  console.log('');
  console.log('function          bundle KiB   map KiB   load ms   ratio to bare    SDK ms   under 1 MiB');
  for (const item of bundles) {
    const load = median(loadTimes.get(item.name) ?? []);
    console.log(
      [
        item.name.padEnd(16),
        (item.bytes / 1024).toFixed(1).padStart(11),
        (item.mapBytes / 1024).toFixed(1).padStart(9),
        load.toFixed(1).padStart(9),
        (load / bare).toFixed(2).padStart(15),
        median(externalTimes.get(item.name) ?? []).toFixed(1).padStart(9),
        (item.bytes < SIZE_TARGET_BYTES ? 'yes' : 'NO').padStart(13),
      ].join(' '),
    );
  }
}

if (path.resolve(process.argv[1] ?? '') === fileURLToPath(import.meta.url)) {
  await main();
}
