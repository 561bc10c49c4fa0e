"""The out-of-tree backend story end to end: pip-install ``examples/bnb_api_example_backend`` into a fresh
venv, see ``python -m bnb_api info`` list its two backends (found through the ``bnb_api.backends`` entry
point), and see the conformance command pass the good one and fail the deliberately wrong one, naming
the op and the failing case."""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest

pytest.importorskip("hypothesis")

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "bnb_api_example_backend"


@pytest.fixture(scope="module")
def example_venv(tmp_path_factory) -> Path:
    """A fresh venv that sees this interpreter's packages (torch, bnb_api) and has the example installed."""
    root = tmp_path_factory.mktemp("example")
    env_dir = root / "venv"
    venv.create(env_dir, with_pip=False, system_site_packages=True)
    python = env_dir / "bin" / "python"
    own_site = subprocess.check_output([python, "-c", "import site; print(site.getsitepackages()[0])"], text=True)
    # the current venv's site-packages (processed as a site dir, so its editable-install hooks work too)
    parents = [p for p in site.getsitepackages() if os.path.isdir(p)]
    Path(own_site.strip(), "_parent_venv.pth").write_text(
        "".join(f"import site; site.addsitedir({p!r})\n" for p in parents)
    )
    source = root / "src"
    shutil.copytree(EXAMPLE, source)  # build outside the repository: no build/ or egg-info left behind
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--disable-pip-version-check",
         str(source)],
        check=True, cwd=root, timeout=120,
    )  # fmt: skip
    return python


def run(python: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BNB_API_", "PYTHONPATH"))}
    return subprocess.run([str(python), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_example_backend_is_installed_listed_and_validated(example_venv, tmp_path):
    python = example_venv
    info = run(python, "-m", "bnb_api", "info", cwd=tmp_path)
    assert info.returncode == 0, info.stderr
    assert "| example_cpu | cpu | available |" in info.stdout
    assert "| example_wrong | cpu | available |" in info.stdout
    assert "failed to load" not in info.stdout

    good = run(python, "-m", "bnb_api.conformance", "--backend", "example_cpu", "--device", "cpu", "--quick",
               "--ops", "quantize_4bit,dequantize_4bit", "--no-bench", "--report", str(tmp_path / "good"),
               cwd=tmp_path)  # fmt: skip
    assert good.returncode == 0, good.stdout + good.stderr
    assert good.stdout.startswith("PASS: backend 'example_cpu' on cpu (quick): 38 pass")
    report = json.loads((tmp_path / "good" / "conformance.json").read_text())
    assert report["ok"] and {r["status"] for r in report["results"]} == {"pass"}

    wrong = run(python, "-m", "bnb_api.conformance", "--backend", "example_wrong", "--device", "cpu", "--quick",
                "--ops", "quantize_4bit", "--no-bench", cwd=tmp_path)  # fmt: skip
    assert wrong.returncode == 1, wrong.stdout + wrong.stderr
    assert wrong.stdout.startswith("FAIL: backend 'example_wrong'")
    assert "failed: quantize_4bit[float32-nf4-bs32]" in wrong.stdout
    # the failing case: op, output, element, both values and the seeded inputs
    assert "FAIL quantize_4bit[float32-nf4-bs32]" in wrong.stderr
    assert "quantize_4bit: codes (nibbles of packed, high first) differs" in wrong.stderr
    assert "ties" in wrong.stderr and "seed=" in wrong.stderr


def test_example_registers_through_its_entry_point_functions():
    """The entry-point callables work in-process too (what bnb_api does at import)."""
    sys.path.insert(0, str(EXAMPLE))
    try:
        import bnb_api_example_backend as example
    finally:
        sys.path.remove(str(EXAMPLE))
    from bnb_api.core import registry

    try:
        example.register()
        kernel = registry.get_kernel("gemv_4bit", "example_cpu", "cpu")
        assert kernel.kind == "vectorized" and kernel.supports is not None
    finally:
        registry.unregister_backend("example_cpu")
