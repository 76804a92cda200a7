"""A node wheelhouse made from this machine's locked environment, for tests that have no package index.

`scripts/node_wheelhouse.py` builds the real one for users: lathe's wheel, the two wheels `make setup`
builds (llama-cpp-python, lathe-llama-cpp) and the locked node stack downloaded from PyPI. The tests
cannot download, so every other wheel here is re-packed from the distribution installed in this venv
(which `make setup` installed from requirements.lock): the same files, metadata and tags, stored
uncompressed because a 7 GB wheelhouse is made and unpacked inside one test module.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import shutil
import sys
import threading
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from scripts.node_wheelhouse import record_line

# Written by the installer, not part of what a wheel carries.
_INSTALLER_FILES = {"INSTALLER", "REQUESTED", "RECORD", "direct_url.json", "uv_cache.json", "uv_build.json"}


def _wanted(marker: Marker | None, extras: set[str]) -> bool:
    if marker is None:
        return True
    return any(marker.evaluate({"extra": e}) for e in extras | {""})


def closure(roots: list[str], given: frozenset[str] = frozenset()) -> dict[str, set[str]]:
    """Every installed distribution that `roots` (requirement strings, extras allowed) pull in, with
    the extras asked of each, following this platform's markers; `given` may be missing here."""
    seen: dict[str, set[str]] = {}
    todo = [Requirement(r) for r in roots]
    while todo:
        req = todo.pop()
        key = canonicalize_name(req.name)
        if key in seen and set(req.extras) <= seen[key]:
            continue
        seen[key] = seen.get(key, set()) | set(req.extras)
        try:
            dist = md.distribution(key)
        except md.PackageNotFoundError:
            if key in given:  # built for the wheelhouse, not installed here (lathe-llama-cpp)
                continue
            raise
        for spec in dist.requires or []:
            sub = Requirement(spec)
            if _wanted(sub.marker, seen[key]):
                todo.append(sub)
    return seen


def repack(name: str, out: Path) -> Path:
    """The installed distribution `name` as a wheel in `out` (its own WHEEL tags; files outside
    site-packages, such as console scripts, are left out: pip writes those from entry_points.txt)."""
    dist = md.distribution(name)
    root = Path(dist.locate_file(""))
    info = next(f for f in dist.files or [] if f.parts[0].endswith(".dist-info")).parts[0]
    wheel_meta = (root / info / "WHEEL").read_text(encoding="utf-8")
    tags = [line.split(":", 1)[1].strip().split("-") for line in wheel_meta.splitlines() if line.startswith("Tag:")]
    # The file name carries every tag, compressed: py2-none-any and py3-none-any are py2.py3-none-any.
    tag = "-".join(".".join(dict.fromkeys(t[i] for t in tags)) for i in range(3))
    path = out / f"{info.removesuffix('.dist-info')}-{tag}.whl"
    record: list[str] = []
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as whl:
        for rel in dist.files or []:
            arc = rel.as_posix()
            if arc.startswith("../") or "__pycache__" in rel.parts or \
                    (rel.parts[0] == info and rel.name in _INSTALLER_FILES):
                continue
            data = (root / rel).read_bytes()
            entry = zipfile.ZipInfo(arc)
            entry.external_attr = ((root / rel).stat().st_mode & 0xFFFF) << 16  # Ray's gcs_server stays executable
            whl.writestr(entry, data, zipfile.ZIP_STORED)
            record.append(record_line(arc, data))
        record.append(f"{info}/RECORD,,")
        whl.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return path


ROOT = Path(__file__).resolve().parents[2]
# The wheels `make setup` builds (PyPI has no Linux wheel of either): given, not re-packed.
BUILT = Path(sys.prefix) / "wheelhouse"
# The re-packed rest, kept beside them: reading the venv's ~100,000 files is the cost (minutes on a
# cold page cache), so `make test` makes it during set-up, right after the install, and once.
STACK = BUILT / "node-stack"


def built_wheels() -> list[Path]:
    wheels = [next(BUILT.glob(f"{name}-*.whl"), None) for name in ("llama_cpp_python", "lathe_llama_cpp")]
    missing = [name for name, w in zip(("llama-cpp-python", "lathe-llama-cpp"), wheels, strict=True) if w is None]
    assert not missing, f"no {', '.join(missing)} wheel in {BUILT}: make setup builds them"
    return [w for w in wheels if w is not None]


def _stamp() -> str:
    return hashlib.sha256((ROOT / "requirements.lock").read_bytes() + (ROOT / "pyproject.toml").read_bytes()).hexdigest()


def node_stack() -> Path:
    """Every wheel of lathe[node] but lathe's own and the built ones, re-packed into STACK (once per lock);
    each re-packed version is the one requirements.lock pins."""
    if (STACK / ".stamp").is_file() and (STACK / ".stamp").read_text() == _stamp():
        return STACK
    shutil.rmtree(STACK, ignore_errors=True)
    STACK.mkdir(parents=True)
    lock = _lock_pins(ROOT / "requirements.lock")
    # Not re-packed: lathe's own wheel and the two wheels set-up builds (lathe-llama-cpp is never installed
    # here, and set-up may build it after this runs: named, not looked for).
    given = {"lathe", "llama-cpp-python", "lathe-llama-cpp"}
    names = [n for n in sorted(closure(["lathe[node]"], frozenset(given))) if n not in given]
    for name in names:
        if lock.get(name) != md.version(name):
            raise AssertionError(f"{name} {md.version(name)} is installed, requirements.lock pins {lock.get(name)}")
    # Several reads in flight keep the disk busy (hashing and CRCs release the GIL).
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda name: repack(name, STACK), names))
    (STACK / ".stamp").write_text(_stamp())
    return STACK


def node_wheelhouse(out: Path, project_wheel: Path) -> Path:
    """A wheelhouse for `lathe[node]`: lathe's wheel, the built ones and the re-packed stack (linked)."""
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy2(project_wheel, out / project_wheel.name)
    for wheel in [*built_wheels(), *node_stack().glob("*.whl")]:
        (out / wheel.name).symlink_to(wheel)
    return out


def _lock_pins(lock: Path) -> dict[str, str]:
    pins = {}
    for line in lock.read_text(encoding="utf-8").splitlines():
        if "==" in line and not line.lstrip().startswith("#"):
            name, _, version = line.split(";")[0].strip().partition("==")
            pins[canonicalize_name(name.split("[")[0])] = version.strip()
    return pins


@contextmanager
def served(directory: Path, address: str) -> Iterator[str]:
    """`directory` over HTTP on `address` (the test bridge), as a find-links page; yields its URL."""

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # one line per wheel otherwise
            pass

    server = ThreadingHTTPServer((address, 0), partial(Quiet, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{address}:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


if __name__ == "__main__":  # scripts/bootstrap.sh, for `make test`
    print(f"{len(list(node_stack().glob('*.whl')))} re-packed wheels in {STACK}")
