"""reid's two halves stay apart: the identity half (reid.identity: Redis, numpy) never loads torch or a model
module, and the model modules never import the identity half. reid.link_bench, a benchmark of both, is the one
module allowed to import both.

Why a test: the match stage and the config validator import reid.identity in processes that must not pay for
torch (about a second and a few hundred MB each), and one convenient import is all it takes to lose that.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REID = ROOT / "reid"
IDENTITY = REID / "identity"
BRIDGES = {"link_bench"}  # reid modules that may import both halves
FIRST_PARTY = ("reid", "pipeline", "detectors", "trt_engines")


def imported_modules(path: Path, package: str) -> set[str]:
    """Every module ``path`` imports, at the top or inside functions, relative imports resolved."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                found.add(".".join(base + ([node.module] if node.module else [])))
            else:
                found.add(node.module or "")
    return found


def _under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_identity_modules_import_no_model_code():
    offenders = {}
    for path in sorted(IDENTITY.glob("*.py")):
        bad = sorted(m for m in imported_modules(path, "reid.identity")
                     if _under(m, "torch") or _under(m, "torchvision")
                     or (any(_under(m, p) for p in FIRST_PARTY) and not _under(m, "reid.identity")))
        if bad:
            offenders[path.name] = bad
    assert not offenders, f"reid.identity imports model or pipeline code: {offenders}"


def test_model_modules_do_not_import_the_identity_half():
    modules = {p.stem: p for p in REID.glob("*.py") if p.stem != "__init__"}
    assert BRIDGES <= modules.keys()
    offenders = {}
    for name, path in sorted(modules.items()):
        if name in BRIDGES:
            continue
        bad = sorted(m for m in imported_modules(path, "reid") if _under(m, "reid.identity"))
        if bad:
            offenders[name] = bad
    assert not offenders, f"model modules import reid.identity: {offenders}"


def test_importing_every_identity_module_loads_no_torch():
    code = (
        "import importlib, json, pkgutil, sys\n"
        "import reid.identity as pkg\n"
        "names = [m.name for m in pkgutil.iter_modules(pkg.__path__)]\n"
        "for name in names:\n"
        "    importlib.import_module(f'reid.identity.{name}')\n"
        "top = {k.split('.')[0] for k in sys.modules} & {'torch', 'torchvision'}\n"
        "model = {k for k in sys.modules if k.startswith('reid.') and not k.startswith('reid.identity')}\n"
        "loaded = sorted(top | model)\n"
        "print(json.dumps({'file': pkg.__file__, 'modules': names, 'loaded': loaded}))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(out["file"]).resolve().parent == IDENTITY  # this checkout's package, not another install
    assert {"config", "matcher", "store", "redis_server", "link_metrics"} <= set(out["modules"])
    assert out["loaded"] == [], f"importing reid.identity loaded {out['loaded']}"
