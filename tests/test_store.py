"""The store's streaming download, against the S3-protocol test server over HTTP."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.errors import LatheError
from orchestrator.store import StoreConfig, fetch_missing, open_store
from tests.support.services import S3Server

SIZE = 128 << 20

MEASURE = """
import json, sys
from pathlib import Path
from orchestrator.evaluation.lanes import peak_rss_bytes
from orchestrator.errors import LatheError
from orchestrator.store import StoreConfig, fetch_missing, open_store
store = open_store(StoreConfig(uri=sys.argv[1], endpoint_url=sys.argv[2], region="us-east-1"))
store.stat("run/inputs/big.bin")  # the client and its connections exist before the baseline
before = peak_rss_bytes()
fetched = fetch_missing(store, "run/inputs/", Path(sys.argv[3]))
print(json.dumps({"fetched": fetched, "grew": peak_rss_bytes() - before}))
"""


@pytest.fixture(scope="module")
def s3():
    server = S3Server().start()
    yield server
    server.stop()


def test_fetch_missing_streams_a_large_object_to_disk(s3: S3Server, tmp_path: Path, figure) -> None:
    import json

    import boto3

    creds = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    client = boto3.client("s3", endpoint_url=s3.url, region_name="us-east-1", **creds)
    client.create_bucket(Bucket="inputs")
    data = os.urandom(SIZE)
    client.put_object(Bucket="inputs", Key="p/run/inputs/big.bin", Body=data)
    client.put_object(Bucket="inputs", Key="p/run/inputs/data/small.jsonl", Body=b'{"a": 1}\n')
    dest = tmp_path / "workdir"
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    proc = subprocess.run([sys.executable, "-c", MEASURE, "s3://inputs/p", s3.url, str(dest)], capture_output=True,
                          text=True, timeout=300, check=False, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert result["fetched"] == 2
    assert hashlib.sha256((dest / "big.bin").read_bytes()).digest() == hashlib.sha256(data).digest()
    assert (dest / "data" / "small.jsonl").read_bytes() == b'{"a": 1}\n'
    assert not [p for p in dest.rglob("*.fetch")], "no temporary file is left behind"
    # Reading it whole grows the peak by the object's size (134 MB); streaming, by the parts in flight.
    assert result["grew"] < SIZE // 2, f"peak memory grew by {result['grew'] / 1e6:.0f} MB for a 134 MB object"
    figure(f"fetch_missing of a {SIZE / 1e6:.0f} MB object: peak memory grew {result['grew'] / 1e6:.1f} MB")


def test_fetch_missing_skips_what_is_there_and_names_a_missing_object(tmp_path: Path) -> None:
    store = open_store(StoreConfig(uri=str(tmp_path / "store")))
    store.put_bytes(b"new", "run/inputs/a.txt")
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "a.txt").write_bytes(b"kept")
    assert fetch_missing(store, "run/inputs/", dest) == 0 and (dest / "a.txt").read_bytes() == b"kept"
    from orchestrator.errors import StoreError

    with pytest.raises(StoreError, match="not in the store"):
        store.get_file("run/inputs/none.txt", tmp_path / "x")


def test_a_key_that_leads_out_of_the_working_directory_is_refused_and_nothing_is_fetched(
        s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store can hold any key: `run/inputs/../../x` would land two folders above the job's working
    directory on the driver and on every worker. Refused in one line, before any object is fetched."""
    import boto3

    from orchestrator.errors import StoreError

    creds = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    client = boto3.client("s3", endpoint_url=s3.url, region_name="us-east-1", **creds)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    client.create_bucket(Bucket="traversal")
    client.put_object(Bucket="traversal", Key="p/run/inputs/a.jsonl", Body=b"{}\n")
    client.put_object(Bucket="traversal", Key="p/run/inputs/../../planted.txt", Body=b"x")
    store = open_store(StoreConfig(uri="s3://traversal/p", endpoint_url=s3.url, region="us-east-1"))
    dest = tmp_path / "job" / "workdir"
    dest.mkdir(parents=True)
    with pytest.raises(StoreError) as err:
        fetch_missing(store, "run/inputs/", dest)
    assert str(err.value).startswith("run/inputs/../../planted.txt: refused: ") and "\n" not in str(err.value)
    assert list(dest.iterdir()) == [], "nothing fetched, not even the clean key"
    assert not list(tmp_path.rglob("planted.txt"))


def test_a_symlink_in_the_working_directory_does_not_lead_a_fetch_out(tmp_path: Path) -> None:
    from orchestrator.errors import StoreError

    store = open_store(StoreConfig(uri=str(tmp_path / "store")))
    store.put_bytes(b"{}\n", "run/inputs/data/rows.jsonl")
    dest, elsewhere = tmp_path / "workdir", tmp_path / "elsewhere"
    dest.mkdir()
    elsewhere.mkdir()
    (dest / "data").symlink_to(elsewhere)
    with pytest.raises(StoreError, match=r"^run/inputs/data/rows\.jsonl: refused: .*through a symlink"):
        fetch_missing(store, "run/inputs/", dest)
    assert list(elsewhere.iterdir()) == []


PULL_INPUTS = """
import json, sys
from pathlib import Path
from orchestrator.evaluation.lanes import peak_rss_bytes
from orchestrator.remote.pull import _fetch_eval_set
from orchestrator.run import RunDir
from orchestrator.run.stored import StoredRun
from orchestrator.store import StoreConfig, open_store
store = open_store(StoreConfig(uri=sys.argv[1], endpoint_url=sys.argv[2], region="us-east-1"))
store.stat("run/inputs/data/train.jsonl")
before = peak_rss_bytes()
_fetch_eval_set(StoredRun(store, "run"), RunDir(Path(sys.argv[3])))
print(json.dumps({"grew": peak_rss_bytes() - before}))
"""


def test_a_pull_streams_the_training_set_its_held_out_questions_need(s3: S3Server, tmp_path: Path) -> None:
    """With held-out questions, `pull` fetches the training set their answers are compared with. It read
    each file whole into memory and wrote it in place; a 128 MB set now streams, into a temporary name."""
    import json

    import boto3
    import yaml

    client = boto3.client("s3", endpoint_url=s3.url, region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
    client.create_bucket(Bucket="pulls")
    row = json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a" * 200}]})
    data = ((row + "\n") * (SIZE // (len(row) + 1))).encode()
    client.put_object(Bucket="pulls", Key="runs/run/inputs/data/train.jsonl", Body=data)
    client.put_object(Bucket="pulls", Key="runs/run/inputs/data/heldout.jsonl", Body=b'{"id": "h", "prompt": "q"}\n')
    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.yml").write_text(yaml.safe_dump({
        "base_model": "tiny://llama", "datasets": [{"path": "data/train.jsonl", "type": "chat_template"}],
        "lathe": {"eval": {"heldout": "data/heldout.jsonl"}}}))
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    proc = subprocess.run([sys.executable, "-c", PULL_INPUTS, "s3://pulls/runs", s3.url, str(run)],
                          capture_output=True, text=True, timeout=300, check=False, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    fetched = run / "inputs" / "data" / "train.jsonl"
    assert fetched.stat().st_size == len(data) and (run / "inputs" / "data" / "heldout.jsonl").is_file()
    assert not list(run.rglob("*.fetch")), "no temporary file is left behind"
    grew = json.loads(proc.stdout)["grew"]
    assert grew < SIZE // 2, f"peak memory grew by {grew / 1e6:.0f} MB for a {len(data) / 1e6:.0f} MB training set"


def test_the_runs_a_store_holds_are_listed_one_level_deep(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """`lathe runs --cluster`: run folders by S3's delimiter, not every checkpoint object under them."""
    import boto3

    from orchestrator.run.stored import find_stored, stored_runs

    client = boto3.client("s3", endpoint_url=s3.url, region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
    client.create_bucket(Bucket="listing")
    for key in ("team/run-a/run.json", "team/run-a/ray/ckpt/deep/file", "team/run-b/run.json",
                "team/scratch/file", "elsewhere/run-c/run.json"):
        client.put_object(Bucket="listing", Key=key, Body=b"{}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    store = open_store(StoreConfig(uri="s3://listing/team", endpoint_url=s3.url, region="us-east-1"))
    assert store.folders() == ["run-a", "run-b", "scratch"]
    assert stored_runs(store) == ["run-a", "run-b"]
    assert find_stored(store, "run-b") == "run-b"
    with pytest.raises(LatheError, match="matches several runs"):
        find_stored(store, "run-")
