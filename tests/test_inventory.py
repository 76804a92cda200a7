"""Inventories: the example loads, and each kind of mistake is one line naming the file and field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from orchestrator.colo.inventory import load
from orchestrator.colo.provision import profile_for, scrape_targets
from orchestrator.errors import LatheError

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "infra" / "colo" / "inventory.example.yml"


def test_the_example_inventory_loads_and_defaults_apply_per_host() -> None:
    inv = load(EXAMPLE)
    assert inv.head.name == "gpu1" and [h.name for h in inv.workers] == ["gpu2", "gpu3"]
    assert all(h.user == "ubuntu" and h.min_free_disk_gb == 100 for h in inv.hosts)
    profile = profile_for(inv)
    assert profile.ssh_tunnel is not None and profile.ray_address == "http://127.0.0.1:8265"
    assert [t["targets"] for t in scrape_targets(inv)["gpus"]] == [["10.0.0.5:9400"], ["10.0.0.6:9400"],
                                                                    ["10.0.1.7:9400"]]


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d["hosts"][1].update(role="head"), "inventory: exactly one host must have role: head (found 2)"),
    (lambda d: d["hosts"][2].update(proxy_jump="nowhere"), "proxy_jump 'nowhere' is not another host"),
    (lambda d: d["hosts"][0].update(gpus=-1), "hosts[0].gpus: Input should be greater than or equal to 0"),
    (lambda d: d["hosts"][0].update(name="../etc"), "hosts[0].name: String should match pattern"),
    (lambda d: d.pop("store"), "store: Field required"),
    (lambda d: d.update(hosts=[]), "hosts: List should have at least 1 item"),
    (lambda d: d["hosts"][1].update(sudo=True), "hosts[1].sudo: Extra inputs are not permitted"),
    (lambda d: d["hosts"].append(dict(d["hosts"][1])), "host names must be unique"),
    (lambda d: d.update(node_env={"kind": "venv"}), "node_env: node_env.kind venv needs a wheelhouse or an index_url"),
    (lambda d: d["hosts"][1].update(min_driver="latest"), "hosts[1].min_driver: String should match pattern"),
])
def test_a_bad_inventory_is_refused_with_the_field_named(tmp_path: Path, change, message: str) -> None:
    data = yaml.safe_load(EXAMPLE.read_text())
    change(data)
    path = tmp_path / "inv.yml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(LatheError) as err:
        load(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value), str(err.value)
    assert "\n" not in str(err.value)


def test_the_cli_exits_non_zero_on_a_malformed_inventory(tmp_path: Path) -> None:
    path = tmp_path / "inv.yml"
    path.write_text("name: colo\nhosts: [\n")
    proc = subprocess.run([str(Path(sys.executable).with_name("lathe")), "cluster", "up", str(path)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 1 and proc.stderr.startswith(f"{path}: invalid YAML")


# What preflight's facts script printed on a real GPU host (one H100, driver 580; no Ray there). One
# value edited: `orchestrator` was importable there only from the copied checkout, so it reads null.
H100_FACTS = """home=/root
os=Linux
arch=x86_64
user=root
py={"python": "3.12.3", "executable": "/opt/torch/.venv/bin/python3", "venv": "yes", "ray": null, "orchestrator": null}
disk_kb=67091116
bin_nvidia-smi=/usr/local/nvidia/bin/nvidia-smi
gpu=NVIDIA H100 80GB HBM3, 580.159.04
"""


@pytest.mark.parametrize(("gpus", "gpu_problem"), [(1, False), (2, True)])
def test_preflight_reads_a_gpu_hosts_facts(gpus: int, gpu_problem: bool) -> None:
    from orchestrator.colo import nodes
    from orchestrator.colo.inventory import Inventory
    from orchestrator.colo.preflight import _host_problems
    from orchestrator.colo.services import services_for

    inv = Inventory.model_validate({"name": "gpu", "store": {"uri": "s3://b/p"}, "hosts": [
        {"name": "h100", "address": "10.0.0.9", "role": "head", "gpus": gpus, "accelerator": "H100"}]})
    node = nodes.Node(inv.hosts[0], conn=None)
    node.sh = lambda *_a, **_k: H100_FACTS
    facts = nodes.gather_facts(node)
    assert facts["gpu"] == ["NVIDIA H100 80GB HBM3, 580.159.04"] and node.home == "/root"
    problems = _host_problems(inv, node, "2.60.0")
    assert any("has no ray" in p for p in problems)
    assert any(f"declares {gpus} GPUs, nvidia-smi shows: NVIDIA H100" in p for p in problems) is gpu_problem
    argv = services_for(inv, node)[0].argv
    assert argv[0] == "/opt/torch/.venv/bin/ray" and argv[argv.index("--num-gpus") + 1] == str(gpus)
    import json

    assert json.loads(argv[argv.index("--resources") + 1]) == {"accelerator_type:H100": 1, "lathe_run_slot": 4}
    assert services_for(inv, node)[0].env["RAY_JOB_START_TIMEOUT_SECONDS"] == "604800", "queued runs may wait"
