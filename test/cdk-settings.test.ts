import { Template } from 'aws-cdk-lib/assertions';
import { AwsSolutionsChecks } from 'cdk-nag';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AWS_ENV } from '../lib/aws-context.js';
import { SettingError } from '../lib/config.js';
import { createKilnApp, readKilnContext } from '../infra/kiln-stack.js';
import { validateFargateSize } from '../infra/kiln.js';

type Resource = { Type: string; Properties: Record<string, any> };

/** Settings as `cdk deploy -c KEY=value` passes them (strings), with a few as cdk.json would (JSON values). */
const CONTEXT = {
  KILN_STACK_NAME: 'KilnCi',
  KILN_IMAGES: 'alpine/edge, archlinux',
  KILN_ARCHITECTURES: ['aarch64', 'amd64'],
  KILN_NAT: 'true',
  KILN_FARGATE_SPOT: true,
  KILN_RETENTION_DAYS: '0',
  KILN_BUILD_CPU: '4096',
  KILN_BUILD_MEMORY: 8192,
  KILN_MAX_RUNNING: '7',
  KILN_MAX_RUNNING_PER_USER: 2,
  KILN_JOB_TIMEOUT: '2h',
  KILN_LOG_LINK_TTL: '15m',
  KILN_LOG_MAX_BYTES: '10MiB',
  KILN_ANONYMOUS_READ: 'true',
  KILN_WEBHOOK_ALLOW_PRIVATE: 'true',
  KILN_SMTP_URL: 'smtps://kiln:secret@mail.example.org:465',
  KILN_EMAIL_FROM: 'Kiln <ci@example.org>',
  KILN_EMAIL_IDENTITY: 'ci@example.org',
  KILN_OAUTH_INTROSPECTION_URL: 'https://auth.example.org/introspect',
  KILN_PUBLIC_URL: 'https://ci.example.org/',
  KILN_DELETION_PROTECTION: 'false',
  KILN_API_RATE_LIMIT: '20',
  KILN_API_BURST_LIMIT: '40',
  KILN_RUNNER_IMAGE_VERSION: '2026-12',
  KILN_TASK_FAMILY_PREFIX: 'ci-runner',
};

describe('readKilnContext', () => {
  const read = (context: Record<string, unknown>) => readKilnContext((key) => context[key]);

  it('returns no props without context', () => {
    expect(read({})).toEqual({});
  });

  it('reads strings as -c passes them', () => {
    expect(
      read({ KILN_MAX_RUNNING: '50', KILN_NAT: 'TRUE', KILN_IMAGES: 'alpine/edge,debian/sid', KILN_JOB_TIMEOUT: '1h' }),
    ).toEqual({ maxRunning: 50, natGateway: true, images: ['alpine/edge', 'debian/sid'], jobTimeout: '1h' });
  });

  it('reads JSON values as cdk.json holds them', () => {
    expect(read({ KILN_RETENTION_DAYS: 0, KILN_FARGATE_SPOT: false, KILN_ARCHITECTURES: ['arm64'] })).toEqual({
      retentionDays: 0,
      fargateSpot: false,
      architectures: ['arm64'],
    });
  });

  it('treats an empty value as absent', () => {
    expect(read({ KILN_SMTP_URL: '' })).toEqual({});
  });

  it.each([
    ['KILN_NAT', 'yes please', 'KILN_NAT=yes please must be true or false'],
    ['KILN_BUILD_CPU', 'lots', 'KILN_BUILD_CPU=lots is not a number'],
    ['KILN_IMAGES', ' , ', 'KILN_IMAGES is empty'],
    ['KILN_ARCHITECTURES', 'riscv64', 'KILN_ARCHITECTURES: "riscv64" is not an architecture'],
  ])('rejects %s=%j', (key, value, message) => {
    expect(() => read({ [key]: value })).toThrow(SettingError);
    expect(() => read({ [key]: value })).toThrow(message);
  });
});

describe('validateFargateSize', () => {
  it.each([
    [256, 512],
    [1024, 2048],
    [2048, 4096],
    [4096, 30720],
    [8192, 20480],
    [16384, 122880],
  ])('accepts %i CPU with %i MiB', (cpu, memory) => {
    expect(() => validateFargateSize(cpu, memory)).not.toThrow();
  });

  it.each([
    [2048, 2048, 'Fargate allows 4096 to 16384 MiB in steps of 1024'],
    [8192, 18432, 'in steps of 4096'],
    [3000, 4096, 'buildCpu=3000 is not a Fargate CPU value'],
  ])('rejects %i CPU with %i MiB', (cpu, memory, message) => {
    expect(() => validateFargateSize(cpu, memory)).toThrow(message);
  });
});

describe('Kiln settings that cannot be deployed', () => {
  it.each([
    [{ KILN_JOB_TIMEOUT: 'forever' }, 'KILN_JOB_TIMEOUT="forever" is not a duration'],
    [{ KILN_SMTP_URL: 'mail.example.org' }, 'KILN_SMTP_URL="mail.example.org" is not a URL'],
    [{ KILN_IMAGES: 'ubuntu/jammy' }, 'images: "ubuntu/jammy" is not a canonical catalog name'],
    [{ KILN_BUILD_CPU: 1024, KILN_BUILD_MEMORY: 512 }, 'buildMemoryMiB=512 does not fit buildCpu=1024'],
    [{ KILN_RETENTION_DAYS: -1 }, 'retentionDays=-1 must be a whole number of at least 0'],
    [{ KILN_EMAIL_FROM: 'not an address' }, 'emailFrom="not an address" is not an email address'],
    [{ KILN_EMAIL_IDENTITY: 'example.org' }, 'emailIdentity is set but emailFrom is not'],
  ])('fail synthesis for %j', (context, message) => {
    expect(() => createKilnApp({ context, env: {} })).toThrow(message);
  });
});

describe('Kiln stack with every setting changed', () => {
  let template: Template;
  let resources: Record<string, Resource>;
  let outdir: string;
  let nagErrors: string[];

  beforeAll(() => {
    outdir = mkdtempSync(path.join(os.tmpdir(), 'kiln-cdk-settings-'));
    const { app, stack } = createKilnApp({ outdir, context: CONTEXT, env: {} });
    app.synth();
    template = Template.fromStack(stack);
    resources = template.toJSON().Resources as Record<string, Resource>;
    nagErrors = new AwsSolutionsChecks()
      .validateScope(stack)
      .violations.map((violation) => `${violation.ruleName} at ${violation.violatingResources.map((r) => r.constructPath).join(', ')}`);
  }, 240_000);

  afterAll(() => {
    rmSync(outdir, { recursive: true, force: true });
  });

  function ofType(type: string): Array<[string, Resource]> {
    return Object.entries(resources).filter(([, resource]) => resource.Type === type);
  }

  function variablesOf(name: string): Record<string, unknown> {
    const [, fn] = ofType('AWS::Lambda::Function').find(([id]) => id.startsWith(`Kiln${name}Function`)) ?? [];
    if (!fn) throw new Error(`no ${name} function`);

    return fn.Properties.Environment.Variables as Record<string, unknown>;
  }

  it('names the stack from context', () => {
    expect(readFileSync(path.join(outdir, 'KilnCi.template.json'), 'utf8')).toContain('AWS::ECS::Cluster');
  });

  it('builds only the chosen images and architectures', () => {
    const families = ofType('AWS::ECS::TaskDefinition').map(([, resource]) => resource.Properties.Family).sort();

    expect(families).toEqual(['ci-runner-alpine-edge-arm64', 'ci-runner-alpine-edge-x86_64', 'ci-runner-archlinux-x86_64']);
    expect((variablesOf('Dispatch')[AWS_ENV.runnerImages] as string).split(',').sort()).toEqual([
      'alpine/edge@arm64',
      'alpine/edge@x86_64',
      'archlinux@x86_64',
    ]);
  });

  it('sizes the build tasks', () => {
    for (const [, task] of ofType('AWS::ECS::TaskDefinition')) {
      expect(task.Properties.Cpu).toBe('4096');
      expect(task.Properties.Memory).toBe('8192');
    }
  });

  it('passes the image version to every build', () => {
    const manifest = JSON.parse(readFileSync(path.join(outdir, 'KilnCi.assets.json'), 'utf8'));
    const versions = Object.values(manifest.dockerImages).map(
      (image) => (image as { source: { dockerBuildArgs: Record<string, string> } }).source.dockerBuildArgs.KILN_IMAGE_VERSION,
    );

    expect(versions).toEqual(['2026-12', '2026-12', '2026-12']);
  });

  it('runs builds in private subnets behind one NAT gateway', () => {
    const subnets = (variablesOf('Dispatch')[AWS_ENV.subnets] as { 'Fn::Join': [string, Array<{ Ref: string }>] })['Fn::Join'][1]
      .filter((part) => typeof part === 'object')
      .map((part) => part.Ref);

    template.resourceCountIs('AWS::EC2::NatGateway', 1);
    expect(subnets).toHaveLength(2);
    for (const subnet of subnets) expect(subnet).toMatch(/^KilnFleetVpcBuildsSubnet/);
    expect(variablesOf('Dispatch')[AWS_ENV.assignPublicIp]).toBe('false');
  });

  it('opts into Fargate Spot', () => {
    expect(variablesOf('Dispatch')[AWS_ENV.fargateSpot]).toBe('true');
  });

  it('keeps build output when retention is 0', () => {
    const [, bucket] = ofType('AWS::S3::Bucket')[0];
    const rules = bucket.Properties.LifecycleConfiguration.Rules as Array<Record<string, unknown>>;

    expect(rules.map((rule) => rule.Id)).toEqual(['AbortIncompleteUploads']);
    expect(rules[0].ExpirationInDays).toBeUndefined();
  });

  it('passes the service settings', () => {
    expect(variablesOf('Api')).toMatchObject({
      KILN_JOB_TIMEOUT: '2h',
      KILN_LOG_LINK_TTL: '15m',
      KILN_LOG_MAX_BYTES: '10MiB',
      KILN_MAX_RUNNING: '7',
      KILN_MAX_RUNNING_PER_USER: '2',
      KILN_ANONYMOUS_READ: 'true',
      KILN_WEBHOOK_ALLOW_PRIVATE: 'true',
      KILN_SMTP_URL: 'smtps://kiln:secret@mail.example.org:465',
      KILN_OAUTH_INTROSPECTION_URL: 'https://auth.example.org/introspect',
    });
  });

  it.each(['Api', 'Dispatch', 'TaskStopped', 'Reconcile', 'Triggers'])('gives %s the custom public URL', (name) => {
    expect(variablesOf(name)[AWS_ENV.publicUrl]).toBe('https://ci.example.org');
  });

  it('gives only the triggers function the from address', () => {
    expect(variablesOf('Triggers').KILN_EMAIL_FROM).toBe('Kiln <ci@example.org>');
    for (const name of ['Api', 'Dispatch', 'TaskStopped', 'Reconcile']) {
      expect(variablesOf(name), name).not.toHaveProperty('KILN_EMAIL_FROM');
    }
  });

  it('lets only the triggers function send on the SES identity', () => {
    const sesPolicies = ofType('AWS::IAM::Policy').filter(([, policy]) => JSON.stringify(policy.Properties.PolicyDocument).includes('"ses:'));
    const statements = sesPolicies
      .flatMap(([, policy]) => policy.Properties.PolicyDocument.Statement as Array<{ Action: unknown }>)
      .filter((statement) => [statement.Action].flat().some((action) => String(action).startsWith('ses:')));

    expect(sesPolicies).toHaveLength(1);
    expect(sesPolicies[0][1].Properties.Roles).toEqual([{ Ref: expect.stringMatching(/^KilnTriggersFunctionRole/) }]);
    expect(statements).toEqual([
      {
        Effect: 'Allow',
        Action: ['ses:SendEmail', 'ses:SendRawEmail'],
        Resource: {
          'Fn::Join': ['', ['arn:', { Ref: 'AWS::Partition' }, ':ses:', { Ref: 'AWS::Region' }, ':', { Ref: 'AWS::AccountId' }, ':identity/ci@example.org']],
        },
        Condition: { StringEquals: { 'ses:FromAddress': 'ci@example.org' } },
      },
    ]);
  });

  it('outputs the custom public URL', () => {
    template.hasOutput('ApiUrl', { Value: 'https://ci.example.org' });
  });

  it('leaves the table unprotected when asked', () => {
    template.hasResourceProperties('AWS::DynamoDB::Table', { DeletionProtectionEnabled: false });
  });

  it('throttles the stage as asked', () => {
    template.hasResourceProperties('AWS::ApiGatewayV2::Stage', {
      DefaultRouteSettings: { ThrottlingRateLimit: 20, ThrottlingBurstLimit: 40 },
    });
  });

  it('limits RunTask to the custom families', () => {
    const [, policy] = ofType('AWS::IAM::Policy').find(([id]) => id.startsWith('KilnDispatchRole')) ?? [];
    const statement = (policy?.Properties.PolicyDocument.Statement as Array<{ Action: unknown; Resource: unknown }>).find(
      (candidate) => candidate.Action === 'ecs:RunTask',
    );

    expect(JSON.stringify(statement?.Resource)).toContain(':task-definition/ci-runner-*:*');
  });

  it('passes the cdk-nag checks', () => {
    expect(nagErrors).toEqual([]);
  });
});
