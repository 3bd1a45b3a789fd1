"""The Car Rental CDK app: five stacks for one environment, synthesized into a cloud assembly.

    CDK_OUTDIR=cdk.out python cdk/app.py

deploykit runs this file as a process (no CDK CLI) and deploys the templates through CloudFormation change
sets itself. The environment's account, region and names come in as CDK context (`CDK_CONTEXT_JSON`) or as
`CAR_RENTAL_*` environment variables; see stacks/common/settings.py. With nothing set, the app describes the
sandbox of deploy.toml.

Stacks, in dependency order (each dependency is a cross-stack reference passed in through constructor
props; registry, data and auth are independent of each other, and so are fargate and api):

    CarRentalRegistryStack, CarRentalDataStack, CarRentalAuthStack
    CarRentalFargateStack   <- registry (repository), data (tables, bucket, access policy), auth (pool, client)
    CarRentalApiStack       <- registry (artifacts bucket), auth (client)

Exit codes: 0 synthesized; 1 synthesis or cdk-nag validation failed; 2 bad settings.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

_STARTED = time.monotonic()  # before the CDK imports, which start node: about half of the synthesis time

# `python cdk/app.py` puts cdk/ on sys.path already; an importer (the tests) may not have.
_CDK_DIR = Path(__file__).resolve().parent
if str(_CDK_DIR) not in sys.path:
    sys.path.insert(0, str(_CDK_DIR))

from aws_cdk import App, BootstraplessSynthesizer, Environment, Stack, Tags, Validations  # noqa: E402
from cdk_nag import AwsSolutionsChecks  # noqa: E402
from stacks.api_stack import CarRentalApiStack  # noqa: E402
from stacks.auth_stack import CarRentalAuthStack  # noqa: E402
from stacks.common.settings import Settings, SettingsError  # noqa: E402
from stacks.data_stack import CarRentalDataStack  # noqa: E402
from stacks.fargate_stack import CarRentalFargateStack  # noqa: E402
from stacks.registry_stack import CarRentalRegistryStack  # noqa: E402

PROJECT_TAG = "car-rental"
DEFAULT_OUTDIR = _CDK_DIR.parent / "cdk.out"

# Feature flags this app relies on. The CDK CLI would read them from cdk.json; this app runs without the CLI,
# so they are set here (CDK_CONTEXT_JSON can still override them).
FEATURE_FLAGS: dict[str, object] = {
    # S3 server access logs are delivered under a bucket policy, not an ACL: the log bucket keeps ACLs off.
    "@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy": True,
    # A Lambda function's `current_version` also changes when its layers change (recommended; no layers yet).
    "@aws-cdk/aws-lambda:recognizeLayerVersion": True,
    # Templates are deployed as they are synthesized: fail synthesis on a cdk-nag finding (the default, kept
    # explicit because deploykit relies on it).
    "@aws-cdk/core:failSynthOnValidationErrors": True,
}


@dataclass(frozen=True)
class CarRentalApp:
    """The app and its stacks, for `main()` and for the stack tests."""

    app: App
    settings: Settings
    registry: CarRentalRegistryStack
    data: CarRentalDataStack
    auth: CarRentalAuthStack
    fargate: CarRentalFargateStack
    api: CarRentalApiStack

    @property
    def stacks(self) -> tuple[Stack, ...]:
        """Every stack, in dependency order."""
        return (self.registry, self.data, self.auth, self.fargate, self.api)


def build_app(
    outdir: str | os.PathLike[str] | None = None,
    context: Mapping[str, object] | None = None,
    environ: Mapping[str, str] = os.environ,
) -> CarRentalApp:
    """Build (not yet synthesize) the app for the environment described by `context` and `environ`."""
    app = App(
        outdir=str(outdir) if outdir is not None else None,
        context={**FEATURE_FLAGS, **(context or {})},
        # No AWS::CDK::Metadata resource: templates hold only what is deployed.
        analytics_reporting=False,
        # CDK's built-in CloudFormation lint (on by default) doubles the synthesis time (about 9 s of 19 s here)
        # and only ever warns; synthesis is on the path of every stack deploy. The nox `cdk` session runs
        # cfn-lint on the templates instead, and CloudFormation validates each change set anyway.
        builtin_cloud_formation_validation=False,
    )
    settings = Settings.load(app.node.try_get_context, environ)
    # What the CDK CLI's AZ lookup would have cached: the VPC asks for the stack's zones, and without this
    # the assembly would list a "missing" context lookup, which deploykit refuses until `inv lookup` writes
    # the zones to cdk/cdk.context.json: the settings name them instead (availability_zones).
    app.node.set_context(
        f"availability-zones:account={settings.account}:region={settings.region}", list(settings.availability_zones)
    )
    # Cross-stack references stay strong (an export and its Fn::ImportValue), the CDK's default, said so it is
    # not warned about: deploykit keeps an export a stack still imports through the deploy that drops it.
    app.node.set_context("@aws-cdk/core:defaultCrossStackReferences", "strong")
    env = Environment(account=settings.account, region=settings.region)
    names = settings.stacks

    def stack_props(description: str) -> dict[str, object]:
        # Bootstrapless: the templates are self-contained (no BootstrapVersion parameter, no bootstrap
        # stack needed), and any construct that would need a CDK asset (a bundled Lambda, a custom resource)
        # fails synthesis, because deploykit deploys templates, not assets.
        return {
            "env": env,
            "synthesizer": BootstraplessSynthesizer(),
            "description": f"Car Rental ({settings.environment}): {description}",
        }

    registry = CarRentalRegistryStack(
        app,
        names.registry,
        settings=settings,
        **stack_props("ECR repository and Lambda artifacts bucket"),
    )
    data = CarRentalDataStack(
        app,
        names.data,
        settings=settings,
        **stack_props("DynamoDB tables and KYC documents bucket"),
    )
    auth = CarRentalAuthStack(
        app,
        names.auth,
        settings=settings,
        **stack_props("Cognito user pool and app client"),
    )
    fargate = CarRentalFargateStack(
        app,
        names.fargate,
        settings=settings,
        repository=registry.repository,
        cars_table=data.cars_table,
        bookings_table=data.bookings_table,
        kyc_table=data.kyc_table,
        data_access_policy=data.app_access_policy,
        kyc_bucket=data.kyc_bucket,
        user_pool=auth.user_pool,
        user_pool_client=auth.client,
        **stack_props("backend on ECS Fargate behind an ALB"),
    )
    api = CarRentalApiStack(
        app,
        names.api,
        settings=settings,
        artifacts_bucket=registry.artifacts_bucket,
        user_pool_client=auth.client,
        **stack_props("API Gateway and Lambda functions"),
    )

    Tags.of(app).add("Project", PROJECT_TAG)
    Tags.of(app).add("Environment", settings.environment)
    apply_nag(app)
    return CarRentalApp(app=app, settings=settings, registry=registry, data=data, auth=auth, fargate=fargate, api=api)


def apply_nag(app: App) -> None:
    """Check every stack against cdk-nag's AwsSolutions pack during synthesis.

    cdk-nag 3 runs as a CDK validation plugin (`Validations`, not an Aspect as in cdk-nag 2): any finding not
    acknowledged with a reason (stacks/common/nag.py) fails the synthesis, and the findings are written to
    <outdir>/validation-report.json.
    """
    Validations.of(app).add_plugins(AwsSolutionsChecks(app, verbose=True))


def main() -> int:
    """Synthesize into $CDK_OUTDIR (default: cdk.out at the repository root)."""
    outdir = os.environ.get("CDK_OUTDIR") or str(DEFAULT_OUTDIR)
    try:
        built = build_app(outdir=outdir)
    except SettingsError as exc:
        print(f"cdk/app.py: bad settings: {exc}", file=sys.stderr)
        return 2
    try:
        assembly = built.app.synth()
    except Exception as exc:  # jsii surfaces synthesis and validation failures as plain exceptions
        print(f"cdk/app.py: synthesis failed: {exc}", file=sys.stderr)
        return 1
    print(
        f"cdk/app.py: synthesized {len(assembly.stacks)} stacks for {built.settings.environment} "
        f"({built.settings.account}/{built.settings.region}) into {assembly.directory} "
        f"in {time.monotonic() - _STARTED:.1f} s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
