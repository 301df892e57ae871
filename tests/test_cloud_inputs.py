"""Object-store inputs against a real S3 API on loopback (moto's server, started here).

Every test points ``AWS_ENDPOINT_URL`` at the server, with dummy keys, no profile files and
the instance-metadata lookups turned off or aimed at a closed loopback port, so nothing here
leaves the machine. Buckets are new per test; the server is shared by the module.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import polars as pl
import pytest
import zstandard
from moto import server as moto_server

from flywheel_import import cloud, validate
from flywheel_import.cli import main
from flywheel_import.errors import InputError
from flywheel_import.inputs import expand, open_stream
from flywheel_import.sandbox import Sandbox
from tests.test_run import rejects_of

KEY = "cloud-test-key-1234"
REPO = Path(__file__).resolve().parent.parent


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def aws_env(s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Dummy keys and the loopback endpoint; no way to reach a real AWS service."""
    for name in (
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_ENDPOINT_URL_S3",
        "AWS_ENDPOINT",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_SKIP_SIGNATURE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_METADATA_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("TEST_FLYWHEEL_KEY", KEY)
    return s3_endpoint


@pytest.fixture
def s3(aws_env: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=aws_env,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture
def bucket(s3: Any) -> str:
    name = f"b-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


def events_csv(rows: int, *, first: int = 0, bad: int = 0) -> bytes:
    lines = ["name,user,ts,plan,price,zip"]
    for i in range(first, first + rows):
        name = "" if i - first < bad else ("page_viewed", "signup", "purchase")[i % 3]
        lines.append(
            f"{name},{i % 97:05d},2024-01-{1 + i % 28:02d} 10:{i % 60:02d}:00,"
            f"pro,{i}.5,{i % 1000:05d}"
        )
    return ("\n".join(lines) + "\n").encode()


def write_config(folder: Path, source: str = "unused.csv") -> Path:
    cfg = folder / "import.yaml"
    cfg.write_text(f"""
source: {{path: {json.dumps(source)}}}
api: {{key_env: TEST_FLYWHEEL_KEY, rate_limit: 0, concurrency: 8}}
mapping:
  event: name
  user_id: user
  timestamp: {{column: ts, timezone: UTC}}
output: {{rejects: rejects.csv, report: report.json}}
""")
    return cfg


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    return err


# --- the run ---------------------------------------------------------------------------------


def test_a_run_from_an_s3_glob_stores_the_same_events_as_the_same_files_read_locally(
    s3: Any,
    bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    local = tmp_path / "exports"
    local.mkdir()
    for i, month in enumerate(("2024-01", "2024-02", "2024-03")):
        data = gzip.compress(events_csv(400, first=400 * i, bad=2))
        (local / f"{month}.csv.gz").write_bytes(data)
        s3.put_object(Bucket=bucket, Key=f"exports/{month}.csv.gz", Body=data)
    s3.put_object(Bucket=bucket, Key="exports/2023-12.csv", Body=events_csv(5))  # not matched
    s3.put_object(Bucket=bucket, Key="exports/notes.txt", Body=b"not an export")
    # Ranges far smaller than the files: records and gzip blocks are cut at every boundary.
    monkeypatch.setattr(cloud, "CHUNK", 4096)
    (tmp_path / "s3").mkdir()
    (tmp_path / "local").mkdir()
    url = f"s3://{bucket}/exports/*.csv.gz"
    stored: dict[str, list[dict[str, Any]]] = {}
    for where, source in (("s3", url), ("local", str(local / "*.csv.gz"))):
        cfg = write_config(tmp_path / where)
        with Sandbox(key=KEY) as sb:
            code = main(["run", str(cfg), source, "--api-url", sb.url, "--no-progress"])
            stored[where] = sb.events()
        assert code == 1, capsys.readouterr().err  # the six rows without a name
        report = json.loads((tmp_path / where / "report.json").read_text())
        assert (report["rows_read"], report["accepted"], report["rejected"]) == (1200, 1194, 6)
    # Sent concurrently: compared by id, not by arrival order.
    by_id = {w: {e["event_id"]: e["body"] for e in stored[w]} for w in stored}
    assert len(by_id["s3"]) == 1194
    assert by_id["s3"] == by_id["local"]
    sources = {r["_source"] for r in rejects_of(tmp_path / "s3")}
    assert sources == {f"s3://{bucket}/exports/2024-0{m}.csv.gz" for m in (1, 2, 3)}


def test_source_path_in_the_mapping_file_may_be_a_url(s3: Any, bucket: str, tmp_path: Path) -> None:
    s3.put_object(Bucket=bucket, Key="in/events.csv", Body=events_csv(50))
    cfg = write_config(tmp_path, f"s3://{bucket}/in/events.csv")
    report = validate(cfg)
    assert (report.rows_read, report.valid) == (50, 50)


def test_rejects_name_the_object_url_in_source(s3: Any, bucket: str, tmp_path: Path) -> None:
    s3.put_object(Bucket=bucket, Key="exports/jan.csv", Body=events_csv(10, bad=3))
    url = f"s3://{bucket}/exports/jan.csv"
    report = validate(write_config(tmp_path), [url])
    assert (report.rows_read, report.rejected) == (10, 3)
    rows = rejects_of(tmp_path)
    assert [(r["_source"], r["_row"], r["_error_code"]) for r in rows] == [
        (url, str(n), "MISSING_EVENT_NAME") for n in (1, 2, 3)
    ]


def test_an_object_whose_name_has_spaces_is_read_by_name_and_by_glob(
    s3: Any, bucket: str, tmp_path: Path
) -> None:
    s3.put_object(Bucket=bucket, Key="exports/jan 2024 (final).csv", Body=events_csv(7, bad=1))
    for source in (f"s3://{bucket}/exports/jan 2024 (final).csv", f"s3://{bucket}/exports/jan *"):
        report = validate(write_config(tmp_path), [source])
        assert (report.rows_read, report.rejected) == (7, 1)
        assert rejects_of(tmp_path)[0]["_source"] == f"s3://{bucket}/exports/jan 2024 (final).csv"


# --- Parquet, NDJSON, compression ------------------------------------------------------------


def frame(rows: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "name": ["page_viewed" if i % 5 else "" for i in range(rows)],
            "user": [f"u{i % 13}" for i in range(rows)],
            "ts": [f"2024-02-{1 + i % 28:02d}T08:00:00Z" for i in range(rows)],
            "price": [i * 1.25 for i in range(rows)],
            "ctx": [{"page": f"/p{i % 4}", "ref": None if i % 2 else "ad"} for i in range(rows)],
        }
    )


def parquet_bytes(df: pl.DataFrame, path: Path) -> bytes:
    df.write_parquet(path, row_group_size=50)
    return path.read_bytes()


def ndjson_bytes(df: pl.DataFrame) -> bytes:
    return (
        df.with_columns(pl.when(pl.col("name") != "").then(pl.col("name"))).write_ndjson().encode()
    )


@pytest.mark.parametrize("kind", ["parquet", "parquet.zst", "ndjson", "ndjson.gz", "csv.zst"])
def test_validate_of_an_object_matches_validate_of_the_same_file_on_disk(
    s3: Any, bucket: str, tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    df = frame(333)
    if kind.startswith("parquet"):
        data = parquet_bytes(df, tmp_path / "plain.parquet")
    elif kind.startswith("ndjson"):
        data = ndjson_bytes(df)
    else:
        data = events_csv(333, bad=5)
    if kind.endswith(".zst"):
        data = zstandard.ZstdCompressor().compress(data)
    elif kind.endswith(".gz"):
        data = gzip.compress(data)
    local = tmp_path / f"events.{kind}"
    local.write_bytes(data)
    s3.put_object(Bucket=bucket, Key=f"data/events.{kind}", Body=data)
    monkeypatch.setattr(cloud, "CHUNK", 1000)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    remote = validate(write_config(tmp_path / "a"), [f"s3://{bucket}/data/events.{kind}"])
    on_disk = validate(write_config(tmp_path / "b"), [str(local)])
    assert remote.rows_read == on_disk.rows_read == 333
    assert (remote.valid, remote.rejected) == (on_disk.valid, on_disk.rejected)
    assert remote.rejected > 0
    a, b = rejects_of(tmp_path / "a"), rejects_of(tmp_path / "b")
    assert [r["_row"] for r in a] == [r["_row"] for r in b]
    assert all(r["_source"] == f"s3://{bucket}/data/events.{kind}" for r in a)


def test_a_compressed_parquet_object_is_spooled_to_a_temp_file_that_is_always_removed(
    s3: Any, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = gzip.compress(parquet_bytes(frame(120), tmp_path / "x.parquet"))
    s3.put_object(Bucket=bucket, Key="p/x.parquet.gz", Body=data)
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(spool))
    report = validate(write_config(tmp_path), [f"s3://{bucket}/p/x.parquet.gz"])
    assert report.rows_read == 120
    assert list(spool.iterdir()) == []
    s3.put_object(Bucket=bucket, Key="p/bad.parquet.gz", Body=gzip.compress(b"not parquet"))
    with pytest.raises(InputError, match="not a readable Parquet file"):
        validate(write_config(tmp_path), [f"s3://{bucket}/p/bad.parquet.gz"])
    assert list(spool.iterdir()) == []


# --- discovery -------------------------------------------------------------------------------


def test_object_globs_follow_the_rules_of_local_globs(s3: Any, bucket: str, tmp_path: Path) -> None:
    names = [
        "a.csv",
        "b.csv",
        "a-b/c.csv",
        "a/b.csv",
        "a/x/y/d.csv",
        "a/x/e.tsv",
        ".h.csv",
        "a/.hidden/f.csv",
        "c1.csv",
        "c2.csv",
        "cc.csv",
        "[x].csv",
        "q?.csv",
        "n.txt",
    ]
    root = tmp_path / "tree"
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x\n1\n")
        s3.put_object(Bucket=bucket, Key=f"t/{name}", Body=b"x\n1\n")
    patterns = [
        "*.csv",
        "**/*.csv",
        "a/**",
        "a/*/*.csv",
        "c?.csv",
        "c[12].csv",
        "c[!1].csv",
        "a*/*.csv",
        "**/d.csv",
        ".*.csv",
        "a/.hidden/*",
        "[[]x].csv",
        "*/**/*.tsv",
    ]
    for pattern in patterns:
        try:
            local = [
                f.path.relative_to(root).as_posix()
                for f in expand([str(root / pattern)], forced="csv")  # type: ignore[union-attr]
            ]
        except InputError:
            local = []
        try:
            remote = [
                f.obj.key.removeprefix("t/")
                for f in expand([f"s3://{bucket}/t/{pattern}"], forced="csv")  # type: ignore[union-attr]
            ]
        except InputError:
            remote = []
        assert remote == local, pattern
    assert len(local) > 0


def test_a_folder_url_reads_its_export_files_and_skips_hidden_and_other_ones(
    s3: Any, bucket: str
) -> None:
    for key in (
        "exp/b.csv",
        "exp/a.ndjson",
        "exp/sub/c.parquet",
        "exp/.tmp/d.csv",
        "exp/readme.txt",
        "exp/sub/",
        "expired/e.csv",
    ):
        s3.put_object(Bucket=bucket, Key=key, Body=b"")
    for url in (f"s3://{bucket}/exp", f"s3://{bucket}/exp/"):
        found = [(f.name, f.format) for f in expand([url])]
        assert found == [
            (f"s3://{bucket}/exp/a.ndjson", "ndjson"),
            (f"s3://{bucket}/exp/b.csv", "csv"),
            (f"s3://{bucket}/exp/sub/c.parquet", "parquet"),
        ]


def test_fingerprints_name_the_version_of_a_file_or_object(
    s3: Any, bucket: str, tmp_path: Path
) -> None:
    s3.put_object(Bucket=bucket, Key="f/x.csv", Body=b"a,b\n1,2\n")
    head = s3.head_object(Bucket=bucket, Key="f/x.csv")
    (obj,) = expand([f"s3://{bucket}/f/x.csv"])
    fp = obj.fingerprint()
    assert fp == {
        "url": f"s3://{bucket}/f/x.csv",
        "etag": head["ETag"],
        "size": 8,
        "last_modified": fp["last_modified"],
    }
    assert str(fp["last_modified"]).startswith(head["LastModified"].strftime("%Y-%m-%dT%H:%M"))
    local = tmp_path / "x.csv"
    local.write_bytes(b"a,b\n1,2\n")
    (f,) = expand([str(local)])
    st = local.stat()
    assert f.fingerprint() == {"path": str(local.resolve()), "size": 8, "mtime_ns": st.st_mtime_ns}


def test_an_object_is_read_in_ranges_at_most_one_ahead_of_the_reader(
    s3: Any, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = events_csv(400)
    s3.put_object(Bucket=bucket, Key="m/x.csv", Body=body)
    monkeypatch.setattr(cloud, "CHUNK", 1000)
    asked: list[tuple[int, int]] = []
    real_get = cloud._get

    def get(obj: cloud.CloudObject, start: int, end: int) -> memoryview:
        asked.append((start, end))
        return real_get(obj, start, end)

    monkeypatch.setattr(cloud, "_get", get)
    (src,) = expand([f"s3://{bucket}/m/x.csv"])
    with open_stream(src) as stream:
        assert stream.read(1) == body[:1]
        ahead = len(asked)
        rest = stream.read()
    assert ahead <= 2  # the range being read and the next one: memory is two ranges
    assert body[:1] + rest == body
    assert asked == [(a, min(a + 1000, len(body))) for a in range(0, len(body), 1000)]


def test_an_object_replaced_while_it_is_read_fails_with_one_line(
    s3: Any, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3.put_object(Bucket=bucket, Key="r/x.csv", Body=events_csv(500))
    monkeypatch.setattr(cloud, "CHUNK", 1024)
    (src,) = expand([f"s3://{bucket}/r/x.csv"])
    with open_stream(src) as stream:
        first = stream.read(100)
        s3.put_object(Bucket=bucket, Key="r/x.csv", Body=events_csv(500, first=7))
        with pytest.raises(InputError, match="changed while it was being read"):
            stream.read()
    assert first == events_csv(500)[:100]


# --- errors: one line naming the URL, exit 2 -------------------------------------------------


def test_a_glob_matching_no_object_is_an_error_naming_the_pattern(
    s3: Any, bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    s3.put_object(Bucket=bucket, Key="exports/2023-12.csv", Body=events_csv(3))
    url = f"s3://{bucket}/exports/2024-*.csv.gz"
    assert main(["validate", str(write_config(tmp_path)), url, "--no-progress"]) == 2
    assert one_line_error(capsys) == f"flywheel-import: error: {url}: no files match this pattern"


def test_a_missing_object_is_an_error_naming_it(
    bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"s3://{bucket}/exports/missing.csv"
    assert main(["validate", str(write_config(tmp_path)), url, "--no-progress"]) == 2
    assert one_line_error(capsys) == f"flywheel-import: error: {url}: no such object"


@pytest.mark.parametrize(
    "url", ["s3://no-such-bucket-4242/exports/*.csv", "s3://no-such-bucket-4242/exports/x.csv"]
)
def test_a_missing_bucket_is_one_line_naming_the_url(
    aws_env: str, tmp_path: Path, url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", str(write_config(tmp_path)), url, "--no-progress"]) == 2
    err = one_line_error(capsys)
    assert err.startswith(f"flywheel-import: error: {url}: bucket or container not found")
    assert not (tmp_path / "rejects.csv").exists()


def test_no_credentials_is_one_line_naming_the_url(
    bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    url = f"s3://{bucket}/exports/*.csv"
    assert main(["validate", str(write_config(tmp_path)), url, "--no-progress"]) == 2
    err = one_line_error(capsys)
    assert err.startswith(f"flywheel-import: error: {url}: no AWS credentials found")


def test_without_boto3_no_credentials_is_still_one_line(
    bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """obstore's own chain ends at the instance-metadata service, here a closed port."""
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setitem(sys.modules, "obstore.auth.boto3", None)
    with pytest.raises(InputError, match=r"^s3://.*: no credentials found"):
        expand([f"s3://{bucket}/x/*.csv"])


def test_a_connection_refused_is_one_line_naming_the_url(
    bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(InputError, match=r"^s3://.*: cannot reach http://127\.0\.0\.1:\d+"):
        expand([f"s3://{bucket}/x/*.csv"])


def test_aws_endpoint_url_s3_takes_precedence_over_aws_endpoint_url(
    s3: Any, bucket: str, aws_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3.put_object(Bucket=bucket, Key="e/x.csv", Body=b"a\n1\n")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", aws_env)
    assert [f.name for f in expand([f"s3://{bucket}/e/*.csv"])] == [f"s3://{bucket}/e/x.csv"]


@pytest.fixture
def iam_keys(aws_env: str) -> Iterator[Callable[[], None]]:
    """Keys of two users, one allowed to read S3 and one allowed nothing; calling the
    returned function makes moto check signatures and policies until the test ends."""
    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin

    iam = boto3.client("iam", endpoint_url=aws_env, region_name="us-east-1")
    keys: dict[str, str] = {}
    for who, actions in (("reader", ["s3:GetObject", "s3:ListBucket"]), ("nobody", [])):
        name = f"{who}-{uuid.uuid4().hex[:8]}"
        iam.create_user(UserName=name)
        if actions:
            iam.put_user_policy(
                UserName=name,
                PolicyName="read",
                PolicyDocument=json.dumps(
                    {
                        "Version": "2012-10-17",
                        "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}],
                    }
                ),
            )
        made = iam.create_access_key(UserName=name)["AccessKey"]
        keys[who], keys[f"{who}_secret"] = made["AccessKeyId"], made["SecretAccessKey"]
    before = settings.INITIAL_NO_AUTH_ACTION_COUNT

    def enforce() -> None:
        settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
        ActionAuthenticatorMixin.request_count = 0

    enforce.keys = keys  # type: ignore[attr-defined]
    try:
        yield enforce
    finally:
        settings.INITIAL_NO_AUTH_ACTION_COUNT = before


def test_access_denied_is_one_line_naming_the_url(
    bucket: str,
    iam_keys: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    keys = iam_keys.keys
    iam_keys()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", keys["nobody"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", keys["nobody_secret"])
    url = f"s3://{bucket}/*.csv"
    assert main(["validate", str(write_config(tmp_path)), url, "--no-progress"]) == 2
    assert one_line_error(capsys).startswith(f"flywheel-import: error: {url}: access denied")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUNKNOWNKEY000000")
    assert main(["validate", str(write_config(tmp_path)), url, "--no-progress"]) == 2
    err = one_line_error(capsys)
    assert err.startswith(f"flywheel-import: error: {url}: credentials refused")


def test_credentials_come_from_the_aws_profile(
    s3: Any, bucket: str, iam_keys: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3.put_object(Bucket=bucket, Key="x.csv", Body=events_csv(20))
    keys = iam_keys.keys
    iam_keys()
    creds = tmp_path / "credentials"
    creds.write_text(
        f"[importer]\naws_access_key_id = {keys['reader']}\n"
        f"aws_secret_access_key = {keys['reader_secret']}\n"
    )
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    monkeypatch.setenv("AWS_PROFILE", "importer")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    report = validate(write_config(tmp_path), [f"s3://{bucket}/*.csv"])
    assert report.rows_read == 20
    monkeypatch.setenv("AWS_PROFILE", "someone-else")
    with pytest.raises(InputError, match=r"^s3://.*someone-else"):
        expand([f"s3://{bucket}/*.csv"])


# --- cost of a local-only run ----------------------------------------------------------------


def test_a_run_over_local_files_never_imports_the_cloud_libraries(tmp_path: Path) -> None:
    data = tmp_path / "e.csv"
    data.write_bytes(events_csv(20))
    cfg = write_config(tmp_path, "e.csv")
    code = (
        "import sys, flywheel_import as fi\n"
        f"fi.validate({str(cfg)!r})\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('obstore', 'boto3', 'botocore', 'fsspec', 's3fs')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
        check=True,
    )
    assert out.stdout.strip() == "[]"


# --- Google Cloud Storage and Azure: the same path, another provider's environment -----------


@pytest.fixture
def no_provider_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No Google or Azure settings from the machine; identity services at a closed port."""
    import os

    for name in list(os.environ):
        if name.startswith(("GOOGLE_", "AZURE_")):
            monkeypatch.delenv(name)
    dead = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("AZURE_MSI_ENDPOINT", dead)
    monkeypatch.setenv("AZURE_IDENTITY_ENDPOINT", dead)


@pytest.mark.usefixtures("no_provider_env")
def test_gs_and_az_urls_go_to_the_endpoints_their_environment_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = closed_port()
    monkeypatch.setenv("GOOGLE_SKIP_SIGNATURE", "true")
    monkeypatch.setenv("GOOGLE_BASE_URL", f"http://127.0.0.1:{port}")
    with pytest.raises(
        InputError,
        match=rf"^gs://bkt/x/\*\.csv: cannot reach "
        rf"http://127\.0\.0\.1:{port}",
    ):
        expand(["gs://bkt/x/*.csv"])
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_NAME", "acct")
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_KEY", "ZHVtbXkta2V5")
    monkeypatch.setenv("AZURE_STORAGE_ENDPOINT", f"http://127.0.0.1:{port}")
    for url in ("az://cont/x/*.csv", "abfss://cont@acct.dfs.core.windows.net/x/*.csv"):
        with pytest.raises(
            InputError,
            match=rf"^{re.escape(url)}: cannot reach "
            rf"http://127\.0\.0\.1:{port}",
        ):
            expand([url])


@pytest.mark.usefixtures("no_provider_env")
def test_an_az_url_without_a_storage_account_says_how_to_name_one() -> None:
    with pytest.raises(
        InputError,
        match=r"^az://cont/x\.csv: no storage account; set "
        r"AZURE_STORAGE_ACCOUNT_NAME",
    ):
        expand(["az://cont/x.csv"])
