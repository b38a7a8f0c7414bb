"""Build sample trigger events in the shapes AWS, the SAM CLI and MinIO produce, for local runs and tests.

Like ``sam local generate-event s3 put``, keys in S3 samples are encoded with :func:`urllib.parse.quote`
(space as ``%20``, ``/`` kept); MinIO samples use query escaping (``/`` as ``%2F``, space as ``+``) as MinIO
does; EventBridge samples carry the key raw, as AWS's public EventBridge samples show it; map-batch keys
are listed unencoded, as ListObjectsV2 returns them.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime, timezone
from urllib.parse import quote, quote_plus

__all__ = ["EVENT_KINDS", "generate_event"]

EVENT_KINDS: tuple[str, ...] = ("s3-put", "eventbridge", "schedule", "sqs", "minio", "map-batch")

_ACCOUNT = "123456789012"
_EPOCH_TIME = "1970-01-01T00:00:00.000Z"  # what the SAM CLI puts in eventTime


def _midnight(date: str | None) -> datetime:
    """The event time of a sample: midnight UTC of ``date``, or the epoch like the SAM CLI."""
    if date is None:
        return datetime(1970, 1, 1, tzinfo=timezone.utc)
    return datetime.strptime(date, "%Y-%m-%d").replace(tzinfo=timezone.utc)


def _event_time(date: str | None) -> str:
    return _EPOCH_TIME if date is None else _midnight(date).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _stable_id(*parts: str) -> str:
    """Deterministic ids so generated samples are reproducible."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "signalcraft:" + "/".join(parts)))


def _s3_put(bucket: str, key: str, size: int, etag: str, region: str, date: str | None) -> dict:
    return {
        "Records": [
            {
                "eventVersion": "2.0",
                "eventSource": "aws:s3",
                "awsRegion": region,
                "eventTime": _event_time(date),
                "eventName": "ObjectCreated:Put",
                "userIdentity": {"principalId": "EXAMPLE"},
                "requestParameters": {"sourceIPAddress": "127.0.0.1"},
                "responseElements": {
                    "x-amz-request-id": "EXAMPLE123456789",
                    "x-amz-id-2": "EXAMPLE123/5678abcdefghijklambdaisawesome/mnopqrstuvwxyzABCDEFGH",
                },
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": "testConfigRule",
                    "bucket": {
                        "name": bucket,
                        "ownerIdentity": {"principalId": "EXAMPLE"},
                        "arn": f"arn:aws:s3:::{bucket}",
                    },
                    "object": {
                        "key": quote(key),
                        "size": size,
                        "eTag": etag,
                        "sequencer": "0A1B2C3D4E5F678901",
                    },
                },
            }
        ]
    }


def _eventbridge(bucket: str, key: str, size: int, etag: str, region: str, date: str | None) -> dict:
    return {
        "version": "0",
        "id": _stable_id("eventbridge", bucket, key),
        "detail-type": "Object Created",
        "source": "aws.s3",
        "account": _ACCOUNT,
        "time": _midnight(date).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [f"arn:aws:s3:::{bucket}"],
        "detail": {
            "version": "0",
            "bucket": {"name": bucket},
            "object": {"key": key, "size": size, "etag": etag, "sequencer": "0A1B2C3D4E5F678901"},
            "request-id": "EXAMPLE123456789",
            "requester": _ACCOUNT,
            "source-ip-address": "127.0.0.1",
            "reason": "PutObject",
        },
    }


def _sqs(bucket: str, key: str, size: int, etag: str, region: str, date: str | None) -> dict:
    body = json.dumps(_s3_put(bucket, key, size, etag, region, date))
    sent_ms = str(int(_midnight(date).timestamp() * 1000))
    return {
        "Records": [
            {
                "messageId": _stable_id("sqs", bucket, key),
                "receiptHandle": "MessageReceiptHandle",
                "body": body,
                "attributes": {
                    "ApproximateReceiveCount": "1",
                    "SentTimestamp": sent_ms,
                    "SenderId": _ACCOUNT,
                    "ApproximateFirstReceiveTimestamp": sent_ms,
                },
                "messageAttributes": {},
                "md5OfBody": hashlib.md5(body.encode("utf-8")).hexdigest(),
                "eventSource": "aws:sqs",
                "eventSourceARN": f"arn:aws:sqs:{region}:{_ACCOUNT}:signalcraft-uploads",
                "awsRegion": region,
            }
        ]
    }


def _minio(bucket: str, key: str, size: int, etag: str, region: str, date: str | None) -> dict:
    """The MinIO webhook body: wrapper with EventName/Key around one S3-style record."""
    record = {
        "eventVersion": "2.0",
        "eventSource": "minio:s3",
        "awsRegion": "",
        "eventTime": _midnight(date).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "eventName": "s3:ObjectCreated:Put",
        "userIdentity": {"principalId": "minioadmin"},
        "requestParameters": {"principalId": "minioadmin", "region": "", "sourceIPAddress": "127.0.0.1"},
        "responseElements": {
            "x-amz-id-2": "EXAMPLE",
            "x-amz-request-id": "17C0B1E3A7A2C6F1",
            "x-minio-deployment-id": _stable_id("minio-deployment"),
            "x-minio-origin-endpoint": "http://127.0.0.1:9000",
        },
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "Config",
            "bucket": {
                "name": bucket,
                "ownerIdentity": {"principalId": "minioadmin"},
                "arn": f"arn:aws:s3:::{bucket}",
            },
            "object": {
                "key": quote_plus(key, safe=""),
                "size": size,
                "eTag": etag,
                "contentType": "audio/wav",
                "userMetadata": {"content-type": "audio/wav"},
                "sequencer": "17C0B1E3A7B5E0D2",
            },
        },
        "source": {"host": "127.0.0.1", "port": "", "userAgent": "MinIO (linux; amd64) minio-py/7.2.0"},
    }
    return {"EventName": "s3:ObjectCreated:Put", "Key": f"{bucket}/{key}", "Records": [record]}


def _map_batch(bucket: str, key: str, size: int, etag: str, prefix: str, date: str | None) -> dict:
    """A Distributed Map child input (ItemBatcher + ListObjectsV2 ItemReader): keys are not encoded."""
    batch_input: dict = {"bucket": bucket, "prefix": prefix}
    if date is not None:
        batch_input["date"] = date
    item = {
        "Etag": f'"{etag}"',
        "Key": key,
        "LastModified": int(_midnight(date).timestamp()),
        "Size": size,
        "StorageClass": "STANDARD",
    }
    return {"Items": [item], "BatchInput": batch_input}


def generate_event(
    kind: str,
    bucket: str,
    key: str,
    *,
    size: int = 1024,
    etag: str = "0123456789abcdef0123456789abcdef",
    region: str = "us-east-1",
    prefix: str = "",
    date: str | None = None,
) -> dict:
    """Return a sample event of ``kind`` (one of EVENT_KINDS) naming ``bucket``/``key`` (key unencoded).

    ``schedule`` ignores ``key`` and yields an EventBridge Scheduler input ``{"bucket", "prefix"[, "date"]}``.
    """
    if date is not None:
        _midnight(date)  # validate early: a ValueError names the bad date
    if kind == "s3-put":
        return _s3_put(bucket, key, size, etag, region, date)
    if kind == "eventbridge":
        return _eventbridge(bucket, key, size, etag, region, date)
    if kind == "sqs":
        return _sqs(bucket, key, size, etag, region, date)
    if kind == "minio":
        return _minio(bucket, key, size, etag, region, date)
    if kind == "map-batch":
        return _map_batch(bucket, key, size, etag, prefix, date)
    if kind == "schedule":
        event: dict = {"bucket": bucket, "prefix": prefix}
        if date is not None:
            event["date"] = date
        return event
    raise ValueError(f"unknown event kind {kind!r}; expected one of {', '.join(EVENT_KINDS)}")
