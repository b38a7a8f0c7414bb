"""Object store and file I/O against the embedded S3 server over real HTTP, and the local grade sink."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from handler_env import CallLog

from signalcraft_core.errors import ErrorCode, StorageError
from signalcraft_core.io.objects import (
    delete_keys,
    fetch_bytes,
    head,
    list_keys,
    parse_uri,
    put_bytes,
    s3_client,
)
from signalcraft_core.local.s3server import (
    S3Server,
    start_s3_server,
)
from signalcraft_core.pipeline.records import (
    GradeRecord,
    record_id,
    records_to_table,
    table_to_records,
)
from signalcraft_core.pipeline.sinks import LocalGradeSink, S3GradeSink, read_grades

DAY = datetime(2024, 5, 6, 8, 0, tzinfo=timezone.utc)


def grade(i: int, machine_type: str | None = "pump", day: datetime = DAY, model: str = "v1", **kw) -> GradeRecord:
    values = dict(
        record_id=record_id("in", f"{machine_type}/{i}.wav", f"etag{i}"), bucket="in",
        key=f"{machine_type}/{i}.wav", etag=f"etag{i}", event_time=day + timedelta(minutes=i),
        scored_at=day + timedelta(minutes=i, seconds=5), machine_type=machine_type, model_version=model,
        score=float(i), grade="NORMAL", status="ok", level1_rules=("r",), level2_band_errors=(0.5, 1.5),
    )
    values.update(kw)
    return GradeRecord(**values)


# --------------------------------------------------------------------------- uri / client / server


@pytest.mark.parametrize(
    "uri, expected",
    [("s3://b/p/", ("b", "p/")), ("s3://b", ("b", "")), ("s3://b/a/b.parquet", ("b", "a/b.parquet")),
     ("/tmp/x", (None, "/tmp/x")), ("rel/dir", (None, "rel/dir")), ("file:///tmp/x", (None, "/tmp/x"))],
)
def test_parse_uri(uri, expected):
    assert parse_uri(uri) == expected


def test_parse_uri_needs_a_bucket():
    with pytest.raises(ValueError):
        parse_uri("s3:///key")


def test_s3_client_is_cached_per_endpoint_and_uses_path_style(s3_server):
    a = s3_client(endpoint_url=s3_server.endpoint_url)
    assert s3_client(endpoint_url=s3_server.endpoint_url) is a
    assert s3_client(endpoint_url=s3_server.endpoint_url, max_attempts=2) is not a
    assert a.meta.config.s3["addressing_style"] == "path"
    assert a.meta.config.retries["mode"] == "standard"
    assert a.meta.endpoint_url == s3_server.endpoint_url


def test_second_server_starts_on_its_own_port_and_stops(s3_server):
    with start_s3_server() as other:
        assert isinstance(other, S3Server) and other.endpoint_url != s3_server.endpoint_url
        assert other.access_key_id != s3_server.access_key_id
        assert other.credentials_env()["AWS_DEFAULT_REGION"] == "us-east-1"
        client = s3_client(endpoint_url=other.endpoint_url, max_attempts=1, connect_timeout=1)
        client.create_bucket(Bucket="second-server")
        assert "second-server" in [b["Name"] for b in client.list_buckets()["Buckets"]]
    with pytest.raises(Exception):
        client.list_buckets()  # stopped: nothing answers any more


@pytest.mark.parametrize("value", [
    "Thu, 03 Dec 2026 17:39:19 GMT", "2026-12-03T17:39:19.000Z", "2026-12-03T17:39:19Z",
    "2026-12-03T17:39:19.123456+02:00", "2026-12-03T17:39:19", "1796317390", 1796317390,
])
def test_the_fast_timestamp_parser_agrees_with_botocores(value):
    from botocore.utils import parse_timestamp

    from signalcraft_core.io.objects import _parse_timestamp

    assert _parse_timestamp(value) == parse_timestamp(value)
    assert (_parse_timestamp(value).tzinfo is None) == (parse_timestamp(value).tzinfo is None)


def test_times_from_head_get_and_listing_are_botocores(s3_server, s3, bucket):
    import boto3
    from botocore.config import Config

    s3.put_object(Bucket=bucket, Key="a.wav", Body=b"recording")
    plain = boto3.session.Session().client("s3", endpoint_url=s3_server.endpoint_url,
                                           config=Config(s3={"addressing_style": "path"}))
    for client in (s3, plain):
        assert client.head_object(Bucket=bucket, Key="a.wav")["LastModified"].utcoffset().total_seconds() == 0
    assert s3.head_object(Bucket=bucket, Key="a.wav")["LastModified"] == \
        plain.head_object(Bucket=bucket, Key="a.wav")["LastModified"]
    assert s3.get_object(Bucket=bucket, Key="a.wav")["LastModified"] == \
        plain.get_object(Bucket=bucket, Key="a.wav")["LastModified"]
    assert s3.list_objects_v2(Bucket=bucket)["Contents"][0]["LastModified"] == \
        plain.list_objects_v2(Bucket=bucket)["Contents"][0]["LastModified"]


# --------------------------------------------------------------------------- the embedded server's neighbours


def _client_with(server: S3Server, key_id: str, secret: str):
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3", endpoint_url=server.endpoint_url, aws_access_key_id=key_id, aws_secret_access_key=secret,
        region_name="us-east-1", config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))


@pytest.mark.parametrize("key_id, secret", [
    ("signalcraft-local", "signalcraft-local-secret"),   # the fixed dummy key every server accepted before
    ("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
    (None, "a guess"),                                      # the server's own key id with a wrong secret
])
def test_a_neighbour_without_the_servers_key_can_neither_read_nor_write(s3_server, s3, bucket, key_id, secret):
    from botocore.exceptions import ClientError

    s3.put_object(Bucket=bucket, Key="site/pump/a.wav", Body=b"recording")
    neighbour = _client_with(s3_server, key_id or s3_server.access_key_id, secret)
    attempts = [
        lambda: neighbour.list_objects_v2(Bucket=bucket),
        lambda: neighbour.get_object(Bucket=bucket, Key="site/pump/a.wav"),
        lambda: neighbour.put_object(Bucket=bucket, Key="site/pump/planted.wav", Body=b"planted"),
        lambda: neighbour.delete_object(Bucket=bucket, Key="site/pump/a.wav"),
        lambda: neighbour.list_buckets(),
    ]
    for attempt in attempts:
        with pytest.raises(ClientError) as refused:
            attempt()
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["site/pump/a.wav"]


def test_unsigned_requests_and_the_moto_control_api_are_refused(s3_server, s3, bucket):
    import urllib.error
    import urllib.request

    s3.put_object(Bucket=bucket, Key="a.wav", Body=b"recording")
    requests = [("GET", f"/{bucket}/a.wav", None), ("PUT", f"/{bucket}/planted.wav", b"x"),
                ("GET", "/moto-api/data.json", None), ("POST", "/moto-api/reset", b""),
                ("POST", "/moto-api/reset-auth", b"1000"), ("GET", "/moto-api/", None)]
    for method, path, body in requests:
        request = urllib.request.Request(s3_server.endpoint_url + path, data=body, method=method)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)
        assert refused.value.code == 403, (method, path)
    # The control API stays shut even to a request signed with the server's own key.
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    signed = AWSRequest(method="POST", url=s3_server.endpoint_url + "/moto-api/reset-auth", data=b"1000")
    SigV4Auth(Credentials(s3_server.access_key_id, s3_server.secret_access_key), "s3", "us-east-1").add_auth(signed)
    request = urllib.request.Request(signed.url, data=b"1000", method="POST", headers=dict(signed.headers))
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    assert refused.value.code == 403
    # Nothing was reset, the checks are still on, and nothing was planted.
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["a.wav"]
    with pytest.raises(Exception):
        _client_with(s3_server, "signalcraft-local", "signalcraft-local-secret").list_buckets()


def _raw(server: S3Server, request: bytes) -> int:
    """The status code the server answers a hand-written HTTP request with (a neighbour need not use boto3)."""
    import socket
    from urllib.parse import urlparse

    where = urlparse(server.endpoint_url)
    with socket.create_connection((where.hostname, where.port), timeout=5) as sock:
        sock.sendall(request)
        answer = b""
        while b"\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    return int(answer.split(b" ", 2)[1])


FORGED = ("AWS4-HMAC-SHA256 Credential=AKIANOTAREALKEY00000/20261203/us-east-1/{service}/aws4_request, "
          "SignedHeaders=host, Signature=00")


@pytest.mark.parametrize("target", [None, "AWSCognitoIdentityService.GetId", "AWSCognitoIdentityProviderService.SignUp"])
@pytest.mark.parametrize("method, path, service, body", [
    ("GET", "/{bucket}/a.wav", "s3", b""), ("PUT", "/{bucket}/planted.wav", "s3", b"planted"),
    ("DELETE", "/{bucket}/a.wav", "s3", b""), ("GET", "/", "s3", b""), ("GET", "/{bucket}?list-type=2", "s3", b""),
    ("POST", "/{bucket}/big.wav?uploads", "s3", b""), ("HEAD", "/{bucket}/a.wav", "s3", b""),
    ("POST", "/", "sns", b"Action=ListTopics&Version=2010-03-31"),
    ("GET", "/latest/meta-data/iam/security-credentials/", "s3", b""),
])
def test_a_forged_signature_is_refused_whatever_the_request_says(s3_server, s3, bucket, method, path, service,
                                                                 body, target):
    """A well-formed header with a made-up key and signature, with or without a target moto answers unsigned."""
    s3.put_object(Bucket=bucket, Key="a.wav", Body=b"recording")
    headers = [f"{method} {path.format(bucket=bucket)} HTTP/1.1", "Host: 127.0.0.1",
               "Authorization: " + FORGED.format(service=service), f"Content-Length: {len(body)}", "Connection: close"]
    if target:
        headers.append(f"X-Amz-Target: {target}")
    assert _raw(s3_server, ("\r\n".join(headers) + "\r\n\r\n").encode() + body) == 403
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["a.wav"]


def test_other_services_are_refused_even_with_the_servers_key(s3_server):
    """moto serves IAM on the same port; the key signs only the services the tool uses, so it cannot mint keys."""
    import boto3
    from botocore.exceptions import ClientError

    iam = boto3.session.Session().client("iam", endpoint_url=s3_server.endpoint_url, region_name="us-east-1",
                                         aws_access_key_id=s3_server.access_key_id,
                                         aws_secret_access_key=s3_server.secret_access_key)
    with pytest.raises(ClientError) as refused:
        iam.create_user(UserName="neighbour")
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_presigned_urls_are_refused_and_accepted_keys_work(s3_server, s3, bucket):
    import urllib.error
    import urllib.request

    import boto3
    from botocore.config import Config

    s3.put_object(Bucket=bucket, Key="a.wav", Body=b"recording")
    signer = boto3.session.Session().client("s3", endpoint_url=s3_server.endpoint_url, region_name="us-east-1",
                                            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))
    url = signer.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "a.wav"}, ExpiresIn=60)
    with pytest.raises(urllib.error.HTTPError) as refused:   # moto cannot check a presigned URL with IAM on
        urllib.request.urlopen(url, timeout=5)
    assert refused.value.code == 403
    key_id = "AKIATEST" + uuid.uuid4().hex[:12].upper()
    s3_server.accept(key_id, "accepted-secret")
    assert _client_with(s3_server, key_id, "accepted-secret").get_object(Bucket=bucket, Key="a.wav")["Body"].read() \
        == b"recording"
    with pytest.raises(ValueError):
        s3_server.accept("not-an-akia-key", "x")


# --------------------------------------------------------------------------- objects


def test_put_head_fetch_round_trip(s3, bucket):
    data = b"RIFF" + bytes(range(256)) * 4
    etag = put_bytes(s3, bucket, "a/b.wav", data)
    info = head(s3, bucket, "a/b.wav")
    assert info.size == len(data) and info.etag == etag and '"' not in etag
    assert info.last_modified is not None and info.version_id is None
    assert fetch_bytes(s3, bucket, "a/b.wav", max_bytes=len(data)) == data
    assert fetch_bytes(s3, bucket, "a/b.wav", max_bytes=len(data), known_size=len(data)) == data


def test_key_with_spaces_and_unicode(s3, bucket):
    key = "site A/pompe à eau/été 2024 #1 (ß+ü).wav"
    put_bytes(s3, bucket, key, b"abc")
    assert head(s3, bucket, key).size == 3
    assert fetch_bytes(s3, bucket, key, max_bytes=10) == b"abc"
    assert [i.key for i in list_keys(s3, bucket, "site A/")] == [key]
    assert delete_keys(s3, bucket, [key]) == 1
    assert list(list_keys(s3, bucket, "")) == []


def test_too_large_with_known_size_is_refused_without_any_request(s3, bucket):
    put_bytes(s3, bucket, "big.wav", b"x" * 2000)
    with CallLog(s3) as log, pytest.raises(StorageError) as err:
        fetch_bytes(s3, bucket, "big.wav", max_bytes=1000, known_size=2000)
    assert err.value.code is ErrorCode.TOO_LARGE
    assert log.operations == []


def test_too_large_via_head_is_refused_before_download(s3, bucket):
    put_bytes(s3, bucket, "big.wav", b"x" * 2000)
    with CallLog(s3) as log, pytest.raises(StorageError) as err:
        fetch_bytes(s3, bucket, "big.wav", max_bytes=1999)
    assert err.value.code is ErrorCode.TOO_LARGE
    assert "2000" in err.value.message and "\n" not in err.value.message
    assert log.operations == ["HeadObject"]


def test_object_that_grew_after_the_event_is_still_refused(s3, bucket):
    put_bytes(s3, bucket, "grew.wav", b"x" * 2000)
    with pytest.raises(StorageError) as err:
        fetch_bytes(s3, bucket, "grew.wav", max_bytes=1000, known_size=10)  # stale size from the event
    assert err.value.code is ErrorCode.TOO_LARGE


def test_not_found_for_missing_key_and_missing_bucket(s3, bucket):
    for kwargs in (dict(), dict(known_size=3)):
        with pytest.raises(StorageError) as err:
            fetch_bytes(s3, bucket, "missing.wav", max_bytes=100, **kwargs)
        assert err.value.code is ErrorCode.NOT_FOUND
    with pytest.raises(StorageError) as err:
        head(s3, bucket, "missing.wav")
    assert err.value.code is ErrorCode.NOT_FOUND
    with pytest.raises(StorageError) as err:
        fetch_bytes(s3, "no-such-bucket-here", "k.wav", max_bytes=100, known_size=1)
    assert err.value.code is ErrorCode.NOT_FOUND


def test_unreachable_store_is_a_one_line_storage_error():
    # A closed port: connection refused on every attempt, so botocore's retries end in STORAGE_ERROR.
    client = s3_client(endpoint_url="http://127.0.0.1:9", max_attempts=1, connect_timeout=0.5, read_timeout=0.5)
    with pytest.raises(StorageError) as err:
        fetch_bytes(client, "b", "k.wav", max_bytes=10)
    assert err.value.code is ErrorCode.STORAGE_ERROR
    assert "\n" not in err.value.message and "s3://b/k.wav" in err.value.message


def test_versioned_fetch_reads_the_requested_version(s3, make_bucket):
    name = make_bucket(versioned=True)
    put_bytes(s3, name, "v.wav", b"first")
    first = head(s3, name, "v.wav").version_id
    put_bytes(s3, name, "v.wav", b"second!")
    assert first and head(s3, name, "v.wav").version_id != first
    assert fetch_bytes(s3, name, "v.wav", max_bytes=100, version_id=first) == b"first"
    assert head(s3, name, "v.wav", version_id=first).size == 5
    assert fetch_bytes(s3, name, "v.wav", max_bytes=100) == b"second!"


def test_list_keys_filters_suffixes_case_insensitively_and_paginates(s3, bucket):
    names = [f"in/{i:02d}.wav" for i in range(23)] + ["in/UPPER.WAV", "in/notes.txt", "in/sub/", "other/x.wav"]
    for n in names:
        put_bytes(s3, bucket, n, b"" if n.endswith("/") else b"1")
    with CallLog(s3) as log:
        got = [i.key for i in list_keys(s3, bucket, "in/", page_size=5)]
    assert got == sorted([f"in/{i:02d}.wav" for i in range(23)] + ["in/UPPER.WAV"])
    assert log.operations.count("ListObjectsV2") == 6  # 26 keys under in/, 5 a page
    assert len(list(list_keys(s3, bucket, "in/", suffixes=None))) == 25  # all but the folder marker
    resumed = [i.key for i in list_keys(s3, bucket, "in/", start_after="in/19.wav", page_size=2)]
    assert resumed == ["in/20.wav", "in/21.wav", "in/22.wav", "in/UPPER.WAV"]
    info = next(iter(list_keys(s3, bucket, "other/")))
    assert (info.bucket, info.key, info.size) == (bucket, "other/x.wav", 1) and info.etag


@pytest.mark.slow  # ~4 s: 1100 PUTs through the embedded server
def test_list_keys_beyond_1000_and_batched_delete(s3, bucket):
    keys = [f"many/{i:05d}.wav" for i in range(1100)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda k: put_bytes(s3, bucket, k, b"1"), keys))
    with CallLog(s3) as log:
        listed = [i.key for i in list_keys(s3, bucket, "many/")]
    assert listed == keys
    assert log.operations.count("ListObjectsV2") == 2  # S3 returns at most 1000 keys a page
    with CallLog(s3) as log:
        assert delete_keys(s3, bucket, keys) == 1100
    assert log.operations.count("DeleteObjects") == 2
    assert list(list_keys(s3, bucket, "many/")) == []


# --------------------------------------------------------------------------- grade sinks


def s3_sink(s3, bucket) -> S3GradeSink:
    return S3GradeSink(s3, bucket, prefix="grades/")


def local_sink(tmp_path: Path) -> LocalGradeSink:
    return LocalGradeSink(tmp_path / "grades")


@pytest.fixture(params=["s3", "local"])
def sink_and_uri(request, tmp_path):
    if request.param == "s3":
        client = request.getfixturevalue("s3")
        name = request.getfixturevalue("make_bucket")()
        return S3GradeSink(client, name, prefix="grades"), f"s3://{name}/grades/", client
    return LocalGradeSink(tmp_path / "grades"), str(tmp_path / "grades"), None


def stored_files(sink) -> list[str]:
    return sorted(rel for rel, _ in sink._list(""))


def test_write_partitions_by_day_and_machine_type(sink_and_uri):
    sink, uri, client = sink_and_uri
    records = [grade(1), grade(2, "fan"), grade(3, day=DAY + timedelta(days=1)), grade(4, None)]
    written = sink.write(records)
    assert len(written) == 4
    folders = sorted(f.rsplit("/", 1)[0] for f in stored_files(sink))
    assert folders == ["dt=2024-05-06/machine_type=fan", "dt=2024-05-06/machine_type=pump",
                       "dt=2024-05-06/machine_type=unknown", "dt=2024-05-07/machine_type=pump"]
    table = read_grades(uri, client=client)
    assert "dt" not in table.column_names and table.column_names.count("machine_type") == 1
    # a record without a machine type is filed (and read back) under machine_type=unknown
    expected = [GradeRecord(**{**r.to_row(), "machine_type": r.machine_type or "unknown"}) for r in records]
    assert sorted(table_to_records(table), key=lambda r: r.record_id) == sorted(expected, key=lambda r: r.record_id)


def test_redelivery_overwrites_instead_of_duplicating(sink_and_uri):
    sink, uri, client = sink_and_uri
    records = [grade(i) for i in range(5)]
    first = sink.write(records)
    rescored = [GradeRecord(**{**r.to_row(), "scored_at": r.scored_at + timedelta(hours=1)}) for r in records]
    second = sink.write(list(reversed(rescored)))
    assert first == second and len(stored_files(sink)) == 1
    table = read_grades(uri, client=client)
    assert table.num_rows == 5
    assert set(table_to_records(table)) == set(rescored)


def test_write_dedupes_within_a_batch_and_reader_dedupes_across_batches(sink_and_uri):
    sink, uri, client = sink_and_uri
    old, new = grade(1), grade(1, scored_at=DAY + timedelta(days=2))
    sink.write([old, new, grade(2)])
    sink.write([old])  # a different batch holding an older copy: a second object
    assert len(stored_files(sink)) == 2
    assert read_grades(uri, client=client, dedupe=False).num_rows == 3
    table = read_grades(uri, client=client)
    assert table.num_rows == 2
    assert new in table_to_records(table) and old not in table_to_records(table)


def test_compact_merges_a_days_files_into_one_and_reads_the_same(sink_and_uri):
    sink, uri, client = sink_and_uri
    for start in range(0, 12, 3):
        sink.write([grade(i) for i in range(start, start + 4)])  # overlapping batches -> duplicates
    sink.write([grade(50, "fan"), grade(51, "fan")])
    sink.write([grade(52, "fan")])
    sink.write([grade(60, day=DAY + timedelta(days=1))])
    sink.write([grade(61, day=DAY + timedelta(days=1))])
    before = read_grades(uri, client=client)
    files_before = stored_files(sink)

    result = sink.compact("2024-05-06")

    assert (result.partitions, result.files_in) == (2, 6)
    assert result.rows_in == 16 + 3 and result.rows_out == 13 + 3  # pump ids 0..12, fan 50..52
    assert result.files_deleted == 6 and len(result.written) == 2
    after_files = stored_files(sink)
    day1 = [f for f in after_files if f.startswith("dt=2024-05-06/")]
    assert len(day1) == 2 and all(f.rsplit("/", 1)[1].startswith("compacted-") for f in day1)
    assert [f for f in after_files if f.startswith("dt=2024-05-07/")] == \
        [f for f in files_before if f.startswith("dt=2024-05-07/")]  # other days untouched
    after = read_grades(uri, client=client)
    assert after.equals(before)
    assert read_grades(uri, client=client, dedupe=False).num_rows == after.num_rows  # no duplicates left

    assert sink.compact("2024-05-06").partitions == 0  # already compact: nothing to do
    assert stored_files(sink) == after_files


def test_compact_again_after_new_writes_and_by_machine_type(sink_and_uri):
    sink, uri, client = sink_and_uri
    sink.write([grade(1), grade(2)])
    sink.write([grade(3)])
    sink.write([grade(7, "fan")])
    sink.write([grade(8, "fan")])
    first = sink.compact("2024-05-06", machine_type="pump")
    assert first.partitions == 1 and first.rows_out == 3  # fan untouched
    newer = grade(2, scored_at=DAY + timedelta(days=3), score=99.0)
    sink.write([newer, grade(4)])
    second = sink.compact("2024-05-06", machine_type="pump")
    assert (second.files_in, second.rows_in, second.rows_out) == (2, 5, 4)
    pump = [f for f in stored_files(sink) if "machine_type=pump" in f]
    assert len(pump) == 1
    assert len([f for f in stored_files(sink) if "machine_type=fan" in f]) == 2
    records = table_to_records(read_grades(uri, client=client))
    assert newer in records and len(records) == 6


def test_interrupted_compaction_leaves_duplicates_that_readers_hide(sink_and_uri):
    sink, uri, client = sink_and_uri
    sink.write([grade(1), grade(2)])
    sink.write([grade(2), grade(3)])
    before = read_grades(uri, client=client)
    # Simulate a crash after the merged file was written but before the inputs were deleted.
    merged = records_to_table(table_to_records(before))
    from signalcraft_core.pipeline.records import compacted_object_name, parquet_bytes

    sink._put("dt=2024-05-06/machine_type=pump/" + compacted_object_name(merged.column("record_id").to_pylist()),
              parquet_bytes(merged))
    assert read_grades(uri, client=client, dedupe=False).num_rows == 7
    assert read_grades(uri, client=client).equals(before)
    result = sink.compact("2024-05-06")  # the next run finishes the job
    assert result.files_in == 3 and len(stored_files(sink)) == 1
    assert read_grades(uri, client=client).equals(before)


def test_compact_rejects_a_bad_date(tmp_path):
    with pytest.raises(ValueError):
        local_sink(tmp_path).compact("2024-13-01")
    with pytest.raises(ValueError):
        local_sink(tmp_path).compact("../etc")


def test_read_grades_empty_missing_and_single_file(tmp_path, s3, bucket):
    assert read_grades(f"s3://{bucket}/grades/", client=s3).num_rows == 0
    (tmp_path / "empty").mkdir()
    assert read_grades(tmp_path / "empty").num_rows == 0
    with pytest.raises(StorageError) as err:
        read_grades(tmp_path / "absent")
    assert err.value.code is ErrorCode.NOT_FOUND
    sink = local_sink(tmp_path)
    [path] = sink.write([grade(1)])
    (Path(path).parent / ".tmp-half-written.parquet").write_bytes(b"garbage")  # hidden: ignored
    assert table_to_records(read_grades(path)) == [grade(1)]
    assert table_to_records(read_grades(sink.root)) == [grade(1)]
    s3_keys = S3GradeSink(s3, bucket).write([grade(1)])
    assert table_to_records(read_grades(f"s3://{bucket}/{s3_keys[0]}", client=s3)) == [grade(1)]


def test_local_sink_writes_a_hive_tree_on_disk(tmp_path):
    sink = local_sink(tmp_path)
    [path] = sink.write([grade(1, "valve")])
    p = Path(path)
    assert p.is_file() and p.parent == tmp_path / "grades" / "dt=2024-05-06" / "machine_type=valve"
    assert not [f for f in p.parent.iterdir() if f.name.startswith(".")]  # no temp files left
