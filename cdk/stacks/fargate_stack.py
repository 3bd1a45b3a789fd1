"""CarRentalFargateStack: the backend container on ECS Fargate behind an Application Load Balancer.

The image is `<repository>:<ImageTag>` with `ImageTag` a stack parameter: deploykit's app chain rolls a new
image by registering a task-definition revision itself, and a later stack deploy passes the tag that is live
then, so the stack never reverts the image. The rollout settings below decide how fast and how safely a new
task definition replaces the old one; each says why it has its value, and the stack tests pin them.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnParameter, Duration, RemovalPolicy, Stack
from aws_cdk import aws_cognito as cognito
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from stacks.common.nag import suppress
from stacks.common.outputs import output
from stacks.common.settings import Settings

CONTAINER_PORT = 8000
HEALTH_PATH = "/health"

# --- Rollout settings: fast, safe deploys ------------------------------------------------------------------
# Seconds the ALB gives the requests in flight on a target being removed (it sends it no new ones); it
# completes sooner when the target has no request in flight and no open connection. The default (300 s) is
# the largest part of a rolling deploy's wall time; the API answers in well under a second and keeps no
# long-lived connections, so 5 s drains it completely.
DEREGISTRATION_DELAY = Duration.seconds(5)
# ALB health checks at their fast end. A newly registered target is healthy after its first passing check
# (checks every INTERVAL); one coming back from unhealthy after HEALTHY_THRESHOLD x INTERVAL = 10 s instead of
# the default 5 x 30 s = 150 s. 5 s is the smallest interval the ALB accepts.
HEALTH_CHECK_INTERVAL = Duration.seconds(5)
HEALTHY_THRESHOLD = 2  # the smallest the ALB accepts
# A bad target is taken out after 2 x 5 s = 10 s, so a broken release trips the circuit breaker quickly.
UNHEALTHY_THRESHOLD = 2
# Must be shorter than the interval; /health is shallow (no dependency calls), so 4 s is generous. It also
# covers a new task's start: the ALB checks a target as soon as ECS registers it, while the app is still
# loading; the server listens from its first instant (backend/app/server.py), so that first check waits
# (about 1.5 s) and passes instead of being refused and repeated one interval later.
HEALTH_CHECK_TIMEOUT = Duration.seconds(4)
# 100 %: ECS never stops an old task before its replacement is healthy, so capacity never drops during
# a deploy (no downtime even with one task).
MIN_HEALTHY_PERCENT = 100
# 200 %: ECS may start a full set of new tasks at once, so the whole service turns over in one step.
MAX_HEALTHY_PERCENT = 200
# How long ECS ignores failing ALB health checks of a just-started task. uvicorn is up in about a second;
# a short grace period means a task that never becomes healthy is replaced (and the circuit breaker
# counts it) quickly instead of being waited on.
HEALTH_CHECK_GRACE_PERIOD = Duration.seconds(10)
# No container health check in the task definition: the ALB's check of the same /health is the one that
# counts. ECS already replaces a task whose targets turn unhealthy, and it would wait for both checks before a
# new task counts as healthy; Docker runs a container check for the first time one interval (at least 5 s)
# after the start, so every rollout and rollback would take at least 5 s more for no extra safety. (The
# image's HEALTHCHECK, for `docker run`, is ignored by ECS.)
# Seconds between SIGTERM and SIGKILL when an old task stops (default 30 s). uvicorn finishes its
# in-flight requests in well under that; a deployment is COMPLETED only when the old tasks have stopped.
STOP_TIMEOUT = Duration.seconds(10)
# -------------------------------------------------------------------------------------------------------------

# Docker tag grammar: what ECR accepts as an image tag.
IMAGE_TAG_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"


class CarRentalFargateStack(Stack):
    """VPC, ECS cluster, the backend service and task definition, and the ALB in front of it."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: Settings,
        repository: ecr.IRepository,
        cars_table: dynamodb.ITable,
        bookings_table: dynamodb.ITable,
        kyc_table: dynamodb.ITable,
        data_access_policy: iam.IManagedPolicy,
        kyc_bucket: s3.IBucket,
        user_pool: cognito.IUserPool,
        user_pool_client: cognito.IUserPoolClient,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)

        self.image_tag = CfnParameter(
            self,
            "ImageTag",
            type="String",
            description="Tag of the backend image in the ECR repository (the git SHA it was built from)",
            allowed_pattern=IMAGE_TAG_PATTERN,
            constraint_description="a Docker image tag: letters, digits, '_', '.', '-', at most 128 characters",
        )

        # Network: public subnets only, no NAT gateway. A NAT gateway costs about as much per AZ as the rest of
        # this stack together; instead the tasks get public IPs to reach ECR, CloudWatch, DynamoDB, S3 and
        # Cognito, and their security group admits inbound traffic from the load balancer only, so they are
        # not reachable from the internet. (Private subnets plus VPC endpoints is the upgrade path.)
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr("10.40.0.0/16"),
            # Explicit zones: synthesis needs no AZ lookup and stays offline.
            availability_zones=list(settings.availability_zones),
            nat_gateways=0,
            subnet_configuration=[
                ec2.SubnetConfiguration(
                    name="public",
                    subnet_type=ec2.SubnetType.PUBLIC,
                    cidr_mask=24,
                    # Only the Fargate tasks get public IPs, and they ask for them explicitly.
                    map_public_ip_on_launch=False,
                )
            ],
            # True would add a custom-resource Lambda (a CDK asset that deploykit does not publish) just to
            # empty the default security group; nothing here uses the default group.
            restrict_default_security_group=False,
        )
        flow_log_group = logs.LogGroup(
            self, "FlowLogGroup", retention=logs.RetentionDays.TWO_WEEKS, removal_policy=RemovalPolicy.DESTROY
        )
        self.vpc.add_flow_log(
            "FlowLog",
            destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_log_group),
            traffic_type=ec2.FlowLogTrafficType.ALL,
        )

        self.cluster = ecs.Cluster(
            self,
            "Cluster",
            cluster_name=settings.cluster,
            vpc=self.vpc,
            container_insights_v2=ecs.ContainerInsights.ENABLED,
        )

        log_group = logs.LogGroup(
            self, "BackendLogGroup", retention=logs.RetentionDays.TWO_WEEKS, removal_policy=RemovalPolicy.DESTROY
        )

        self.task_definition = ecs.FargateTaskDefinition(
            self,
            "TaskDefinition",
            # A stable family: deploykit registers new revisions of it when it rolls a new image.
            family=settings.service,
            # deploy.toml's [environments.NAME] task_cpu and task_memory (default 256 and 512)
            cpu=settings.task_cpu,
            memory_limit_mib=settings.task_memory,
            # What deploykit builds the image for: deploy.toml's [build] platform (the sandbox: this machine's CPU).
            runtime_platform=ecs.RuntimePlatform(
                cpu_architecture=ecs.CpuArchitecture.ARM64
                if settings.cpu_architecture == "ARM64"
                else ecs.CpuArchitecture.X86_64,
                operating_system_family=ecs.OperatingSystemFamily.LINUX,
            ),
        )
        self.container = self.task_definition.add_container(
            "Backend",
            container_name=settings.container,
            image=self._image(settings, repository),
            essential=True,
            port_mappings=[ecs.PortMapping(container_port=CONTAINER_PORT, protocol=ecs.Protocol.TCP)],
            # Resource names and ids only, nothing secret; the names backend/app/config.py reads.
            environment={
                "HOST": "0.0.0.0",
                "PORT": str(CONTAINER_PORT),
                "AWS_REGION": self.region,
                "AWS_DEFAULT_REGION": self.region,
                "CARS_TABLE": cars_table.table_name,
                "BOOKINGS_TABLE": bookings_table.table_name,
                "KYC_TABLE": kyc_table.table_name,
                "KYC_BUCKET": kyc_bucket.bucket_name,
                "COGNITO_USER_POOL_ID": user_pool.user_pool_id,
                "COGNITO_CLIENT_ID": user_pool_client.user_pool_client_id,
            },
            logging=ecs.LogDrivers.aws_logs(stream_prefix="backend", log_group=log_group),
            stop_timeout=STOP_TIMEOUT,
        )

        # Least privilege for the app: the data stack's access policy (its tables, their indexes, the KYC
        # objects), and DescribeUserPool for /health/deep. Tokens are verified against the pool's public JWKS.
        task_role = self.task_definition.task_role
        task_role.add_managed_policy(data_access_policy)
        task_role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="UserPool", actions=["cognito-idp:DescribeUserPool"], resources=[user_pool.user_pool_arn]
            )
        )

        alb_security_group = ec2.SecurityGroup(
            self, "LoadBalancerSecurityGroup", vpc=self.vpc, description="Car Rental ALB", allow_all_outbound=False
        )
        service_security_group = ec2.SecurityGroup(
            self,
            "ServiceSecurityGroup",
            vpc=self.vpc,
            description="Car Rental backend tasks: inbound from the ALB only",
            # The tasks call AWS APIs over the internet (no NAT, no VPC endpoints).
            allow_all_outbound=True,
        )

        self.service = ecs.FargateService(
            self,
            "Service",
            service_name=settings.service,
            cluster=self.cluster,
            task_definition=self.task_definition,
            desired_count=settings.desired_count,
            assign_public_ip=True,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PUBLIC),
            security_groups=[service_security_group],
            min_healthy_percent=MIN_HEALTHY_PERCENT,
            max_healthy_percent=MAX_HEALTHY_PERCENT,
            # A deployment whose tasks keep failing to start or to pass health checks is stopped and the
            # previous task definition is restored automatically: a bad release never takes the service down,
            # and deploykit reports the rollback as a failure.
            circuit_breaker=ecs.DeploymentCircuitBreaker(enable=True, rollback=True),
            health_check_grace_period=HEALTH_CHECK_GRACE_PERIOD,
            deployment_controller=ecs.DeploymentController(type=ecs.DeploymentControllerType.ECS),
            platform_version=ecs.FargatePlatformVersion.LATEST,
        )

        self.load_balancer = elbv2.ApplicationLoadBalancer(
            self,
            "LoadBalancer",
            vpc=self.vpc,
            internet_facing=True,
            security_group=alb_security_group,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PUBLIC),
            drop_invalid_header_fields=True,
        )
        listener = self.load_balancer.add_listener("Http", port=80, protocol=elbv2.ApplicationProtocol.HTTP, open=True)
        self.target_group = listener.add_targets(
            "Backend",
            port=CONTAINER_PORT,
            protocol=elbv2.ApplicationProtocol.HTTP,
            targets=[
                self.service.load_balancer_target(container_name=settings.container, container_port=CONTAINER_PORT)
            ],
            deregistration_delay=DEREGISTRATION_DELAY,
            health_check=elbv2.HealthCheck(
                path=HEALTH_PATH,
                healthy_http_codes="200",
                interval=HEALTH_CHECK_INTERVAL,
                timeout=HEALTH_CHECK_TIMEOUT,
                healthy_threshold_count=HEALTHY_THRESHOLD,
                unhealthy_threshold_count=UNHEALTHY_THRESHOLD,
            ),
        )

        self._acknowledge_findings(alb_security_group)

        output(self, "AlbUrl", f"http://{self.load_balancer.load_balancer_dns_name}", "Backend base URL (ALB)")
        output(self, "AlbDnsName", self.load_balancer.load_balancer_dns_name, "DNS name of the ALB")
        output(self, "LoadBalancerArn", self.load_balancer.load_balancer_arn, "ALB ARN")
        output(self, "TargetGroupArn", self.target_group.target_group_arn, "Target group of the backend tasks")
        output(self, "ClusterName", self.cluster.cluster_name, "ECS cluster")
        output(self, "ServiceName", self.service.service_name, "ECS service of the backend")
        output(self, "ServiceArn", self.service.service_arn, "ECS service ARN")
        output(self, "ContainerName", settings.container, "Container of the task definition running the image")
        output(self, "ContainerPort", str(CONTAINER_PORT), "Port the backend listens on")
        output(self, "TaskDefinitionFamily", settings.service, "Task definition family of the backend")
        output(self, "BackendLogGroupName", log_group.log_group_name, "CloudWatch log group of the backend")

    def _image(self, settings: Settings, repository: ecr.IRepository) -> ecs.ContainerImage:
        """`<repository uri>:<ImageTag>`, or `<registry>/<repository>:<ImageTag>` where deploy.toml names a registry.

        Either way it is the reference deploykit writes into the task definitions it registers, so a stack
        deploy after an app deploy changes nothing about the image.
        """
        tag = self.image_tag.value_as_string
        if settings.registry:
            return ecs.ContainerImage.from_registry(f"{settings.registry.rstrip('/')}/{settings.repository}:{tag}")
        suppress(
            self.task_definition,
            "AwsSolutions-IAM5",
            "ecr:GetAuthorizationToken has no resource-level permissions: AWS only accepts Resource '*' for it. "
            "The image pull itself is scoped to the one repository.",
            applies_to="Resource::*",
        )
        return ecs.ContainerImage.from_ecr_repository(repository, tag)

    def _acknowledge_findings(self, alb_security_group: ec2.SecurityGroup) -> None:
        suppress(
            alb_security_group,
            "AwsSolutions-EC23",
            "The ALB is the public entry point of the API: it must accept port 80 from anywhere. The tasks behind "
            "it accept traffic from this security group only.",
        )
        suppress(
            self.load_balancer,
            "AwsSolutions-ELB2",
            "ALB access logs would need a bucket writable by the regional ELB account; request logs already come "
            "from the backend container into CloudWatch. Enable together with HTTPS for production.",
        )
        suppress(
            self.task_definition,
            "AwsSolutions-ECS2",
            "The environment holds only resource names and ids (tables, bucket, user pool, client id, region, "
            "port), none of them secret; there are no credentials to move to Secrets Manager.",
        )
