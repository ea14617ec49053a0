import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import { Architecture, Runtime } from 'aws-cdk-lib/aws-lambda';
import { NodejsFunction, OutputFormat, type BundlingOptions } from 'aws-cdk-lib/aws-lambda-nodejs';
import * as logs from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ESM_REQUIRE_BANNER } from './runner-image/stage.js';

/** The repository's root, which NodejsFunction bundles from. */
export const PROJECT_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/**
 * esbuild settings of every function, local esbuild only. Each bundle
 * contains all its dependencies, the AWS SDK v3 included, so a function runs
 * the SDK version in package-lock.json that the tests ran against. AWS picks
 * the version of the Node.js 22 runtime's own SDK copy and updates it on its
 * own schedule.
 *
 * `mainFields` prefers the ES module builds of the SDK, which esbuild can
 * tree-shake. package.json declares `"sideEffects": false`, so esbuild also
 * drops every Kiln module whose exports a function does not use. A module
 * therefore must not rely on being imported for its side effects.
 * `npm run bench:bundles` measures the bundles' sizes and load times.
 */
export const LAMBDA_BUNDLING: BundlingOptions = {
  forceDockerBundling: false,
  minify: true,
  sourceMap: true,
  sourcesContent: false,
  target: 'node22',
  format: OutputFormat.ESM,
  mainFields: ['module', 'main'],
  banner: ESM_REQUIRE_BANNER,
  bundleAwsSDK: true,
};

export interface ServiceFunctionProps {
  /** Path of the entry point under `functions/`, relative to the repository root, such as `functions/api.ts`. */
  readonly entry: string;
  readonly description: string;
  /** Maximum run time of one invocation. */
  readonly timeout: Duration;
  /** Memory in MiB; Lambda gives CPU in proportion to it. */
  readonly memorySize: number;
  /** Environment variables of the function. */
  readonly environment: Record<string, string>;
  /** How long the function's log events are kept. */
  readonly logRetention: logs.RetentionDays;
}

/**
 * One Kiln Lambda function with a role of its own. The role starts with
 * nothing but writing to the function's log group. Each grant is added with
 * {@link ServiceFunction.allow}, so the role grants exactly what the code calls.
 */
export class ServiceFunction extends Construct {
  readonly function: NodejsFunction;
  readonly role: iam.Role;
  readonly logGroup: logs.LogGroup;

  constructor(scope: Construct, id: string, props: ServiceFunctionProps) {
    super(scope, id);

    this.logGroup = new logs.LogGroup(this, 'LogGroup', {
      retention: props.logRetention,
      removalPolicy: RemovalPolicy.RETAIN,
    });
    this.role = new iam.Role(this, 'Role', {
      assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
      description: `Kiln ${id} function: only the calls its code makes`,
    });
    this.logGroup.grantWrite(this.role);

    this.function = new NodejsFunction(this, 'Function', {
      entry: path.join(PROJECT_ROOT, props.entry),
      handler: 'handler',
      projectRoot: PROJECT_ROOT,
      depsLockFilePath: path.join(PROJECT_ROOT, 'package-lock.json'),
      description: props.description,
      runtime: Runtime.NODEJS_22_X,
      architecture: Architecture.ARM_64,
      memorySize: props.memorySize,
      timeout: props.timeout,
      role: this.role,
      logGroup: this.logGroup,
      environment: {
        ...props.environment,
        NODE_OPTIONS: '--enable-source-maps',
      },
      bundling: LAMBDA_BUNDLING,
    });
  }

  /** Adds one statement to the function's role. */
  allow(statement: iam.PolicyStatementProps): void {
    this.role.addToPrincipalPolicy(new iam.PolicyStatement(statement));
  }
}
