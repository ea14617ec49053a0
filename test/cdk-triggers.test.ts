import { App, Duration, Stack, Validations } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as s3 from 'aws-cdk-lib/aws-s3';
import { AwsSolutionsChecks } from 'cdk-nag';
import { beforeAll, describe, expect, it } from 'vitest';
import { KilnTriggers, TRIGGER_FUNCTION_TIMEOUT, type KilnTriggersProps } from '../infra/triggers.js';

type Statement = { Action: string | string[]; Resource: unknown; Effect: string; Condition?: unknown };

interface TestStack {
  stack: Stack;
  template: Template;
  triggers: KilnTriggers;
  api: lambda.Function;
}

/** Synthesizes a stack with a table, a bucket, a stand-in API function and the triggers construct, bound to the API function. */
function synthesize(props: Partial<KilnTriggersProps> = {}, nag = false): TestStack {
  const app = new App();
  const stack = new Stack(app, 'TriggersTest', { env: { account: '111122223333', region: 'eu-west-1' } });
  const table = new dynamodb.Table(stack, 'Table', {
    partitionKey: { name: 'pk', type: dynamodb.AttributeType.STRING },
    sortKey: { name: 'sk', type: dynamodb.AttributeType.STRING },
  });
  const bucket = new s3.Bucket(stack, 'Bucket');
  const api = new lambda.Function(stack, 'Api', {
    runtime: lambda.Runtime.NODEJS_22_X,
    handler: 'index.handler',
    code: lambda.Code.fromInline('export const handler = async () => ({});'),
  });
  const triggers = new KilnTriggers(stack, 'Triggers', {
    table,
    bucket,
    environment: { KILN_TABLE_NAME: table.tableName, KILN_PUBLIC_URL: 'https://ci.example.org' },
    ...props,
  });
  triggers.bindEnqueue(api);
  triggers.bindWebhookKey(api);
  if (nag) Validations.of(app).addPlugins(new AwsSolutionsChecks(app));

  return { stack, template: Template.fromStack(stack), triggers, api };
}

function logicalId(stack: Stack, construct: { node: { defaultChild?: unknown } }): string {
  return stack.getLogicalId(construct.node.defaultChild as never);
}

/** Collects every statement of the policies attached to the role with logical id `roleId`. */
function statementsOfRole(template: Template, roleId: string): Statement[] {
  const policies = template.findResources('AWS::IAM::Policy');

  return Object.values(policies)
    .filter((policy) => JSON.stringify(policy.Properties.Roles).includes(roleId))
    .flatMap((policy) => policy.Properties.PolicyDocument.Statement as Statement[]);
}

function actionsOf(statements: Statement[]): string[] {
  return statements.flatMap((statement) => (Array.isArray(statement.Action) ? statement.Action : [statement.Action])).sort();
}

describe('KilnTriggers construct', () => {
  let synthesized: TestStack;

  beforeAll(() => {
    synthesized = synthesize({ emailFrom: 'Kiln <ci@example.org>' });
  });

  it('creates the queue with a dead-letter queue', () => {
    const { template, stack, triggers } = synthesized;

    template.hasResourceProperties('AWS::SQS::Queue', {
      VisibilityTimeout: TRIGGER_FUNCTION_TIMEOUT.toSeconds() * 6,
      MessageRetentionPeriod: Duration.days(14).toSeconds(),
      SqsManagedSseEnabled: true,
      RedrivePolicy: { deadLetterTargetArn: { 'Fn::GetAtt': [logicalId(stack, triggers.deadLetterQueue), 'Arn'] }, maxReceiveCount: 5 },
    });
    template.resourceCountIs('AWS::SQS::Queue', 2);
  });

  it('generates the webhook key secret and keeps it', () => {
    const { template } = synthesized;

    template.hasResource('AWS::SecretsManager::Secret', {
      DeletionPolicy: 'Retain',
      UpdateReplacePolicy: 'Retain',
      Properties: {
        GenerateSecretString: { PasswordLength: 64, ExcludePunctuation: true, IncludeSpace: false },
      },
    });
    template.resourceCountIs('AWS::SecretsManager::RotationSchedule', 0);
  });

  it('runs the function from the queue with partial batch failures', () => {
    const { template, stack, triggers } = synthesized;

    template.hasResourceProperties('AWS::Lambda::EventSourceMapping', {
      EventSourceArn: { 'Fn::GetAtt': [logicalId(stack, triggers.queue), 'Arn'] },
      FunctionResponseTypes: ['ReportBatchItemFailures'],
      BatchSize: 10,
    });
    template.hasResourceProperties('AWS::Lambda::Function', {
      Handler: 'index.handler',
      Runtime: 'nodejs22.x',
      Timeout: TRIGGER_FUNCTION_TIMEOUT.toSeconds(),
      Environment: {
        Variables: Match.objectLike({
          KILN_PUBLIC_URL: 'https://ci.example.org',
          KILN_EMAIL_FROM: 'Kiln <ci@example.org>',
          KILN_TRIGGERS_QUEUE_MAX_RECEIVES: '5',
          KILN_WEBHOOK_KEY_SECRET: { Ref: logicalId(stack, triggers.webhookKeySecret) },
        }),
      },
    });
  });

  it('grants the function exactly the calls it makes', () => {
    const { template, stack, triggers } = synthesized;
    const statements = statementsOfRole(template, logicalId(stack, triggers.role));
    const tableArn = { 'Fn::GetAtt': [stack.getLogicalId(stack.node.findChild('Table').node.defaultChild as never), 'Arn'] };
    const bucketId = stack.getLogicalId(stack.node.findChild('Bucket').node.defaultChild as never);
    const find = (action: string) => statements.filter((statement) => [statement.Action].flat().includes(action));

    expect(find('dynamodb:GetItem')).toEqual([
      {
        Effect: 'Allow',
        Action: ['dynamodb:GetItem', 'dynamodb:PutItem', 'dynamodb:UpdateItem', 'dynamodb:DeleteItem'],
        Resource: tableArn,
      },
    ]);
    expect(find('s3:PutObject')).toEqual([
      {
        Effect: 'Allow',
        Action: ['s3:GetObject', 's3:PutObject'],
        Resource: { 'Fn::Join': ['', [{ 'Fn::GetAtt': [bucketId, 'Arn'] }, '/logs/*']] },
      },
    ]);
    expect(find('s3:ListBucket')).toEqual([
      {
        Effect: 'Allow',
        Action: 's3:ListBucket',
        Resource: { 'Fn::GetAtt': [bucketId, 'Arn'] },
        Condition: { StringLike: { 's3:prefix': ['logs/*'] } },
      },
    ]);
    expect(find('ses:SendEmail')).toEqual([
      {
        Effect: 'Allow',
        Action: ['ses:SendEmail', 'ses:SendRawEmail'],
        Resource: { 'Fn::Join': ['', ['arn:', { Ref: 'AWS::Partition' }, ':ses:eu-west-1:111122223333:identity/example.org']] },
        Condition: { StringEquals: { 'ses:FromAddress': 'ci@example.org' } },
      },
    ]);
    expect(find('secretsmanager:GetSecretValue')).toEqual([
      { Effect: 'Allow', Action: 'secretsmanager:GetSecretValue', Resource: { Ref: logicalId(stack, triggers.webhookKeySecret) } },
    ]);
    expect(actionsOf(statements)).toEqual(
      [
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
        'ses:SendEmail',
        'ses:SendRawEmail',
        'sqs:ChangeMessageVisibility',
        'sqs:DeleteMessage',
        'sqs:GetQueueAttributes',
        'sqs:GetQueueUrl',
        'sqs:ReceiveMessage',
      ].sort(),
    );
    expect(JSON.stringify(statements)).not.toContain('"*"');
  });

  it('binds another function to the queue and the key', () => {
    const { template, stack, triggers, api } = synthesized;
    const statements = statementsOfRole(template, stack.getLogicalId(api.role!.node.defaultChild as never));

    expect(statements).toEqual([
      { Effect: 'Allow', Action: 'sqs:SendMessage', Resource: { 'Fn::GetAtt': [logicalId(stack, triggers.queue), 'Arn'] } },
      { Effect: 'Allow', Action: 'secretsmanager:GetSecretValue', Resource: { Ref: logicalId(stack, triggers.webhookKeySecret) } },
    ]);
    template.hasResourceProperties('AWS::Lambda::Function', {
      Handler: 'index.handler',
      Code: { ZipFile: Match.anyValue() },
      Environment: {
        Variables: {
          KILN_TRIGGERS_QUEUE_URL: { Ref: logicalId(stack, triggers.queue) },
          KILN_WEBHOOK_KEY_SECRET: { Ref: logicalId(stack, triggers.webhookKeySecret) },
        },
      },
    });
  });

  it('grants no email without a from address', () => {
    const { template, stack, triggers } = synthesize();
    const statements = statementsOfRole(template, logicalId(stack, triggers.role));

    expect(actionsOf(statements).filter((action) => action.startsWith('ses:'))).toEqual([]);
    const [fn] = Object.values(template.findResources('AWS::Lambda::Function', { Properties: { Handler: 'index.handler', Runtime: 'nodejs22.x', Timeout: 120 } }));
    expect(fn.Properties.Environment.Variables.KILN_EMAIL_FROM).toBeUndefined();
  });

  it('sends from a separately named SES identity', () => {
    const { template, stack, triggers } = synthesize({ emailFrom: 'ci@mail.example.org', emailIdentity: 'example.org' });
    const [statement] = statementsOfRole(template, logicalId(stack, triggers.role)).filter((candidate) =>
      [candidate.Action].flat().includes('ses:SendEmail'),
    );

    expect(JSON.stringify(statement.Resource)).toContain(':identity/example.org');
    expect(statement.Condition).toEqual({ StringEquals: { 'ses:FromAddress': 'ci@mail.example.org' } });
  });

  it('rejects a from address that is not one', () => {
    expect(() => synthesize({ emailFrom: 'not an address' })).toThrow(/emailFrom="not an address" is not an email address/);
  });

  it('leaves no unacknowledged AwsSolutions finding', () => {
    let report = '';
    try {
      synthesize({ emailFrom: 'ci@example.org' }, true);
    } catch (error) {
      report = (error as Error).message;
    }

    // The test's own bucket, table and stand-in function have findings, which shows that the checks ran.
    expect(report).toContain('TriggersTest/Bucket/Resource');
    expect(report).not.toContain('TriggersTest/Triggers/');
  });
});
