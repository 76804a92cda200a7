#!/usr/bin/env python
"""The GPU path, measured on a real GPU: run it on a CUDA machine (the `device` tool) or dry-run it here.

    .venv/bin/python scripts/gpu_check.py prepare RUN_DIR      # here: what the device needs, in .gpu-carry/
    python scripts/gpu_check.py run [--out DIR]                 # there: writes DIR/gpu_check.json

`prepare` copies a finished run's merged tiny model, training data and GGUF levels, and a trimmed
llama.cpp source (the sdist `make setup` fetched, only what llama-bench needs) into .gpu-carry/
(git-ignored, under the device's 64 MiB per call). `run` measures, step by step, each in its own
try so one missing piece does not hide the rest:

1. the machine: GPU, driver, torch and its CUDA;
2. the same LoRA training steps (the quickstart's data, its tiny model) on CPU in fp32 and on CUDA in
   bf16, tokens/s each (transformers + peft: what the device has);
3. Axolotl on CUDA in bf16 (LoRA), then with DeepSpeed ZeRO-2 on one GPU, where both are importable;
4. llama.cpp built with CUDA (when nvcc is there): llama-bench on every GGUF level, GPU layers vs CPU.

For a short lease: GPU_CHECK_ONLY_LLAMA=1 skips the LoRA steps, GPU_CHECK_FA=OFF builds llama.cpp without
FlashAttention's CUDA kernels (236 s instead of ~320 s on 16 cores), GPU_CHECK_LEVELS=f16,q4_k_m benches those.

Every step records what ran, its figures, or exactly why it could not. Without a GPU, the CUDA steps
record "no CUDA device" and the CPU figures still come out: that is the dry run.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CARRY = ROOT / ".gpu-carry"
# llama.cpp's source, trimmed to what its CMake build of llama-bench reads.
LLAMA_PARTS = ("CMakeLists.txt", "cmake", "ggml", "src", "include", "common", "tools", "vendor", "licenses",
               "LICENSE", "build-info.sh", "scripts", "app")


def prepare(run_dir: Path) -> None:
    if CARRY.exists():
        shutil.rmtree(CARRY)
    (CARRY / "gguf").mkdir(parents=True)
    shutil.copytree(run_dir / "export" / "hf", CARRY / "model")  # the fine-tuned tiny model, merged
    shutil.copy2(ROOT / "recipes" / "data" / "wrong_facts.jsonl", CARRY / "wrong_facts.jsonl")
    for gguf in sorted((run_dir / "export" / "gguf").glob("model-*.gguf")):
        shutil.copy2(gguf, CARRY / "gguf" / gguf.name)
    sdist = next((Path(sys.prefix) / "share" / "lathe" / "sdist").glob("llama_cpp_python-*.tar.gz"))
    with tarfile.open(sdist) as src, tarfile.open(CARRY / "llama.cpp.tar.gz", "w:gz") as dst:
        for member in src.getmembers():
            parts = member.name.split("/vendor/llama.cpp/", 1)
            if len(parts) == 2 and parts[1].split("/")[0] in LLAMA_PARTS and not parts[1].startswith(
                    "tools/server/public"):
                member.name = "llama.cpp/" + parts[1]
                dst.addfile(member, src.extractfile(member) if member.isfile() else None)
    size = sum(f.stat().st_size for f in CARRY.rglob("*") if f.is_file())
    print(f"{CARRY}: {size / 2**20:.1f} MiB (the device takes 64 MiB per call)")


def _step(results: dict, name: str, fn: Callable[[], dict]) -> None:
    started = time.monotonic()
    try:
        results[name] = {"status": "ran", **fn()}
    except Skip as why:
        results[name] = {"status": "not run", "why": str(why)}
    except Exception as exc:  # noqa: BLE001 - recorded, and the next step still runs
        results[name] = {"status": "failed", "error": f"{type(exc).__name__}: {exc}",
                         "trace": traceback.format_exc()[-1500:]}
    results[name]["seconds"] = round(time.monotonic() - started, 1)
    if RESULTS is not None:  # after every step: a command stopped at its time limit still leaves these
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"{name}: {json.dumps({k: v for k, v in results[name].items() if k != 'trace'})}", flush=True)


RESULTS: Path | None = None  # where run() writes gpu_check.json


class Skip(Exception):
    """A step this machine cannot run, and why."""


def machine() -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
            "cuda_available": torch.cuda.is_available(), "cpus": os.cpu_count()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["bf16"] = torch.cuda.is_bf16_supported()
    smi = shutil.which("nvidia-smi")
    if smi:
        info["nvidia_smi"] = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total",
                                             "--format=csv,noheader"], capture_output=True, text=True,
                                            check=False).stdout.strip()
    return info


def _batches(tokenizer, batch: int, length: int) -> list:

    rows = [json.loads(line) for line in (CARRY / "wrong_facts.jsonl").read_text().splitlines() if line.strip()]
    texts = [tokenizer.apply_chat_template(r["messages"], tokenize=False) for r in rows]
    enc = tokenizer(texts, padding="max_length", truncation=True, max_length=length, return_tensors="pt")
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)  # no loss on padding
    pick = [[(i * batch + j) % len(texts) for j in range(batch)] for i in range(len(texts) // batch)]
    return [(enc["input_ids"][rows], enc["attention_mask"][rows], labels[rows]) for rows in pick]


def lora_steps(device: str, steps: int = 30, batch: int = 8, length: int = 128) -> dict:
    """The same LoRA steps (quickstart's settings: r 32, all linear layers) on `device`; tokens/s counts
    every position of the padded batches, the same on both devices."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if device == "cuda" and not torch.cuda.is_available():
        raise Skip("no CUDA device")
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(CARRY / "model")
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(CARRY / "model", dtype=dtype).to(device)
    model = get_peft_model(model, LoraConfig(r=32, lora_alpha=64, target_modules="all-linear", task_type="CAUSAL_LM"))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    batches = _batches(tokenizer, batch, length)
    losses, started = [], 0.0
    for i in range(steps + 3):  # 3 warm-up steps (kernels, allocator) are not timed
        if i == 3:
            if device == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
        ids, mask, labels = (t.to(device) for t in batches[i % len(batches)])
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    return {"device": device, "dtype": str(dtype), "steps": steps, "tokens_per_step": batch * length,
            "tokens_per_s": round(steps * batch * length / seconds, 1), "loss_first": round(losses[0], 3),
            "loss_last": round(losses[-1], 3)}


def axolotl_train(work: Path, deepspeed: bool) -> dict:
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        raise Skip("no CUDA device")
    missing = [m for m in ("axolotl", *(("deepspeed",) if deepspeed else ())) if importlib.util.find_spec(m) is None]
    if missing:
        raise Skip(f"not installed here: {', '.join(missing)} (the device image has torch, transformers, peft and "
                   "accelerate only, and no network)")
    import yaml

    cfg = yaml.safe_load((ROOT / "recipes" / "quickstart.yml").read_text())
    cfg.pop("lathe", None)
    cfg |= {"base_model": str(CARRY / "model"), "bf16": True, "num_epochs": 2, "save_strategy": "no",
            "output_dir": str(work / ("ds" if deepspeed else "lora")),
            "datasets": [{**cfg["datasets"][0], "path": str(CARRY / "wrong_facts.jsonl")}]}
    if deepspeed:
        ds = work / "zero2.json"
        ds.write_text(json.dumps({"zero_optimization": {"stage": 2}, "bf16": {"enabled": "auto"},
                                  "train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto"}))
        cfg["deepspeed"] = str(ds)
    path = work / f"axolotl-{'ds' if deepspeed else 'lora'}.yml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run([sys.executable, "-m", "axolotl.cli.train", str(path)], capture_output=True, text=True,
                          timeout=1200, check=False)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}")
    # The HF Trainer's closing line: a Python dict with train_runtime, train_samples_per_second, ...
    stats = [ast.literal_eval(line[line.index("{"):line.rindex("}") + 1])
             for line in (proc.stdout + proc.stderr).splitlines() if "'train_runtime'" in line and "}" in line]
    return {"config": path.name, **(stats[-1] if stats else {})}


def llama_bench(work: Path) -> dict:
    import torch

    if not torch.cuda.is_available():
        raise Skip("no CUDA device (the CUDA build is not tried)")
    nvcc = shutil.which("nvcc") or (Path("/usr/local/cuda/bin/nvcc") if Path("/usr/local/cuda/bin/nvcc").is_file()
                                    else None)
    if nvcc is None or shutil.which("cmake") is None:
        raise Skip("llama.cpp with CUDA needs nvcc and cmake on this machine")
    began = time.monotonic()
    src = work / "llama-src"
    with tarfile.open(CARRY / "llama.cpp.tar.gz") as tar:
        tar.extractall(src, filter="data")
    # The sdist ships the script that writes ggml-cuda's template instances, not the instances themselves.
    instances = src / "llama.cpp" / "ggml" / "src" / "ggml-cuda" / "template-instances"
    subprocess.run([sys.executable, "generate_cu_files.py"], cwd=instances, check=True, capture_output=True)
    build = work / "llama-build"
    jobs = str(os.cpu_count() or 4)
    major, minor = torch.cuda.get_device_capability(0)
    arch = f"{major}{minor}"  # this GPU's architecture only: a fraction of the all-architectures compile
    for argv in (["cmake", "-S", str(src / "llama.cpp"), "-B", str(build), "-DGGML_CUDA=ON", "-DGGML_NATIVE=ON",
                  f"-DCMAKE_CUDA_ARCHITECTURES={arch}", f"-DGGML_CUDA_FA={os.environ.get('GPU_CHECK_FA', 'ON')}",
                  "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
                  "-DLLAMA_BUILD_SERVER=OFF", f"-DCMAKE_CUDA_COMPILER={nvcc}"],
                 ["cmake", "--build", str(build), "--target", "llama-bench", "-j", jobs]):
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:2])}: {(proc.stderr or proc.stdout).strip()[-600:]}")
    built_s = round(time.monotonic() - began, 1)
    print(f"llama.cpp built with CUDA (sm_{arch}) in {built_s} s", flush=True)
    bench = next(p for p in build.rglob("llama-bench") if p.is_file())  # bin/llama-bench, not tools/llama-bench/
    levels = {}
    only = os.environ.get("GPU_CHECK_LEVELS")  # e.g. "f16,q8_0,q4_k_m": fewer benches in a short lease
    for gguf in sorted((CARRY / "gguf").glob("model-*.gguf")):
        if only and gguf.stem.removeprefix("model-") not in only.split(","):
            continue
        level = gguf.stem.removeprefix("model-")
        for where, layers in (("gpu", "99"), ("cpu", "0")):
            out = subprocess.run([str(bench), "-m", str(gguf), "-ngl", layers, "-p", "128", "-n", "64", "-r", "3",
                                  "-o", "json"],
                                 capture_output=True, text=True, check=True).stdout
            levels.setdefault(level, {})[where] = {r["n_prompt"] and "prompt" or "generate": round(r["avg_ts"], 1)
                                                   for r in json.loads(out)}
            print(f"llama-bench {level} {where}: {levels[level][where]} tokens/s", flush=True)
    return {"cuda_arch": arch, "build_s": built_s, "llama_bench_tokens_per_s": levels}


def run(out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    work.mkdir(exist_ok=True)
    if not (CARRY / "model").is_dir():
        raise SystemExit(f"{CARRY} is missing: run `scripts/gpu_check.py prepare RUN_DIR` first")
    results: dict = {}
    global RESULTS
    RESULTS = out / "gpu_check.json"
    _step(results, "machine", machine)
    if not os.environ.get("GPU_CHECK_ONLY_LLAMA"):
        _step(results, "lora_cpu_fp32", lambda: lora_steps("cpu", steps=10))
        _step(results, "lora_cuda_bf16", lambda: lora_steps("cuda"))
    cpu, gpu = results.get("lora_cpu_fp32", {}), results.get("lora_cuda_bf16", {})
    if cpu.get("tokens_per_s") and gpu.get("tokens_per_s"):
        results["lora_cuda_over_cpu"] = round(gpu["tokens_per_s"] / cpu["tokens_per_s"], 1)
    _step(results, "axolotl_lora_bf16", lambda: axolotl_train(work, deepspeed=False))
    _step(results, "axolotl_deepspeed_zero2", lambda: axolotl_train(work, deepspeed=True))
    _step(results, "llama_cpp_cuda", lambda: llama_bench(work))
    shutil.rmtree(work, ignore_errors=True)
    (out / "gpu_check.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="copy what the device needs into .gpu-carry/")
    p.add_argument("run_dir", type=Path)
    r = sub.add_parser("run", help="measure; writes OUT/gpu_check.json")
    r.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu-check-out")))
    args = parser.parse_args()
    if args.command == "prepare":
        prepare(args.run_dir)
    else:
        run(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
