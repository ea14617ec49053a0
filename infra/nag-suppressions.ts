/**
 * The cdk-nag AwsSolutions findings that Kiln accepts, each acknowledged on
 * the narrowest construct with the reason. The acknowledgements are CDK
 * metadata, so the construct needs cdk-nag only when a check runs.
 */
import { Stack, Validations } from 'aws-cdk-lib';
import type { IConstruct } from 'constructs';
import type { Kiln } from './kiln.js';

/**
 * Flattens a resolved CloudFormation value the way cdk-nag 3 names wildcard
 * findings: `Ref` becomes `<LogicalId>`, `Fn::GetAtt` becomes
 * `<LogicalId.Attribute>`, and `Fn::Join` joins its flattened parts.
 */
function flattenReference(value: unknown): string {
  if (value === undefined) return '';
  if (typeof value === 'string') return value.replace(/\$\{/g, '<').replace(/\}/g, '>');

  const node = value as Record<string, unknown>;
  if (node['Fn::Join']) {
    const [delimiter, items] = node['Fn::Join'] as [string, unknown[]];
    return items.map(flattenReference).join(delimiter);
  }
  if (node['Fn::Sub']) return flattenReference(node['Fn::Sub']);
  if (node['Fn::GetAtt']) {
    const [resource, attribute] = node['Fn::GetAtt'] as [unknown, unknown];
    return `<${flattenReference(resource)}.${flattenReference(attribute)}>`;
  }
  if (node.Ref) return `<${flattenReference(node.Ref)}>`;

  return JSON.stringify(value);
}

/** Builds the finding id of AwsSolutions-IAM5 for a wildcard resource such as `arn:...:task/cluster/*`. */
function wildcardResourceFinding(scope: IConstruct, resource: string): string {
  return `AwsSolutions-IAM5[Resource::${flattenReference(Stack.of(scope).resolve(resource))}]`;
}

function acknowledge(scope: IConstruct, id: string, reason: string): void {
  Validations.of(scope).acknowledge({ id, reason });
}

export function suppressKilnFindings(kiln: Kiln): void {
  const { api, dispatch, taskStopped, reconcile } = kiln.functions;

  acknowledge(
    kiln.bucket,
    'AwsSolutions-S1',
    'Clients and runners reach objects only through presigned URLs that the API signs per request after an access check, ' +
      "and the API's access log records those requests. Server access logs would need a second bucket and record nothing the service acts on.",
  );
  acknowledge(
    kiln.fleet.vpc,
    'AwsSolutions-VPC7',
    'The VPC holds only build tasks, which accept no inbound traffic. Flow logs would bill per GB for every source checkout ' +
      'and package download of every build, and nothing reads them.',
  );
  acknowledge(
    kiln.fleet.cluster,
    'AwsSolutions-ECS4',
    'Container Insights bills metrics per task, and each build is one short task. The service records the outcome and stop reason of every build itself.',
  );
  acknowledge(
    kiln.fleet.executionRole,
    'AwsSolutions-IAM5[Resource::*]',
    'ecr:GetAuthorizationToken has no resource-level permissions, so ECS needs it on "*" to pull the runner images; the pull actions are scoped to the asset repository.',
  );
  acknowledge(
    kiln.httpApi,
    'AwsSolutions-APIG4',
    "Kiln authenticates every API route itself with build.sr.ht's token scheme and every runner route with a per-job token. " +
      'API Gateway authorizers cannot check either kind of token.',
  );

  for (const fn of [api, dispatch, taskStopped, reconcile]) {
    acknowledge(
      fn.function,
      'AwsSolutions-L1',
      'Pinned to Node.js 22, the version that the function bundles target and the runner images use. Move all three together after testing on a newer version.',
    );
    acknowledge(
      fn.role,
      wildcardResourceFinding(fn, kiln.bucket.arnForObjects('*')),
      "Logs and artifacts are stored under keys that contain job ids, which exist only at run time; the statement covers only Kiln's own bucket.",
    );
  }
  for (const fn of [api, dispatch, reconcile]) {
    acknowledge(
      fn.role,
      wildcardResourceFinding(fn, kiln.fleet.clusterTasksArn()),
      'ECS assigns task ids at RunTask, so the statement can name only the tasks of the build cluster.',
    );
  }
  acknowledge(
    dispatch.role,
    wildcardResourceFinding(dispatch, kiln.fleet.taskDefinitionsArn()),
    "RunTask names a runner family without a revision, so the statement covers every revision of this deployment's runner families, " +
      'and a condition limits it to the build cluster.',
  );
}
