"""The KYC workflow: start a case (presigned PUT) → the client uploads → submit (checks) → status.

States: PENDING_UPLOAD → SUBMITTED (document present, allowed type, within the size limit, content
that looks like its type; the version checked is recorded as ``document_version``) or → REJECTED with a
reason (the rejected object is deleted). A submit without an uploaded object leaves the case
PENDING_UPLOAD so the client can still upload. Document content is never logged; only its size and
declared type are looked at, plus its first bytes (the file signature).
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from app.errors import ApiError
from app.models import ALLOWED_KYC_TYPES, KycCase, KycStartResponse, KycUpload
from app.store import Store

log = logging.getLogger("app.kyc")

PENDING_UPLOAD = "PENDING_UPLOAD"
SUBMITTED = "SUBMITTED"
REJECTED = "REJECTED"

# File signatures ("magic numbers") of the allowed types.
_SIGNATURES: dict[str, tuple[bytes, ...]] = {
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "application/pdf": (b"%PDF-",),
}


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _view(case: dict[str, Any]) -> KycCase:
    return KycCase.model_validate({k: v for k, v in case.items() if k in KycCase.model_fields})


def _not_found() -> ApiError:
    return ApiError(404, "not_found", "no such KYC case")


class KycService:
    def __init__(self, store: Store, s3: Any, s3_presign: Any, *, bucket: str, max_bytes: int, url_ttl: int) -> None:
        self.store = store
        self.s3 = s3
        self.s3_presign = s3_presign
        self.bucket = bucket
        self.max_bytes = max_bytes
        self.url_ttl = url_ttl

    def _bucket(self) -> str:
        if not self.bucket:
            raise ApiError(503, "not_configured", "KYC_BUCKET is not set")
        return self.bucket

    @staticmethod
    def object_key(user_id: str, case_id: str) -> str:
        return f"kyc/{user_id}/{case_id}"

    def start(self, user_id: str, document_type: str, content_type: str) -> KycStartResponse:
        bucket = self._bucket()
        case_id = uuid.uuid4().hex
        stamp = now_iso()
        key = self.object_key(user_id, case_id)
        case = {
            "case_id": case_id,
            "status": PENDING_UPLOAD,
            "document_type": document_type,
            "content_type": content_type,
            "object_key": key,
            "created_at": stamp,
            "updated_at": stamp,
        }
        self.store.put_case(user_id, case)
        url = self.s3_presign.generate_presigned_url(
            "put_object",
            Params={"Bucket": bucket, "Key": key, "ContentType": content_type},
            ExpiresIn=self.url_ttl,
            HttpMethod="PUT",
        )
        log.info("KYC case %s started (%s, %s)", case_id, document_type, content_type)
        upload = KycUpload(
            url=url, headers={"Content-Type": content_type}, expires_in=self.url_ttl, max_bytes=self.max_bytes
        )
        return KycStartResponse(case=_view(case), upload=upload)

    def get(self, user_id: str, case_id: str) -> KycCase:
        case = self.store.get_case(user_id, case_id)
        if case is None:
            raise _not_found()
        return _view(case)

    def list_cases(self, user_id: str) -> list[KycCase]:
        cases = sorted(self.store.list_cases(user_id), key=lambda c: (str(c["created_at"]), str(c["case_id"])))
        return [_view(case) for case in cases]

    def submit(self, user_id: str, case_id: str) -> KycCase:
        bucket = self._bucket()
        case = self.store.get_case(user_id, case_id)
        if case is None:
            raise _not_found()
        if case["status"] != PENDING_UPLOAD:
            raise ApiError(
                409, "invalid_state", f"the case is {case['status']}; only a PENDING_UPLOAD case can be submitted"
            )
        key = str(case["object_key"])
        try:
            head = self.s3.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                raise ApiError(
                    409, "document_missing", "no document uploaded yet; PUT it to the upload URL first"
                ) from None
            raise
        size = int(head.get("ContentLength", 0))
        content_type = str(head.get("ContentType", "")).split(";")[0].strip().lower()
        # The upload URL stays valid until it expires, submitted or not: what was checked is pinned by its version
        # (the bucket keeps versions), read at that version, and recorded for whoever reviews the case.
        version = head.get("VersionId")
        pinned = {"VersionId": version} if version and version != "null" else {}
        reason = self._rejection(bucket, key, size, content_type, str(case["content_type"]), pinned)
        stamp = now_iso()
        changes: dict[str, Any] = {"updated_at": stamp, "size_bytes": size}
        if reason is None:
            changes |= {"status": SUBMITTED, "submitted_at": stamp}
            if pinned:
                changes["document_version"] = pinned["VersionId"]
        else:
            changes |= {"status": REJECTED, "rejection_reason": reason}
        if not self.store.update_case(user_id, case_id, PENDING_UPLOAD, changes):
            raise ApiError(409, "invalid_state", "the case was submitted meanwhile")
        if reason is not None:
            self._discard(bucket, key)  # keep no document we refused
        log.info("KYC case %s %s (%d bytes, %s)", case_id, changes["status"], size, content_type or "no type")
        return _view({**case, **changes})

    def _discard(self, bucket: str, key: str) -> None:
        """Delete every version of a refused document (the bucket keeps versions: a plain delete left it 90 days behind
        a delete marker). Best effort: the case is REJECTED already, and a delete S3 refuses leaves it to the bucket's
        lifecycle rule, said in the log, not a 503 for a rejection that stands."""
        try:
            found = self.s3.list_object_versions(Bucket=bucket, Prefix=key)
            versions = [*(found.get("Versions") or ()), *(found.get("DeleteMarkers") or ())]
            for version in [v for v in versions if v.get("Key") == key] or [{"VersionId": None}]:
                extra = {"VersionId": version["VersionId"]} if version.get("VersionId") else {}
                self.s3.delete_object(Bucket=bucket, Key=key, **extra)
        except ClientError as exc:
            log.warning("KYC document %s was refused and could not be deleted: %s", key, exc)

    def _rejection(
        self, bucket: str, key: str, size: int, content_type: str, declared: str, pinned: dict[str, str]
    ) -> str | None:
        if size == 0:
            return "the document is empty"
        if size > self.max_bytes:
            return f"the document is {size} bytes; the limit is {self.max_bytes} bytes"
        if content_type not in ALLOWED_KYC_TYPES:
            return f"content type {content_type[:80]!r} is not allowed (allowed: {', '.join(ALLOWED_KYC_TYPES)})"
        if content_type != declared:
            return f"content type {content_type} differs from the declared {declared}"
        head = self.s3.get_object(Bucket=bucket, Key=key, Range="bytes=0-15", **pinned)["Body"].read(16)
        if not any(head.startswith(signature) for signature in _SIGNATURES[content_type]):
            return f"the document content is not {content_type}"
        return None
