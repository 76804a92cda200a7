#!/usr/bin/env python
"""Build the wheelhouse a bare node installs from (`node_env: {kind: venv, wheelhouse: ...}`).

    .venv/bin/python scripts/node_wheelhouse.py OUT          # needs PyPI (or PIP_INDEX_URL), ~4 GB
    python -m http.server -d OUT 8000                        # somewhere the nodes can reach

OUT gets lathe's wheel at this tree's version, the two wheels PyPI does not have for Linux
(llama-cpp-python, built by `make setup`; lathe-llama-cpp: llama.cpp's converter and tools at the same
llama.cpp version) and every other wheel of lathe[node] for Linux x86_64 / CPython 3.12, at the
versions requirements.lock pins. Run it on Linux x86_64 after `make setup` (the two built wheels are
this machine's); `--tools-wheel-from` alone is what `make setup` runs.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import platform
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The platform requirements.lock was resolved for (Makefile: lock), and every older manylinux tag it runs:
# pip takes a custom --platform literally.
PLATFORMS = [f"manylinux_2_{n}_x86_64" for n in range(35, 4, -1)] + \
    ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64", "linux_x86_64"]


def project_wheel(out: Path) -> Path:
    """lathe's wheel from the tracked files only: what a release is built from."""
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split("\0")
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "source"
        for rel in filter(None, tracked):
            if (ROOT / rel).is_file():
                (source / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / rel, source / rel)
        dist = Path(tmp) / "dist"
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                        "-w", str(dist), str(source)], check=True)
        wheel = next(dist.glob("lathe-*.whl"))
        out.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copy2(wheel, out / wheel.name))


def record_line(arc: str, data: bytes) -> str:
    """A wheel RECORD entry: path, urlsafe-base64 sha256, size."""
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{arc},sha256={digest},{len(data)}"


def tools_wheel(llama_dir: Path, out: Path) -> Path:
    """llama.cpp's converter, gguf-py and tools (`llama_dir`, as `make setup` lays it out) as a wheel whose
    files install under the venv's share/lathe/llama.cpp, where export looks for them."""
    version = (llama_dir / "VERSION").read_text().strip()
    name = f"lathe_llama_cpp-{version}"
    tag = f"py3-none-linux_{platform.machine()}"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}-{tag}.whl"
    record = []
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as whl:
        def add(arc: str, data: bytes, mode: int = 0o644) -> None:
            info = zipfile.ZipInfo(arc, date_time=(2020, 1, 1, 0, 0, 0))  # the same bytes every build
            info.external_attr = (0o100000 | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            whl.writestr(info, data)
            record.append(record_line(arc, data))

        for file in sorted(p for p in llama_dir.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
            rel = file.relative_to(llama_dir).as_posix()
            add(f"{name}.data/data/share/lathe/llama.cpp/{rel}", file.read_bytes(),
                0o755 if rel.startswith("bin/") else 0o644)
        info = f"{name}.dist-info"
        add(f"{info}/METADATA", (f"Metadata-Version: 2.1\nName: lathe-llama-cpp\nVersion: {version}\n"
                                 "Summary: llama.cpp's GGUF converter, llama-quantize and llama-imatrix, "
                                 "for Lathe's export on a node\nLicense: MIT\n").encode())
        add(f"{info}/WHEEL", f"Wheel-Version: 1.0\nGenerator: lathe\nRoot-Is-Purelib: false\nTag: {tag}\n".encode())
        whl.writestr(f"{info}/RECORD", "\n".join([*record, f"{info}/RECORD,,"]) + "\n")
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--tools-wheel-from", type=Path, metavar="LLAMA_DIR",
                        help="only the lathe-llama-cpp wheel, from this directory (what `make setup` runs)")
    args = parser.parse_args()
    if args.tools_wheel_from:
        print(tools_wheel(args.tools_wheel_from, args.out))
        return 0
    venv = Path(sys.prefix)
    built = [project_wheel(args.out), tools_wheel(venv / "share" / "lathe" / "llama.cpp", args.out)]
    for wheel in (venv / "wheelhouse").glob("llama_cpp_python-*.whl"):
        built.append(Path(shutil.copy2(wheel, args.out / wheel.name)))
    print("built: " + ", ".join(w.name for w in built))
    # The rest from the index for the nodes' platform (not this machine's), at the lock's versions.
    pins = args.out / "node-requirements.txt"
    subprocess.run([str(venv / "bin" / "uv"), "pip", "compile", "-q", "--python-version", "3.12",
                    "--python-platform", "x86_64-manylinux_2_35", "--extra", "node", "--find-links", str(args.out),
                    "-c", str(ROOT / "requirements.lock"), "--no-header", "--no-annotate", "-o", str(pins),
                    str(ROOT / "pyproject.toml")], check=True)
    # --no-deps (the pins are complete) also lets pip take an sdist where PyPI has no wheel (DeepSpeed).
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--dest", str(args.out),
                    "--find-links", str(args.out), *(f"--platform={p}" for p in PLATFORMS),
                    "--python-version", "3.12", "--implementation", "cp", "-r", str(pins)], check=True)
    # Built here, with this venv's torch (DeepSpeed's setup imports it): a node may have no compiler.
    for sdist in [*args.out.glob("*.tar.gz"), *args.out.glob("*.zip")]:
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                        "-w", str(args.out), str(sdist)], check=True)
        sdist.unlink()
    print(f"{len(list(args.out.glob('*.whl')))} wheels in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
