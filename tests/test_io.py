"""URL helpers over fsspec: local and S3 (moto server on loopback) behave the
same, the AWS variables reach s3fs, writes are whole, errors say what to do
and never carry a secret."""

from __future__ import annotations

import os

import pytest

from conftest import TEST_KEY_ID, TEST_SECRET, free_port
from pipeline import io


def test_join_and_is_remote():
    assert io.join("s3://b/out/", "shards", "x.npz") == "s3://b/out/shards/x.npz"
    assert io.join("/tmp/out", "/manifests/") == "/tmp/out/manifests"
    assert io.is_remote("s3://b/k") and not io.is_remote("/tmp/x")
    assert not io.is_remote("file:///tmp/x")


def test_storage_options_from_environment(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    options = io.storage_options("s3://b/k")
    assert options["client_kwargs"] == {
        "endpoint_url": "http://127.0.0.1:9",
        "region_name": "eu-west-1",
    }
    # --storage-options wins, and merges into client_kwargs
    options = io.storage_options(
        "s3://b/k", {"client_kwargs": {"endpoint_url": "http://127.0.0.1:8"}, "anon": True}
    )
    assert options["client_kwargs"]["endpoint_url"] == "http://127.0.0.1:8"
    assert options["client_kwargs"]["region_name"] == "eu-west-1"
    assert options["anon"] is True
    assert io.storage_options("/local/path") == {}


def test_redact_hides_credentials():
    options = {"key": "AKIA", "secret": "s", "token": "t", "client_kwargs": {"endpoint_url": "e"}}
    assert io.redact(options) == {
        "key": "***",
        "secret": "***",
        "token": "***",
        "client_kwargs": {"endpoint_url": "e"},
    }


def test_local_write_is_whole_and_listed(tmp_path):
    url = str(tmp_path / "out")
    io.write_bytes(io.join(url, "manifests", "b.parquet"), b"bb")
    io.write_bytes(io.join(url, "manifests", "a.parquet"), b"a")
    io.write_bytes(io.join(url, "manifests", "a.parquet"), b"aa")  # overwrite in place
    assert io.read_bytes(io.join(url, "manifests", "a.parquet")) == b"aa"
    assert sorted(os.listdir(tmp_path / "out" / "manifests")) == ["a.parquet", "b.parquet"]
    assert io.list_files(io.join(url, "manifests"), ".parquet") == [
        io.join(url, "manifests", "a.parquet"),
        io.join(url, "manifests", "b.parquet"),
    ]
    assert io.list_files(io.join(url, "missing"), ".parquet") == []
    io.remove(io.join(url, "manifests", "a.parquet"))
    io.remove(io.join(url, "manifests", "a.parquet"))  # absent: no error
    assert not io.exists(io.join(url, "manifests", "a.parquet"))


def test_s3_round_trip_through_environment(s3_bucket):
    url = f"s3://{s3_bucket}/out"
    io.write_bytes(io.join(url, "manifests", "x.parquet"), b"payload")
    io.write_bytes(io.join(url, "deeper", "y", "z.parquet"), b"z")
    assert io.read_bytes(io.join(url, "manifests", "x.parquet")) == b"payload"
    assert io.list_files(io.join(url, "manifests"), ".parquet") == [
        f"s3://{s3_bucket}/out/manifests/x.parquet"
    ]
    assert io.find_files(url, ".parquet") == [
        f"s3://{s3_bucket}/out/deeper/y/z.parquet",
        f"s3://{s3_bucket}/out/manifests/x.parquet",
    ]
    with pytest.raises(FileNotFoundError):
        io.find_files(f"s3://{s3_bucket}/nothing-here", ".parquet")
    table = io.arrow_filesystem(url).get_file_info(f"{s3_bucket}/out/manifests/x.parquet")
    assert table.size == len(b"payload")


def test_explain_missing_input(s3_bucket):
    url = f"s3://{s3_bucket}/no/such/input"
    with pytest.raises(FileNotFoundError) as info:
        io.find_files(url, ".parquet")
    message = str(io.explain(info.value, url, "input"))
    assert "does not exist" in message and url in message


def test_explain_missing_credentials(s3_server, monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    url = "s3://some-bucket/input"
    options = {"skip_instance_cache": True}
    with pytest.raises(Exception) as info:
        io.find_files(url, ".parquet", options)
    message = str(io.explain(info.value, url, "input", options))
    assert "no S3 credentials" in message and "AWS_ACCESS_KEY_ID" in message


def test_explain_unreachable_endpoint_names_it_without_secrets():
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    options = {
        "key": TEST_KEY_ID,
        "secret": TEST_SECRET,
        "client_kwargs": {"endpoint_url": endpoint},
        "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 1},
        "skip_instance_cache": True,
    }
    url = "s3://some-bucket/input"
    with pytest.raises(Exception) as info:
        io.find_files(url, ".parquet", options)
    message = str(io.explain(info.value, url, "input", options))
    assert "unreachable" in message and endpoint in message
    assert TEST_SECRET not in message and TEST_KEY_ID not in message


def test_no_stale_listing_hides_a_file_written_by_another_process(s3_bucket, s3_server):
    """Listing a folder that does not exist yet makes s3fs list (and, with its
    listings cache, remember) the parent; a file another process writes there
    afterwards must still be found. (This is how a fault test once read no
    _SUCCESS right after the job had written it.)"""
    import boto3

    url = f"s3://{s3_bucket}/grids"
    io.write_bytes(io.join(url, "other"), b"x")  # the parent exists, the folder not yet
    assert io.list_files(io.join(url, "manifests"), ".parquet") == []
    assert not io.exists(io.join(url, "_SUCCESS"))
    client = boto3.client("s3", endpoint_url=s3_server.endpoint, region_name="us-east-1")
    client.put_object(Bucket=s3_bucket, Key="grids/_SUCCESS", Body=b"{}")
    client.put_object(Bucket=s3_bucket, Key="grids/manifests/a.parquet", Body=b"m")
    assert io.read_bytes(io.join(url, "_SUCCESS")) == b"{}"
    assert io.exists(io.join(url, "_SUCCESS"))
    assert io.list_files(io.join(url, "manifests"), ".parquet") == [
        f"s3://{s3_bucket}/grids/manifests/a.parquet"
    ]


def test_canonical_url_gives_one_spelling_per_location(tmp_path, monkeypatch):
    real = tmp_path / "catalog"
    (real / "sub").mkdir(parents=True)
    (tmp_path / "link").symlink_to(real)
    monkeypatch.chdir(tmp_path)
    spellings = [
        str(real),
        f"{real}/",
        f"{tmp_path}//catalog",
        f"{real}/./sub/..",
        f"file://{real}",
        f"local://{real}",
        "catalog",
        "./link/",
    ]
    assert {io.canonical_url(s) for s in spellings} == {str(real)}
    s3 = ["s3://b/cat", "s3://b//cat/", "s3a://b/cat", "s3n://b/x/../cat/.", "s3://b/./cat"]
    assert {io.canonical_url(s) for s in s3} == {"s3://b/cat"}
    assert io.canonical_url("s3://b/cat") != io.canonical_url("s3://b/Cat")  # case-sensitive keys
