"""CarRentalRegistryStack: where built artifacts live: the backend's ECR repository and the Lambda zip bucket;
and the deploys' own dashboard.

Deployed first: the image and the Lambda zips must exist before the stacks that run them are created.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_s3 as s3
from constructs import Construct

from stacks.common.deploy_dashboard import deploy_dashboard
from stacks.common.nag import suppress
from stacks.common.outputs import output
from stacks.common.settings import Settings
from stacks.common.storage import secure_bucket

# The repository's lifecycle policy is the safety net under `inv images.cleanup` (deploykit/image_cleanup.py) and
# must never delete an image that the cleanup would keep. The cleanup keeps the --keep newest tagged images
# (default 10), every image the ECS service runs or may roll back to (its deployments' task definitions and the
# newest 5 revisions of the family), and every image recorded in any environment's deployment history. ECR
# lifecycle rules cannot know about task definitions or the history: they only count and age images. So the policy
# keeps many more tagged images than the cleanup's default (enough to roll back weeks of deploys, few enough to
# bound storage cost) and, like the cleanup, expires untagged images (manifest leftovers, never counted among the
# newest) a day after their push, the same grace the cleanup gives them. An image older than the newest
# KEEP_IMAGES that is still in use (a service rolled back to it) is the one case this cannot cover: run
# `inv images.cleanup` (it keeps it) rather than lowering KEEP_IMAGES.
KEEP_IMAGES = 30
UNTAGGED_DAYS = 1

# Each stack deploy from a commit keeps the template it deployed under KEPT_TEMPLATES (deploykit/stack_chain.py's
# KEPT_TEMPLATES), so that a rollback to that commit deploys it as it was, without synthesis. A few kB to 50 kB per
# stack and commit, written by every deploy that changes a stack: they go KEPT_TEMPLATE_DAYS after their deploy. A
# rollback to a commit whose template has gone synthesizes the commit's CDK app from git instead, as for a commit
# deployed before templates were kept.
KEPT_TEMPLATES = "deploykit/templates/"
KEPT_TEMPLATE_DAYS = 180
# A template over CloudFormation's 51,200 bytes for one sent inline goes to CloudFormation through this bucket
# (deploykit/stack_chain.py's STAGED_TEMPLATES), read once when the change set is made: a week is plenty.
STAGED_TEMPLATES = "deploykit/cfn/"
STAGED_TEMPLATE_DAYS = 7


class CarRentalRegistryStack(Stack):
    """ECR repository for the backend image and the S3 bucket for Lambda code zips."""

    def __init__(self, scope: Construct, construct_id: str, *, settings: Settings, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)

        self.repository = ecr.Repository(
            self,
            "BackendRepository",
            repository_name=settings.repository,
            # Images are named by git SHA and never overwritten: a tag always means the same bytes, so the
            # live SHA read from the running task definition is trustworthy and a rollback is exact.
            image_tag_mutability=ecr.TagMutability.IMMUTABLE,
            image_scan_on_push=True,
            # The images are the deploy history (rollback targets): keep them when the stack goes.
            removal_policy=RemovalPolicy.RETAIN,
        )
        # See KEEP_IMAGES above: never more than `inv images.cleanup` would delete.
        self.repository.add_lifecycle_rule(
            rule_priority=1,
            description=f"Drop untagged images (manifest leftovers) {UNTAGGED_DAYS} day after their push",
            tag_status=ecr.TagStatus.UNTAGGED,
            max_image_age=Duration.days(UNTAGGED_DAYS),
        )
        # Tagged only (every tag matches "*"): untagged images take no place among the newest, as in the cleanup.
        self.repository.add_lifecycle_rule(
            rule_priority=2,
            description=f"Keep the newest {KEEP_IMAGES} tagged images",
            tag_status=ecr.TagStatus.TAGGED,
            tag_pattern_list=["*"],
            max_image_count=KEEP_IMAGES,
        )

        # Lambda zips, named by content hash (`lambda/<function>/<sha256>.zip`): the same code is uploaded once and
        # a function's code location is a stack input (see api_stack.py). No lifecycle rule expires them: a rule
        # counts and ages objects, and cannot tell a zip a version, $LATEST or this stack's code parameter still
        # names (CloudFormation rolls back to it) from one nothing does; `inv lambda.cleanup` tells them apart
        # (deploykit/zip_cleanup.py) and deletes the rest.
        self.artifacts_bucket: s3.Bucket = secure_bucket(self, "ArtifactsBucket", removal_policy=RemovalPolicy.RETAIN)
        self.artifacts_bucket.add_lifecycle_rule(
            id="kept-templates", prefix=KEPT_TEMPLATES, expiration=Duration.days(KEPT_TEMPLATE_DAYS)
        )
        self.artifacts_bucket.add_lifecycle_rule(
            id="staged-templates", prefix=STAGED_TEMPLATES, expiration=Duration.days(STAGED_TEMPLATE_DAYS)
        )
        suppress(
            self.artifacts_bucket,
            "AwsSolutions-S1",
            "Holds only reproducible build outputs named by content hash (rebuilt byte for byte from git), "
            "no personal data; writes come from the deploy tooling alone. Access logs would add a bucket "
            "and cost without telling anything the git history does not.",
        )

        output(self, "RepositoryName", self.repository.repository_name, "ECR repository of the backend image")
        output(self, "RepositoryUri", self.repository.repository_uri, "Image URI without a tag: <uri>:<git sha>")
        output(self, "RepositoryArn", self.repository.repository_arn, "ECR repository ARN")
        output(self, "ArtifactsBucketName", self.artifacts_bucket.bucket_name, "S3 bucket of the Lambda code zips")

        # What deploykit puts in CloudWatch after each deploy run (deploykit/metrics.py), drawn; beside the history
        # in the artifacts bucket, which `inv report` reads.
        self.dashboard = deploy_dashboard(self, settings)
        output(self, "DeployDashboardName", self.dashboard.dashboard_name, "CloudWatch dashboard of the deploys")
