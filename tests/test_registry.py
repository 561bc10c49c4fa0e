"""The device registry: priorities, supports predicates, forcing, exclusion, lazy probes and plugins."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import torch

import bnb_api
from bnb_api import backends as backend_pkg
from bnb_api.core import registry


@pytest.fixture
def fake_backend():
    """A backend 'fake' on cpu whose quantize_blockwise tags its result, for blocksizes <= 256 only."""
    calls = []

    def quantize(A, code, blocksize):
        calls.append(blocksize)
        return registry.get_kernel("quantize_blockwise", "reference", "cpu").fn(A, code, blocksize)

    probes = []

    def probe():
        probes.append(1)
        return None

    registry.register_backend("fake", ("cpu",), probe=probe, description="test double")
    registry.register_kernel(
        "quantize_blockwise", "fake", "cpu", quantize, priority=10_000, kind="vectorized",
        supports=lambda A, code, blocksize: True if blocksize <= 256 else f"blocksize={blocksize} > 256",
    )  # fmt: skip
    yield calls, probes
    registry.unregister_backend("fake")


def quantize(blocksize):
    return torch.ops.bnb_api.quantize_blockwise(torch.randn(1000), bnb_api.functional.create_dynamic_map(), blocksize)


def test_priority_and_supports_fallback(fake_backend):
    calls, probes = fake_backend
    assert not probes, "probes run lazily, at first dispatch"
    quantize(256)
    assert calls == [256] and probes == [1]
    quantize(1024)  # unsupported by fake: falls down the chain
    assert calls == [256]
    verdicts = dict((k.backend, v) for k, v in registry.explain("quantize_blockwise", "cpu", {
        "A": torch.randn(4), "code": torch.zeros(256), "blocksize": 1024}))  # fmt: skip
    assert verdicts["fake"] == "blocksize=1024 > 256"
    quantize(64)
    assert probes == [1], "the probe result is cached"


def test_use_backend_and_exclude(fake_backend):
    calls, _ = fake_backend
    with bnb_api.exclude_backends("fake"):
        quantize(128)
    assert calls == []
    with bnb_api.use_backend("reference"):
        quantize(128)
    assert calls == []
    with bnb_api.use_backend("fake"):
        quantize(128)
    assert calls == [128]
    with pytest.raises(ValueError, match="not registered"):
        with bnb_api.use_backend("nope"):
            pass


def test_env_forcing(fake_backend, monkeypatch):
    calls, _ = fake_backend
    monkeypatch.setenv("BNB_API_EXCLUDE", "fake")
    quantize(128)
    assert calls == []
    monkeypatch.setenv("BNB_API_EXCLUDE", "")
    monkeypatch.setenv("BNB_API_BACKEND", "reference")
    quantize(128)
    assert calls == []
    monkeypatch.setenv("BNB_API_BACKEND", "missing")
    with pytest.raises(ValueError, match="forced backend 'missing'"):
        quantize(128)


def test_environment_reads_follow_every_change(monkeypatch):
    """The registry's cached environment reads (_getenv) give what os.environ.get gives after each change: set,
    changed, unicode, removed; and a stand-in mapping put in os.environ is asked directly."""
    import os

    name = "BNB_API_TEST_VARIABLE"
    monkeypatch.delenv(name, raising=False)
    assert registry._getenv(name) is None
    for value in ("a", "cpu, reference", "", "ünï", "a"):
        monkeypatch.setenv(name, value)
        assert registry._getenv(name) == os.environ.get(name) == value
    monkeypatch.delenv(name)
    assert registry._getenv(name) is None
    monkeypatch.setattr(os, "environ", {name: "stand-in"})
    assert registry._getenv(name) == "stand-in"


def test_unavailable_backend_warns_once_and_falls_back():
    registry.register_backend("broken", ("cpu",), probe=lambda: "libbroken.so not built")
    registry.register_kernel("dequantize_blockwise", "broken", "cpu", lambda *a: 1 / 0, priority=10_000)
    try:
        q, state = bnb_api.functional.quantize_blockwise(torch.randn(300), blocksize=256)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            bnb_api.functional.dequantize_blockwise(q, state)
            bnb_api.functional.dequantize_blockwise(q, state)
        messages = [str(w.message) for w in caught if "broken" in str(w.message)]
        assert len(messages) == 1 and "libbroken.so not built" in messages[0]
        verdict = dict((k.backend, v) for k, v in registry.explain("dequantize_blockwise", "cpu"))["broken"]
        assert "libbroken.so not built" in verdict
    finally:
        registry.unregister_backend("broken")


def test_probe_that_raises_counts_as_unavailable():
    backend = registry.register_backend("raiser", ("cpu",), probe=lambda: 1 / 0)
    try:
        ok, reason = backend.available()
        assert not ok and "ZeroDivisionError" in reason
    finally:
        registry.unregister_backend("raiser")


def test_register_errors():
    with pytest.raises(ValueError, match="not an op of the contract"):
        registry.register_kernel("quantize_3bit", "reference", "cpu", print)
    with pytest.raises(ValueError, match="not registered"):
        registry.register_kernel("gemv_4bit", "ghost", "cpu", print)
    with pytest.raises(ValueError, match="interface 99"):
        registry.register_backend("future", ("cpu",), interface_version=99)


def test_broken_plugin_warns_and_import_survives(monkeypatch):
    class EP:
        name, value = "bad_plugin", "bad_plugin.module:register"

        def load(self):
            raise ImportError("no module named bad_plugin")

    monkeypatch.setattr(backend_pkg, "entry_points", lambda group: [EP()])
    with pytest.warns(UserWarning, match="bad_plugin"):
        backend_pkg.load_plugins()
    assert any("bad_plugin" in k for k in backend_pkg.load_errors)
    backend_pkg.load_errors.clear()


def test_plugin_entry_point_registers(monkeypatch):
    def register():
        registry.register_backend("ep_backend", ("cpu",))
        registry.register_kernel("int8_mm_dequant", "ep_backend", "cpu", lambda *a: None, priority=-10)

    class EP:
        name, value = "ep", "ep:register"

        def load(self):
            return register

    monkeypatch.setattr(backend_pkg, "entry_points", lambda group: [EP()])
    backend_pkg.load_plugins()
    try:
        assert "ep_backend" in registry.backends()
    finally:
        registry.unregister_backend("ep_backend")


def test_reference_always_last_and_present():
    for op in ("gemv_4bit", "optimizer_step"):
        chain = registry.kernels(op, "cuda")
        assert chain[-1].backend == "reference"


def test_info_command_runs():
    out = subprocess.run([sys.executable, "-m", "bnb_api", "info"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "## Ops on cpu" in out.stdout and "gemv_4bit" in out.stdout and "reference" in out.stdout


def test_demo_command_runs():
    out = subprocess.run([sys.executable, "-m", "bnb_api", "demo", "--layers", "1", "--width", "256"],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "NF4 + double quant" in out.stdout and "saved" in out.stdout


def test_features_and_supported_devices_for_integrations():
    """bitsandbytes' integration signals: ``features`` holds "multi_backend"; ``supported_torch_devices`` lists
    the device types of the registered backends, a backend registered later included."""
    assert bnb_api.features == {"multi_backend"}
    assert {"cpu", "cuda"} <= bnb_api.supported_torch_devices
    assert "fakedev" not in bnb_api.supported_torch_devices
    bnb_api.register_backend("fake_for_devices", ["fakedev"])
    try:
        assert "fakedev" in bnb_api.supported_torch_devices
    finally:
        registry.unregister_backend("fake_for_devices")
    assert "fakedev" not in bnb_api.supported_torch_devices
