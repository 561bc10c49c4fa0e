"""Hugging Face Transformers and PEFT on bnb_api through ``bnb_api.install_as_bitsandbytes()``: 4-bit and 8-bit
``from_pretrained`` with a ``BitsAndBytesConfig``, save / reload, generate, checkpoints exchanged with the real
bitsandbytes (when installed), QLoRA through PEFT's bitsandbytes layers. Each scenario runs in its own process
(tests/hf_scenarios.py): the alias and the real bitsandbytes cannot share one."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest

for _name in ("transformers", "peft", "accelerate", "safetensors"):
    pytest.importorskip(_name)

SCENARIOS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hf_scenarios.py")
HAVE_BITSANDBYTES = importlib.util.find_spec("bitsandbytes") is not None


def _run(args: list[str], cwd: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _scenario(mode: str, dirname: str) -> dict:
    lines = [x for x in _run([SCENARIOS, mode, dirname], dirname).stdout.splitlines() if x.startswith("RESULT ")]
    assert len(lines) == 1, f"{mode}: no result line"
    return json.loads(lines[0][len("RESULT ") :])


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("hf"))


@pytest.fixture(scope="module")
def ours(hf_dir) -> dict:
    """The tiny model loaded in 4 and 8 bits through the alias (also writes the 4-bit checkpoint)."""
    return _scenario("ours", hf_dir)


def test_alias_modules_version_and_metadata(hf_dir):
    r = _scenario("alias-basics", hf_dir)
    assert r["same_module"] and r["classes"]
    assert r["version"] == "0.50.2" and r["metadata_version"] == "0.50.2"
    assert r["transformers_sees_it"] and r["peft_sees_it"]
    assert r["unknown_attribute_raises"] and r["uninstalled"]


def test_from_pretrained_4bit_is_bnb_api_nf4(ours):
    # every decoder Linear became our Linear4bit; lm_head stays dense, as Transformers keeps it with bitsandbytes
    assert len(ours["linear4bit"]) == 14 and ours["plain_linear"] == ["lm_head"]
    # Transformers' loading path gives exactly the bits of quantizing the same weights with bnb_api.nn by hand
    assert ours["same_as_manual"]
    assert ours["rel_err_4bit"] < 0.6  # NF4 on a tiny random model; garbage weights give > 1
    assert ours["reload_identical"] and ours["reloaded_linear4bit"]
    assert ours["generated"] == 6


def test_from_pretrained_8bit_is_llm_int8(ours):
    assert ours["int8_layers"] == 14
    assert ours["rel_err_8bit"] < 0.08


@pytest.mark.skipif(not HAVE_BITSANDBYTES, reason="bitsandbytes not installed (the cross-library check needs it)")
def test_4bit_checkpoints_exchange_with_bitsandbytes(ours, hf_dir):
    real = _scenario("real", hf_dir)  # the real bitsandbytes loads our checkpoint and writes its own
    assert real["real_bitsandbytes"]  # the package itself, not the alias (which has no __file__)
    assert real["rel_err_real_vs_ours"] < 0.05
    cmp = _scenario("compare", hf_dir)
    assert cmp["same_keys"] and cmp["n_tensors"] > 60
    # identical bytes, except the 8-bit codes of the nested absmax where bitsandbytes' search misses the
    # nearest code for a few values (README: a deliberate difference)
    for key, frac in cmp["differing"].items():
        assert key.endswith(".weight.absmax") and frac <= 0.05, (key, frac)


def test_qlora_through_peft_bitsandbytes_layers(hf_dir):
    r = _scenario("peft", hf_dir)
    assert r["lora_layer"] == "peft.tuners.lora.bnb.Linear4bit" and r["base_layer"] == "Linear4bit"
    assert r["eight_bit_states"]
    assert r["last_loss"] < 0.25 * r["first_loss"]
    # merge_and_unload re-quantizes W + BA to NF4: still 4-bit layers, and the merged model keeps what it learnt
    assert r["merged_layer"] == "Linear4bit"
    assert r["rel_diff_after_merge"] < 0.3 and r["loss_after_merge"] < 0.25 * r["first_loss"]


def test_install_refuses_when_bitsandbytes_already_imported(tmp_path):
    code = textwrap.dedent("""
        import sys, types
        sys.modules["bitsandbytes"] = types.ModuleType("bitsandbytes")  # stands for an imported real one
        import bnb_api
        try:
            bnb_api.install_as_bitsandbytes()
        except bnb_api.BnbUnavailableError as exc:
            print("REFUSED", exc)
    """)
    out = _run(["-c", code], str(tmp_path)).stdout
    assert "REFUSED install_as_bitsandbytes: bitsandbytes is already imported" in out


def test_cli_runs_a_script_and_a_module_as_bitsandbytes(tmp_path):
    (tmp_path / "uses_bnb.py").write_text(
        "import sys\nimport bitsandbytes as bnb\nimport bnb_api\n"
        "print('RAN', __name__, sys.argv[1:], bnb.nn.Linear4bit is bnb_api.nn.Linear4bit)\n"
    )
    out = _run(["-m", "bnb_api", "as-bitsandbytes", "uses_bnb.py", "a", "-m", "b"], str(tmp_path)).stdout
    assert "RAN __main__ ['a', '-m', 'b'] True" in out
    out = _run(["-m", "bnb_api", "as-bitsandbytes", "-m", "uses_bnb", "--x"], str(tmp_path)).stdout
    assert "RAN __main__ ['--x'] True" in out


def test_conv1d_model_in_4_and_8_bits_and_dequantize(hf_dir):
    r = _scenario("gpt2", hf_dir)  # GPT-2's Conv1D weights are transposed by Transformers before quantizing
    assert r["conv1d_as_linear4bit"] == "Linear4bit" and r["conv1d_as_linear8bit"] == "Linear8bitLt"
    assert r["rel_err_4bit"] < 0.3 and r["rel_err_8bit"] < 0.05
    # model.dequantize() puts back float Linears holding exactly bnb_api's dequantized weights
    assert r["dequantized_layer"] == "Linear" and r["dequantized_weight_exact"]
    assert r["rel_diff_after_dequantize"] < 0.05
