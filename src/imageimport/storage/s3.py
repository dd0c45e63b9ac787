"""Objects in an S3 bucket (AWS, SeaweedFS, MinIO, ... anything that speaks the S3 API)."""

from __future__ import annotations

import contextlib
import io
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, BinaryIO, NoReturn
from urllib.parse import urlsplit, urlunsplit

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
)

from imageimport.errors import (
    ConfigError,
    FileTooLarge,
    ImageImportError,
    StoreFull,
    TransientError,
)
from imageimport.settings import secret
from imageimport.storage import validate_key, validate_prefix
from imageimport.storage.base import ObjectStore

if TYPE_CHECKING:
    from imageimport.settings import Settings

log = logging.getLogger(__name__)

_RETRYABLE_CODES = frozenset(
    {
        "InternalError",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestTimeout",
        "ServiceUnavailable",
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "TooManyRequestsException",
    }
)
_ACCESS_CODES = frozenset(
    {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "403"}
)
_MISSING_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
# No room left: a full disk (MinIO's XMinioStorageFull, HTTP 507 Insufficient Storage from any
# server) or a quota (MinIO bucket quotas, Ceph RGW's QuotaExceeded, a 403 that is not about
# credentials). Space can be freed, so these are retried, but the reason must say "full".
_FULL_CODES = frozenset(
    {"XMinioStorageFull", "XMinioAdminBucketQuotaExceeded", "QuotaExceeded", "InsufficientStorage"}
)
_INSUFFICIENT_STORAGE = 507
# The store's limit on the size of one object: the same file will never fit.
_TOO_LARGE_CODES = frozenset({"EntityTooLarge"})
# S3 refuses multipart parts under 5 MiB (except the last), so chunks never go below that.
_MIN_PART_SIZE = 5 * 1024 * 1024
_DEFAULT_PART_SIZE = 8 * 1024 * 1024


class S3Error(ImageImportError):
    """S3 answered with an error that is neither transient nor a configuration problem."""


def normalise_prefix(prefix: str) -> str:
    """'/a//b/' -> 'a/b': users write prefixes loosely; keys need exactly one separator."""
    normalised = "/".join(part for part in prefix.split("/") if part)
    if normalised:
        validate_key(normalised)
    return normalised


def _display_endpoint(url: str | None) -> str:
    if not url:
        return "AWS S3"
    parts = urlsplit(url)
    # Never echo credentials someone embedded in the URL.
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class S3Store(ObjectStore):
    name = "s3"

    def __init__(self, settings: Settings, *, page_size: int = 1000) -> None:
        if not settings.s3_bucket:
            raise ConfigError("S3_BUCKET must be set to store objects in S3.")
        self.bucket = settings.s3_bucket
        self.prefix = normalise_prefix(settings.s3_prefix)
        self.create_bucket = settings.s3_create_bucket
        self.region = settings.s3_region
        self.endpoint = _display_endpoint(settings.s3_endpoint_url)
        # How many keys one list request asks for; tests lower it to exercise pagination.
        self.page_size = page_size
        self._secret = secret(settings.s3_secret_access_key)
        threshold = settings.s3_multipart_threshold_bytes
        self.transfer_config = TransferConfig(
            multipart_threshold=threshold,
            multipart_chunksize=max(_MIN_PART_SIZE, min(threshold, _DEFAULT_PART_SIZE)),
            max_concurrency=4,
            preferred_transfer_client="classic",
        )
        # Parts of a file object are read into memory before they are sent, and s3transfer
        # buffers up to 10 of them by default (80 MiB here; +107 MB of RSS measured for a
        # 300 MB file): as many as are sent at once bounds one upload to ~32 MiB.
        self.transfer_config.max_in_memory_upload_chunks = 4
        config = Config(
            signature_version="s3v4",
            retries={"mode": "standard", "max_attempts": 5},
            max_pool_connections=64,
            # Self-hosted servers rarely have wildcard DNS for virtual-hosted buckets.
            s3={"addressing_style": "path"} if settings.s3_endpoint_url else None,
            # botocore >= 1.36 adds a CRC32 (aws-chunked, trailing) to every upload: a third of
            # the client's CPU per small PUT, and unknown to many S3-compatible servers.
            # Checksums are still sent where an operation requires one.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        # A session of our own: boto3's default session is not safe to create clients from
        # concurrently, while the client itself is thread safe and shared by all threads.
        session = boto3.session.Session()

        def client(endpoint: str | None) -> Any:
            return session.client(
                "s3",
                endpoint_url=endpoint,
                region_name=settings.s3_region,
                aws_access_key_id=secret(settings.s3_access_key_id),
                aws_secret_access_key=self._secret,
                config=config,
            )

        self.client = client(settings.s3_endpoint_url)
        # Browsers may reach the store under another name than the services do (compose,
        # Kubernetes); signing needs no connection, so a second client only signs.
        public = settings.s3_public_endpoint_url
        self._signer = client(public) if public else self.client
        self._bucket_ready = False
        self._bucket_lock = threading.Lock()

    # -- keys ---------------------------------------------------------------------------

    def _key(self, key: str) -> str:
        validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _strip(self, full_key: str) -> str:
        return full_key[len(self.prefix) + 1 :] if self.prefix else full_key

    # -- bucket -------------------------------------------------------------------------

    def ensure_bucket(self) -> None:
        """Make sure the bucket exists (creating it if allowed). Runs once per store."""
        if self._bucket_ready:
            return
        with self._bucket_lock:
            if self._bucket_ready:
                return
            try:
                self.client.head_bucket(Bucket=self.bucket)
            except ClientError as error:
                if _status(error) != 404 and _code(error) != "NoSuchBucket":
                    self._raise(error, "check")
                self._create_missing_bucket()
            except BotoCoreError as error:
                self._raise(error, "check")
            self._bucket_ready = True

    def _create_missing_bucket(self) -> None:
        if not self.create_bucket:
            raise ConfigError(
                f"The S3 bucket {self.bucket!r} does not exist at {self.endpoint}, and creating "
                "it is disabled (S3_CREATE_BUCKET=false): create the bucket or allow its creation."
            )
        arguments: dict[str, Any] = {"Bucket": self.bucket}
        if self.region != "us-east-1":
            arguments["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        try:
            self.client.create_bucket(**arguments)
        except ClientError as error:
            # Another worker won the race; the bucket is there, which is all we wanted.
            if _code(error) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                self._raise(error, "create")
        except BotoCoreError as error:
            self._raise(error, "create")

    # -- ObjectStore --------------------------------------------------------------------

    def put_file(self, key: str, fileobj: BinaryIO, size: int, content_type: str) -> None:
        full_key = self._key(key)
        _check_announced_size(key, fileobj, size)
        self.ensure_bucket()
        try:
            if size < self.transfer_config.multipart_threshold:
                # One request. upload_fileobj would start a transfer manager with a thread
                # pool for every call, which costs more CPU than a small PUT itself.
                self.client.put_object(
                    Bucket=self.bucket,
                    Key=full_key,
                    Body=fileobj,
                    ContentLength=size,
                    ContentType=content_type,
                )
                return
            # upload_fileobj does a multipart upload and reads the file part by part, so
            # large objects never sit whole in memory.
            self.client.upload_fileobj(
                fileobj,
                self.bucket,
                full_key,
                ExtraArgs={"ContentType": content_type},
                Config=self.transfer_config,
            )
        except (ClientError, BotoCoreError, S3UploadFailedError) as error:
            self._raise(error, "upload", key)

    def _head(self, key: str) -> dict[str, Any] | None:
        full_key = self._key(key)
        self.ensure_bucket()
        try:
            return self.client.head_object(Bucket=self.bucket, Key=full_key)
        except ClientError as error:
            if _status(error) == 404 or _code(error) in _MISSING_CODES:
                return None
            self._raise(error, "look up", key)
        except BotoCoreError as error:
            self._raise(error, "look up", key)

    def exists(self, key: str) -> bool:
        return self._head(key) is not None

    def size(self, key: str) -> int | None:
        head = self._head(key)
        return None if head is None else int(head["ContentLength"])

    def iter_bytes(self, key: str, chunk_size: int = 256 * 1024) -> Iterator[bytes]:
        full_key = self._key(key)
        self.ensure_bucket()
        # Requested now, not on first next(), so a missing object fails at the call site.
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=full_key)
        except ClientError as error:
            if _status(error) == 404 or _code(error) in _MISSING_CODES:
                raise KeyError(key) from None
            self._raise(error, "download", key)
        except BotoCoreError as error:
            self._raise(error, "download", key)
        return self._stream(key, response["Body"], chunk_size)

    def _stream(self, key: str, body: Any, chunk_size: int) -> Iterator[bytes]:
        try:
            yield from body.iter_chunks(chunk_size)
        except (BotoCoreError, OSError) as error:
            self._raise(error, "download", key)
        finally:
            body.close()

    def delete(self, key: str) -> None:
        full_key = self._key(key)
        self.ensure_bucket()
        try:
            self.client.delete_object(Bucket=self.bucket, Key=full_key)
        except ClientError as error:
            if _status(error) == 404 or _code(error) in _MISSING_CODES:
                return
            self._raise(error, "delete", key)
        except BotoCoreError as error:
            self._raise(error, "delete", key)

    def list_keys(self, prefix: str = "") -> Iterator[str]:
        validate_prefix(prefix)
        full_prefix = f"{self.prefix}/{prefix}" if self.prefix else prefix
        self.ensure_bucket()
        paginator = self.client.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=self.bucket,
            Prefix=full_prefix,
            PaginationConfig={"PageSize": self.page_size},
        )
        try:
            for page in pages:
                for item in page.get("Contents", ()):
                    yield self._strip(item["Key"])
        except (ClientError, BotoCoreError) as error:
            self._raise(error, "list")

    def presigned_url(self, key: str, expires_seconds: int = 300) -> str | None:
        full_key = self._key(key)
        try:
            return self._signer.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": full_key},
                ExpiresIn=expires_seconds,
            )
        except (ClientError, BotoCoreError) as error:
            self._raise(error, "sign a URL for", key)

    def remove_leftovers(self, max_age_seconds: float) -> int:
        """Abort the multipart uploads under this store's prefix that began more than
        `max_age_seconds` ago. A worker killed mid-upload leaves its parts stored (and billed)
        but invisible to listings; none of ours lasts that long. The bucket is not created."""
        full_prefix = f"{self.prefix}/" if self.prefix else ""
        started_before = datetime.now(UTC) - timedelta(seconds=max_age_seconds)
        pages = self.client.get_paginator("list_multipart_uploads").paginate(
            Bucket=self.bucket, Prefix=full_prefix
        )
        aborted = 0
        try:
            for page in pages:
                for upload in page.get("Uploads", ()):
                    if upload["Initiated"] < started_before:
                        aborted += self._abort(upload["Key"], upload["UploadId"])
        except ClientError as error:
            if _code(error) == "NoSuchBucket":
                return aborted
            self._raise(error, "list the unfinished uploads of")
        except BotoCoreError as error:
            self._raise(error, "list the unfinished uploads of")
        return aborted

    def _abort(self, full_key: str, upload_id: str) -> int:
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=full_key, UploadId=upload_id)
        except ClientError as error:
            if _code(error) == "NoSuchUpload":  # another process aborted it first
                return 0
            raise
        log.info("aborted the stale multipart upload of %s", full_key)
        return 1

    def check(self) -> None:
        self.ensure_bucket()
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as error:
            self._raise(error, "check")

    # -- errors -------------------------------------------------------------------------

    def _raise(self, error: Exception, action: str, key: str | None = None) -> NoReturn:
        """Turn a boto error into one of ours, with a sentence that says what we were doing."""
        target = f"{key!r} in bucket {self.bucket!r}" if key else f"bucket {self.bucket!r}"
        where = f"{action} {target} at {self.endpoint}"
        cause = error.__cause__ if isinstance(error, S3UploadFailedError) else None
        if isinstance(cause, (ClientError, BotoCoreError)):
            error = cause
        translated: ImageImportError
        if isinstance(error, (NoCredentialsError, PartialCredentialsError)):
            translated = ConfigError(
                f"Could not {where}: no usable S3 credentials were found "
                "(set S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY, or configure AWS credentials)."
            )
        elif isinstance(error, (ConnectionError, HTTPClientError, IncompleteReadError, OSError)):
            translated = TransientError(f"Could not {where}: {type(error).__name__}.")
        elif isinstance(error, ClientError):
            code, status = _code(error), _status(error)
            detail = f"{code} (HTTP {status})"
            if code == str(status):  # HEAD answers have no body: the "code" is the status
                detail = f"HTTP {status}"
            if code in _FULL_CODES or status == _INSUFFICIENT_STORAGE:
                translated = StoreFull(
                    f"The object store is full (S3 at {self.endpoint} answered {detail} "
                    f"for bucket {self.bucket!r})."
                )
            elif code in _TOO_LARGE_CODES:
                translated = FileTooLarge(
                    f"The object store refuses files this large (S3 at {self.endpoint} "
                    f"answered {detail})."
                )
            elif code in _RETRYABLE_CODES or status in (429, 503) or (status or 0) >= 500:
                translated = TransientError(f"Could not {where}: S3 answered {detail}.")
            elif code in _ACCESS_CODES or status == 403:
                translated = ConfigError(
                    f"Could not {where}: access was refused ({detail}); check the S3 "
                    "credentials and the bucket's permissions."
                )
            elif code == "NoSuchBucket":
                translated = ConfigError(f"Could not {where}: the bucket does not exist.")
            else:
                translated = S3Error(f"Could not {where}: S3 answered {detail}.")
        else:
            translated = S3Error(f"Could not {where}: {type(error).__name__}.")
        message = str(translated)
        # Messages are built from codes and names only; this is a last line of defence. Very
        # short "secrets" (test values) would match ordinary words, so they are left alone.
        if self._secret and len(self._secret) >= 8 and self._secret in message:
            translated.args = (message.replace(self._secret, "***"),)
        raise translated from error


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _status(error: ClientError) -> int | None:
    return error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")


def _check_announced_size(key: str, fileobj: BinaryIO, size: int) -> None:
    """upload_fileobj reads to EOF, so a caller's wrong `size` is caught here, up front."""
    with contextlib.suppress(AttributeError, OSError, io.UnsupportedOperation):
        if not fileobj.seekable():
            return
        start = fileobj.tell()
        end = fileobj.seek(0, io.SEEK_END)
        fileobj.seek(start)
        if end - start != size:
            raise ValueError(
                f"The data for {key!r} is {end - start} bytes long, but {size} were announced."
            )
