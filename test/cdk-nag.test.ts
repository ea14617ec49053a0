import { Validations, type Stack } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import type { IConstruct } from 'constructs';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createKilnApp } from '../infra/kiln-stack.js';

type Violation = { ruleName: string; severity: string; violatingResources: Array<{ constructPath: string }> };

/**
 * Collects the AwsSolutions acknowledgements in the tree as rule id,
 * construct path and reason. CDK acknowledges rules of its own validator
 * too, such as CloudFormation-Validate::W3010 on every stack; those are left out.
 */
function acknowledgementsOf(root: IConstruct): Array<{ id: string; path: string; reason: string }> {
  const found: Array<{ id: string; path: string; reason: string }> = [];
  for (const construct of root.node.findAll()) {
    for (const entry of construct.node.metadata) {
      if (entry.type !== Validations.ACKNOWLEDGED_RULES_METADATA_KEY) continue;
      for (const [key, reason] of Object.entries(entry.data as Record<string, string>)) {
        const id = key.replace(/^annotation::/i, '');
        if (id.startsWith('AwsSolutions-')) found.push({ id, path: construct.node.path, reason });
      }
    }
  }

  return found;
}

function describeViolations(violations: Violation[]): string[] {
  return violations.map((violation) => `${violation.ruleName} at ${violation.violatingResources.map((resource) => resource.constructPath).join(', ')}`);
}

describe('cdk-nag AwsSolutions checks', () => {
  let stack: Stack;
  let violations: Violation[];
  let outdir: string;

  beforeAll(() => {
    outdir = mkdtempSync(path.join(os.tmpdir(), 'kiln-nag-'));
    const created = createKilnApp({ outdir, env: {} });
    created.app.synth();
    stack = created.stack;
    violations = new AwsSolutionsChecks().validateScope(stack).violations as Violation[];
  }, 240_000);

  afterAll(() => {
    rmSync(outdir, { recursive: true, force: true });
  });

  it('finds no unacknowledged error', () => {
    expect(describeViolations(violations.filter((violation) => violation.severity === 'error'))).toEqual([]);
  });

  it('finds no unacknowledged warning', () => {
    expect(describeViolations(violations.filter((violation) => violation.severity !== 'error'))).toEqual([]);
  });

  it('acknowledges only the expected rules', () => {
    const ids = [...new Set(acknowledgementsOf(stack).map((acknowledgement) => acknowledgement.id.replace(/\[.*$/, '')))].sort();

    expect(ids).toEqual([
      'AwsSolutions-APIG4',
      'AwsSolutions-ECS4',
      'AwsSolutions-IAM5',
      'AwsSolutions-L1',
      'AwsSolutions-S1',
      'AwsSolutions-SMG4',
      'AwsSolutions-VPC7',
    ]);
  });

  it('acknowledges the unrotated webhook key secret with the reason', () => {
    const rotation = acknowledgementsOf(stack).filter((acknowledgement) => acknowledgement.id === 'AwsSolutions-SMG4');

    expect(rotation.map((acknowledgement) => acknowledgement.path)).toEqual(['Kiln/Kiln/Triggers/WebhookKey']);
    expect(rotation[0].reason).toContain('would change the public key');
  });

  it('acknowledges wildcard resources only on named resources', () => {
    const wildcardIds = acknowledgementsOf(stack)
      .map((acknowledgement) => acknowledgement.id)
      .filter((id) => id.startsWith('AwsSolutions-IAM5'));

    for (const id of wildcardIds) expect(id).toMatch(/^AwsSolutions-IAM5\[Resource::/);
    expect(wildcardIds).not.toContain('AwsSolutions-IAM5');
  });

  it('gives every acknowledgement a reason', () => {
    for (const acknowledgement of acknowledgementsOf(stack)) {
      expect(acknowledgement.reason.length, `${acknowledgement.id} at ${acknowledgement.path}`).toBeGreaterThan(60);
    }
  });

  it('acknowledges nothing on the whole stack', () => {
    const onStack = acknowledgementsOf(stack).filter((acknowledgement) => acknowledgement.path.split('/').length <= 2);

    expect(onStack).toEqual([]);
  });
});
