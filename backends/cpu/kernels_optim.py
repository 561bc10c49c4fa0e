"""cpu fused optimizer kernels: Python wrappers over the native ``_optim_lib`` (optim*.c, built with cffi).

Ops served (priority :data:`bnb_api.backends.cpu.PRIORITY`, kind ``native``, device type ``cpu``):
``optimizer_step`` and ``optimizer_step_multi`` for every optimizer of the contract, 32-bit and 8-bit
blockwise states, float32 / float16 / bfloat16 parameters. One C call steps a whole parameter group:
one pass over parameter, gradient and states (dequantize, update, requantize in registers), plus a
first read-only pass for the update norms when ``max_unorm > 0`` (LAMB / LARS clipping).

Every wrapper re-checks what the C code relies on (device, dtypes, contiguity, element counts), passes
every buffer length to C and checks the return code. The formulas are those of
:mod:`bnb_api.core.reference.optim`, evaluated in float32 operation by operation.

The native library loads lazily at the first call. The instruction set is chosen at load (AVX-512,
AVX2 or portable C); ``BNB_API_CPU_ISA=generic|avx2|avx512|avx512vbmi`` or :func:`forced_isa` caps it (tests use
the portable ``generic`` path as the oracle of the SIMD paths).
"""

from __future__ import annotations

import array

import torch

from bnb_api.backends.cpu.native import NativeFamily
from bnb_api.core.errors import BnbTypeError, BnbValueError
from bnb_api.core.ops import OPTIMIZERS, TWO_STATE_OPTIMIZERS

ISA_NAMES = ("generic", "avx2", "avx512", "avx512vbmi")
OPS = ("optimizer_step", "optimizer_step_multi")


def _check_ids(lib) -> None:
    ids = [getattr(lib, f"BNBO_{name.upper()}") for name in OPTIMIZERS]
    if ids != list(range(len(OPTIMIZERS))):
        raise BnbValueError(f"optim.h optimizer ids {ids} do not follow ops.OPTIMIZERS {OPTIMIZERS}")


_NATIVE = NativeFamily("optimizer", "_optim_lib", "build_optim.py", "bnbo", ISA_NAMES, validate=_check_ids)
_load = _NATIVE.load
load_error = _NATIVE.load_error
set_isa = _NATIVE.set_isa
isa = _NATIVE.isa
isa_detected = _NATIVE.isa_detected
forced_isa = _NATIVE.forced_isa


# --------------------------------------------------------------------------------------------------
# argument checks (what the C code relies on)
# --------------------------------------------------------------------------------------------------

_DTYPE_IDS = {torch.float32: "BNBO_F32", torch.float16: "BNBO_F16", torch.bfloat16: "BNBO_BF16"}


def _fail(op: str, msg: str, type_error: bool = False):
    raise (BnbTypeError if type_error else BnbValueError)(f"{op}: {msg}")


def _check_tensor(op: str, name: str, t, dtype: torch.dtype, numel: int) -> None:
    if not isinstance(t, torch.Tensor):
        _fail(op, f"{name} must be a torch.Tensor, got {type(t).__name__}", type_error=True)
    if t.device.type != "cpu":
        _fail(op, f"{name} is on {t.device}; the cpu kernels need cpu tensors")
    if t.dtype != dtype:
        _fail(op, f"{name}.dtype={t.dtype}, but should be {dtype}", type_error=True)
    if not t.is_contiguous():
        _fail(op, f"{name} must be contiguous")
    if t.numel() != numel:
        _fail(op, f"{name}.numel()={t.numel()}, but should be {numel}")


def _n_blocks(n: int, blocksize: int) -> int:
    return -(-n // blocksize)


def _check_group(op, optimizer, params, grads, state1, state2, absmax1, absmax2, qmap1, qmap2, step, max_unorm,
                 blocksize) -> tuple[torch.dtype, bool]:  # fmt: skip
    """Checks a group's shared arguments (optimizer, step, list lengths, dtype, blocksize, code books); returns
    (parameter dtype, eight_bit). :func:`_gather` checks each parameter's tensors."""
    if optimizer not in OPTIMIZERS:
        _fail(op, f"optimizer={optimizer!r} is not supported; expected one of {OPTIMIZERS}")
    if isinstance(step, bool) or not isinstance(step, int) or step < 1:
        _fail(op, f"step={step!r} must be an int >= 1 (the first step is 1)")
    if max_unorm < 0:
        _fail(op, f"max_unorm={max_unorm} must be >= 0 (0 disables update clipping)")
    n = len(params)
    two = optimizer in TWO_STATE_OPTIMIZERS
    eight_bit = bool(state1) and isinstance(state1[0], torch.Tensor) and state1[0].dtype == torch.uint8
    for name, lst, want in (("grads", grads, n), ("state1", state1, n), ("state2", state2, n if two else 0),
                            ("absmax1", absmax1, n if eight_bit else 0),
                            ("absmax2", absmax2, n if eight_bit and two else 0)):  # fmt: skip
        if len(lst) != want:
            _fail(op, f"{name} has {len(lst)} tensors, but should have {want} [optimizer={optimizer}, {n} params]")
    if n == 0:
        return torch.float32, eight_bit
    dtype = params[0].dtype if isinstance(params[0], torch.Tensor) else None
    if dtype not in _DTYPE_IDS:
        _fail(op, f"params[0].dtype={dtype}; expected one of {tuple(_DTYPE_IDS)}", type_error=True)
    if eight_bit:
        if isinstance(blocksize, bool) or not isinstance(blocksize, int) or blocksize < 64 or blocksize & blocksize - 1:
            _fail(op, f"blocksize={blocksize!r} is not supported; expected a power of two >= 64")
        for name, q, needed in (("qmap1", qmap1, True), ("qmap2", qmap2, two)):
            if needed:
                if q is None:
                    _fail(op, f"8-bit states need {name} (a float32 code book of 256 entries)")
                _check_tensor(op, name, q, torch.float32, 256)
    return dtype, eight_bit


def _ok(t, dtype: torch.dtype, numel: int) -> bool:
    return isinstance(t, torch.Tensor) and t.is_cpu and t.dtype == dtype and t.numel() == numel and t.is_contiguous()


def _gather(op, optimizer, params, grads, state1, state2, absmax1, absmax2, dtype, eight_bit, blocksize) -> list[int]:
    """Checks every parameter's tensors (cpu, dtype, contiguous, element count) and returns the fields of its
    ``bnbo_tensor`` (p, g, state1, state2, absmax1, absmax2 addresses, then n, n_state1, n_state2, n_absmax1,
    n_absmax2), parameter after parameter; a bad tensor raises naming it (:func:`_check_param`). The well-formed
    case is one expression per parameter, no lists built (the checks cost more than the step of a small one)."""
    two = optimizer in TWO_STATE_OPTIMIZERS
    k = 2 if optimizer == "ademamix" else 1
    state_dtype = torch.uint8 if eight_bit else torch.float32
    f32, tensor = torch.float32, torch.Tensor
    rows: list[int] = []
    for i in range(len(params)):
        p, g, s1 = params[i], grads[i], state1[i]
        m = p.numel() if isinstance(p, tensor) else -1
        s2 = state2[i] if two else None
        nb = _n_blocks(m, blocksize) if eight_bit else 0
        a1 = absmax1[i] if eight_bit else None
        a2 = absmax2[i] if eight_bit and two else None
        if not (
            _ok(p, dtype, m) and _ok(g, dtype, m) and _ok(s1, state_dtype, k * m)
            and (not two or _ok(s2, state_dtype, m))
            and (not eight_bit or _ok(a1, f32, k * nb))
            and (not (eight_bit and two) or _ok(a2, f32, nb))
        ):  # fmt: skip
            _check_param(op, i, p, g, s1, s2, a1, a2, dtype, state_dtype, m, k, nb, two, eight_bit)
        rows += (p.data_ptr(), g.data_ptr(), s1.data_ptr(), s2.data_ptr() if two else 0,
                 a1.data_ptr() if eight_bit else 0, a2.data_ptr() if eight_bit and two else 0,
                 m, k * m, m if two else 0, k * nb if eight_bit else 0, nb if eight_bit and two else 0)  # fmt: skip
    return rows


def _check_param(op, i, p, g, s1, s2, a1, a2, dtype, state_dtype, m, k, nb, two, eight_bit) -> None:
    """Raises naming the first of parameter ``i``'s tensors that is not as :func:`_gather` needs it."""
    want = [("params", p, dtype, m), ("grads", g, dtype, m), ("state1", s1, state_dtype, k * m)]
    if two:
        want.append(("state2", s2, state_dtype, m))
    if eight_bit:
        want.append(("absmax1", a1, torch.float32, k * nb))
        if two:
            want.append(("absmax2", a2, torch.float32, nb))
    for name, t, dt, numel in want:
        if not _ok(t, dt, numel):
            _check_tensor(op, f"{name}[{i}]", t, dt, numel)


_FIELDS = ("p", "g", "state1", "state2", "absmax1", "absmax2", "n", "n_state1", "n_state2", "n_absmax1", "n_absmax2")


def _tensor_array(ffi, rows: list[int], n: int):
    """A ``bnbo_tensor[n]`` holding ``rows`` (11 fields per parameter, as :func:`_gather` lists them)."""
    arr = ffi.new("bnbo_tensor[]", n)
    packed = array.array("Q", rows)
    if _flat_layout(ffi):
        ffi.memmove(arr, packed, 8 * len(rows))
        return arr
    for i in range(n):
        t, row = arr[i], rows[11 * i : 11 * i + 11]
        for j, name in enumerate(_FIELDS):
            setattr(t, name, ffi.cast("void *", row[j]) if j < 6 else row[j])
    return arr


def _flat_layout(ffi) -> bool:
    """Whether ``bnbo_tensor`` is 11 consecutive 8-byte fields in _FIELDS order (LP64), so rows copy in."""
    if _LAYOUT:
        return _LAYOUT[0]
    flat = ffi.sizeof("bnbo_tensor") == 88 and ffi.sizeof("void *") == 8
    flat = flat and all(ffi.offsetof("bnbo_tensor", name) == 8 * j for j, name in enumerate(_FIELDS))
    _LAYOUT.append(flat)
    return flat


_LAYOUT: list[bool] = []


# --------------------------------------------------------------------------------------------------
# the step
# --------------------------------------------------------------------------------------------------


def _step(op, optimizer, params, grads, state1, state2, absmax1, absmax2, qmap1, qmap2, lr, beta1, beta2, beta3,
          alpha, eps, weight_decay, step, gnorm_scale, max_unorm, blocksize) -> None:  # fmt: skip
    dtype, eight_bit = _check_group(op, optimizer, params, grads, state1, state2, absmax1, absmax2, qmap1, qmap2,
                                    step, max_unorm, blocksize)  # fmt: skip
    if not params:
        return
    ffi, lib = _load()
    two = optimizer in TWO_STATE_OPTIMIZERS
    null = ffi.NULL
    h = ffi.new("bnbo_hparams *")
    h.optimizer = OPTIMIZERS.index(optimizer)
    h.step = step
    h.lr, h.beta1, h.beta2, h.beta3, h.alpha = float(lr), float(beta1), float(beta2), float(beta3), float(alpha)
    h.eps, h.weight_decay, h.gnorm_scale = float(eps), float(weight_decay), float(gnorm_scale)
    h.max_unorm = float(max_unorm)
    rows = _gather(op, optimizer, params, grads, state1, state2, absmax1, absmax2, dtype, eight_bit, blocksize)
    arr = _tensor_array(ffi, rows, len(params))
    q1 = ffi.cast("float *", qmap1.data_ptr()) if eight_bit else null
    q2 = ffi.cast("float *", qmap2.data_ptr()) if eight_bit and two else null
    rc = lib.bnbo_step(
        h, getattr(lib, _DTYPE_IDS[dtype]), int(eight_bit), q1, 256 if eight_bit else 0, q2,
        256 if eight_bit and two else 0, int(blocksize), arr, len(params), torch.get_num_threads(),
    )  # fmt: skip
    if rc == lib.BNBO_ENOMEM:
        raise MemoryError(f"{op}: the native kernel could not allocate its scratch memory")
    if rc != lib.BNBO_OK:
        raise BnbValueError(f"{op}: the native kernel rejected the arguments (code {rc}) [optimizer={optimizer}]")


def optimizer_step(optimizer: str, p: torch.Tensor, g: torch.Tensor, state1: torch.Tensor, state2: torch.Tensor | None,
                   absmax1: torch.Tensor | None, absmax2: torch.Tensor | None, qmap1: torch.Tensor | None,
                   qmap2: torch.Tensor | None, lr: float, beta1: float, beta2: float, beta3: float, alpha: float,
                   eps: float, weight_decay: float, step: int, gnorm_scale: float = 1.0, max_unorm: float = 0.0,
                   blocksize: int = 256) -> None:  # fmt: skip
    """Native ``bnb_api::optimizer_step`` (in place): see :func:`bnb_api.core.ops.optimizer_step`.

    ``p``, ``g``: same float dtype and shape, contiguous. 32-bit: ``state1``/``state2`` float32 (AdEMAMix
    ``state1`` is ``(2, *p.shape)``); 8-bit: uint8 codes with float32 ``absmax1``/``absmax2`` per
    ``blocksize`` block and float32 (256,) code books ``qmap1``/``qmap2``.
    """
    _step("optimizer_step", optimizer, [p], [g], [state1], [] if state2 is None else [state2],
          [] if absmax1 is None else [absmax1], [] if absmax2 is None else [absmax2], qmap1, qmap2, lr, beta1, beta2,
          beta3, alpha, eps, weight_decay, step, gnorm_scale, max_unorm, blocksize)  # fmt: skip


def optimizer_step_multi(optimizer: str, params: list[torch.Tensor], grads: list[torch.Tensor],
                         state1: list[torch.Tensor], state2: list[torch.Tensor], absmax1: list[torch.Tensor],
                         absmax2: list[torch.Tensor], qmap1: torch.Tensor | None, qmap2: torch.Tensor | None,
                         lr: float, beta1: float, beta2: float, beta3: float, alpha: float, eps: float,
                         weight_decay: float, step: int, gnorm_scale: float = 1.0, max_unorm: float = 0.0,
                         blocksize: int = 256) -> None:  # fmt: skip
    """Native ``bnb_api::optimizer_step_multi``: every parameter of the group in one C call (in place).

    Lists hold one tensor per parameter (all parameters of one float dtype); ``state2`` / ``absmax1`` /
    ``absmax2`` are empty where the optimizer or the state width has none. Clipping norms
    (``max_unorm > 0``) are per parameter, as in :func:`optimizer_step`.
    """
    _step("optimizer_step_multi", optimizer, list(params), list(grads), list(state1), list(state2), list(absmax1),
          list(absmax2), qmap1, qmap2, lr, beta1, beta2, beta3, alpha, eps, weight_decay, step, gnorm_scale,
          max_unorm, blocksize)  # fmt: skip


# --------------------------------------------------------------------------------------------------
# registration
# --------------------------------------------------------------------------------------------------


def _supports_group(params, grads, qmap1, qmap2) -> bool | str:
    if not params:
        return True
    dtype = params[0].dtype
    if dtype not in _DTYPE_IDS:
        return f"parameter dtype {dtype} (native kernels take float32/float16/bfloat16)"
    for i, (p, g) in enumerate(zip(params, grads)):
        # the kernels read g in the parameter's dtype; mixed dtypes fall back to the reference
        if p.dtype != dtype or g.dtype != dtype:
            return f"params[{i}]/grads[{i}] dtypes {p.dtype}/{g.dtype} differ from {dtype} (mixed dtypes)"
        if not p.is_cpu:
            return f"params[{i}] is on {p.device}"
    for name, q in (("qmap1", qmap1), ("qmap2", qmap2)):
        if q is not None and not q.is_contiguous():
            return f"{name} is not contiguous"
    return True


def _supports_step(optimizer, p, g, state1, state2, absmax1, absmax2, qmap1, qmap2, **_) -> bool | str:
    return _supports_group([p], [g], qmap1, qmap2)


def _supports_multi(optimizer, params, grads, state1, state2, absmax1, absmax2, qmap1, qmap2, **_) -> bool | str:
    return _supports_group(params, grads, qmap1, qmap2)


def register_kernels(backend: str) -> None:
    """Register optimizer_step and optimizer_step_multi for ``backend`` on cpu (no native code loads here)."""
    from bnb_api.backends.cpu import PRIORITY
    from bnb_api.core import registry

    registry.register_kernel("optimizer_step", backend, "cpu", optimizer_step, priority=PRIORITY, kind="native",
                             supports=_supports_step)  # fmt: skip
    registry.register_kernel("optimizer_step_multi", backend, "cpu", optimizer_step_multi, priority=PRIORITY,
                             kind="native", supports=_supports_multi)  # fmt: skip


SEARCH_KINDS = ("register", "bucket", "octave")


def search_kind(qmap: torch.Tensor) -> str:
    """Which nearest-code search the 8-bit optimizers use with the 256-entry float32 code book ``qmap`` on the
    active instruction set (for steps of at least 32768 elements): "register", "bucket" or "octave"."""
    _check_tensor("search_kind", "qmap", qmap, torch.float32, 256)
    ffi, lib = _load()
    kind = lib.bnbo_search_kind(ffi.cast("float *", qmap.data_ptr()), 256)
    if kind < 0:
        raise BnbValueError(f"search_kind: the native kernel rejected the code book (code {kind})")
    return SEARCH_KINDS[kind]


def nearest_codes(qmap: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The requantization search alone: uint8 index of the nearest ``qmap`` entry for each float32 of ``x``
    (count of midpoints strictly below; ties to the lower index), with the active instruction set."""
    op = "nearest_codes"
    _check_tensor(op, "qmap", qmap, torch.float32, 256)
    _check_tensor(op, "x", x, torch.float32, x.numel() if isinstance(x, torch.Tensor) else -1)
    ffi, lib = _load()
    out = torch.empty(x.shape, dtype=torch.uint8)
    rc = lib.bnbo_nearest_codes(ffi.cast("float *", qmap.data_ptr()), 256, ffi.cast("float *", x.data_ptr()),
                                ffi.cast("uint8_t *", out.data_ptr()), x.numel())  # fmt: skip
    if rc != lib.BNBO_OK:
        raise BnbValueError(f"{op}: the native kernel rejected the arguments (code {rc})")
    return out
