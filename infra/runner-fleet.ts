import { ArnFormat, Duration, Stack } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import { Platform } from 'aws-cdk-lib/aws-ecr-assets';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as logs from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';
import { RUNNER_CONTAINER_NAME, runnerImageKey, taskDefinitionFamily } from '../lib/launchers/ecs-launcher.js';
import type { Architecture, CatalogImage } from '../lib/manifest/images.js';
import { stageRunnerImage } from './runner-image/stage.js';

/** Time a runner gets after SIGTERM to stop its build and upload its logs; 120 seconds is Fargate's maximum. */
export const RUNNER_STOP_TIMEOUT = Duration.seconds(120);

/** The official Node.js image whose `node` binary runs the runner: musl for Alpine, glibc for the rest. */
const NODE_IMAGES = {
  musl: 'node:22-alpine',
  glibc: 'node:22-bookworm-slim',
} as const;

export interface RunnerFleetProps {
  /** Catalog images to build, each for the architectures in both its entry and {@link architectures}. */
  readonly images: readonly CatalogImage[];
  readonly architectures: readonly Architecture[];
  /** vCPU units of each build task (1024 is one vCPU). */
  readonly cpu: number;
  /** Memory of each build task in MiB. */
  readonly memoryMiB: number;
  /** Run builds in private subnets behind a NAT gateway instead of public subnets with public IPs. */
  readonly natGateway: boolean;
  /** Prefix of the task definition families. */
  readonly taskFamilyPrefix: string;
  /** Value of the images' KILN_IMAGE_VERSION build argument; a new value rebuilds every image. */
  readonly imageVersion: string;
  /** How long the runners' own diagnostics are kept. */
  readonly logRetention: logs.RetentionDays;
}

/**
 * The ECS side of Kiln: a VPC of its own, a Fargate cluster with the Fargate
 * and Fargate Spot capacity providers, a security group without inbound
 * rules, and one task definition per catalog image and architecture. The
 * task role has no policies, because builds run untrusted code as root.
 */
export class RunnerFleet extends Construct {
  readonly vpc: ec2.Vpc;
  readonly cluster: ecs.Cluster;
  readonly securityGroup: ec2.SecurityGroup;
  readonly taskRole: iam.Role;
  readonly executionRole: iam.Role;
  readonly logGroup: logs.LogGroup;
  /** Task definitions by {@link runnerImageKey}. */
  readonly taskDefinitions = new Map<string, ecs.FargateTaskDefinition>();
  /** Subnets that build tasks run in. */
  readonly buildSubnets: ec2.ISubnet[];
  /** Whether build tasks need a public IP to reach the internet. */
  readonly assignPublicIp: boolean;
  readonly taskFamilyPrefix: string;

  constructor(scope: Construct, id: string, props: RunnerFleetProps) {
    super(scope, id);

    this.vpc = new ec2.Vpc(this, 'Vpc', {
      maxAzs: 2,
      natGateways: props.natGateway ? 1 : 0,
      subnetConfiguration: props.natGateway
        ? [
            { name: 'Public', subnetType: ec2.SubnetType.PUBLIC, cidrMask: 24 },
            { name: 'Builds', subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS, cidrMask: 20 },
          ]
        : [{ name: 'Builds', subnetType: ec2.SubnetType.PUBLIC, cidrMask: 20 }],
      // Log uploads to S3 take the free gateway endpoint instead of the NAT gateway.
      gatewayEndpoints: { S3: { service: ec2.GatewayVpcEndpointAwsService.S3 } },
    });
    this.buildSubnets = props.natGateway ? this.vpc.privateSubnets : this.vpc.publicSubnets;
    this.assignPublicIp = !props.natGateway;

    this.securityGroup = new ec2.SecurityGroup(this, 'BuildSecurityGroup', {
      vpc: this.vpc,
      description: 'Kiln build tasks: no inbound traffic, any outbound',
      allowAllOutbound: true,
    });

    this.cluster = new ecs.Cluster(this, 'Cluster', {
      vpc: this.vpc,
      enableFargateCapacityProviders: true,
      containerInsightsV2: ecs.ContainerInsights.DISABLED,
    });

    this.taskRole = new iam.Role(this, 'TaskRole', {
      assumedBy: new iam.ServicePrincipal('ecs-tasks.amazonaws.com'),
      description: 'Kiln build tasks: grants nothing, because builds run untrusted code',
    });
    this.executionRole = new iam.Role(this, 'ExecutionRole', {
      assumedBy: new iam.ServicePrincipal('ecs-tasks.amazonaws.com'),
      description: 'Kiln build tasks: lets ECS pull the runner images and write the runner logs',
    });
    this.logGroup = new logs.LogGroup(this, 'RunnerLogGroup', { retention: props.logRetention });

    this.taskFamilyPrefix = props.taskFamilyPrefix;
    const buildContext = stageRunnerImage();
    for (const image of props.images) {
      for (const arch of image.architectures.filter((candidate) => props.architectures.includes(candidate))) {
        this.addTaskDefinition(props, buildContext, image, arch);
      }
    }
  }

  /** Builds the ARN pattern of every task in the cluster; ECS assigns task ids at RunTask, so no narrower pattern exists. */
  clusterTasksArn(): string {
    return Stack.of(this).formatArn({
      service: 'ecs',
      resource: 'task',
      resourceName: `${this.cluster.clusterName}/*`,
      arnFormat: ArnFormat.SLASH_RESOURCE_NAME,
    });
  }

  /** Builds the ARN pattern of every revision of the runner task definition families. */
  taskDefinitionsArn(): string {
    return Stack.of(this).formatArn({
      service: 'ecs',
      resource: 'task-definition',
      resourceName: `${this.taskFamilyPrefix}-*:*`,
      arnFormat: ArnFormat.SLASH_RESOURCE_NAME,
    });
  }

  private addTaskDefinition(props: RunnerFleetProps, buildContext: string, image: CatalogImage, arch: Architecture): void {
    const key = runnerImageKey(image.name, arch);
    const family = taskDefinitionFamily(props.taskFamilyPrefix, image.name, arch);
    // Construct ids may not contain "/", so the id follows the family name's spelling.
    const taskDefinition = new ecs.FargateTaskDefinition(this, taskDefinitionFamily('Task', image.name, arch), {
      family,
      cpu: props.cpu,
      memoryLimitMiB: props.memoryMiB,
      runtimePlatform: {
        cpuArchitecture: arch === 'arm64' ? ecs.CpuArchitecture.ARM64 : ecs.CpuArchitecture.X86_64,
        operatingSystemFamily: ecs.OperatingSystemFamily.LINUX,
      },
      taskRole: this.taskRole,
      executionRole: this.executionRole,
    });

    taskDefinition.addContainer(RUNNER_CONTAINER_NAME, {
      image: ecs.ContainerImage.fromAsset(buildContext, {
        platform: arch === 'arm64' ? Platform.LINUX_ARM64 : Platform.LINUX_AMD64,
        buildArgs: {
          BASE_IMAGE: image.baseImage,
          NODE_IMAGE: image.packageManager === 'apk' ? NODE_IMAGES.musl : NODE_IMAGES.glibc,
          PACKAGE_MANAGER: image.packageManager,
          KILN_IMAGE_VERSION: props.imageVersion,
        },
      }),
      essential: true,
      // An init process reaps the zombies that build scripts leave and passes SIGTERM on to the runner.
      linuxParameters: new ecs.LinuxParameters(taskDefinition, 'LinuxParameters', { initProcessEnabled: true }),
      stopTimeout: RUNNER_STOP_TIMEOUT,
      logging: ecs.LogDrivers.awsLogs({
        logGroup: this.logGroup,
        streamPrefix: family,
        mode: ecs.AwsLogDriverMode.NON_BLOCKING,
      }),
    });
    this.taskDefinitions.set(key, taskDefinition);
  }
}
