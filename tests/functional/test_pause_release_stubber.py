"""AWS failure shapes moto cannot produce, told through botocore's Stubber: a pause's scaling range that cannot be
read, the release command's pending mark that cannot be put on or taken off."""

from __future__ import annotations

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from deploykit.pause import read_scaling
from deploykit.release import PENDING_TAG, _mark, pending


def test_scaling_that_cannot_be_read_is_taken_as_none_and_said_and_other_errors_raise() -> None:
    client = boto3.client(
        "application-autoscaling", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    with Stubber(client) as stub:
        stub.add_client_error("describe_scalable_targets", "AccessDeniedException", "not allowed")
        stub.add_client_error("describe_scalable_targets", "ValidationException", "bad")
        stub.add_response("describe_scalable_targets", {"ScalableTargets": []})
        found, why = read_scaling(client, "c", "svc")
        assert found is None and why.startswith("Application Auto Scaling could not be read (AccessDeniedException)")
        with pytest.raises(ClientError):
            read_scaling(client, "c", "svc")
        assert read_scaling(client, "c", "svc") == (None, "")


def test_the_pending_mark_that_cannot_be_put_on_or_taken_off_is_said_not_raised() -> None:
    """A deploy role without ecs:TagResource / UntagResource: the step's outcome stands, its words say the mark's."""
    ecs = boto3.client("ecs", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x")
    arn = "arn:aws:ecs:eu-west-1:123456789012:service/car-rental-cluster/car-rental-service"
    service = {"serviceArn": arn, "tags": [{"key": PENDING_TAG, "value": "abc"}]}
    assert pending(service) == "abc" and pending({"tags": [{"key": "team", "value": "cars"}]}) is None
    with Stubber(ecs) as stub:
        stub.add_client_error("tag_resource", "AccessDeniedException", "not allowed: ecs:TagResource")
        stub.add_client_error("untag_resource", "AccessDeniedException", "not allowed: ecs:UntagResource")
        stub.add_response("untag_resource", {}, {"resourceArn": arn, "tagKeys": [PENDING_TAG]})
        put = _mark(ecs, service, "abc")
        assert put.startswith(" (deploykit:release-pending could not be put on the service: An error occurred")
        assert "not allowed: ecs:TagResource" in put
        assert "could not be taken off the service" in _mark(ecs, service, None)
        assert _mark(ecs, service, None) == "; deploykit:release-pending taken off the service"
