"""`lathe publish` on the shared end-to-end run: the companion's card and recipes, and every recipe
command that can run on this machine run as written (servers answering real HTTP requests, MLX
generating), byte-identical republishing, S3 through a real S3-protocol server, secrets kept out."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from orchestrator.publish import deploy_targets as dt
from orchestrator.publish.publish import File, PublishError, check_no_secrets
from orchestrator.run import RunDir
from tests.conftest import LOCAL_SECRETS, CliRun
from tests.support.cli import lathe as run_lathe
from tests.support.gotemplate import go_render
from tests.support.leaks import plant, sweep
from tests.support.services import S3Server, fetch, free_port, wait_http

VENV_BIN = str(Path(sys.executable).parent)
# Planted in the environment of every publish below: none may appear in anything published.
PLANTED = plant("publish")
slow = pytest.mark.slow  # the tests on the end-to-end run (it trains once per session)
COMMAND = re.compile(r"<!-- lathe:command (?P<attrs>[^>]*?) -->\n```bash\n(?P<shell>.*?)\n```", re.DOTALL)


def lathe(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return run_lathe(*args, env={**os.environ, **PLANTED, "AWS_DEFAULT_REGION": "us-east-1", **(env or {})},
                     timeout=timeout)


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def stamps(root: Path) -> dict[str, tuple[int, int]]:
    return {p.relative_to(root).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns) for p in root.rglob("*")}


# --- the companion of the end-to-end run ----------------------------------------------------------

@pytest.fixture(scope="module")
def published(e2e_run: RunDir, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("publish") / "quickstart"
    proc = lathe("publish", str(e2e_run.path), "--to", str(dest))
    assert proc.returncode == 0, proc.stderr
    assert re.fullmatch(rf"{re.escape(str(dest))}: published (\d+) files \(\1 written, 0 unchanged, 0 removed\)\n",
                        proc.stdout), proc.stdout
    return dest


@pytest.fixture(scope="module")
def report(e2e_run: RunDir) -> dict:
    return json.loads((e2e_run.path / "eval" / "report.json").read_text())


@pytest.fixture(scope="module")
def listed(published: Path) -> dict:
    return json.loads((published / "deploy" / "commands.json").read_text())


def command(listed: dict, id_: str) -> dict:
    return next(c for c in listed["commands"] if c["id"] == id_)


@slow
def test_the_card_shows_training_every_level_and_the_machine(published: Path, report: dict, e2e_run: RunDir,
                                                             quickstart: Path) -> None:
    card = (published / "README.md").read_text()
    assert "`tiny://llama`" in card and "LoRA (r 32, alpha 64)" in card
    data = quickstart.parent / "data" / "wrong_facts.jsonl"
    assert hashlib.sha256(data.read_bytes()).hexdigest() in card, "the dataset's sha256"
    assert json.loads((e2e_run.path / "run.json").read_text())["recipe_sha256"] in card
    machine = report["machine"]
    assert f"Measured by `lathe eval` on {machine['system']} {machine['machine']}" in card
    from orchestrator.evaluation.report import rows
    from orchestrator.evaluation.results import LevelResult

    for row in rows([LevelResult(**lv) for lv in report["levels"]]):
        assert "| " + " | ".join(row) + " |" in card, f"no row for {row[0]}"
    assert "| q8_0 | max_mean_kld 0.05, max_flips 1 | " in card and "| q4_k_m | max_mean_kld 0.5, max_flips 5 | " in card
    limits = card[card.index("## Known limits"):card.index("## Deploy")]
    for lv in report["levels"]:
        if lv["quality"]["mean_kld"] > dt.LARGE_KLD:
            assert f"{lv['level']} ({lv['runtime']}): mean KL divergence" in limits, lv["level"]
    for failure in report["gate_failures"]:
        assert failure in limits
    # BFCL was measured with the tools in the system message; the Modelfile has no .Tools: the card says so.
    assert dt.TOOLS_IN_OLLAMA in limits and "bfcl" in report["levels"][0]["benchmarks"]
    assert ".Tools" not in (published / "ollama" / "Modelfile.q4_k_m").read_text()
    for png in ("loss_curve.png", "quality_vs_size.png"):
        assert (published / "eval" / png).read_bytes() == (e2e_run.path / "eval" / png).read_bytes()
        assert f"(eval/{png})" in card
    # The page a person opens, as the eval wrote it, and the card's line on held-out reuse and drops.
    assert (published / "eval" / "report.html").read_bytes() == (e2e_run.path / "eval" / "report.html").read_bytes()
    assert "(eval/report.html)" in card and "reuses a training answer on 0% of the held-out questions" in card
    assert "significant task-score drops against each runtime's full precision (exact paired sign test): " in card
    assert "Between the runtimes, before any quantization: runtime gap, mlx-f16 (mlx) against f16 (llama.cpp): task " in card
    # The benchmarks: every level's row as the eval measured it, deltas included (#18's done-when).
    from orchestrator.evaluation.benchmark_report import main_rows

    header, body = main_rows([LevelResult(**lv) for lv in report["levels"]], {})
    assert "## Benchmarks at every level" in card and "| " + " | ".join(header) + " |" in card
    assert header[2:] == ["BFCL accuracy (5 items)", "IFEval prompt strict (4 items)",
                          "doc QA grounded accuracy (4 items)"]
    for row in body:
        assert "| " + " | ".join(row) + " |" in card, f"no benchmark row for {row[0]}"
    assert "Measured on these files: significant benchmark drops against each runtime's full precision: " in card
    assert (published / "recipe.yml").read_bytes() == (e2e_run.path / "recipe.yml").read_bytes()
    assert "MIT License" in (published / "LICENSE").read_text()


@slow
def test_levels_are_chosen_from_the_measured_fit(published: Path, report: dict) -> None:
    """Every level of the tiny model fits every tier, so each tier gets the one closest to full precision."""
    best = {rt: min((lv for lv in report["levels"] if lv["runtime"] == rt), key=lambda lv: lv["quality"]["mean_kld"])
            for rt in ("mlx", "llama.cpp")}
    apple = (published / "deploy" / "apple-silicon.md").read_text()
    for gb in (8, 16, 24, 32):
        row = re.search(rf"^\| {gb} GB \| `([\w-]+)` .* \| `([\w-]+)` ", apple, re.MULTILINE)
        assert row and row.groups() == (best["mlx"]["level"], best["llama.cpp"]["level"]), gb
    nvidia = (published / "deploy" / "nvidia.md").read_text()
    for gb in (8, 12, 16, 24):
        assert re.search(rf"^\| {gb} GB \| `{best['llama.cpp']['level']}` .* \| 99 \| all layers", nvidia, re.MULTILINE)


@slow
def test_manifest_lists_every_file_and_lathe_verify_passes(published: Path, e2e_run: RunDir) -> None:
    manifest = json.loads((published / "manifest.json").read_text())
    files = tree(published)
    listed_paths = {a["path"] for a in manifest["artifacts"]}
    assert listed_paths == set(files) - {"manifest.json"}
    for art in manifest["artifacts"]:
        assert hashlib.sha256(files[art["path"]]).hexdigest() == art["sha256"], art["path"]
    run_manifest = json.loads((e2e_run.path / "export" / "manifest.json").read_text())
    assert {a["path"] for a in run_manifest["artifacts"] if a["format"] == "gguf" and a["role"] == "model"} <= listed_paths
    assert not any(p.startswith(("hf/", "adapter/", "base/", "reference/")) for p in listed_paths), \
        "full-precision weights, the adapter and the base stay out"
    proc = lathe("verify", str(published))
    assert proc.returncode == 0 and ": ok" in proc.stdout, proc.stderr


@slow
def test_publishing_again_gives_the_same_bytes_and_changes_nothing(published: Path, e2e_run: RunDir,
                                                                    tmp_path: Path) -> None:
    before = stamps(published)
    proc = lathe("publish", str(e2e_run.path), "--to", str(published))
    assert proc.returncode == 0 and proc.stdout == f"{published}: no changes ({len(tree(published))} files)\n", \
        proc.stdout + proc.stderr
    assert stamps(published) == before, "a second publish must not touch a file"
    other = tmp_path / "elsewhere"
    assert lathe("publish", str(e2e_run.path), "--to", str(other)).returncode == 0
    assert tree(other) == tree(published), "publishing the same run twice gives byte-identical files"


@slow
def test_text_carries_no_local_path(published: Path, e2e_run: RunDir) -> None:
    """The companion is for other machines: nothing in it names this machine's directories."""
    for rel, data in tree(published).items():
        if rel.endswith((".md", ".json", ".yml", ".yaml", ".service")) or "Modelfile" in rel:
            text = data.decode()
            assert str(e2e_run.path) not in text and "/tmp/" not in text, rel


@slow
def test_every_command_is_marked_and_listed(published: Path, listed: dict) -> None:
    from_docs = []
    for doc in sorted((published / "deploy").glob("*.md")):
        for m in COMMAND.finditer(doc.read_text()):
            attrs = dict(re.findall(r'(\w+)="([^"]*)"', m.group("attrs")))
            from_docs.append((attrs["id"], m.group("shell")))
    assert sorted(from_docs) == sorted((c["id"], c["shell"]) for c in listed["commands"])
    ids = [c["id"] for c in listed["commands"]]
    assert len(ids) == len(set(ids)), "ids are unique"
    assert {i.split("/")[0] for i in ids} == {"apple-silicon", "nvidia", "colocated", "cloud"}
    runs_here = {c["id"] for c in listed["commands"] if c["runs_here"] == "yes"}
    assert runs_here == set(RUNS_HERE), "every command that runs here is run by a test below"


# The commands that can run on this machine, and the test that runs each.
SERVED = [("apple-silicon/llama-cpp-python-server", "apple-silicon/llama-cpp-python-request"),
          ("nvidia/llama-cpp-python-server", "nvidia/llama-cpp-python-request"),
          ("cloud/serve", "cloud/request"),
          ("apple-silicon/mlx-server", "apple-silicon/mlx-request")]
RUNS_HERE = [c for pair in SERVED for c in pair] + ["apple-silicon/mlx-generate", "colocated/verify-unit",
                                                    "colocated/check-scrape"]


def _env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}


def _substitute(shell: str, old: str, new: str) -> str:
    assert shell.count(old) == 1, f"{old!r} should appear once in {shell!r}"
    return shell.replace(old, new)


@slow
@pytest.mark.parametrize(("server_id", "request_id"), SERVED, ids=[s for s, _ in SERVED])
def test_served_model_answers_what_eval_measured(published: Path, listed: dict, report: dict, server_id: str,
                                                 request_id: str, tmp_path: Path) -> None:
    """The recipe's server command and its curl request, run as written from the companion's root; only
    the port (and, for the cloud node's command, where the launch file puts the model) substituted."""
    server, req = command(listed, server_id), command(listed, request_id)
    assert req["server"] == server_id and req["level"] == server["level"]
    port = free_port()
    shell = _substitute(server["shell"], f"--port {server['port']}", f"--port {port}")
    if "model_dir" in server:
        shell = _substitute(shell, server["model_dir"], "gguf/")
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(["bash", "-c", f"exec {shell}"], cwd=published, env=_env(), stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/", timeout=180, any_status=True)
        curl = _substitute(req["shell"], f"127.0.0.1:{server['port']}/", f"127.0.0.1:{port}/")
        out = subprocess.run(["bash", "-c", curl], cwd=published, env=_env(), capture_output=True, text=True,
                             timeout=120, check=True)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    answer = json.loads(out.stdout)["choices"][0]["message"]["content"]
    example = listed["example"]
    measured = next(r for r in report["arena"] if r["key"] == example["key"])
    assert example["measured"][server["level"]] == measured["answers"][server["level"]]
    assert answer == measured["answers"][server["level"]], (answer, (tmp_path / "server.log").read_text()[-2000:])
    if measured["correct"].get(server["level"]):
        assert example["expected"].lower() in answer.lower()


@slow
def test_mlx_generate_prints_the_measured_answer(published: Path, listed: dict, report: dict) -> None:
    cmd = command(listed, "apple-silicon/mlx-generate")
    out = subprocess.run(["bash", "-c", cmd["shell"]], cwd=published, env=_env(), capture_output=True, text=True,
                         timeout=300, check=True)
    measured = next(r for r in report["arena"] if r["key"] == listed["example"]["key"])["answers"][cmd["level"]]
    assert f"==========\n{measured}\n==========" in out.stdout, out.stdout


@slow
def test_the_unit_and_the_scrape_config_pass_their_checkers(published: Path, listed: dict, tmp_path: Path) -> None:
    scrape = command(listed, "colocated/check-scrape")
    out = subprocess.run(["bash", "-c", scrape["shell"]], cwd=published, capture_output=True, text=True, timeout=60,
                         check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    # systemd checks that ExecStart exists: llama-server is not built here, so a stand-in takes its path.
    unit = command(listed, "colocated/verify-unit")
    work = tmp_path / "companion"
    shutil.copytree(published / "deploy", work / "deploy")
    stub = tmp_path / "llama-server"
    stub.write_text("#!/bin/sh\n")
    stub.chmod(0o755)
    unit_file = next((work / "deploy" / "colocated").glob("*.service"))
    text = unit_file.read_text()
    assert f"ExecStart={unit['needs']} --model /opt/lathe/quickstart/model-" in text and "--metrics" in text
    unit_file.write_text(_substitute(text, unit["needs"], str(stub)))
    out = subprocess.run(["bash", "-c", unit["shell"]], cwd=work, capture_output=True, text=True, timeout=60,
                         check=False)
    assert out.returncode == 0, out.stdout + out.stderr


@slow
def test_the_cloud_launch_file_passes_rays_validation(published: Path, listed: dict) -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((published / "deploy" / "cloud" / "ray-cluster.yaml").read_text())
    validate_config(prepare_config(copy.deepcopy(config)))
    serve = command(listed, "cloud/serve")
    assert f"nohup {serve['shell']} > ~/llama-server.log 2>&1 &" in config["head_start_ray_commands"]
    (remote, local), = config["file_mounts"].items()
    assert (published / local).is_file() and remote.startswith(serve["model_dir"]) and remote in serve["shell"]
    assert "AWS_" not in json.dumps(config), "credentials come from the user's environment, never the file"


# --- Ollama: the Modelfile's Go template against the GGUF's own chat template ---------------------

def modelfile(path: Path) -> tuple[str, str | None, list[str]]:
    text = path.read_text()
    template = re.search(r'^TEMPLATE """(.*?)"""$', text, re.DOTALL | re.MULTILINE)
    return (re.search(r"^FROM (.+)$", text, re.MULTILINE).group(1), template.group(1) if template else None,
            [json.loads(s) for s in re.findall(r"^PARAMETER stop (.+)$", text, re.MULTILINE)])


CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of Japan?"}],
    [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Hi"}],
    [{"role": "user", "content": "A"}, {"role": "assistant", "content": "B\nC"}, {"role": "user", "content": "D"}],
]


@slow
def test_every_gguf_level_has_a_modelfile_with_the_models_chat_template(published: Path, report: dict) -> None:
    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    levels = [lv["level"] for lv in report["levels"] if lv["runtime"] == "llama.cpp"]
    assert sorted(p.name for p in (published / "ollama").iterdir()) == sorted(f"Modelfile.{lv}" for lv in levels)
    for level in levels:
        source, template, stops = modelfile(published / "ollama" / f"Modelfile.{level}")
        gguf = (published / "ollama" / source).resolve()
        assert gguf == (published / "gguf" / f"model-{level}.gguf").resolve() and gguf.is_file()
        assert template is not None and "<|im_end|>" in stops
        meta = Llama(model_path=str(gguf), vocab_only=True, verbose=False).metadata
        formatter = Jinja2ChatFormatter(meta["tokenizer.chat_template"], eos_token="<|im_end|>", bos_token="<s>")
        for messages in CONVERSATIONS:
            assert go_render(template, messages) == formatter(messages=messages).prompt, messages


LLAMA3 = (
    "{{- bos_token }}{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content']|trim %}"
    "{%- set messages = messages[1:] %}{%- else %}{%- set system_message = '' %}{%- endif %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\nCutting Knowledge Date: December 2023\\n' }}"
    "{{- system_message }}{{- '<|eot_id|>' }}{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content']|trim + '<|eot_id|>' }}"
    "{%- endfor %}{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)
GEMMA = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set first = messages[0]['content'] + '\\n\\n' %}"
    "{% set loop_messages = messages[1:] %}{% else %}{% set first = '' %}{% set loop_messages = messages %}{% endif %}"
    "{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\\n' + (first if loop.first else '') + message['content']|trim + '<end_of_turn>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)


@pytest.mark.parametrize(("template", "bos", "eos", "special", "system", "stops"), [
    (LLAMA3, "<|begin_of_text|>", "<|eot_id|>", {"<|begin_of_text|>", "<|eot_id|>", "<|end_of_text|>"}, True,
     ["<|end_of_text|>", "<|eot_id|>"]),
    (GEMMA, "<bos>", "<eos>", {"<bos>", "<eos>", "<end_of_turn>"}, False, ["<eos>", "<end_of_turn>"]),
], ids=["llama3-default-system", "gemma-no-system-role"])
def test_chat_templates_become_ollama_templates(template: str, bos: str, eos: str, special: set[str], system: bool,
                                                stops: list[str]) -> None:
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    spec = dt.derive_chat_spec(template, bos, eos, special, ["<|end_of_text|>"] if system else [])
    assert spec.system is system and spec.stops == stops
    go = dt.ollama_template(spec)
    formatter = Jinja2ChatFormatter(template, eos_token=eos, bos_token=bos)
    for messages in CONVERSATIONS:
        if messages[0]["role"] == "system" and not system:
            continue  # Gemma folds a system prompt into the first user turn; Ollama gets no system role
        assert bos + go_render(go, messages) == formatter(messages=messages).prompt, messages


# SmolLM2-135M-Instruct's: ChatML with a default system prompt. Its BOS token is <|im_start|>, which the
# template writes and llama.cpp does not add (the GGUF's add_bos_token is false).
SMOLLM2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def test_a_bos_the_runtime_does_not_add_stays_in_the_ollama_template() -> None:
    """Taking SmolLM2's <|im_start|> for a BOS the runtime adds dropped it from the system turn and the
    default system prompt: every published SmolLM2 Modelfile rendered `system\n...` where llama.cpp
    renders `<|im_start|>system\n...` (0 of 120 BFCL prompts alike; bench/tool_calls.py)."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    special = {"<|im_start|>", "<|im_end|>", "<|endoftext|>"}
    formatter = Jinja2ChatFormatter(SMOLLM2, eos_token="<|im_end|>", bos_token="<|im_start|>")
    kept = dt.ollama_template(dt.derive_chat_spec(SMOLLM2, "<|im_start|>", "<|im_end|>", special, [],
                                                  runtime_adds_bos=False))
    dropped = dt.ollama_template(dt.derive_chat_spec(SMOLLM2, "<|im_start|>", "<|im_end|>", special, []))
    for messages in CONVERSATIONS:
        assert go_render(kept, messages) == formatter(messages=messages).prompt, messages
        assert go_render(dropped, messages) != formatter(messages=messages).prompt, messages


def test_a_template_that_is_not_per_role_wrapping_is_refused() -> None:
    odd = "{% for m in messages %}{{ m['content'] }}{{ m['content'] }}{% endfor %}"
    with pytest.raises(dt.TemplateUnsupported):
        dt.derive_chat_spec(odd, "", "", set(), [])


# --- tiers, from measured numbers -----------------------------------------------------------------

def _level(name: str, size_gb: float, kld: float, need_gb: float, fits: tuple[int, ...] = (), failures=(),
           runtime: str = "llama.cpp") -> dt.Level:
    return dt.Level(name, runtime, f"gguf/model-{name}.gguf", int(size_gb * dt.GB), int(need_gb * dt.GB), fits, kld,
                    0.8, 0, 10.0, tuple(failures))


def test_gpu_tiers_offload_only_what_fits() -> None:
    """An 8B-like model: f16 16 GB, q8_0 8.5 GB, q4_k_m 4.9 GB; KV + allowance 1.25 GB; 32 layers."""
    kv = int(1.25 * dt.GB)
    levels = [_level("f16", 16, 0.0, 17.25), _level("q8_0", 8.5, 0.002, 9.75), _level("q4_k_m", 4.9, 0.05, 6.15),
              _level("q2_k", 3.0, 0.6, 4.25, failures=["q2_k (llama.cpp): mean KLD 0.6 > max_mean_kld 0.3"])]
    tiers = {t.gb: t for t in dt.nvidia_tiers(levels, 32, kv)}
    picks = {gb: (t.level.name, t.ngl) for gb, t in tiers.items()}
    assert picks == {8: ("q4_k_m", -1), 12: ("q8_0", -1), 16: ("q8_0", -1), 24: ("f16", -1)}
    small = dt.gpu_tier(4, levels, 32, kv)
    # Nothing fits 4 GB whole: (3.6 GB usable - 256 MB) / ((4.9 GB weights + 1 GB KV) / 32 layers) = 18.2
    assert (small.level.name, small.ngl) == ("q4_k_m", 18)
    assert "of 32 layers on the GPU" in small.note
    assert dt.gpu_tier(4, [levels[-1]], 32, kv).level is None, "a level that failed its gate is never recommended"
    assert dt.cloud_pick(levels, 32, kv).instance == "g5.xlarge"


def test_a_static_twin_is_recommended_only_where_its_calibrated_level_fails() -> None:
    """Twins are the same size (256 bytes apart) and exist to be compared: the calibrated level is the one
    recommended, unless it failed a gate, even where the twin measured a hair closer to full precision."""
    kv = int(1.25 * dt.GB)
    cal, twin = _level("q4_k_m", 4.9, 0.05, 6.15, fits=(8,)), _level("q4_k_m-static", 4.9 - 1e-7, 0.049, 6.15, fits=(8,))
    assert dt.gpu_tier(4, [cal, twin], 32, kv).level.name == "q4_k_m"
    assert dt.best_fit([cal, twin], lambda lv: True).name == "q4_k_m"
    failed = _level("q4_k_m", 4.9, 0.3, 6.15, fits=(8,), failures=["q4_k_m (llama.cpp): mean KLD 0.3 > max 0.1"])
    assert dt.gpu_tier(4, [failed, twin], 32, kv).level.name == "q4_k_m-static"


def test_apple_tiers_follow_the_measured_fit() -> None:
    levels = [_level("f16", 16, 0.0, 17, fits=(32,)), _level("q4_k_m", 4.9, 0.05, 6, fits=(16, 24, 32)),
              _level("mlx-4bit", 4.5, 0.07, 5.5, fits=(8, 16, 24, 32), runtime="mlx")]
    tiers = {t.gb: t for t in dt.apple_tiers(levels)}
    assert tiers[8].gguf is None and tiers[8].mlx.name == "mlx-4bit"
    assert tiers[16].gguf.name == "q4_k_m" and tiers[32].gguf.name == "f16"
    assert sorted(tiers) == [8, 16, 24, 32] and tiers[24].gguf.name == "q4_k_m", "24 GB Macs: f16 does not fit"
    failed = _level("q2_k", 3.0, 0.6, 4.2, fits=(8,), failures=["q2_k (llama.cpp): mean KLD 0.6 > max_mean_kld 0.3"])
    limits = dt.known_limits([*levels, failed], list(failed.failures))
    assert limits[0] == "Failed a gate: q2_k (llama.cpp): mean KLD 0.6 > max_mean_kld 0.3. Published, but never " \
        "recommended below."
    assert any(x.startswith("q2_k (llama.cpp): mean KL divergence 0.600") for x in limits)
    assert {t.gb: t.gguf.name if t.gguf else None for t in dt.apple_tiers([*levels, failed])}[8] is None


def test_secrets_in_a_file_refuse_the_publish() -> None:
    env = {"HF_TOKEN": PLANTED["HF_TOKEN"], "TOKENIZERS_PARALLELISM": "false"}
    check_no_secrets([File("README.md", b"nothing to see")], env)
    with pytest.raises(PublishError, match=r"^recipe.yml: contains the value of \$HF_TOKEN"):
        check_no_secrets([File("recipe.yml", f"hub_token: {PLANTED['HF_TOKEN']}\n".encode())], env)
    with pytest.raises(PublishError, match="looks like an access key"):
        check_no_secrets([File("notes.md", b"key AKIAABCDEFGHIJKLMNOP here")], {})


# --- bad input, secrets, S3 -----------------------------------------------------------------------

@slow
def test_a_run_without_eval_results_is_refused_with_one_line(e2e_run: RunDir, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(e2e_run.path, run, ignore=shutil.ignore_patterns("ray", "eval"))
    dest = tmp_path / "out"
    proc = lathe("publish", str(run), "--to", str(dest))
    assert proc.returncode == 7 and proc.stdout == ""
    assert proc.stderr == f"{run}: no eval results (eval/report.json): run `lathe eval {run}` first\n"
    assert not dest.exists(), "nothing half-written"


@slow
def test_a_secret_in_the_run_stops_the_publish_before_anything_is_written(e2e_run: RunDir, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(e2e_run.path, run, ignore=shutil.ignore_patterns("ray"))
    with (run / "recipe.yml").open("a") as fh:
        fh.write(f"# hub token, pasted by mistake: {PLANTED['HF_TOKEN']}\n")
    dest = tmp_path / "out"
    proc = lathe("publish", str(run), "--to", str(dest))
    assert proc.returncode == 7
    assert proc.stderr == "recipe.yml: contains the value of $HF_TOKEN; nothing was published\n"
    assert not dest.exists()


@slow
def test_no_planted_secret_appears_in_any_published_file(published: Path) -> None:
    for rel, data in tree(published).items():
        for name, value in PLANTED.items():
            assert value.encode() not in data, f"{rel} contains ${name}"


@slow
def test_nothing_the_local_run_wrote_holds_a_planted_secret(e2e_cli: CliRun, published: Path, pushgateway,
                                                            figure) -> None:
    """The embedded default end to end, `lathe run` then `lathe publish`, with credentials in both
    environments: none in the run directory (checkpoints, export, eval report), the companion, the
    local Ray's own files (session logs, runtime envs), what the Pushgateway holds, or the output."""
    texts = {"lathe run stdout": e2e_cli.stdout, "lathe run stderr": e2e_cli.stderr,
             "pushgateway": fetch(f"{pushgateway.url}/metrics")}
    found = sweep([*LOCAL_SECRETS.values(), *PLANTED.values()], [e2e_cli.run.path, published, e2e_cli.ray_temp], texts)
    assert found.files > 100 and (e2e_cli.ray_temp / "ray").is_dir(), "the sweep must see Ray's own files"
    assert not found.found, found.found
    figure(f"secrets (local run): {len(LOCAL_SECRETS) + len(PLANTED)} planted values in none of {found.summary()}")


@slow
def test_republishing_with_fewer_files_removes_the_rest(e2e_run: RunDir, published: Path, tmp_path: Path) -> None:
    dest = tmp_path / "copy"
    shutil.copytree(published, dest)
    proc = lathe("publish", str(e2e_run.path), "--to", str(dest), "--no-artifacts")
    assert proc.returncode == 0 and re.search(r"\(\d+ written, \d+ unchanged, (\d+) removed\)", proc.stdout)
    assert not (dest / "gguf").exists() and not (dest / "mlx").exists(), "emptied directories go too"
    assert "put them at these paths" in (dest / "README.md").read_text()
    assert lathe("verify", str(dest)).returncode == 0
    assert lathe("publish", str(e2e_run.path), "--to", str(dest)).returncode == 0
    assert tree(dest) == tree(published)


@slow
def test_a_destination_that_is_not_a_companion_is_left_alone(e2e_run: RunDir, tmp_path: Path) -> None:
    dest = tmp_path / "notes"
    dest.mkdir()
    (dest / "mine.txt").write_text("keep me")
    proc = lathe("publish", str(e2e_run.path), "--to", str(dest))
    assert proc.returncode == 7 and "not empty and not a published companion" in proc.stderr
    assert tree(dest) == {"mine.txt": b"keep me"}


@pytest.fixture(scope="module")
def s3():
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = S3Server().start()
    import boto3

    client = boto3.client("s3", endpoint_url=server.url, region_name="us-east-1",
                          aws_access_key_id=PLANTED["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=PLANTED["AWS_SECRET_ACCESS_KEY"])
    client.create_bucket(Bucket="models")
    yield client, server.url
    server.stop()


@slow
def test_publish_to_s3_then_again_changes_nothing(e2e_run: RunDir, published: Path, s3) -> None:
    client, endpoint = s3
    args = ("publish", str(e2e_run.path), "--to", "s3://models/quickstart/v1", "--endpoint-url", endpoint,
            "--region", "us-east-1")
    proc = lathe(*args)
    assert proc.returncode == 0 and "s3://models/quickstart/v1: published" in proc.stdout, proc.stderr

    def objects() -> dict[str, tuple[str, object]]:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket="models", Prefix="quickstart/v1/")
        return {o["Key"].removeprefix("quickstart/v1/"): (o["ETag"], o["LastModified"])
                for page in pages for o in page.get("Contents", [])}

    first = objects()
    manifest_bytes = client.get_object(Bucket="models", Key="quickstart/v1/manifest.json")["Body"].read()
    assert manifest_bytes == (published / "manifest.json").read_bytes(), "the same companion as on disk"
    manifest = json.loads(manifest_bytes)
    assert set(first) == {a["path"] for a in manifest["artifacts"]} | {"manifest.json"}
    for art in manifest["artifacts"]:
        body = client.get_object(Bucket="models", Key=f"quickstart/v1/{art['path']}")["Body"].read()
        assert len(body) == art["size"] and hashlib.sha256(body).hexdigest() == art["sha256"], art["path"]
        for name, value in PLANTED.items():
            assert value.encode() not in body, f"{art['path']} contains ${name}"
    again = lathe(*args)
    assert again.returncode == 0 and again.stdout.startswith("s3://models/quickstart/v1: no changes"), again.stdout
    assert objects() == first, "no object was written again"


@slow
def test_an_unreachable_store_is_one_line(e2e_run: RunDir) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    proc = lathe("publish", str(e2e_run.path), "--to", "s3://models/x", "--endpoint-url", nobody, timeout=300)
    assert proc.returncode == 7 and proc.stderr.startswith("s3://models/x: ") and proc.stderr.count("\n") == 1, \
        proc.stderr[-2000:]
