"""S3 buckets with the house security settings: the one place those settings are decided."""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_s3 as s3
from constructs import Construct

# How long a superseded object version is kept (versioning protects against overwrite and deletion;
# it should not keep every old version forever).
NONCURRENT_VERSION_DAYS = 90


def secure_bucket(
    scope: Construct,
    construct_id: str,
    *,
    removal_policy: RemovalPolicy = RemovalPolicy.RETAIN,
    cors: Sequence[s3.CorsRule] = (),
    access_logs_bucket: s3.IBucket | None = None,
    access_logs_prefix: str | None = None,
    expire_current_after: Duration | None = None,
) -> s3.Bucket:
    """A private bucket: encrypted at rest, all public access blocked, TLS 1.2+ only, versioned, ACLs off."""
    lifecycle = [
        s3.LifecycleRule(
            id="tidy",
            abort_incomplete_multipart_upload_after=Duration.days(1),
            noncurrent_version_expiration=Duration.days(NONCURRENT_VERSION_DAYS),
            expiration=expire_current_after,
        )
    ]
    return s3.Bucket(
        scope,
        construct_id,
        # SSE-S3: encrypted at rest with no KMS key to manage, and presigned uploads need no KMS grant.
        encryption=s3.BucketEncryption.S3_MANAGED,
        block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
        # A bucket policy denying any request that is not over TLS (aws:SecureTransport), TLS 1.2 at least.
        enforce_ssl=True,
        minimum_tls_version=1.2,
        versioned=True,
        # ACLs disabled: access is decided by IAM and the bucket policy alone.
        object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
        cors=list(cors) or None,
        server_access_logs_bucket=access_logs_bucket,
        server_access_logs_prefix=access_logs_prefix,
        lifecycle_rules=lifecycle,
        removal_policy=removal_policy,
    )
