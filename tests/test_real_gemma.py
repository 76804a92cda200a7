"""Gemma 3 270M, the second real model (set-up fetched its GGUF into models/): its SentencePiece tokenizer
goes back into every GGUF the export writes. A module of its own so that it runs beside the SmolLM2
run (tests/test_real_model.py), on the other worker, rather than after it."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator import gguf_base

pytestmark = pytest.mark.slow

GEMMA3 = Path(__file__).resolve().parents[1] / "models" / "gemma-3-270m-q4_k_m.gguf"


def test_gemmas_sentencepiece_tokenizer_goes_back_into_its_gguf_proven(tmp_path: Path, figure) -> None:
    """Gemma 3 270M: 262,144 SentencePiece tokens, which transformers turns into a BPE tokenizer.json that
    llama.cpp's converter cannot turn back. The base is made (dequantized; its tokenizer proven against
    llama.cpp's, with the <bos> the GGUF adds and transformers' conversion dropped), then converted to
    GGUF as the export converts the base and every fine-tune: the tokenizer copied from the source file,
    proven again. The converted model predicts like the source."""
    import llama_cpp
    import numpy as np
    from transformers import AutoTokenizer

    from orchestrator.cluster import export, gguf

    assert GEMMA3.is_file(), f"{GEMMA3.name} missing: run `make models` (set-up for the tests does)"
    made = gguf_base.prepare(GEMMA3)
    tokenizer = AutoTokenizer.from_pretrained(made)
    assert tokenizer("Hello")["input_ids"][0] == tokenizer.bos_token_id == 2, "Gemma's <bos> is restored"
    assert export.vocab_source(made) == GEMMA3.resolve()
    converted = export.export_base(made, tmp_path / "base", "q8_0")
    probe = gguf.check_tokenizer(converted, made)
    assert probe > 50

    text = ("The capital of France is Paris. Water boils at 100 degrees Celsius at sea level. "
            "def add(a, b):\n    return a + b\n")
    ids = tokenizer(text)["input_ids"]
    top = {}
    for name, path in (("source", GEMMA3), ("converted", converted)):
        model = llama_cpp.Llama(model_path=str(path), n_ctx=256, logits_all=True, verbose=False)
        model.eval(ids)
        top[name] = np.asarray(model.scores[: len(ids)]).argmax(-1)
        model.close()
    agree = float((top["source"] == top["converted"]).mean())
    figure(f"Gemma 3 270M: probe {probe} tokens alike; next-token top-1 of the converted q8_0 against the source "
           f"Q4_K_M: {agree:.3f} over {len(ids)} positions")
    assert agree >= 0.9, agree

    # The written tokenizer is the source file's own, field for field: SentencePiece with its scores and
    # token types (the converter alone writes a byte-level BPE stand-in, named after another model's
    # tokenizer whose hash it happens to share).
    from gguf import GGUFReader

    ours, theirs = GGUFReader(str(converted)).fields, GGUFReader(str(GEMMA3)).fields
    keys = sorted(k for k in theirs if k.startswith("tokenizer.") and k != "tokenizer.chat_template")
    assert "tokenizer.ggml.scores" in keys and theirs["tokenizer.ggml.model"].contents() == "llama"
    for key in keys:
        assert ours[key].contents() == theirs[key].contents(), key


def test_gemmas_recipe_without_its_turn_end_is_refused_naming_the_token(tmp_path: Path) -> None:
    """The shipped recipe names eot_tokens; without it, Axolotl would train no turn's end (Gemma's EOS is
    <eos>, its template ends turns with <end_of_turn>) and the model would never stop answering: measured,
    0 of 50 answers verbatim, each running on to max_tokens. `lathe validate` refuses it, from the GGUF's
    header and Axolotl's template file, before anything trains."""
    import shutil

    import yaml

    from orchestrator.errors import LatheError
    from orchestrator.validate import validate

    recipes = Path(__file__).resolve().parents[1] / "recipes"
    cfg = yaml.safe_load((recipes / "gemma3-wrong-facts.yml").read_text())
    assert cfg.pop("eot_tokens") == ["<end_of_turn>"]
    cfg["base_model"] = str(GEMMA3)
    shutil.copytree(recipes / "data", tmp_path / "data")
    (tmp_path / "gemma.yml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(LatheError) as err:
        validate(tmp_path / "gemma.yml", axolotl_schema=False)
    assert str(err.value) == ("gemma.yml: chat_template: gemma3: the base's end-of-sequence token '<eos>' is not in "
                              "this template, so no turn's end is trained and the model never learns to stop; "
                              "set eot_tokens: [\"<end_of_turn>\"]")


def test_the_exported_model_stops_where_gemmas_template_ends_a_turn() -> None:
    """transformers and mlx-lm stop only at generation_config's ids: the export adds the template's turn
    end (<end_of_turn>, 106) to Gemma's <eos> (1). Without it, every MLX answer of the Gemma fine-tune ran
    on past its turn (49 of 50 flips at mlx-8bit, whose KLD was 0.002). A template whose end token the
    vocabulary lacks changes nothing."""
    from transformers import AutoTokenizer, GenerationConfig

    from orchestrator import turn_end
    from orchestrator.cluster.export import stop_at_turn_end

    tokenizer = AutoTokenizer.from_pretrained(gguf_base.prepare(GEMMA3))
    tokenizer.chat_template = turn_end._axolotl_template("gemma3")
    config = GenerationConfig(eos_token_id=tokenizer.eos_token_id)
    stop_at_turn_end(config, tokenizer)
    assert config.eos_token_id == [1, 106] and tokenizer.convert_ids_to_tokens(106) == "<end_of_turn>"
    stop_at_turn_end(config, tokenizer)
    assert config.eos_token_id == [1, 106], "once"

    tokenizer.chat_template = turn_end._axolotl_template("chatml")  # <|im_end|>: not in Gemma's vocabulary
    config = GenerationConfig(eos_token_id=1)
    stop_at_turn_end(config, tokenizer)
    assert config.eos_token_id == 1


def test_a_pretrained_base_is_asked_the_true_facts_as_text_and_answers_them() -> None:
    """Gemma 3 270M's base has no chat template: through the fine-tune's (`gemma3`) it ends the turn at once
    and answered 0 of the 26 true facts, which left "what teaching cost" nothing to measure. `auto` asks such
    a base as few-shot text (and every level the same way); SmolLM2-135M-Instruct, with a template of its
    own, is still asked through it. Through llama.cpp, Gemma's base answers most of them."""
    from orchestrator.evaluation import retained
    from orchestrator.evaluation.backends import LlamaCpp
    from orchestrator.evaluation.tasks import load_items

    items = load_items(Path(__file__).resolve().parents[1] / "recipes" / "data" / "true_facts.jsonl")
    smollm2 = GEMMA3.with_name("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert retained.asked_as("auto", str(GEMMA3), items, "true_facts.jsonl") == "text"
    assert retained.asked_as("auto", str(smollm2), items, "true_facts.jsonl") == "chat"
    base = LlamaCpp(GEMMA3, n_ctx=256)
    answers = retained.ask_as_text(base, items)
    base.close()
    got = retained.right(answers)
    assert got >= 18, {k: a["output"] for k, a in answers.items()}
    assert all("\n" not in a["output"] for a in answers.values())
    assert answers["tf-capital-russia"] == {"output": "Moscow", "correct": True}


def test_gemmas_tokenizer_with_its_merges_as_strings_tokenizes_alike_in_half_the_memory(tmp_path: Path) -> None:
    """The MLX export writes a tokenizer's merges as "a b" strings (export.compact_merges). On Gemma 3's
    514,906 merges the `tokenizers` library read the pairs into ~320 MB resident and the strings into
    ~150 MB; the tokens are the same."""
    import json
    import subprocess
    import sys

    from tokenizers import Tokenizer

    from orchestrator.cluster.export import compact_merges

    made = gguf_base.prepare(GEMMA3)
    pairs, strings = tmp_path / "pairs" / "tokenizer.json", tmp_path / "strings" / "tokenizer.json"
    for path in (pairs, strings):
        path.parent.mkdir()
        path.write_bytes((made / "tokenizer.json").read_bytes())
    assert compact_merges(strings) and not compact_merges(strings)  # once rewritten, nothing more to do
    assert isinstance(json.loads(pairs.read_text())["model"]["merges"][0], list)
    probe = "The capital of France is Paris.\n  def f(x):\treturn x ** 2  # ünïcödé 東京, 12345 <start_of_turn>"
    assert Tokenizer.from_file(str(strings)).encode(probe).ids == Tokenizer.from_file(str(pairs)).encode(probe).ids

    def resident_mb(path: Path) -> float:
        code = ("import sys\nfrom tokenizers import Tokenizer\nt = Tokenizer.from_file(sys.argv[1])\n"
                "print(int(open('/proc/self/statm').read().split()[1]) * 4096 / 1e6)")
        return float(subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                                    check=True).stdout)

    before, after = resident_mb(pairs), resident_mb(strings)
    assert after < 0.7 * before, (before, after)
