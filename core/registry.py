"""The device registry: backends, their kernels, and the choice of kernel for each call.

A *backend* is a named provider of kernels for one or more device types (``cpu``, ``cuda``, ...). It
registers itself with :func:`register_backend` (an availability probe that runs lazily, at first use)
and each kernel with :func:`register_kernel` (op name, device type, priority, kind and an optional
``supports(**call)`` predicate). The reference backend registers every op for every device type
(``"*"``) at the lowest priority, so dispatch always has a fallback.

Dispatch (:func:`select`) walks the kernels of ``(op, device_type)`` by descending priority and takes
the first whose backend is available, not excluded, and whose ``supports`` accepts the call.

Control which backend serves:

* ``BNB_API_BACKEND=name`` (process) or ``with use_backend("name"):`` (block) forces one backend;
  ops it lacks or calls it does not support fall back to the reference.
* ``BNB_API_EXCLUDE=a,b`` or ``with exclude_backends("a", "b"):`` removes backends from the choice.
* :func:`explain` says which kernel would serve a call and why each other one would not.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from bnb_api.core.errors import BnbUnavailableError, BnbValueError

INTERFACE_VERSION = 1
"""Version of the backend interface; a plugin built for another version is skipped with a warning."""

REFERENCE = "reference"
COMPOSITE = "composite"
ANY_DEVICE = "*"
FALLBACKS = (REFERENCE, COMPOSITE)  # always candidates, whatever backend is forced
KINDS = ("native", "vectorized", "reference")

Probe = Callable[[], "str | None"]
Supports = Callable[..., "bool | str"]
Bind = Callable[[dict], "Callable[[Any], Any] | None"]


@dataclass
class Backend:
    """A named kernel provider. ``probe()`` returns ``None`` when usable, else the reason it is not."""

    name: str
    device_types: tuple[str, ...]
    probe: Probe | None = None
    description: str = ""
    _status: tuple[bool, str] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def available(self) -> tuple[bool, str]:
        """(usable, reason). Runs the probe once; a probe that raises counts as unavailable."""
        if self._status is None:
            with self._lock:
                if self._status is None:
                    self._status = self._run_probe()
        return self._status

    def _run_probe(self) -> tuple[bool, str]:
        if self.probe is None:
            return True, "ok"
        try:
            reason = self.probe()
        except Exception as exc:  # a broken native library must not break dispatch
            reason = f"probe failed: {type(exc).__name__}: {exc}"
        if reason:
            return False, str(reason)
        return True, "ok"

    def reset(self) -> None:
        """Forget the cached probe result (tests, or after building a library)."""
        self._status = None
        _changed()


@dataclass(frozen=True)
class Kernel:
    """One implementation of an op for one device type."""

    op: str
    backend: str
    device_type: str
    fn: Callable[..., Any]
    priority: int = 0
    kind: str = "native"
    supports: Supports | None = None
    bind: Bind | None = None

    def check(self, call: dict[str, Any]) -> str | None:
        """``None`` if this kernel takes ``call`` (the op's arguments by name), else the reason not."""
        if self.supports is None:
            return None
        try:
            verdict = self.supports(**call)
        except Exception as exc:
            return f"supports() raised {type(exc).__name__}: {exc}"
        if verdict is True:
            return None
        return verdict if isinstance(verdict, str) and verdict else "not supported for this call"

    @property
    def name(self) -> str:
        return f"{self.backend}:{self.op}"


_backends: dict[str, Backend] = {}
_kernels: dict[tuple[str, str], list[Kernel]] = {}
_warned: set[str] = set()
_forced: contextvars.ContextVar[str | None] = contextvars.ContextVar("bnb_api_forced", default=None)
_excluded: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar("bnb_api_excluded", default=frozenset())


def register_backend(
    name: str,
    device_types: tuple[str, ...] | list[str] | str,
    probe: Probe | None = None,
    description: str = "",
    interface_version: int = INTERFACE_VERSION,
) -> Backend:
    """Declare a backend. Re-registering a name replaces its probe and description."""
    if interface_version != INTERFACE_VERSION:
        raise BnbValueError(
            f"backend {name!r} targets bnb_api backend interface {interface_version}, "
            f"but this bnb_api provides interface {INTERFACE_VERSION}"
        )
    if isinstance(device_types, str):
        device_types = (device_types,)
    backend = Backend(name, tuple(device_types), probe, description)
    _backends[name] = backend
    _changed()
    return backend


def register_kernel(
    op: str,
    backend: str,
    device_type: str,
    fn: Callable[..., Any] | None = None,
    *,
    priority: int = 0,
    kind: str = "native",
    supports: Supports | None = None,
    bind: Bind | None = None,
):
    """Register ``fn`` as ``backend``'s kernel of ``op`` on ``device_type`` (usable as a decorator).

    ``fn`` takes the op's arguments in schema order, already checked by the op. ``supports``, if given,
    takes the same arguments by name and returns ``True`` or a reason string (or ``False``); it looks at
    metadata only (dtypes, shapes, devices, non-tensor arguments), never at values. ``bind`` (optional, ops with
    batch-1 plans: ``gemv_4bit``, ``int8_mm_outlier``) takes a checked call by name and returns a function of a new
    first argument of the same dtype, device and shape that computes ``fn`` on it with the rest of the call (or
    None): the weight-side work done once for a decoding loop (see :class:`bnb_api.core.ops.RowPlan`).
    """
    from bnb_api.core.ops import OP_NAMES

    if op not in OP_NAMES:
        raise BnbValueError(f"register_kernel: op={op!r} is not an op of the contract; expected one of {OP_NAMES}")
    if kind not in KINDS:
        raise BnbValueError(f"register_kernel: kind={kind!r}; expected one of {KINDS}")
    if backend not in _backends:
        raise BnbValueError(f"register_kernel: backend {backend!r} is not registered; call register_backend first")

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        kernel = Kernel(op, backend, device_type, func, priority, kind, supports, bind)
        chain = [k for k in _kernels.get((op, device_type), []) if k.backend != backend]
        chain.append(kernel)
        chain.sort(key=lambda k: -k.priority)
        _kernels[(op, device_type)] = chain
        _changed()
        return func

    return decorate(fn) if fn is not None else decorate


def unregister_backend(name: str) -> None:
    """Remove a backend and all its kernels (tests and plugins that unload)."""
    _backends.pop(name, None)
    for key, chain in list(_kernels.items()):
        _kernels[key] = [k for k in chain if k.backend != name]
    _changed()


def backends() -> dict[str, Backend]:
    """All registered backends by name."""
    return dict(_backends)


_chains: dict[tuple[str, str], tuple[Kernel, ...]] = {}
"""kernels() results, rebuilt after each registration change (dispatch asks on every call)."""
_epoch = [0]
"""Counts the changes that can alter a choice of kernel: registrations, removals, probe resets."""


def _changed() -> None:
    _chains.clear()
    _epoch[0] += 1


def selection_token() -> tuple:
    """Everything besides the call that :func:`select` depends on (registrations, probe resets, the forced and
    excluded backends of the context and of the environment): equal tokens, equal choices for equal calls."""
    return (_epoch[0], _forced.get(), _excluded.get(), _getenv("BNB_API_BACKEND"), _getenv("BNB_API_EXCLUDE"))


_ENV_KEYS: dict[str, Any] = {}
_ENV_VALUES: dict[Any, str] = {}


def _getenv(name: str) -> str | None:
    """``os.environ.get(name)``, read at every call as that is, in about 0.03 us instead of 0.57 (its key encoding
    and value decoding; every selection reads two variables): the mapping's own dict, which
    ``os.environ`` keeps current on each change, with the encoded key and decoded values cached. Any other
    mapping in ``os.environ`` (a test's stand-in) is asked directly."""
    env = os.environ
    if type(env) is not os._Environ:
        return env.get(name)
    key = _ENV_KEYS.get(name)
    if key is None:
        key = _ENV_KEYS[name] = env.encodekey(name)
    raw = env._data.get(key)
    if raw is None:
        return None
    value = _ENV_VALUES.get(raw)
    if value is None:
        if len(_ENV_VALUES) > 64:
            _ENV_VALUES.clear()
        value = _ENV_VALUES[raw] = env.decodevalue(raw)
    return value


def kernels(op: str, device_type: str) -> list[Kernel]:
    """The kernels for ``op`` on ``device_type`` by descending priority, the reference last."""
    return list(_chain(op, device_type))


def _chain(op: str, device_type: str) -> tuple[Kernel, ...]:
    chain = _chains.get((op, device_type))
    if chain is None:
        own = _kernels.get((op, device_type), [])
        chain = (*own, *[k for k in _kernels.get((op, ANY_DEVICE), []) if k not in own])
        _chains[(op, device_type)] = chain
    return chain


def get_kernel(op: str, backend: str, device_type: str) -> Kernel:
    """The kernel ``backend`` registered for ``op`` on ``device_type`` (or for any device)."""
    for kernel in kernels(op, device_type):
        if kernel.backend == backend:
            return kernel
    raise BnbUnavailableError(f"backend {backend!r} has no kernel for op {op!r} on device type {device_type!r}")


def _env_forced() -> str | None:
    return _getenv("BNB_API_BACKEND") or None


_parsed_exclude: dict[str, frozenset[str]] = {}


def _env_excluded() -> frozenset[str]:
    raw = _getenv("BNB_API_EXCLUDE") or ""
    parsed = _parsed_exclude.get(raw)  # read on every selection, parsed once per value
    if parsed is None:
        parsed = _parsed_exclude.setdefault(raw, frozenset(x.strip() for x in raw.split(",") if x.strip()))
    return parsed


def _verdicts(op: str, device_type: str, call: dict[str, Any]) -> Iterator[tuple[Kernel, str | None]]:
    forced = _forced.get() or _env_forced()
    excluded = _excluded.get() | _env_excluded()
    if forced is not None and forced not in _backends:
        raise BnbValueError(
            f"forced backend {forced!r} (BNB_API_BACKEND or use_backend) is not registered; "
            f"registered: {sorted(_backends)}"
        )
    for kernel in _chain(op, device_type):
        if kernel.backend == REFERENCE:
            yield kernel, None
            continue
        if kernel.backend in excluded:
            yield kernel, "excluded"
            continue
        if forced is not None and kernel.backend != forced and kernel.backend not in FALLBACKS:
            yield kernel, f"backend {forced!r} is forced"
            continue
        ok, reason = _backends[kernel.backend].available()
        if not ok:
            yield kernel, f"backend unavailable: {reason}"
            continue
        yield kernel, kernel.check(call)


def select(op: str, device_type: str, call: dict[str, Any]) -> Kernel:
    """The kernel that serves ``op(**call)`` on ``device_type``."""
    if _forced.get() is None and not _excluded.get() and not _env_forced() and not _env_excluded():
        for kernel in _chain(op, device_type):  # nothing forced or excluded: _verdicts' walk, in one loop
            if kernel.backend == REFERENCE:
                return kernel
            ok, reason = _backends[kernel.backend].available()
            if not ok:
                _warn_unavailable(kernel, reason)
            elif kernel.check(call) is None:
                return kernel
        raise BnbUnavailableError(f"no kernel for op {op!r} on device type {device_type!r}")
    for kernel, reason in _verdicts(op, device_type, call):
        if reason is None:
            return kernel
        if reason.startswith("backend unavailable"):
            _warn_unavailable(kernel, reason[21:])
    raise BnbUnavailableError(f"no kernel for op {op!r} on device type {device_type!r}")


def _warn_unavailable(kernel: Kernel, reason: str) -> None:
    """Warn once per backend that it was skipped because it is unavailable (``reason``)."""
    if kernel.backend not in _warned:
        _warned.add(kernel.backend)
        warnings.warn(f"bnb_api: {kernel.backend} backend not used: {reason}", stacklevel=5)


def explain(op: str, device_type: str, call: dict[str, Any] | None = None) -> list[tuple[Kernel, str]]:
    """Each candidate kernel with ``"selected"``, ``"fallback"`` or the reason it would not serve.

    Without ``call``, ``supports`` predicates are not asked (only availability and forcing count).
    """
    out: list[tuple[Kernel, str]] = []
    chosen = False
    for kernel, reason in _verdicts(op, device_type, call or {}):
        if call is None and reason is not None and not reason.startswith(("backend", "excluded")):
            reason = None
        if reason is None and not chosen:
            out.append((kernel, "selected"))
            chosen = True
        else:
            out.append((kernel, reason or "lower priority"))
    return out


@contextlib.contextmanager
def use_backend(name: str | None) -> Iterator[None]:
    """Within the block, only backend ``name`` (and the reference fallback) serves calls."""
    if name is not None and name not in _backends:
        raise BnbValueError(f"use_backend: {name!r} is not registered; registered: {sorted(_backends)}")
    token = _forced.set(name)
    try:
        yield
    finally:
        _forced.reset(token)


@contextlib.contextmanager
def exclude_backends(*names: str) -> Iterator[None]:
    """Within the block, the named backends serve no call."""
    token = _excluded.set(_excluded.get() | frozenset(names))
    try:
        yield
    finally:
        _excluded.reset(token)
