"""Laptop-side faults on real files: hostile or broken manifests, and a disk that fills up mid-pull.

The store is a real LocalStore (the same interface S3 goes through); the run in it
is built here from random bytes with a manifest written by orchestrator.manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator import manifest as mf
from orchestrator.errors import LatheError
from orchestrator.remote.pull import PART_SUFFIX, pull
from orchestrator.store import open_store
from tests.support.needs import require

RUN = "faults-20261122-000000-abcd"
SIZES = {"gguf/model-q4_k_m.gguf": 3_000_000, "gguf/model-q8_0.gguf": 5_000_000, "reference/ref.json": 2_000}


def _make_run(store_root: Path, tweak: Callable[[dict, Path], None] | None = None) -> Path:
    export = store_root / RUN / "export"
    artifacts = []
    for rel, size in SIZES.items():
        path = export / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        data = os.urandom(size)
        path.write_bytes(data)
        level = rel.split("-")[-1].removesuffix(".gguf") if rel.startswith("gguf/") else None
        artifacts.append({"path": rel, "size": size, "sha256": hashlib.sha256(data).hexdigest(),
                          "format": "gguf" if level else "reference", "level": level})
    manifest = {"run_id": RUN, "recipe_sha256": "0" * 64, "base_model": "tiny://llama", "parameters": 1,
                "tokenizer_fingerprint": "f" * 16, "versions": {}, "artifacts": artifacts}
    if tweak:
        tweak(manifest, export)
    (export / mf.MANIFEST).write_text(json.dumps(manifest))
    return export


def _everything_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _set_path(index: int, value: str) -> Callable[[dict, Path], None]:
    return lambda m, _export: m["artifacts"][index].update(path=value)


def _flip_a_byte(m: dict, export: Path) -> None:
    target = export / m["artifacts"][0]["path"]
    data = bytearray(target.read_bytes())
    data[1234] ^= 0xFF
    target.write_bytes(bytes(data))


def _remove_file(m: dict, export: Path) -> None:
    (export / m["artifacts"][1]["path"]).unlink()


def _wrong_size(m: dict, _export: Path) -> None:
    m["artifacts"][2]["size"] += 1


def _duplicate_entry(m: dict, _export: Path) -> None:
    m["artifacts"].append(dict(m["artifacts"][0], level="q4_k_m"))


# (tweak, what the one-line error must say)
MANIFEST_FAULTS = {
    "parent-escape": (_set_path(0, "../../etc/passwd"), "etc/passwd"),
    "absolute-path": (_set_path(0, "/etc/passwd"), "/etc/passwd"),
    "home-path": (_set_path(0, "~/.ssh/id_ed25519"), "~/.ssh/id_ed25519"),
    "backslash-path": (_set_path(0, "..\\..\\evil.dll"), "evil.dll"),
    "empty-path": (_set_path(0, ""), "path"),
    "bad-sha256": (lambda m, _e: m["artifacts"][0].update(sha256="zz" * 32), "sha256"),
    "unknown-format": (lambda m, _e: m["artifacts"][0].update(format="pickle"), "format"),
    "extra-field": (lambda m, _e: m["artifacts"][0].update(exec="rm -rf /"), "exec"),
    "negative-size": (lambda m, _e: m["artifacts"][0].update(size=-5), "size"),
    "missing-run-id": (lambda m, _e: m.pop("run_id"), "run_id"),
    "sha256-mismatch": (_flip_a_byte, "sha256 of the store's copy does not match"),
    "file-missing-in-store": (_remove_file, "in the manifest but not in the store"),
    "size-mismatch": (_wrong_size, "in the manifest"),
}


@pytest.mark.parametrize("fault", sorted(MANIFEST_FAULTS))
def test_a_bad_manifest_is_refused_and_nothing_lands_outside_the_run(fault: str, tmp_path: Path) -> None:
    tweak, message = MANIFEST_FAULTS[fault]
    store_root, dest = tmp_path / "store", tmp_path / "laptop" / "runs"
    _make_run(store_root, tweak)
    dest.mkdir(parents=True)
    before_tmp = _everything_under(tmp_path / "laptop")
    with pytest.raises(LatheError) as err:
        pull(open_store(str(store_root)), RUN, dest, threads=4, part_size=1 << 20)
    text = str(err.value)
    assert message in text and "\n" not in text.strip(), text
    assert isinstance(err.value, mf.ManifestError) and err.value.exit_code == 3
    # Nothing outside the run's directory, and nothing inside it under a final name unverified.
    outside = _everything_under(tmp_path / "laptop") - before_tmp
    assert all(p.startswith(f"runs/{RUN}") or p == "runs" for p in outside), outside
    for rel, size in SIZES.items():
        final = dest / RUN / "export" / rel
        if final.exists():
            assert mf.sha256_file(final) == hashlib.sha256((store_root / RUN / "export" / rel).read_bytes()) \
                .hexdigest() and final.stat().st_size == size
    assert not (dest / RUN / "export" / mf.MANIFEST).exists(), "the manifest is written only after every file"
    assert not (tmp_path / "etc").exists() and not (tmp_path / "evil.dll").exists()


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 4 MB tmpfs: the pull's destination fills up after the first file."""
    require("root", why="mounting a tmpfs")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_stops_the_pull_cleanly_and_it_resumes_when_space_returns(small_disk: Path, tmp_path: Path,
                                                                               figure) -> None:
    store_root = tmp_path / "store"
    _make_run(store_root)
    store = open_store(str(store_root))
    with pytest.raises(LatheError) as err:
        pull(store, RUN, small_disk, threads=2, part_size=1 << 20)
    assert "No space left on device" in str(err.value) and "\n" not in str(err.value).strip()
    export = small_disk / RUN / "export"
    for rel in SIZES:
        final = export / rel
        if final.exists():  # only a file that was complete and verified before the disk filled
            assert mf.sha256_file(final) == mf.sha256_file(store_root / RUN / "export" / rel)
    assert not (export / mf.MANIFEST).exists()
    assert list(export.rglob(f"*{PART_SUFFIX}")), "the partial download stays resumable, under a part name"

    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    stats = pull(store, RUN, small_disk, threads=2, part_size=1 << 20)
    mf.verify_present(export)
    assert not list(export.rglob(f"*{PART_SUFFIX}"))
    total = sum(SIZES.values())
    figure(f"full disk: {stats.bytes_present / 1e6:.1f} MB kept from the first attempt, "
          f"{stats.bytes_fetched / 1e6:.1f} MB fetched after space returned ({total / 1e6:.1f} MB in all)")
    assert stats.bytes_present > 0 and stats.bytes_fetched < total


def test_a_manifest_traversal_cannot_be_smuggled_through_a_symlink(tmp_path: Path) -> None:
    """A symlink in the destination pointing outside is not followed for writes."""
    store_root, dest = tmp_path / "store", tmp_path / "runs"
    _make_run(store_root)
    outside = tmp_path / "outside"
    outside.mkdir()
    (dest / RUN / "export").mkdir(parents=True)
    (dest / RUN / "export" / "gguf").symlink_to(outside, target_is_directory=True)
    with pytest.raises(LatheError) as err:
        pull(open_store(str(store_root)), RUN, dest, threads=2, part_size=1 << 20)
    assert "outside" in str(err.value) or "symlink" in str(err.value), str(err.value)
    assert not any(outside.iterdir()), "nothing was written through the link"
    shutil.rmtree(dest)


@pytest.mark.parametrize(("record", "lost"), [
    ({}, True),  # the driver died before it wrote anything
    ({"state": "RUNNING"}, True),  # killed mid-training: nothing recorded
    ({"state": "EXPORTING"}, True),
    ({"state": "FAILED", "error_kind": "infrastructure"}, True),
    ({"state": "FAILED", "error_kind": "recipe"}, False),  # a recipe error would only fail again
    ({"state": "FAILED"}, False),
    ({"state": "SUCCEEDED"}, False),
    ({"state": "STOPPED"}, False),
])
def test_only_infrastructure_failures_count_as_a_lost_driver(record: dict, lost: bool) -> None:
    from orchestrator.remote.status import driver_lost
    from orchestrator.run.layout import RunRecord

    assert driver_lost(RunRecord.model_validate(record)) is lost


def test_resubmission_is_bounded_and_refused_when_the_recipe_changed(tmp_path: Path, quickstart: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator import registry
    from orchestrator.profiles import ClusterProfile
    from orchestrator.recipe import load as recipe_load
    from orchestrator.remote.status import _resubmit
    from orchestrator.run.layout import RunRecord
    from orchestrator.store import StoreConfig

    monkeypatch.setenv("LATHE_HOME", str(tmp_path / "home"))
    profile = ClusterProfile(name="c", ray_address="http://127.0.0.1:9", store=StoreConfig(uri=str(tmp_path)))
    recipe = recipe_load(quickstart)
    entry = registry.add("q-1", "c", "q-1-a3", str(tmp_path / "q-1"), str(quickstart))
    assert registry.attempt(entry) == 3 and registry.attempt(registry.add("q-2", "c", "q-2", "", "")) == 1
    state, detail = _resubmit(entry, profile, RunRecord(recipe_sha256=recipe.sha256), "job driver lost (exit -9)")
    assert state == "FAILED" and "gave up after 3 attempts (lathe.failure.max_resubmits: 2)" in detail
    first = registry.add("q-3", "c", "q-3", str(tmp_path / "q-3"), str(quickstart))
    state, detail = _resubmit(first, profile, RunRecord(recipe_sha256="0" * 64), "job driver lost")
    assert state == "FAILED" and "changed since the run started" in detail


def test_the_store_sync_rides_out_a_store_outage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The S3 server goes away mid-run and comes back: the job's sync neither dies nor loses lines."""
    import logging

    import boto3
    from botocore.exceptions import EndpointConnectionError

    from orchestrator.cluster.job import StoreSync
    from orchestrator.run.layout import RunDir
    from orchestrator.store import StoreConfig
    from tests.support.services import S3Server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "outage-test")
    server = S3Server().start()
    try:
        endpoint = server.url
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="outage")
        store = open_store(StoreConfig(uri="s3://outage/runs", endpoint_url=endpoint, region="us-east-1"))
        run = RunDir(tmp_path / "run")
        run.path.mkdir()
        run.update(run_id="r1", state="RUNNING")
        metrics = run.path / "metrics.jsonl"
        metrics.write_text('{"step": 1}\n')
        sync = StoreSync(store, run, "r1", final_tries=1)  # each failing call already spends botocore's retries
        sync(force=True)
        assert store.get_bytes("r1/metrics.jsonl") == metrics.read_bytes()

        server.stop()
        with metrics.open("a") as fh:
            fh.write('{"step": 2}\n')
        sync.last = 0.0
        sync()  # the store is unreachable: reported, not raised
        assert sync.failures == 1
        with pytest.raises(EndpointConnectionError):  # the final sync does give up in the end
            sync(force=True)

        server.start()
        sync.last = 0.0
        sync()
        assert sync.failures == 0
        assert store.get_bytes("r1/metrics.jsonl") == metrics.read_bytes(), "the lines written during the outage"
    finally:
        server.stop()


def test_training_failures_from_outside_the_recipe_count_as_infrastructure() -> None:
    """What decides whether the laptop may resubmit a failed run: Ray Train's own error objects."""
    from ray.exceptions import ActorDiedError
    from ray.train import ControllerError, WorkerGroupError

    from orchestrator.cluster.driver import caused_by_infrastructure

    assert caused_by_infrastructure(ControllerError(OSError("When writing the snapshot: AWS Error NETWORK_CONNECTION")))
    assert caused_by_infrastructure(WorkerGroupError("lost", {0: ActorDiedError()}))
    assert caused_by_infrastructure(WorkerGroupError("upload", {0: OSError("AWS Error NETWORK_CONNECTION")}))
    assert not caused_by_infrastructure(WorkerGroupError("bug", {0: ValueError("sequence_len must be > 0")}))
    assert not caused_by_infrastructure(KeyError("not a Ray Train failure"))


def test_a_store_that_dies_mid_pull_is_one_line_and_the_next_pull_resumes(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The S3 server stops in the middle of a part: the pull ends at once with one line naming the store
    and the run (parts still queued are never tried), keeps what arrived, and resumes once it is back. A
    file whose bytes had all arrived (q4_k_m's 12 parts, before the 14th GET) is verified and takes its
    final name at once: it used to stay a partial file until the next pull."""
    import boto3

    from orchestrator.errors import StoreError
    from orchestrator.store import S3Store, StoreConfig
    from tests.support.services import S3Server

    class Counting(S3Store):
        ranges = 0

        def read_range(self, key: str, start: int, end: int):
            Counting.ranges += 1
            return super().read_range(key, start, end)

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    local = tmp_path / "made"
    export = _make_run(local)
    server = S3Server().start()
    try:
        client = boto3.client("s3", endpoint_url=server.url, region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing")
        client.create_bucket(Bucket="runs")
        for path in sorted(p for p in export.rglob("*") if p.is_file()):
            client.upload_file(str(path), "runs", f"{RUN}/export/{path.relative_to(export).as_posix()}")
        store = Counting(StoreConfig(uri="s3://runs", endpoint_url=server.url, region="us-east-1"))
        gets = []

        def fourteenth_part(method: str, path: str, _query: str) -> bool:
            if method == "GET" and path.endswith(".gguf"):
                gets.append(path)
            return len(gets) == 14

        server.stop_during(fourteenth_part)
        dest, part, threads = tmp_path / "pulled", 256 * 1024, 2
        parts = sum(-(-size // part) for size in SIZES.values())
        with pytest.raises(StoreError) as err:
            pull(store, RUN, dest, threads=threads, part_size=part)
        message = str(err.value)
        assert "\n" not in message and message.startswith(f"pull {RUN}: the store s3://runs failed")
        assert message.endswith("partial files are kept and the next pull resumes them")
        tried = Counting.ranges
        assert tried <= 14 + threads < parts, f"{tried} of {parts} parts tried after the store went away"
        assert list((dest / RUN / "export").rglob(f"*{PART_SUFFIX}")), "what arrived is kept"
        whole = dest / RUN / "export" / "gguf" / "model-q4_k_m.gguf"
        assert whole.is_file() and whole.stat().st_size == SIZES["gguf/model-q4_k_m.gguf"], \
            "the file that had all arrived was left partial"
        assert not whole.with_name(whole.name + PART_SUFFIX).exists()

        server.start()
        stats = pull(store, RUN, dest, threads=threads, part_size=part)
        assert stats.bytes_fetched < stats.bytes_total, "resumed, not started over"
        mf.verify(dest / RUN / "export")
    finally:
        server.stop()


def test_another_laptop_finds_and_pulls_a_run_by_the_store_not_its_registry(tmp_path: Path) -> None:
    """Only the laptop that submitted could pull: `lathe pull RUN` looked in the local registry alone. A
    teammate's (here: an empty LATHE_HOME) lists the cluster's store and pulls by id or prefix."""
    import yaml

    from tests.support.cli import lathe

    store = tmp_path / "store"
    _make_run(store)
    (store / RUN / "run.json").write_text(json.dumps({"run_id": RUN, "state": "SUCCEEDED", "attempt": 2}))
    (store / "not-a-run" / "notes").mkdir(parents=True)  # a folder with no run.json is not listed
    clusters = tmp_path / "clusters.yml"
    clusters.write_text(yaml.safe_dump({"clusters": {"team": {"ray_address": "http://127.0.0.1:9",
                                                              "store": {"uri": store.as_uri()}}}}))
    env = {**os.environ, "LATHE_HOME": str(tmp_path / "fresh-laptop"), "LATHE_CLUSTERS": str(clusters)}
    refused = lathe("pull", RUN, "--runs-dir", str(tmp_path / "runs"), env=env)
    assert refused.returncode == 1 and "lathe runs --cluster NAME" in refused.stderr, refused.stderr
    listed = lathe("runs", "--cluster", "team", env=env)
    assert listed.returncode == 0 and RUN in listed.stdout and "SUCCEEDED" in listed.stdout
    assert "not-a-run" not in listed.stdout
    pulled = lathe("pull", RUN[:12], "--cluster", "team", "--runs-dir", str(tmp_path / "runs"), env=env)
    assert pulled.returncode == 0, pulled.stderr
    mf.verify(tmp_path / "runs" / RUN / "export")
    unknown = lathe("pull", "nothing-like-it", "--cluster", "team", "--runs-dir", str(tmp_path / "runs"), env=env)
    assert unknown.returncode == 1 and "is not in the store" in unknown.stderr.strip().splitlines()[-1]
