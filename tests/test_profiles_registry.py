"""Cluster profiles and the run registry: the laptop-side bookkeeping of remote runs."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import pytest
import yaml

from orchestrator import profiles, registry
from orchestrator.errors import LatheError
from orchestrator.store import LocalStore, put_tree
from tests.support.cli import LATHE


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LATHE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("LATHE_CLUSTERS", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _profile(uri: str = "s3://bucket/prefix") -> dict:
    return {"ray_address": "http://head:8265", "store": {"uri": uri, "endpoint_url": "http://s3:9000"}}


def test_project_file_overrides_the_user_file_entry_by_entry(home: Path) -> None:
    saved = profiles.save(profiles.ClusterProfile(name="colo", **_profile("s3://user/one")))
    profiles.save(profiles.ClusterProfile(name="cloud", **_profile("s3://user/two")))
    assert saved == home / "config" / "lathe" / "clusters.yml"
    (home / profiles.PROJECT_FILE).write_text(yaml.safe_dump({"clusters": {"colo": _profile("s3://project/x")}}))
    found = profiles.load_all()
    assert found["colo"].store.uri == "s3://project/x" and found["cloud"].store.uri == "s3://user/two"
    with pytest.raises(LatheError, match=r"cluster 'nope': no such profile \(known: cloud, colo"):
        profiles.get("nope")


def test_a_bad_profile_names_the_file_and_the_field(home: Path) -> None:
    path = home / "clusters.yml"
    path.write_text(yaml.safe_dump({"clusters": {"colo": {**_profile(), "store": {"uri": "ftp://x"}}}}))
    proc = subprocess.run([str(LATHE), "status", "anything"], env={"LATHE_CLUSTERS": str(path),
                          "LATHE_HOME": str(home / "home"), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (f"run 'anything': not in this machine's registry ({home / 'home' / 'registry.db'}); "
                                   "see `lathe runs`, or `lathe runs --cluster NAME` for the runs in a cluster's store")
    with pytest.raises(LatheError, match=r"clusters.yml: clusters.colo.store.uri: unsupported store 'ftp://x'"):
        profiles._read(path)


def test_registry_survives_concurrent_writers_and_resolves_prefixes(home: Path) -> None:
    def add(n: int) -> None:
        registry.add(f"run-{n:02d}-x", "colo", f"run-{n:02d}-x", f"s3://b/run-{n:02d}-x", "r.yml")
        registry.update(f"run-{n:02d}-x", "RUNNING")

    threads = [threading.Thread(target=add, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    entries = registry.all_runs()
    assert len(entries) == 20 and {e.state for e in entries} == {"RUNNING"}
    assert registry.find("run-07").run_id == "run-07-x"
    assert registry.find("run-0") is None, "an ambiguous prefix resolves to nothing"


def test_a_prefix_is_matched_literally_not_as_a_pattern(home: Path) -> None:
    """`_` in LIKE is any character: "my_run" found "my-run-1", a run of another name."""
    registry.add("my-run-1", "colo", "my-run-1", "s3://b/my-run-1", "r.yml")
    assert registry.find("my_run") is None
    assert registry.find("my%") is None and registry.find("my-r").run_id == "my-run-1"
    registry.add("my_run-2", "colo", "my_run-2", "s3://b/my_run-2", "r.yml")
    assert registry.find("my_r").run_id == "my_run-2", "the underscore is itself"


def test_a_run_id_drawn_twice_is_drawn_again(home: Path) -> None:
    """Submits of one recipe in the same second can draw one id: the second draw gets a fresh one."""
    draws = iter(["q-20261201-000000-aaaa", "q-20261201-000000-aaaa", "q-20261201-000000-bbbb"])
    first = registry.add_new(lambda: next(draws), "c", lambda rid: f"s3://b/{rid}", "q.yml")
    second = registry.add_new(lambda: next(draws), "c", lambda rid: f"s3://b/{rid}", "q.yml")
    assert (first.run_id, second.run_id) == ("q-20261201-000000-aaaa", "q-20261201-000000-bbbb")
    assert second.store_uri == "s3://b/q-20261201-000000-bbbb" and second.job_id == second.run_id
    assert [e.run_id for e in registry.all_runs()] == [first.run_id, second.run_id]


def test_local_store_uploads_the_manifest_last(tmp_path: Path) -> None:
    src = tmp_path / "export"
    (src / "gguf").mkdir(parents=True)
    (src / "gguf" / "model-q4_k_m.gguf").write_bytes(b"x" * 1000)
    (src / "manifest.json").write_text("{}")
    seen: list[str] = []
    store = LocalStore(tmp_path / "store")
    original = store.put_file
    store.put_file = lambda local, key: (seen.append(key), original(local, key))  # type: ignore[method-assign]
    put_tree(store, src, "run/export", last="manifest.json")
    assert seen[-1] == "run/export/manifest.json" and len(seen) == 2
    assert store.stat("run/export/gguf/model-q4_k_m.gguf").size == 1000
    with pytest.raises(LatheError, match="outside the store"):
        store.get_bytes("../../etc/passwd")
