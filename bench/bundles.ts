/**
 * Measures the Lambda bundles that the CDK stack deploys. It runs the CDK
 * app from cdk.json into a temporary folder, as `cdk synth` does, and then
 * prints each function's bundle size and how long Node.js takes to load the
 * bundle, as a ratio to starting a bare `node -e 0`.
 *
 *   npm run bench:bundles -- [--runs 10]
 *
 * The bare start and every bundle are timed in turns within each round, so
 * a busy machine slows all of them alike, and the median of the rounds is
 * reported. Each bundle runs from its asset folder as Lambda runs it, with
 * NODE_OPTIONS --enable-source-maps. No node_modules folder is reachable
 * from there, so a bundle that still imports a package fails to load.
 * Loading runs the module's top level only: no handler is called, so no SDK
 * client sends a request.
 */
import { execSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { PROJECT_ROOT } from '../infra/service-function.js';

/** Lambda's limit for one deployment package is 50 MB zipped; Kiln aims far lower so cold starts stay short. */
const SIZE_TARGET_BYTES = 1024 * 1024;

/** One function's bundle as the synthesized cloud assembly contains it. */
export interface SynthesizedBundle {
  /** The function's construct path below the Kiln construct, such as `Api` or `Triggers`. */
  name: string;
  /** The bundle's `index.mjs` in its asset folder. */
  file: string;
  bytes: number;
  mapBytes: number;
}

export interface BundleMeasurement extends SynthesizedBundle {
  /** Median time to load the bundle in a new Node.js process, in ms. */
  loadMs: number;
}

export interface BundleReport {
  runs: number;
  /** Median time of `node -e 0`, in ms. */
  bareMs: number;
  bundles: BundleMeasurement[];
}

interface TemplateResource {
  Type: string;
  Properties?: { Code?: { S3Key?: unknown } };
  Metadata?: Record<string, unknown>;
}

/**
 * Names a function after its construct path: `Kiln/Kiln/Api/Function/Resource`
 * becomes `Api`, and `Kiln/Kiln/Triggers/Function/Function/Resource` becomes `Triggers`.
 */
function functionName(constructPath: string): string {
  const parts = constructPath.split('/').slice(2, -1);
  while (parts.length > 1 && parts[parts.length - 1] === 'Function') parts.pop();

  return parts.join('/');
}

/**
 * Runs the app command of cdk.json as the CDK CLI does: with CDK_OUTDIR set
 * to `outdir`, and with cdk.json's context and path metadata in
 * CDK_CONTEXT_JSON. Returns the bundle of every Lambda function in the
 * synthesized stacks. Throws when the app fails or a function's asset folder is missing.
 */
export function synthesizeBundles(outdir: string): SynthesizedBundle[] {
  const cdkJson = JSON.parse(readFileSync(path.join(PROJECT_ROOT, 'cdk.json'), 'utf8')) as { app: string; context?: Record<string, unknown> };
  const context = { ...cdkJson.context, 'aws:cdk:enable-path-metadata': true };
  try {
    execSync(cdkJson.app, {
      cwd: PROJECT_ROOT,
      env: { ...process.env, CDK_OUTDIR: outdir, CDK_CONTEXT_JSON: JSON.stringify(context) },
      stdio: 'pipe',
    });
  } catch (error) {
    const stderr = String((error as { stderr?: unknown }).stderr ?? '');
    throw new Error(`the CDK app "${cdkJson.app}" failed: ${stderr.slice(-2000)}`, { cause: error });
  }

  const manifest = JSON.parse(readFileSync(path.join(outdir, 'manifest.json'), 'utf8')) as {
    artifacts: Record<string, { type: string; properties?: { templateFile?: string } }>;
  };
  const templateFiles = Object.values(manifest.artifacts)
    .filter((artifact) => artifact.type === 'aws:cloudformation:stack')
    .map((artifact) => artifact.properties?.templateFile ?? '');

  const bundles: SynthesizedBundle[] = [];
  for (const templateFile of templateFiles) {
    const template = JSON.parse(readFileSync(path.join(outdir, templateFile), 'utf8')) as { Resources: Record<string, TemplateResource> };
    for (const [logicalId, resource] of Object.entries(template.Resources)) {
      if (resource.Type !== 'AWS::Lambda::Function') continue;

      const s3Key = resource.Properties?.Code?.S3Key;
      if (typeof s3Key !== 'string') throw new Error(`function ${logicalId} has no asset S3Key; only asset code is measured`);
      const file = path.join(outdir, `asset.${s3Key.replace(/\.zip$/, '')}`, 'index.mjs');
      const constructPath = String(resource.Metadata?.['aws:cdk:path'] ?? logicalId);
      bundles.push({ name: functionName(constructPath), file, bytes: statSync(file).size, mapBytes: statSync(`${file}.map`).size });
    }
  }
  if (bundles.length === 0) throw new Error(`the CDK app wrote no Lambda function to ${outdir}`);

  return bundles;
}

/** Runs node with `args` in `cwd` and returns the wall time in ms; throws when node fails. */
function timeNode(args: string[], env: NodeJS.ProcessEnv, cwd: string): number {
  const start = process.hrtime.bigint();
  const result = spawnSync(process.execPath, args, { env, encoding: 'utf8', cwd });
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

/** Synthesizes the CDK app into a temporary folder, times loading each bundle `runs` times, and deletes the folder. */
export function measureBundles(runs: number): BundleReport {
  if (!Number.isInteger(runs) || runs < 1) throw new Error(`runs must be a whole number of at least 1, not ${runs}`);

  const outdir = mkdtempSync(path.join(os.tmpdir(), 'kiln-bench-bundles-'));
  try {
    const bundles = synthesizeBundles(outdir);
    const baseEnv = { PATH: process.env.PATH ?? '/usr/bin:/bin', AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' };
    const lambdaEnv = { ...baseEnv, NODE_OPTIONS: '--enable-source-maps' };
    const bareTimes: number[] = [];
    const loadTimes = bundles.map((): number[] => []);
    for (let round = 0; round < runs; round++) {
      bareTimes.push(timeNode(['-e', '0'], baseEnv, outdir));
      bundles.forEach((bundle, index) => loadTimes[index].push(timeNode([bundle.file], lambdaEnv, path.dirname(bundle.file))));
    }

    return {
      runs,
      bareMs: median(bareTimes),
      bundles: bundles.map((bundle, index) => ({ ...bundle, loadMs: median(loadTimes[index]) })),
    };
  } finally {
    rmSync(outdir, { recursive: true, force: true });
  }
}

/** Formats a report as the lines of a table, with the machine it ran on. */
export function formatBundleReport(report: BundleReport): string[] {
  const cpus = os.cpus();
  const lines = [
    `Lambda bundles as the CDK app builds them: node ${process.version} on ${cpus[0]?.model ?? 'unknown CPU'} (${cpus.length} CPUs), ` +
      `${report.runs} runs, medians`,
    `bare "node -e 0": ${report.bareMs.toFixed(1)} ms`,
    '',
    'function        bundle KiB   map KiB   load ms   ratio to bare   under 1 MiB',
  ];
  for (const bundle of report.bundles) {
    lines.push(
      [
        bundle.name.padEnd(14),
        (bundle.bytes / 1024).toFixed(1).padStart(11),
        (bundle.mapBytes / 1024).toFixed(1).padStart(9),
        bundle.loadMs.toFixed(1).padStart(9),
        (bundle.loadMs / report.bareMs).toFixed(2).padStart(15),
        (bundle.bytes < SIZE_TARGET_BYTES ? 'yes' : 'NO').padStart(13),
      ].join(' '),
    );
  }

  return lines;
}

/** Measures the bundles and prints the table; `npm run bench` calls it after its own measurements. */
export function printBundleTable(runs = 10): void {
  for (const line of formatBundleReport(measureBundles(runs))) console.log(line);
}

if (path.resolve(process.argv[1] ?? '') === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({ options: { runs: { type: 'string', default: '10' } } });
  printBundleTable(Number(values.runs));
}
