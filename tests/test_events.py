"""Event parsing: every trigger shape yields the right bucket and decoded key; failures stay per message."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signalcraft_core.io.events import (
    FUNCTION_FOR,
    MAX_JSON_DEPTH,
    MAX_SIZE,
    EventItem,
    ObjectRef,
    eventbridge_key,
    is_own_output,
    json_depth,
    parse_event,
    parse_map_batch,
    parse_sweep_event,
    wanted,
)
from signalcraft_core.local.sample_events import EVENT_KINDS, generate_event

EVENTS_DIR = Path(__file__).resolve().parents[1] / "infra" / "events"
BUCKET = "signalcraft-recordings"
KEY = "site-a/pump/id_00/rec 0001.wav"


def load(name: str) -> dict:
    return json.loads((EVENTS_DIR / name).read_text(encoding="utf-8"))


def only_ref(items: list[EventItem]) -> ObjectRef:
    assert len(items) == 1, items
    assert items[0].error is None and items[0].skipped is None, items[0]
    assert len(items[0].refs) == 1
    return items[0].refs[0]


def s3_event(raw_key: str, event_name: str = "ObjectCreated:Put", source: str = "aws:s3") -> dict:
    event = load("s3-put.json")
    record = event["Records"][0]
    record["s3"]["object"]["key"] = raw_key
    record["eventName"] = event_name
    record["eventSource"] = source
    return event


def eventbridge_event(raw_key: str, detail_type: str = "Object Created") -> dict:
    event = load("eventbridge-object-created.json")
    event["detail"]["object"]["key"] = raw_key
    event["detail-type"] = detail_type
    return event


def sqs_of(*bodies: str, ids: tuple[str, ...] | None = None) -> dict:
    template = load("sqs-batch.json")["Records"][0]
    records = []
    for i, body in enumerate(bodies):
        record = copy.deepcopy(template)
        record["messageId"] = ids[i] if ids else f"msg-{i}"
        record["body"] = body
        records.append(record)
    return {"Records": records}


# ------------------------------------------------------------------------------------- sample files


@pytest.mark.parametrize(
    ("name", "source"),
    [
        ("s3-put.json", "s3"),
        ("s3-put-sam.json", "s3"),
        ("minio-put.json", "minio"),
        ("minio-webhook.json", "minio"),
        ("eventbridge-object-created.json", "eventbridge"),
    ],
)
def test_sample_upload_events_name_the_decoded_key(name: str, source: str) -> None:
    ref = only_ref(parse_event(load(name)))
    # EventBridge keys are taken raw: the sample's '+' is a literal plus there, not an encoded space.
    expected = KEY.replace(" ", "+") if source == "eventbridge" else KEY
    assert (ref.bucket, ref.key, ref.source) == (BUCKET, expected, source)


def test_samples_carry_the_encodings_they_claim() -> None:
    # Guards the fixtures themselves: otherwise the decoding tests above would prove nothing.
    assert load("s3-put.json")["Records"][0]["s3"]["object"]["key"].endswith("rec+0001.wav")
    assert load("s3-put-sam.json")["Records"][0]["s3"]["object"]["key"].endswith("rec%200001.wav")
    assert "%2F" in load("minio-put.json")["Records"][0]["s3"]["object"]["key"]
    assert load("minio-webhook.json")["Key"] == f"{BUCKET}/{KEY}"


def test_s3_put_metadata() -> None:
    ref = only_ref(parse_event(load("s3-put.json")))
    record = load("s3-put.json")["Records"][0]
    assert ref.etag == record["s3"]["object"]["eTag"]
    assert ref.version_id == record["s3"]["object"]["versionId"]
    assert ref.size == record["s3"]["object"]["size"]
    assert ref.event_time == record["eventTime"]


def test_eventbridge_metadata() -> None:
    event = load("eventbridge-object-created.json")
    ref = only_ref(parse_event(event))
    assert ref.version_id == event["detail"]["object"]["version-id"]
    assert ref.size == event["detail"]["object"]["size"]
    assert ref.event_time == event["time"]


def test_sqs_batch_sample_accounts_per_message() -> None:
    event = load("sqs-batch.json")
    items = parse_event(event)
    ids = [r["messageId"] for r in event["Records"]]
    assert [i.message_id for i in items] == ids
    good, test_event, garbage = items
    assert [(r.bucket, r.key, r.source) for r in good.refs] == [(BUCKET, KEY, "sqs")]
    assert good.error is None and good.skipped is None
    assert test_event.refs == () and test_event.skipped == "s3:TestEvent" and test_event.error is None
    assert garbage.refs == () and garbage.error and "not JSON" in garbage.error
    assert garbage.message_id == ids[2]


# ----------------------------------------------------------------------------------------- decoding


@pytest.mark.parametrize(
    ("raw", "decoded"),
    [
        ("site-a/pump/rec+0001.wav", "site-a/pump/rec 0001.wav"),
        ("site-a/pump/rec%200001.wav", "site-a/pump/rec 0001.wav"),
        ("site-a%2Fpump%2Frec+0001.wav", "site-a/pump/rec 0001.wav"),
        ("L%C3%BCfter/%C3%BC+1.wav", "Lüfter/ü 1.wav"),
        (quote("Lüfter/ü 1.wav"), "Lüfter/ü 1.wav"),
        ("pump/a%2Bb.wav", "pump/a+b.wav"),
        ("pump/100%25+load.wav", "pump/100% load.wav"),
        ("pump/t%3D05%3A00.wav", "pump/t=05:00.wav"),
    ],
)
def test_keys_decode(raw: str, decoded: str) -> None:
    assert only_ref(parse_event(s3_event(raw))).key == decoded
    assert only_ref(parse_event(s3_event(raw, "s3:ObjectCreated:Put", "minio:s3"))).key == decoded
    body = json.dumps(s3_event(raw))
    assert only_ref(parse_event(sqs_of(body))).key == decoded


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        # Raw keys, as EventBridge shows them: kept exactly.
        ("site-a/pump/rec+0001.wav", "site-a/pump/rec+0001.wav"),  # '+' is a plus, never a space
        ("site-a/pump/rec 0001.wav", "site-a/pump/rec 0001.wav"),
        ("pump/t=05:00.wav", "pump/t=05:00.wav"),
        ("pump/100% load.wav", "pump/100% load.wav"),
        ("pump/100%.wav", "pump/100%.wav"),  # a lone '%' is no escape
        ("pump/a+b%2.wav", "pump/a+b%2.wav"),
        ("Lüfter/ü 1.wav", "Lüfter/ü 1.wav"),
        ("pump/100%25 load.wav", "pump/100%25 load.wav"),  # a space next to it: raw, even with an escape
        # Keys that look encoded (only encoder output, and an escape): decoded.
        ("site-a/pump/rec%200001.wav", "site-a/pump/rec 0001.wav"),
        (quote("Lüfter/ü 1.wav"), "Lüfter/ü 1.wav"),
        ("pump/a%2Bb.wav", "pump/a+b.wav"),
        ("pump/t%3D05%3A00.wav", "pump/t=05:00.wav"),
    ],
)
def test_eventbridge_keys_are_taken_raw_unless_they_look_encoded(raw: str, key: str) -> None:
    assert eventbridge_key(raw) == key
    assert only_ref(parse_event(eventbridge_event(raw))).key == key
    (item,) = parse_event(sqs_of(json.dumps(eventbridge_event(raw))))
    assert [r.key for r in item.refs] == [key]


@settings(max_examples=80, deadline=None)
@given(key=st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40))
def test_eventbridge_raw_and_quoted_keys_survive(key: str) -> None:
    assert eventbridge_key(quote(key)) == key  # an encoded key always comes back
    if not re.search(r"%[0-9A-Fa-f]{2}", key) or re.search(r"[^A-Za-z0-9\-_.~*/+%]", key):
        assert eventbridge_key(key) == key  # a raw key comes back unless it reads as encoded


keys = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40
).filter(lambda k: k.strip() == k and k)


@settings(max_examples=60, deadline=None)
@given(key=keys)
def test_any_key_survives_every_encoding(key: str) -> None:
    for raw in (quote_plus(key, safe="/"), quote_plus(key, safe=""), quote(key)):
        assert only_ref(parse_event(s3_event(raw))).key == key


# ---------------------------------------------------------------------------------------- skipping


@pytest.mark.parametrize(
    "event",
    [
        s3_event("pump/a.wav", "ObjectRemoved:Delete"),
        s3_event("pump/a.wav", "ObjectRemoved:DeleteMarkerCreated"),
        s3_event("pump/a.wav", "s3:ObjectRemoved:Delete", "minio:s3"),
        s3_event("pump/a.wav", "ObjectRestore:Completed"),
        eventbridge_event("pump/a.wav", "Object Deleted"),
    ],
    ids=["s3-delete", "s3-delete-marker", "minio-delete", "restore", "eventbridge-deleted"],
)
def test_non_create_events_are_skipped_with_a_reason(event: dict) -> None:
    (item,) = parse_event(event)
    assert item.refs == () and item.error is None
    assert item.skipped and "not an object-created event" in item.skipped


def test_removed_record_is_skipped_but_created_sibling_is_kept() -> None:
    event = s3_event("pump/a.wav")
    removed = copy.deepcopy(event["Records"][0])
    removed["eventName"] = "ObjectRemoved:Delete"
    removed["s3"]["object"]["key"] = "pump/b.wav"
    event["Records"].append(removed)
    direct = parse_event(event)
    assert [i.refs[0].key for i in direct if i.refs] == ["pump/a.wav"]
    assert sum(1 for i in direct if i.skipped) == 1
    (via_sqs,) = parse_event(sqs_of(json.dumps(event)))
    assert [r.key for r in via_sqs.refs] == ["pump/a.wav"] and via_sqs.error is None


def test_test_event_skipped_at_top_level_and_in_sqs() -> None:
    test_event = {
        "Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2024-05-14T02:00:01Z", "Bucket": BUCKET,
    }
    assert parse_event(test_event) == [EventItem(message_id=None, refs=(), skipped="s3:TestEvent")]
    (item,) = parse_event(sqs_of(json.dumps(test_event), ids=("t-1",)))
    assert item == EventItem(message_id="t-1", refs=(), skipped="s3:TestEvent")


# ------------------------------------------------------------------------------------- SQS and SNS


def test_sns_envelope_in_sqs_body() -> None:
    envelope = {
        "Type": "Notification",
        "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
        "TopicArn": "arn:aws:sns:eu-central-1:123456789012:signalcraft-uploads",
        "Subject": "Amazon S3 Notification",
        "Message": json.dumps(s3_event("site-a/fan/Ger%C3%A4t+2.wav")),
        "Timestamp": "2024-05-14T02:17:44.000Z",
        "SignatureVersion": "1",
    }
    (item,) = parse_event(sqs_of(json.dumps(envelope), ids=("sns-1",)))
    assert item.message_id == "sns-1" and item.error is None
    assert [(r.bucket, r.key, r.source) for r in item.refs] == [(BUCKET, "site-a/fan/Gerät 2.wav", "sqs")]


def test_sns_invoking_lambda_directly() -> None:
    event = {"Records": [{"EventSource": "aws:sns", "EventVersion": "1.0", "Sns": {
        "Type": "Notification", "Message": json.dumps(s3_event("pump/x+y.wav"))}}]}
    assert only_ref(parse_event(event)).key == "pump/x y.wav"


def test_eventbridge_event_delivered_through_sqs() -> None:
    (item,) = parse_event(sqs_of(json.dumps(eventbridge_event(KEY))))
    assert [(r.key, r.source) for r in item.refs] == [(KEY, "sqs")]


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 100_000])
def test_a_deeply_nested_sqs_body_fails_only_its_message(depth: int) -> None:
    good = json.dumps(s3_event("pump/ok.wav"))
    nested = "[" * depth + "]" * depth
    envelope = json.dumps({"Type": "Notification", "Message": nested})
    ok, bad, bad_sns, ok2 = parse_event(sqs_of(good, nested, envelope, good, ids=("a", "b", "c", "d")))
    assert [r.key for r in ok.refs] == [r.key for r in ok2.refs] == ["pump/ok.wav"]
    for item in (bad, bad_sns):
        assert item.refs == () and item.error and "nested" in item.error and "\n" not in item.error


def test_nesting_within_the_limit_is_parsed_and_brackets_in_strings_do_not_count() -> None:
    assert json_depth('{"a": [1, {"b": "[[[[{{{{"}]}') == 3
    assert json_depth('"\\"[[["') == 0 and json_depth("[" * 10) == 10
    event = s3_event("pump/[x]{y}.wav")
    event["Records"][0]["s3"]["object"]["userMetadata"] = json.loads("[" * 40 + "]" * 40)
    assert only_ref(parse_event(sqs_of(json.dumps(event)))).key == "pump/[x]{y}.wav"


@pytest.mark.parametrize(
    "body",
    [
        "not json at all",
        json.dumps({"hello": "world"}),
        json.dumps([1, 2, 3]),
        json.dumps({"Records": [{"eventSource": "aws:dynamodb"}]}),
        json.dumps({"Type": "Notification", "Message": "{truncated"}),
        json.dumps({"version": "0", "detail-type": "EC2 Instance State-change Notification",
                    "source": "aws.ec2", "detail": {}}),
    ],
    ids=["garbage", "unknown-object", "list", "foreign-records", "bad-sns-message", "foreign-eventbridge"],
)
def test_bad_sqs_bodies_fail_only_their_message(body: str) -> None:
    good = json.dumps(s3_event("pump/ok.wav"))
    ok, bad = parse_event(sqs_of(good, body, ids=("good-1", "bad-1")))
    assert [r.key for r in ok.refs] == ["pump/ok.wav"] and ok.error is None
    assert bad.message_id == "bad-1" and bad.refs == ()
    assert bad.error and "\n" not in bad.error


def test_malformed_record_fails_the_whole_message() -> None:
    event = s3_event("pump/a.wav")
    broken = copy.deepcopy(event["Records"][0])
    del broken["s3"]["object"]["key"]
    event["Records"].append(broken)
    (item,) = parse_event(sqs_of(json.dumps(event), ids=("m-1",)))
    assert item.message_id == "m-1" and item.refs == () and item.error and "key" in item.error
    direct = parse_event(event)
    assert [bool(i.error) for i in direct] == [False, True]


# ---------------------------------------------------------------------------------- unknown shapes


@pytest.mark.parametrize(
    "event",
    [
        {},
        {"foo": "bar"},
        {"Records": [{"eventSource": "aws:dynamodb", "dynamodb": {}}]},
        {"Records": [{"eventSource": "aws:sqs", "messageId": "1", "body": "{}"}, {"eventSource": "aws:s3"}]},
        {"version": "0", "detail-type": "Object Created", "source": "aws.ec2", "detail": {}},
        load("scheduled-event.json"),
        load("map-batch.json"),
        load("schedule.json"),
    ],
    ids=["empty", "unknown", "dynamodb", "mixed", "foreign-eventbridge", "scheduled", "map", "schedule"],
)
def test_unknown_top_level_shape_raises_one_line(event: dict) -> None:
    with pytest.raises(ValueError) as info:
        parse_event(event)
    assert str(info.value) and "\n" not in str(info.value)


SCHEDULED_FOR = "this is a scheduled event: invoke FleetSweepFunction"
SWEEP_FOR = "this is a sweep request: invoke FleetSweepFunction"
MAP_FOR = "this is a Distributed Map batch: invoke SweepBatchFunction"
OBJECT_FOR = "this is an S3/MinIO/EventBridge/SQS object event: invoke ScoreUploadFunction"


@pytest.mark.parametrize(
    ("parse", "event", "message"),
    [
        (parse_event, load("scheduled-event.json"), SCHEDULED_FOR),
        (parse_event, load("schedule.json"), SWEEP_FOR),
        (parse_event, {"action": "compact", "date": "2024-05-14"}, SWEEP_FOR),
        (parse_event, load("map-batch.json"), MAP_FOR),
        (parse_sweep_event, load("s3-put.json"), OBJECT_FOR),
        (parse_sweep_event, load("eventbridge-object-created.json"), OBJECT_FOR),
        (parse_sweep_event, load("sqs-batch.json"), OBJECT_FOR),
        (parse_sweep_event, load("map-batch.json"), MAP_FOR),
        (parse_map_batch, load("minio-webhook.json"), OBJECT_FOR),
        (parse_map_batch, load("scheduled-event.json"), SCHEDULED_FOR),
        (parse_map_batch, load("schedule.json"), SWEEP_FOR),
    ],
    ids=["upload<-scheduled", "upload<-schedule", "upload<-compact", "upload<-map", "sweep<-s3",
         "sweep<-eventbridge", "sweep<-sqs", "sweep<-map", "map<-minio", "map<-scheduled", "map<-schedule"],
)
def test_an_event_sent_to_the_wrong_function_names_the_right_one(parse, event: dict, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse(event)
    assert str(info.value) == message
    assert "parse_" not in str(info.value)


def test_the_functions_named_exist_in_the_template() -> None:
    from signalcraft_core.local.sam_template import function_ids, load_template

    ids = function_ids(load_template(EVENTS_DIR.parents[1] / "template.yaml"))
    assert set(FUNCTION_FOR.values()) <= set(ids)


def test_non_mapping_event_raises() -> None:
    with pytest.raises(ValueError):
        parse_event(["Records"])  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------- samples


@pytest.mark.parametrize("kind", ["s3-put", "eventbridge", "sqs", "minio"])
@pytest.mark.parametrize("key", [KEY, "Lüfter/ü 1.wav", "pump/a+b=c&d%e.wav"])
def test_generated_upload_events_round_trip(kind: str, key: str) -> None:
    event = generate_event(kind, BUCKET, key, size=4321, etag="abc123")
    ref = only_ref(parse_event(json.loads(json.dumps(event))))
    assert (ref.bucket, ref.key, ref.size, ref.etag) == (BUCKET, key, 4321, "abc123")


def test_generated_map_batch_and_schedule_round_trip() -> None:
    event = generate_event("map-batch", BUCKET, KEY, size=7, prefix="site-a/", date="2024-05-13")
    batch = parse_map_batch(event)
    assert [(r.bucket, r.key, r.size, r.source) for r in batch.refs] == [(BUCKET, KEY, 7, "map")]
    assert batch.batch_input["prefix"] == "site-a/"
    sweep = parse_sweep_event(generate_event("schedule", BUCKET, "", prefix="site-b/", date="2024-05-13"))
    assert (sweep.bucket, sweep.prefix, sweep.date) == (BUCKET, "site-b/", "2024-05-13")
    assert parse_sweep_event(generate_event("schedule", BUCKET, "")).date is None


def test_generate_event_shapes_follow_sam() -> None:
    event = generate_event("s3-put", BUCKET, KEY)
    assert event["Records"][0]["s3"]["object"]["key"] == quote(KEY)
    assert generate_event("eventbridge", BUCKET, KEY)["detail"]["object"]["key"] == KEY  # raw, as AWS shows it
    sqs = generate_event("sqs", BUCKET, KEY)["Records"][0]
    assert sqs["eventSource"] == "aws:sqs" and json.loads(sqs["body"]) == event
    assert set(EVENT_KINDS) == {"s3-put", "eventbridge", "schedule", "sqs", "minio", "map-batch"}


def test_generate_event_rejects_unknown_kind_and_bad_date() -> None:
    with pytest.raises(ValueError, match="unknown event kind"):
        generate_event("kinesis", BUCKET, KEY)
    with pytest.raises(ValueError):
        generate_event("s3-put", BUCKET, KEY, date="14/05/2024")


# ------------------------------------------------------------------------------------------- sweep


def test_sweep_from_scheduler_input_file() -> None:
    assert parse_sweep_event(load("schedule.json")).__dict__ == {
        "bucket": BUCKET, "prefix": "site-a/", "date": "2024-05-13"}


def test_sweep_from_scheduled_event_uses_defaults() -> None:
    sweep = parse_sweep_event(load("scheduled-event.json"), default_bucket="from-env", default_prefix="in/")
    assert (sweep.bucket, sweep.prefix, sweep.date) == ("from-env", "in/", "2024-05-14")
    with pytest.raises(ValueError, match="no default bucket"):
        parse_sweep_event(load("scheduled-event.json"))


def test_sweep_input_variants() -> None:
    wrapped = {"Input": json.dumps({"bucket": "b", "date": "2024-05-13T02:00:00Z"})}
    assert parse_sweep_event(wrapped, default_prefix="p/") == parse_sweep_event(
        {"bucket": "b", "prefix": "p/", "date": "2024-05-13"})
    assert parse_sweep_event({}, default_bucket="env-bucket").bucket == "env-bucket"
    assert parse_sweep_event({"bucket": "b"}, default_bucket="env-bucket").bucket == "b"


@pytest.mark.parametrize(
    "event",
    [{"bucket": "b", "date": "13.05.2024"}, {"bucket": "b", "date": "2024-02-30"}, {"prefix": "x/"},
     {"bucket": "b", "prefix": 3}, load("s3-put.json"), {"Input": "{not json"}],
    ids=["date-format", "date-calendar", "no-bucket", "prefix-type", "upload-event", "bad-input"],
)
def test_bad_sweep_events_raise(event: dict) -> None:
    with pytest.raises(ValueError):
        parse_sweep_event(event)


# --------------------------------------------------------------------------------------- map batch


def test_map_batch_sample_keeps_keys_as_listed() -> None:
    event = load("map-batch.json")
    batch = parse_map_batch(event)
    assert [r.key for r in batch.refs] == [item["Key"] for item in event["Items"]]
    assert any("+" in r.key for r in batch.refs)  # a listed '+' is a literal plus, not a space
    first = batch.refs[0]
    assert first.etag == event["Items"][0]["Etag"].strip('"')
    assert first.size == event["Items"][0]["Size"]
    assert first.event_time == "2024-05-14T02:17:43Z"
    assert {r.bucket for r in batch.refs} == {BUCKET} and batch.batch_input == event["BatchInput"]


def test_map_batch_variants() -> None:
    item = {"Key": "a/rec%20x.wav", "Size": 5, "ETag": '"e1"', "LastModified": "2024-05-14T02:17:43+00:00"}
    batch = parse_map_batch({"Items": [item]}, default_bucket="env")
    (ref,) = batch.refs
    assert (ref.bucket, ref.key, ref.etag) == ("env", "a/rec%20x.wav", "e1")
    assert ref.event_time == item["LastModified"]
    single = parse_map_batch({"Key": "k.wav", "Size": 1}, default_bucket="env")
    assert [r.key for r in single.refs] == ["k.wav"]
    assert parse_map_batch({"Items": [], "BatchInput": {"bucket": "b"}}).refs == ()


@pytest.mark.parametrize(
    "event",
    [{"Items": [{"Key": "a.wav"}]}, {"Items": "a.wav", "BatchInput": {"bucket": "b"}},
     {"Items": [{"Size": 3}], "BatchInput": {"bucket": "b"}}, {"Records": []}],
    ids=["no-bucket", "items-not-list", "item-without-key", "not-a-batch"],
)
def test_bad_map_batches_raise(event: dict) -> None:
    with pytest.raises(ValueError):
        parse_map_batch(event)


# ---------------------------------------------------------------------------------------- filters


def test_wanted_matches_suffix_in_any_case() -> None:
    assert wanted(ObjectRef("b", "x/rec.wav"))
    assert wanted(ObjectRef("b", "x/REC.WAV"))
    assert not wanted(ObjectRef("b", "x/rec.wav.json"))
    assert not wanted(ObjectRef("b", "x/"))
    assert wanted(ObjectRef("b", "x/rec.flac"), (".wav", ".FLAC"))
    assert wanted(ObjectRef("b", "x/rec.flac"), ".flac")


def test_is_own_output_refuses_only_our_output_location() -> None:
    assert is_own_output(ObjectRef("out", "grades/2024/x.wav"), "out", "grades/")
    assert not is_own_output(ObjectRef("in", "grades/2024/x.wav"), "out", "grades/")
    assert not is_own_output(ObjectRef("out", "uploads/x.wav"), "out", "grades/")
    assert is_own_output(ObjectRef("out", "anything.wav"), "out", "")
    assert not is_own_output(ObjectRef("out", "grades/x.wav"), None, "grades/")


def test_object_ref_is_frozen_and_validated() -> None:
    ref = ObjectRef("b", "k")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ref.key = "other"  # type: ignore[misc]
    with pytest.raises(ValueError):
        ObjectRef("", "k")
    with pytest.raises(ValueError):
        ObjectRef("b", "")


# ---------------------------------------------------------------------------------------- sizes


@pytest.mark.parametrize("size, expected", [(0, 0), (4321, 4321), ("4321", 4321), (7.0, 7), (MAX_SIZE, MAX_SIZE),
                                            (MAX_SIZE + 1, None), (2**64, None), (-1, None), ("-1", None),
                                            ("\u0663", None), (True, None), (1.5, None), ("", None), (None, None)])
def test_an_event_size_is_an_int64_or_unknown(size, expected) -> None:
    """A size the records cannot store (int64) would fail the whole batch's write: unknown instead (a HEAD says)."""
    event = generate_event("s3-put", BUCKET, KEY)
    event["Records"][0]["s3"]["object"]["size"] = size
    assert only_ref(parse_event(event)).size == expected


def test_one_poison_sqs_message_fails_alone(s3_server, s3, make_bucket, monkeypatch) -> None:
    """Good messages of an SQS batch are done even when one message hits an error nothing foresaw."""
    from handlers import score_upload
    from signalcraft_core.pipeline import runtime, serverless
    from tests.handler_env import configure_handlers
    from tests.test_fleet import clip

    recordings, grades = make_bucket(), make_bucket()
    configure_handlers(monkeypatch, s3_server.endpoint_url, grades, log_level="CRITICAL")
    good, gone, bug = "site-a/pump/id_00/good.wav", "site-a/pump/id_00/gone.wav", "site-a/pump/id_00/bug.wav"
    for key in (good, bug):
        s3.put_object(Bucket=recordings, Key=key, Body=clip(1))
    huge = generate_event("s3-put", recordings, gone)
    huge["Records"][0]["s3"]["object"]["size"] = 2**64   # the record of the missing object carried this size
    grade = serverless._grade

    def grade_or_bug(refs, rt):   # an unforeseen error for one message's recording (not the store, not a model)
        if any(r.key == bug for r in refs):
            raise OverflowError("a bug this message triggers")
        return grade(refs, rt)

    monkeypatch.setattr(serverless, "_grade", grade_or_bug)
    batch = {"Records": [{"messageId": m, "receiptHandle": "h", "eventSource": "aws:sqs", "body": json.dumps(e),
                          "attributes": {}, "messageAttributes": {}}
                         for m, e in (("good", generate_event("s3-put", recordings, good)), ("huge", huge),
                                      ("bug", generate_event("s3-put", recordings, bug)))]}
    try:
        result = score_upload.handler(batch)
    finally:
        runtime.reset()
    assert result["batchItemFailures"] == [{"itemIdentifier": "bug"}]
    assert result["records"] == 2 and result["errors"] == {"not_found": 1}
