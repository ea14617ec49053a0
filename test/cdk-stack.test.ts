import { Match, Template } from 'aws-cdk-lib/assertions';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AWS_ENV } from '../lib/aws-context.js';
import { taskDefinitionFamily } from '../lib/launchers/ecs-launcher.js';
import { IMAGES } from '../lib/manifest/images.js';
import { FUNCTION_TIMEOUTS, MAX_RECEIVES } from '../infra/kiln.js';
import { createKilnApp } from '../infra/kiln-stack.js';
import { TRIGGER_FUNCTION_TIMEOUT, TRIGGER_MAX_RECEIVES } from '../infra/triggers.js';
import { TRIGGER_ENV } from '../lib/triggers/aws.js';

type Resource = { Type: string; Properties: Record<string, any>; DeletionPolicy?: string };
type Statement = { Effect: string; Action: string | string[]; Resource: unknown; Condition?: Record<string, unknown> };

const FUNCTION_ENTRIES = {
  Api: 'functions/api.ts',
  Dispatch: 'functions/dispatch-job.ts',
  TaskStopped: 'functions/task-stopped.ts',
  Reconcile: 'functions/reconcile.ts',
  Triggers: 'functions/run-triggers.ts',
} as const;
type FunctionName = keyof typeof FUNCTION_ENTRIES;

/** The functions that end jobs, so each queues the triggers of the jobs it ends. */
const JOB_ENDING_FUNCTIONS: FunctionName[] = ['Api', 'Dispatch', 'TaskStopped', 'Reconcile'];

/** Start of each function's and role's logical id; the triggers function sits one construct deeper. */
const LOGICAL_ID_PREFIXES: Record<FunctionName, { function: string; role: string }> = {
  Api: { function: 'KilnApiFunction', role: 'KilnApiRole' },
  Dispatch: { function: 'KilnDispatchFunction', role: 'KilnDispatchRole' },
  TaskStopped: { function: 'KilnTaskStoppedFunction', role: 'KilnTaskStoppedRole' },
  Reconcile: { function: 'KilnReconcileFunction', role: 'KilnReconcileRole' },
  Triggers: { function: 'KilnTriggersFunction', role: 'KilnTriggersFunctionRole' },
};

const EXPECTED_ACTIONS: Record<FunctionName, string[]> = {
  Api: [
    'dynamodb:DeleteItem',
    'dynamodb:GetItem',
    'dynamodb:PutItem',
    'dynamodb:Query',
    'dynamodb:UpdateItem',
    'ecs:StopTask',
    'kms:Decrypt',
    'kms:GenerateDataKey',
    'logs:CreateLogStream',
    'logs:PutLogEvents',
    's3:GetObject',
    's3:ListBucket',
    's3:PutObject',
    'secretsmanager:GetSecretValue',
    'sqs:SendMessage',
  ],
  Dispatch: [
    'dynamodb:DeleteItem',
    'dynamodb:GetItem',
    'dynamodb:PutItem',
    'dynamodb:Query',
    'dynamodb:UpdateItem',
    'ecs:RunTask',
    'ecs:StopTask',
    'ecs:TagResource',
    'iam:PassRole',
    'logs:CreateLogStream',
    'logs:PutLogEvents',
    's3:GetObject',
    's3:ListBucket',
    's3:PutObject',
    'sqs:ChangeMessageVisibility',
    'sqs:DeleteMessage',
    'sqs:GetQueueAttributes',
    'sqs:GetQueueUrl',
    'sqs:ReceiveMessage',
    'sqs:SendMessage',
  ],
  TaskStopped: [
    'dynamodb:DeleteItem',
    'dynamodb:GetItem',
    'dynamodb:PutItem',
    'dynamodb:Query',
    'dynamodb:UpdateItem',
    'logs:CreateLogStream',
    'logs:PutLogEvents',
    's3:GetObject',
    's3:ListBucket',
    's3:PutObject',
    'sqs:SendMessage',
  ],
  Reconcile: [
    'dynamodb:DeleteItem',
    'dynamodb:GetItem',
    'dynamodb:PutItem',
    'dynamodb:Query',
    'dynamodb:UpdateItem',
    'ecs:DescribeTasks',
    'ecs:StopTask',
    'logs:CreateLogStream',
    'logs:PutLogEvents',
    's3:GetObject',
    's3:ListBucket',
    's3:PutObject',
    'sqs:SendMessage',
  ],
  Triggers: [
    'dynamodb:DeleteItem',
    'dynamodb:GetItem',
    'dynamodb:PutItem',
    'dynamodb:UpdateItem',
    'logs:CreateLogStream',
    'logs:PutLogEvents',
    's3:GetObject',
    's3:ListBucket',
    's3:PutObject',
    'secretsmanager:GetSecretValue',
    'sqs:ChangeMessageVisibility',
    'sqs:DeleteMessage',
    'sqs:GetQueueAttributes',
    'sqs:GetQueueUrl',
    'sqs:ReceiveMessage',
  ],
};

describe('Kiln stack with default settings', () => {
  let template: Template;
  let resources: Record<string, Resource>;
  let outdir: string;

  beforeAll(() => {
    outdir = mkdtempSync(path.join(os.tmpdir(), 'kiln-cdk-'));
    const { app, stack } = createKilnApp({ outdir, env: {} });
    app.synth();
    template = Template.fromStack(stack);
    resources = template.toJSON().Resources as Record<string, Resource>;
  }, 240_000);

  afterAll(() => {
    rmSync(outdir, { recursive: true, force: true });
  });

  function logicalIdOf(type: string, pathFragment: string): string {
    const matches = Object.entries(resources).filter(
      ([id, resource]) => resource.Type === type && id.startsWith(pathFragment),
    );
    if (matches.length !== 1) throw new Error(`expected one ${type} starting with ${pathFragment}, found ${matches.length}`);

    return matches[0][0];
  }

  function functionIdOf(name: FunctionName): string {
    return logicalIdOf('AWS::Lambda::Function', LOGICAL_ID_PREFIXES[name].function);
  }

  function functionOf(name: FunctionName): Resource {
    return resources[functionIdOf(name)];
  }

  function roleIdOf(name: FunctionName): string {
    return logicalIdOf('AWS::IAM::Role', LOGICAL_ID_PREFIXES[name].role);
  }

  function statementsOfRole(roleLogicalId: string): Statement[] {
    return Object.values(resources)
      .filter((resource) => resource.Type === 'AWS::IAM::Policy')
      .filter((policy) => (policy.Properties.Roles as Array<{ Ref: string }>).some((role) => role.Ref === roleLogicalId))
      .flatMap((policy) => policy.Properties.PolicyDocument.Statement as Statement[]);
  }

  function statementsOfFunction(name: FunctionName): Statement[] {
    return statementsOfRole(roleIdOf(name));
  }

  /** Returns the logical ids of the roles whose policies grant any action that starts with `prefix`. */
  function rolesGranting(prefix: string): string[] {
    return Object.values(resources)
      .filter((resource) => resource.Type === 'AWS::IAM::Policy')
      .filter((policy) =>
        (policy.Properties.PolicyDocument.Statement as Statement[]).some((statement) =>
          [statement.Action].flat().some((action) => action.startsWith(prefix)),
        ),
      )
      .flatMap((policy) => (policy.Properties.Roles as Array<{ Ref: string }>).map((role) => role.Ref))
      .sort();
  }

  function actionsOf(statements: Statement[]): string[] {
    return [...new Set(statements.flatMap((statement) => [statement.Action].flat()))].sort();
  }

  /** Returns every resource that the statements grant `action` on; minimized policies may split them over several statements. */
  function resourcesGranting(statements: Statement[], action: string): unknown[] {
    return statements.filter((statement) => [statement.Action].flat().includes(action)).flatMap((statement) => [statement.Resource].flat());
  }

  function statementWith(statements: Statement[], action: string): Statement {
    const statement = statements.find((candidate) => [candidate.Action].flat().includes(action));
    if (!statement) throw new Error(`no statement grants ${action}`);

    return statement;
  }

  describe('HTTP API', () => {
    it('routes /api, /runner and $default to the API function', () => {
      const integrationId = logicalIdOf('AWS::ApiGatewayV2::Integration', 'KilnHttpApi');
      const routes = Object.values(resources).filter((resource) => resource.Type === 'AWS::ApiGatewayV2::Route');

      expect(routes.map((route) => route.Properties.RouteKey).sort()).toEqual(['$default', 'ANY /api/{proxy+}', 'ANY /runner/{proxy+}']);
      for (const route of routes) {
        expect(route.Properties.Target).toEqual({ 'Fn::Join': ['', ['integrations/', { Ref: integrationId }]] });
      }
      template.hasResourceProperties('AWS::ApiGatewayV2::Integration', {
        IntegrationType: 'AWS_PROXY',
        PayloadFormatVersion: '2.0',
        IntegrationUri: { 'Fn::GetAtt': [logicalIdOf('AWS::Lambda::Function', 'KilnApiFunction'), 'Arn'] },
      });
    });

    it('throttles the stage', () => {
      template.hasResourceProperties('AWS::ApiGatewayV2::Stage', {
        StageName: '$default',
        AutoDeploy: true,
        DefaultRouteSettings: { ThrottlingRateLimit: 50, ThrottlingBurstLimit: 100 },
      });
    });

    it('keeps headers out of the access log', () => {
      const stage = resources[logicalIdOf('AWS::ApiGatewayV2::Stage', 'KilnDefaultStage')];
      const format = stage.Properties.AccessLogSettings.Format as string;

      expect(format).toContain('$context.requestId');
      expect(format.toLowerCase()).not.toContain('header');
      expect(format.toLowerCase()).not.toContain('authorization');
    });
  });

  describe('functions', () => {
    it.each(Object.keys(FUNCTION_ENTRIES) as FunctionName[])('runs %s on Node.js 22 arm64', (name) => {
      const fn = functionOf(name);

      expect(fn.Properties.Runtime).toBe('nodejs22.x');
      expect(fn.Properties.Architectures).toEqual(['arm64']);
      expect(fn.Properties.Handler).toBe('index.handler');
      expect(fn.Properties.Environment.Variables.NODE_OPTIONS).toBe('--enable-source-maps');
      expect(fn.Properties.Role).toEqual({ 'Fn::GetAtt': [roleIdOf(name), 'Arn'] });
    });

    it.each(Object.keys(FUNCTION_ENTRIES) as FunctionName[])('bundles %s as minified ESM with the SDK', (name) => {
      const fn = functionOf(name);
      const assetHash = (fn.Properties.Code.S3Key as string).replace(/\.zip$/, '');
      const assetPath = path.join(outdir, `asset.${assetHash}`);
      const bundle = readFileSync(path.join(assetPath, 'index.mjs'), 'utf8');
      const sourceMap = JSON.parse(readFileSync(path.join(assetPath, 'index.mjs.map'), 'utf8')) as { sources: string[] };
      // The asset folder is under the OS's temporary folder, where no node_modules folder is reachable,
      // so loading fails if the bundle leaves any package to the runtime. Loading calls no handler.
      const loaded = spawnSync(process.execPath, ['index.mjs'], {
        cwd: assetPath,
        encoding: 'utf8',
        env: { PATH: process.env.PATH, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' },
      });

      expect(loaded.stderr).toBe('');
      expect(loaded.status).toBe(0);
      expect(bundle).not.toMatch(/from\s*"@aws-sdk\//);
      expect(sourceMap.sources.some((source) => source.includes('node_modules/@aws-sdk/client-dynamodb/'))).toBe(true);
      expect(sourceMap.sources.some((source) => source.includes('node_modules/@aws-sdk/lib-dynamodb/'))).toBe(true);
      // Minified code puts thousands of characters on a line; only multi-line string literals break lines.
      expect(bundle.length / bundle.split('\n').length).toBeGreaterThan(1000);
    });

    it.each(Object.keys(FUNCTION_ENTRIES) as FunctionName[])('keeps the %s bundle under 1 MiB', (name) => {
      const assetHash = (functionOf(name).Properties.Code.S3Key as string).replace(/\.zip$/, '');

      // bench/bundles.ts measures the sizes and load times; the README's Lambda bundles section has the numbers.
      expect(statSync(path.join(outdir, `asset.${assetHash}`, 'index.mjs')).size).toBeLessThan(1024 * 1024);
    });

    it('sets the timeouts', () => {
      expect(functionOf('Api').Properties.Timeout).toBe(FUNCTION_TIMEOUTS.api.toSeconds());
      expect(functionOf('Dispatch').Properties.Timeout).toBe(FUNCTION_TIMEOUTS.dispatch.toSeconds());
      expect(functionOf('TaskStopped').Properties.Timeout).toBe(FUNCTION_TIMEOUTS.taskStopped.toSeconds());
      expect(functionOf('Reconcile').Properties.Timeout).toBe(FUNCTION_TIMEOUTS.reconcile.toSeconds());
      expect(functionOf('Triggers').Properties.Timeout).toBe(TRIGGER_FUNCTION_TIMEOUT.toSeconds());
    });

    it('passes the AWS defaults of the settings', () => {
      const variables = functionOf('Dispatch').Properties.Environment.Variables;

      expect(variables).toMatchObject({
        KILN_JOB_TIMEOUT: '45m',
        KILN_LOG_LINK_TTL: '1h',
        KILN_LOG_MAX_BYTES: '64MiB',
        KILN_MAX_RUNNING: '100',
        KILN_MAX_RUNNING_PER_USER: '20',
        KILN_ANONYMOUS_READ: 'false',
        KILN_WEBHOOK_ALLOW_PRIVATE: 'false',
        [AWS_ENV.maxReceives]: String(MAX_RECEIVES),
        [AWS_ENV.assignPublicIp]: 'true',
        [AWS_ENV.fargateSpot]: 'false',
        [AWS_ENV.taskFamilyPrefix]: 'Kiln-runner',
      });
      expect(variables).not.toHaveProperty('KILN_SMTP_URL');
      expect(variables).not.toHaveProperty('KILN_OAUTH_INTROSPECTION_URL');
    });

    it('passes the deployed resources', () => {
      const variables = functionOf('Dispatch').Properties.Environment.Variables;

      expect(variables[AWS_ENV.tableName]).toEqual({ Ref: logicalIdOf('AWS::DynamoDB::Table', 'KilnTable') });
      expect(variables[AWS_ENV.bucketName]).toEqual({ Ref: logicalIdOf('AWS::S3::Bucket', 'KilnBucket') });
      expect(variables[AWS_ENV.queueUrl]).toEqual({ Ref: logicalIdOf('AWS::SQS::Queue', 'KilnJobQueue') });
      expect(variables[AWS_ENV.cluster]).toEqual({ Ref: logicalIdOf('AWS::ECS::Cluster', 'KilnFleetCluster') });
      expect(variables[AWS_ENV.securityGroup]).toEqual({
        'Fn::GetAtt': [logicalIdOf('AWS::EC2::SecurityGroup', 'KilnFleetBuildSecurityGroup'), 'GroupId'],
      });
      expect(variables[AWS_ENV.secretsKey]).toEqual({ 'Fn::GetAtt': [logicalIdOf('AWS::KMS::Key', 'KilnSecretsKey'), 'Arn'] });
    });

    it('lists every deployed runner image', () => {
      const listed = (functionOf('Dispatch').Properties.Environment.Variables[AWS_ENV.runnerImages] as string).split(',');
      const expected = IMAGES.flatMap((image) => image.architectures.map((arch) => `${image.name}@${arch}`));

      expect(listed.sort()).toEqual(expected.sort());
    });

    it('gives the API URL to all but the API function', () => {
      const apiUrl = { 'Fn::GetAtt': [logicalIdOf('AWS::ApiGatewayV2::Api', 'KilnHttpApi'), 'ApiEndpoint'] };

      expect(functionOf('Dispatch').Properties.Environment.Variables[AWS_ENV.publicUrl]).toEqual(apiUrl);
      expect(functionOf('TaskStopped').Properties.Environment.Variables[AWS_ENV.publicUrl]).toEqual(apiUrl);
      expect(functionOf('Reconcile').Properties.Environment.Variables[AWS_ENV.publicUrl]).toEqual(apiUrl);
      expect(functionOf('Triggers').Properties.Environment.Variables[AWS_ENV.publicUrl]).toEqual(apiUrl);
      expect(functionOf('Api').Properties.Environment.Variables).not.toHaveProperty(AWS_ENV.publicUrl);
    });

    it('keeps the environment under the Lambda limit', () => {
      for (const name of Object.keys(FUNCTION_ENTRIES) as FunctionName[]) {
        const variables = functionOf(name).Properties.Environment.Variables as Record<string, unknown>;
        const literalBytes = Object.entries(variables)
          .map(([key, value]) => key.length + (typeof value === 'string' ? value.length : 0))
          .reduce((sum, length) => sum + length, 0);

        // Lambda allows 4 KB in all; the references resolve to names, ids and ARNs of about 100 characters each.
        expect(literalBytes + 12 * 100).toBeLessThan(4096);
      }
    });
  });

  describe('IAM', () => {
    it.each(Object.keys(EXPECTED_ACTIONS) as FunctionName[])('grants %s exactly its calls', (name) => {
      expect(actionsOf(statementsOfFunction(name))).toEqual(EXPECTED_ACTIONS[name]);
    });

    it('grants no wildcard action or resource to any function', () => {
      for (const name of Object.keys(FUNCTION_ENTRIES) as FunctionName[]) {
        for (const statement of statementsOfFunction(name)) {
          expect(statement.Effect).toBe('Allow');
          for (const action of [statement.Action].flat()) expect(action).not.toContain('*');
          for (const resource of [statement.Resource].flat()) expect(resource).not.toBe('*');
        }
      }
    });

    it('scopes table access to the table and its indexes', () => {
      const table = logicalIdOf('AWS::DynamoDB::Table', 'KilnTable');
      const tableArn = { 'Fn::GetAtt': [table, 'Arn'] };

      const resources = statementWith(statementsOfFunction('Api'), 'dynamodb:Query').Resource as unknown[];

      expect(resources).toHaveLength(3);
      expect(resources).toEqual(
        expect.arrayContaining([
          tableArn,
          { 'Fn::Join': ['', [tableArn, '/index/byOwner']] },
          { 'Fn::Join': ['', [tableArn, '/index/active']] },
        ]),
      );
    });

    it('scopes object access to the bucket', () => {
      const bucketArn = { 'Fn::GetAtt': [logicalIdOf('AWS::S3::Bucket', 'KilnBucket'), 'Arn'] };
      const statements = statementsOfFunction('TaskStopped');

      expect(statementWith(statements, 's3:PutObject').Resource).toEqual({ 'Fn::Join': ['', [bucketArn, '/*']] });
      expect(statementWith(statements, 's3:ListBucket').Resource).toEqual(bucketArn);
    });

    it('scopes sending to the job and triggers queues', () => {
      const jobQueueArn = { 'Fn::GetAtt': [logicalIdOf('AWS::SQS::Queue', 'KilnJobQueue'), 'Arn'] };
      const triggersQueueArn = { 'Fn::GetAtt': [logicalIdOf('AWS::SQS::Queue', 'KilnTriggersQueue'), 'Arn'] };

      for (const name of ['Api', 'Dispatch', 'Reconcile'] as const) {
        const resources = resourcesGranting(statementsOfFunction(name), 'sqs:SendMessage');
        expect(resources, name).toHaveLength(2);
        expect(resources, name).toEqual(expect.arrayContaining([jobQueueArn, triggersQueueArn]));
      }
      expect(resourcesGranting(statementsOfFunction('TaskStopped'), 'sqs:SendMessage')).toEqual([triggersQueueArn]);
    });

    it('lets only the API function use the secrets key', () => {
      const keyArn = { 'Fn::GetAtt': [logicalIdOf('AWS::KMS::Key', 'KilnSecretsKey'), 'Arn'] };
      const kmsStatements = statementsOfFunction('Api').filter((statement) =>
        [statement.Action].flat().some((action) => action.startsWith('kms:')),
      );

      // POST /api/secrets encrypts, and the runner routes decrypt a job's secrets; both are served by the API function.
      expect(kmsStatements).toEqual([{ Effect: 'Allow', Action: ['kms:Decrypt', 'kms:GenerateDataKey'], Resource: keyArn }]);
      expect(rolesGranting('kms:')).toEqual([roleIdOf('Api')]);
    });

    it('lets only the API and triggers functions read the webhook key', () => {
      const secretArn = { Ref: logicalIdOf('AWS::SecretsManager::Secret', 'KilnTriggersWebhookKey') };

      for (const name of ['Api', 'Triggers'] as const) {
        expect(statementWith(statementsOfFunction(name), 'secretsmanager:GetSecretValue'), name).toEqual({
          Effect: 'Allow',
          Action: 'secretsmanager:GetSecretValue',
          Resource: secretArn,
        });
      }
      expect(rolesGranting('secretsmanager:')).toEqual([roleIdOf('Api'), roleIdOf('Triggers')].sort());
    });

    it('grants no email without a from address', () => {
      expect(rolesGranting('ses:')).toEqual([]);
      expect(functionOf('Triggers').Properties.Environment.Variables).not.toHaveProperty('KILN_EMAIL_FROM');
    });

    it('limits RunTask to the runner families on the cluster', () => {
      const statement = statementWith(statementsOfFunction('Dispatch'), 'ecs:RunTask');
      const clusterArn = { 'Fn::GetAtt': [logicalIdOf('AWS::ECS::Cluster', 'KilnFleetCluster'), 'Arn'] };

      expect(JSON.stringify(statement.Resource)).toContain(':task-definition/Kiln-runner-*:*');
      expect(statement.Condition).toEqual({ ArnEquals: { 'ecs:cluster': clusterArn } });
    });

    it('limits task actions to the cluster', () => {
      const cluster = logicalIdOf('AWS::ECS::Cluster', 'KilnFleetCluster');
      const taskArn = {
        'Fn::Join': ['', ['arn:', { Ref: 'AWS::Partition' }, ':ecs:', { Ref: 'AWS::Region' }, ':', { Ref: 'AWS::AccountId' }, ':task/', { Ref: cluster }, '/*']],
      };

      expect(statementWith(statementsOfFunction('Reconcile'), 'ecs:DescribeTasks').Resource).toEqual(taskArn);
      expect(statementWith(statementsOfFunction('Api'), 'ecs:StopTask').Resource).toEqual(taskArn);
      expect(statementWith(statementsOfFunction('Dispatch'), 'ecs:TagResource').Condition).toEqual({
        StringEquals: { 'ecs:CreateAction': 'RunTask' },
      });
    });

    it('passes only the task and execution roles to ECS', () => {
      const statement = statementWith(statementsOfFunction('Dispatch'), 'iam:PassRole');

      expect(statement.Resource).toHaveLength(2);
      expect(statement.Resource).toEqual(
        expect.arrayContaining([
          { 'Fn::GetAtt': [logicalIdOf('AWS::IAM::Role', 'KilnFleetTaskRole'), 'Arn'] },
          { 'Fn::GetAtt': [logicalIdOf('AWS::IAM::Role', 'KilnFleetExecutionRole'), 'Arn'] },
        ]),
      );
      expect(statement.Condition).toEqual({ StringEquals: { 'iam:PassedToService': 'ecs-tasks.amazonaws.com' } });
    });

    it('gives the task role no policy', () => {
      const taskRoleId = logicalIdOf('AWS::IAM::Role', 'KilnFleetTaskRole');
      const taskRole = resources[taskRoleId];
      const attached = Object.values(resources).filter(
        (resource) =>
          ['AWS::IAM::Policy', 'AWS::IAM::ManagedPolicy'].includes(resource.Type) &&
          JSON.stringify(resource.Properties.Roles ?? []).includes(taskRoleId),
      );

      expect(taskRole.Properties.Policies).toBeUndefined();
      expect(taskRole.Properties.ManagedPolicyArns).toBeUndefined();
      expect(attached).toEqual([]);
    });

    it('lets the execution role only pull images and write logs', () => {
      const statements = statementsOfRole(logicalIdOf('AWS::IAM::Role', 'KilnFleetExecutionRole'));

      expect(actionsOf(statements)).toEqual([
        'ecr:BatchCheckLayerAvailability',
        'ecr:BatchGetImage',
        'ecr:GetAuthorizationToken',
        'ecr:GetDownloadUrlForLayer',
        'logs:CreateLogStream',
        'logs:PutLogEvents',
      ]);
    });
  });

  describe('storage', () => {
    it('defines the table from the store definition', () => {
      template.hasResource('AWS::DynamoDB::Table', {
        DeletionPolicy: 'Retain',
        Properties: {
          BillingMode: 'PAY_PER_REQUEST',
          KeySchema: [
            { AttributeName: 'pk', KeyType: 'HASH' },
            { AttributeName: 'sk', KeyType: 'RANGE' },
          ],
          GlobalSecondaryIndexes: [
            {
              IndexName: 'byOwner',
              KeySchema: [
                { AttributeName: 'gsi1pk', KeyType: 'HASH' },
                { AttributeName: 'gsi1sk', KeyType: 'RANGE' },
              ],
              Projection: { ProjectionType: 'ALL' },
            },
            {
              IndexName: 'active',
              KeySchema: [
                { AttributeName: 'activePk', KeyType: 'HASH' },
                { AttributeName: 'activeSk', KeyType: 'RANGE' },
              ],
              Projection: { ProjectionType: 'ALL' },
            },
          ],
          PointInTimeRecoverySpecification: { PointInTimeRecoveryEnabled: true },
          DeletionProtectionEnabled: true,
          TimeToLiveSpecification: { AttributeName: 'expiresAt', Enabled: true },
        },
      });
    });

    it('locks down the bucket', () => {
      template.hasResource('AWS::S3::Bucket', {
        DeletionPolicy: 'Retain',
        Properties: {
          PublicAccessBlockConfiguration: {
            BlockPublicAcls: true,
            BlockPublicPolicy: true,
            IgnorePublicAcls: true,
            RestrictPublicBuckets: true,
          },
          BucketEncryption: { ServerSideEncryptionConfiguration: [{ ServerSideEncryptionByDefault: { SSEAlgorithm: 'AES256' } }] },
        },
      });
      template.hasResourceProperties('AWS::S3::BucketPolicy', {
        PolicyDocument: {
          Statement: Match.arrayWith([
            Match.objectLike({ Effect: 'Deny', Condition: { Bool: { 'aws:SecureTransport': 'false' } } }),
          ]),
        },
      });
    });

    it('expires build output after 90 days', () => {
      template.hasResourceProperties('AWS::S3::Bucket', {
        LifecycleConfiguration: {
          Rules: Match.arrayWith([Match.objectLike({ Id: 'ExpireBuildOutput', ExpirationInDays: 90, Status: 'Enabled' })]),
        },
      });
    });

    it('rotates the secrets key and keeps it', () => {
      template.resourceCountIs('AWS::KMS::Key', 1);
      template.hasResource('AWS::KMS::Key', {
        DeletionPolicy: 'Retain',
        UpdateReplacePolicy: 'Retain',
        Properties: { EnableKeyRotation: true },
      });
    });

    it('leaves access to the secrets key to IAM policies', () => {
      const key = resources[logicalIdOf('AWS::KMS::Key', 'KilnSecretsKey')];
      const accountRoot = {
        'Fn::Join': ['', ['arn:', { Ref: 'AWS::Partition' }, ':iam::', { Ref: 'AWS::AccountId' }, ':root']],
      };

      // The only statement names the account, so no principal gets the key unless an IAM policy allows it.
      expect(key.Properties.KeyPolicy.Statement).toEqual([{ Effect: 'Allow', Principal: { AWS: accountRoot }, Action: 'kms:*', Resource: '*' }]);
    });

    it('generates the webhook key secret and keeps it', () => {
      template.resourceCountIs('AWS::SecretsManager::Secret', 1);
      template.hasResource('AWS::SecretsManager::Secret', {
        DeletionPolicy: 'Retain',
        UpdateReplacePolicy: 'Retain',
        Properties: {
          GenerateSecretString: { PasswordLength: 64, ExcludePunctuation: true, IncludeSpace: false },
          SecretString: Match.absent(),
        },
      });
      template.resourceCountIs('AWS::SecretsManager::RotationSchedule', 0);
    });

    it('names the webhook key secret to the functions that read it', () => {
      const secretArn = { Ref: logicalIdOf('AWS::SecretsManager::Secret', 'KilnTriggersWebhookKey') };

      expect(functionOf('Api').Properties.Environment.Variables[TRIGGER_ENV.webhookKeySecret]).toEqual(secretArn);
      expect(functionOf('Triggers').Properties.Environment.Variables[TRIGGER_ENV.webhookKeySecret]).toEqual(secretArn);
      for (const name of ['Dispatch', 'TaskStopped', 'Reconcile'] as const) {
        expect(functionOf(name).Properties.Environment.Variables, name).not.toHaveProperty(TRIGGER_ENV.webhookKeySecret);
      }
    });
  });

  describe('job queue', () => {
    it('moves a message to the dead-letter queue after five receives', () => {
      const dlqArn = { 'Fn::GetAtt': [logicalIdOf('AWS::SQS::Queue', 'KilnDeadLetterQueue'), 'Arn'] };
      const queue = resources[logicalIdOf('AWS::SQS::Queue', 'KilnJobQueue')];

      expect(queue.Properties.RedrivePolicy).toEqual({ deadLetterTargetArn: dlqArn, maxReceiveCount: MAX_RECEIVES });
      expect(MAX_RECEIVES).toBeGreaterThanOrEqual(5);
      expect(queue.Properties.SqsManagedSseEnabled).toBe(true);
    });

    it('hides a message for six dispatch timeouts', () => {
      const queue = resources[logicalIdOf('AWS::SQS::Queue', 'KilnJobQueue')];

      expect(queue.Properties.VisibilityTimeout).toBeGreaterThanOrEqual(6 * functionOf('Dispatch').Properties.Timeout);
    });

    it('feeds the dispatch function with partial batch failures', () => {
      template.hasResourceProperties('AWS::Lambda::EventSourceMapping', {
        EventSourceArn: { 'Fn::GetAtt': [logicalIdOf('AWS::SQS::Queue', 'KilnJobQueue'), 'Arn'] },
        FunctionName: { Ref: logicalIdOf('AWS::Lambda::Function', 'KilnDispatchFunction') },
        FunctionResponseTypes: ['ReportBatchItemFailures'],
        ScalingConfig: { MaximumConcurrency: 10 },
        BatchSize: 10,
      });
    });
  });

  describe('triggers', () => {
    it('moves a message to its own dead-letter queue after five receives', () => {
      const dlqArn = { 'Fn::GetAtt': [logicalIdOf('AWS::SQS::Queue', 'KilnTriggersDeadLetterQueue'), 'Arn'] };
      const queue = resources[logicalIdOf('AWS::SQS::Queue', 'KilnTriggersQueue')];

      expect(queue.Properties.RedrivePolicy).toEqual({ deadLetterTargetArn: dlqArn, maxReceiveCount: TRIGGER_MAX_RECEIVES });
      expect(queue.Properties.SqsManagedSseEnabled).toBe(true);
      expect(queue.Properties.VisibilityTimeout).toBeGreaterThanOrEqual(6 * functionOf('Triggers').Properties.Timeout);
    });

    it('feeds the triggers function with partial batch failures', () => {
      template.hasResourceProperties('AWS::Lambda::EventSourceMapping', {
        EventSourceArn: { 'Fn::GetAtt': [logicalIdOf('AWS::SQS::Queue', 'KilnTriggersQueue'), 'Arn'] },
        FunctionName: { Ref: functionIdOf('Triggers') },
        FunctionResponseTypes: ['ReportBatchItemFailures'],
        BatchSize: 10,
      });
      template.resourceCountIs('AWS::Lambda::EventSourceMapping', 2);
    });

    it('passes the triggers function its settings and resources', () => {
      const variables = functionOf('Triggers').Properties.Environment.Variables;

      expect(variables).toMatchObject({
        KILN_WEBHOOK_ALLOW_PRIVATE: 'false',
        [TRIGGER_ENV.maxReceives]: String(TRIGGER_MAX_RECEIVES),
        [AWS_ENV.tableName]: { Ref: logicalIdOf('AWS::DynamoDB::Table', 'KilnTable') },
        [AWS_ENV.bucketName]: { Ref: logicalIdOf('AWS::S3::Bucket', 'KilnBucket') },
      });
    });

    it.each(JOB_ENDING_FUNCTIONS)('lets %s queue the triggers of the jobs it ends', (name) => {
      const queueUrl = { Ref: logicalIdOf('AWS::SQS::Queue', 'KilnTriggersQueue') };

      expect(functionOf(name).Properties.Environment.Variables[TRIGGER_ENV.queueUrl]).toEqual(queueUrl);
    });

    it('gives the triggers function no queue to send to', () => {
      expect(functionOf('Triggers').Properties.Environment.Variables).not.toHaveProperty(TRIGGER_ENV.queueUrl);
      expect(actionsOf(statementsOfFunction('Triggers'))).not.toContain('sqs:SendMessage');
    });
  });

  describe('build cluster', () => {
    it('offers Fargate and Fargate Spot', () => {
      template.hasResourceProperties('AWS::ECS::ClusterCapacityProviderAssociations', {
        CapacityProviders: ['FARGATE', 'FARGATE_SPOT'],
      });
    });

    it('runs builds in public subnets without a NAT gateway', () => {
      const subnets = Object.values(resources).filter((resource) => resource.Type === 'AWS::EC2::Subnet');

      expect(subnets).toHaveLength(2);
      for (const subnet of subnets) expect(subnet.Properties.MapPublicIpOnLaunch).toBe(true);
      template.resourceCountIs('AWS::EC2::NatGateway', 0);
      template.hasResourceProperties('AWS::EC2::VPCEndpoint', { VpcEndpointType: 'Gateway' });
    });

    it('accepts no inbound traffic', () => {
      const group = resources[logicalIdOf('AWS::EC2::SecurityGroup', 'KilnFleetBuildSecurityGroup')];

      expect(group.Properties.SecurityGroupIngress).toBeUndefined();
      template.resourceCountIs('AWS::EC2::SecurityGroupIngress', 0);
    });

    it('defines one task definition per image and architecture', () => {
      const families = Object.values(resources)
        .filter((resource) => resource.Type === 'AWS::ECS::TaskDefinition')
        .map((resource) => resource.Properties.Family as string);
      const expected = IMAGES.flatMap((image) => image.architectures.map((arch) => taskDefinitionFamily('Kiln-runner', image.name, arch)));

      expect(families.sort()).toEqual(expected.sort());
    });

    it.each([
      ['alpine/edge', 'arm64', 'ARM64'],
      ['archlinux', 'x86_64', 'X86_64'],
    ] as const)('configures the %s task for %s', (image, arch, cpuArchitecture) => {
      template.hasResourceProperties('AWS::ECS::TaskDefinition', {
        Family: taskDefinitionFamily('Kiln-runner', image, arch),
        Cpu: '2048',
        Memory: '4096',
        NetworkMode: 'awsvpc',
        RequiresCompatibilities: ['FARGATE'],
        RuntimePlatform: { CpuArchitecture: cpuArchitecture, OperatingSystemFamily: 'LINUX' },
        TaskRoleArn: { 'Fn::GetAtt': [logicalIdOf('AWS::IAM::Role', 'KilnFleetTaskRole'), 'Arn'] },
        ContainerDefinitions: [
          Match.objectLike({
            Name: 'runner',
            Essential: true,
            StopTimeout: 120,
            LinuxParameters: Match.objectLike({ InitProcessEnabled: true }),
            LogConfiguration: Match.objectLike({ LogDriver: 'awslogs' }),
            Environment: Match.absent(),
          }),
        ],
      });
    });

    it('builds each image from the catalog base image and platform', () => {
      const manifest = JSON.parse(readFileSync(path.join(outdir, 'Kiln.assets.json'), 'utf8'));
      const images = Object.values(manifest.dockerImages) as Array<{
        source: { directory: string; dockerBuildArgs: Record<string, string>; platform: string };
      }>;
      const debianArm = images.find(
        (image) => image.source.dockerBuildArgs.BASE_IMAGE === 'debian:stable' && image.source.platform === 'linux/arm64',
      );
      const alpine = images.find((image) => image.source.dockerBuildArgs.BASE_IMAGE === 'alpine:edge');

      expect(images).toHaveLength(IMAGES.reduce((count, image) => count + image.architectures.length, 0));
      expect(debianArm?.source.dockerBuildArgs).toEqual({
        BASE_IMAGE: 'debian:stable',
        NODE_IMAGE: 'node:22-bookworm-slim',
        PACKAGE_MANAGER: 'apt',
        KILN_IMAGE_VERSION: '1',
      });
      expect(alpine?.source.dockerBuildArgs.NODE_IMAGE).toBe('node:22-alpine');
    });

    it('stages the runner bundle and Dockerfile in the asset', () => {
      const manifest = JSON.parse(readFileSync(path.join(outdir, 'Kiln.assets.json'), 'utf8'));
      const first = Object.values(manifest.dockerImages)[0] as { source: { directory: string } };
      const directory = path.join(outdir, first.source.directory);
      const dockerfile = readFileSync(path.join(directory, 'Dockerfile'), 'utf8');

      expect(existsSync(path.join(directory, 'runner.mjs'))).toBe(true);
      expect(existsSync(path.join(directory, 'setup-image.sh'))).toBe(true);
      expect(existsSync(path.join(directory, 'entrypoint.mjs'))).toBe(true);
      expect(dockerfile).toContain('COPY entrypoint.mjs runner.mjs runner.mjs.map /opt/kiln/');
      expect(dockerfile).toContain('KILN_BUILD_USER=build');
    });
  });

  describe('events', () => {
    it('sends stopped Kiln tasks of the cluster to the task-stopped function', () => {
      template.hasResourceProperties('AWS::Events::Rule', {
        EventPattern: {
          source: ['aws.ecs'],
          'detail-type': ['ECS Task State Change'],
          detail: {
            clusterArn: [{ 'Fn::GetAtt': [logicalIdOf('AWS::ECS::Cluster', 'KilnFleetCluster'), 'Arn'] }],
            lastStatus: ['STOPPED'],
            startedBy: [{ prefix: 'kiln-job-' }],
          },
        },
        Targets: [Match.objectLike({ Arn: { 'Fn::GetAtt': [logicalIdOf('AWS::Lambda::Function', 'KilnTaskStoppedFunction'), 'Arn'] } })],
      });
    });

    it('runs the reconciler every five minutes', () => {
      template.hasResourceProperties('AWS::Events::Rule', {
        ScheduleExpression: 'rate(5 minutes)',
        Targets: [Match.objectLike({ Arn: { 'Fn::GetAtt': [logicalIdOf('AWS::Lambda::Function', 'KilnReconcileFunction'), 'Arn'] } })],
      });
    });
  });

  describe('alarms', () => {
    it.each(['KilnDeadLetterQueue', 'KilnTriggersDeadLetterQueue'])('watches %s', (queue) => {
      template.hasResourceProperties('AWS::CloudWatch::Alarm', {
        MetricName: 'ApproximateNumberOfMessagesVisible',
        Namespace: 'AWS/SQS',
        Dimensions: [{ Name: 'QueueName', Value: { 'Fn::GetAtt': [logicalIdOf('AWS::SQS::Queue', queue), 'QueueName'] } }],
        Threshold: 1,
        ComparisonOperator: 'GreaterThanOrEqualToThreshold',
      });
    });

    it.each(JOB_ENDING_FUNCTIONS)('watches errors and throttles of %s', (name) => {
      const dimensions = [{ Name: 'FunctionName', Value: { Ref: functionIdOf(name) } }];

      template.hasResourceProperties('AWS::CloudWatch::Alarm', { MetricName: 'Errors', Dimensions: dimensions, Threshold: 1 });
      template.hasResourceProperties('AWS::CloudWatch::Alarm', { MetricName: 'Throttles', Dimensions: dimensions, Threshold: 1 });
    });

    it('watches errors of the triggers function', () => {
      const dimensions = [{ Name: 'FunctionName', Value: { Ref: functionIdOf('Triggers') } }];

      template.hasResourceProperties('AWS::CloudWatch::Alarm', { MetricName: 'Errors', Dimensions: dimensions, Threshold: 1 });
    });
  });

  describe('outputs', () => {
    it('names the API URL, table, bucket, cluster and webhook key', () => {
      template.hasOutput('ApiUrl', { Value: { 'Fn::GetAtt': [logicalIdOf('AWS::ApiGatewayV2::Api', 'KilnHttpApi'), 'ApiEndpoint'] } });
      template.hasOutput('TableName', { Value: { Ref: logicalIdOf('AWS::DynamoDB::Table', 'KilnTable') } });
      template.hasOutput('BucketName', { Value: { Ref: logicalIdOf('AWS::S3::Bucket', 'KilnBucket') } });
      template.hasOutput('ClusterName', { Value: { Ref: logicalIdOf('AWS::ECS::Cluster', 'KilnFleetCluster') } });
      template.hasOutput('WebhookKeySecretArn', { Value: { Ref: logicalIdOf('AWS::SecretsManager::Secret', 'KilnTriggersWebhookKey') } });
    });
  });
});
