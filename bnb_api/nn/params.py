"""Quantized parameters: :class:`Params4bit` (NF4/FP4) and :class:`Int8Params` (LLM.int8() rows).

Both quantize when moved to a device (``.to(device)``, ``.cpu()``, ``.cuda()``, or a module's ``.to``)
and keep the attributes Transformers and PEFT read (``quant_state``, ``quant_type``, ``blocksize``,
``compress_statistics``, ``quant_storage``, ``bnb_quantized``, ``module``; ``CB``, ``SCB``,
``has_fp16_weights``). Moving a quantized parameter between devices moves the packed data and its
statistics unchanged.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor

from bnb_api import functional as F
from bnb_api.core.errors import BnbValueError
from bnb_api.functional import QuantState


def _parse_to(*args, **kwargs) -> tuple[torch.device | None, torch.dtype | None, bool]:
    device, dtype, non_blocking, _ = torch._C._nn._parse_to(*args, **kwargs)
    return device, dtype, non_blocking


def _qs_property(name: str, getter):
    def fget(self):
        qs = self.__dict__.get("quant_state")
        value = getter(qs) if qs is not None else None
        if value is None and (qs is None or name.startswith("nested_") and qs.state2 is None):
            raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")
        return value

    return property(fget, doc=f"``quant_state``'s {name} (state-dict traversal by attribute, e.g. FSDP).")


class Params4bit(torch.nn.Parameter):
    """A weight that becomes 4-bit (NF4/FP4, blockwise) when moved to a device.

    Before quantization ``data`` is the float weight (N, K); after, the packed bytes
    ``(ceil(N*K/2) / itemsize, 1)`` in ``quant_storage`` and ``quant_state`` holds absmax, code book,
    shape and dtype (nested 8-bit absmax when ``compress_statistics``).
    """

    def __new__(
        cls,
        data: Tensor | None = None,
        requires_grad: bool = False,
        quant_state: QuantState | None = None,
        blocksize: int | None = None,
        compress_statistics: bool = True,
        quant_type: str = "fp4",
        quant_storage: torch.dtype = torch.uint8,
        module: torch.nn.Module | None = None,
        bnb_quantized: bool = False,
        **kwargs: Any,
    ) -> Params4bit:
        if data is None:
            data = torch.empty(0)
        if quant_type not in ("fp4", "nf4"):
            raise BnbValueError(f"Params4bit: quant_type={quant_type!r} is not supported; expected 'fp4' or 'nf4'")
        self = torch.Tensor._make_subclass(cls, data, requires_grad)
        self.blocksize = 64 if blocksize is None else blocksize
        self.compress_statistics = compress_statistics
        self.quant_type = quant_type
        self.quant_state = quant_state
        self.quant_storage = quant_storage
        self.bnb_quantized = bnb_quantized
        self.module = module
        return self

    # --- pickling and copies -------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["data"] = self.data
        state["requires_grad"] = self.requires_grad
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.requires_grad = state["requires_grad"]
        self.blocksize = state["blocksize"]
        self.compress_statistics = state["compress_statistics"]
        self.quant_type = state["quant_type"]
        self.quant_state = state["quant_state"]
        self.data = state["data"]
        self.quant_storage = state["quant_storage"]
        self.bnb_quantized = state["bnb_quantized"]
        self.module = state["module"]

    def __reduce_ex__(self, protocol):
        return (_rebuild_params4bit, (self.__getstate__(),))

    def __deepcopy__(self, memo):
        state = self.__getstate__()
        new = type(self).__new__(type(self), data=copy.deepcopy(state["data"], memo))
        memo[id(self)] = new
        state = dict(state)
        state["data"] = new.data
        state["quant_state"] = copy.deepcopy(state["quant_state"], memo)
        state["module"] = memo.get(id(state["module"]), state["module"])
        new.__setstate__(state)
        return new

    def __copy__(self):
        new = type(self).__new__(type(self))
        new.__setstate__(self.__getstate__())
        return new

    # --- quant_state views (FSDP-style traversal of "weight.absmax" etc.) -------------------------------
    absmax = _qs_property("absmax", lambda qs: qs.absmax)
    code = _qs_property("code", lambda qs: qs.code)
    quant_map = _qs_property("quant_map", lambda qs: qs.code)
    offset = _qs_property("offset", lambda qs: qs.offset)
    state2 = _qs_property("state2", lambda qs: qs.state2)
    nested_absmax = _qs_property("nested_absmax", lambda qs: qs.state2.absmax if qs.state2 else None)
    nested_blocksize = _qs_property("nested_blocksize", lambda qs: qs.state2.blocksize if qs.state2 else None)
    nested_quant_map = _qs_property("nested_quant_map", lambda qs: qs.state2.code if qs.state2 else None)
    nested_dtype = _qs_property("nested_dtype", lambda qs: qs.state2.dtype if qs.state2 else None)
    nested_offset = _qs_property("nested_offset", lambda qs: qs.offset)

    @classmethod
    def from_prequantized(
        cls,
        data: Tensor,
        quantized_stats: dict[str, Any],
        requires_grad: bool = False,
        device: torch.device | str = "cuda",
        module: torch.nn.Module | None = None,
        **kwargs: Any,
    ) -> Params4bit:
        """A quantized parameter from packed ``data`` and the state-dict items of its quant state
        (``absmax``, ``quant_map``, ``nested_*`` and the packed ``quant_state.bitsandbytes__nf4|fp4``)."""
        self = torch.Tensor._make_subclass(cls, data.to(device))
        self.requires_grad = requires_grad
        self.quant_state = QuantState.from_dict(qs_dict=quantized_stats, device=device)
        self.blocksize = self.quant_state.blocksize
        self.compress_statistics = self.quant_state.nested
        self.quant_type = self.quant_state.quant_type
        self.bnb_quantized = True
        self.quant_storage = data.dtype
        self.module = module
        if module is not None:
            module.quant_state = self.quant_state
        return self

    def _quantize(self, device: torch.device | None) -> Params4bit:
        w = self.data.contiguous()
        if device is not None:
            w = w.to(device)
        if not w.is_floating_point():
            raise BnbValueError(f"Params4bit: cannot quantize data of dtype {w.dtype}; expected a float weight")
        packed, quant_state = F.quantize_4bit(
            w,
            blocksize=self.blocksize,
            compress_statistics=self.compress_statistics,
            quant_type=self.quant_type,
            quant_storage=self.quant_storage,
        )
        self.data = packed
        self.quant_state = quant_state
        if self.module is not None:
            self.module.quant_state = quant_state
        self.bnb_quantized = True
        return self

    def cpu(self) -> Params4bit:
        return self.to(device="cpu")

    def cuda(self, device=None, non_blocking: bool = False) -> Params4bit:
        return self.to(device="cuda" if device is None else device, non_blocking=non_blocking)

    def xpu(self, device=None, non_blocking: bool = False) -> Params4bit:
        return self.to(device="xpu" if device is None else device, non_blocking=non_blocking)

    def to(self, *args, **kwargs):
        device, dtype, non_blocking = _parse_to(*args, **kwargs)
        if device is not None and device.type != "meta" and not self.bnb_quantized:
            return self._quantize(device)
        if self.quant_state is not None and device is not None:
            self.quant_state.to(device)
        data = self.data
        if self.bnb_quantized:
            dtype = None  # packed bytes are never cast (quant_storage may be a float dtype)
        new = Params4bit(
            data.to(device=device, dtype=dtype, non_blocking=non_blocking),
            requires_grad=self.requires_grad,
            quant_state=self.quant_state,
            blocksize=self.blocksize,
            compress_statistics=self.compress_statistics,
            quant_type=self.quant_type,
            quant_storage=self.quant_storage,
            module=self.module,
            bnb_quantized=self.bnb_quantized,
        )
        return new

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (torch.chunk, torch.split):
            tensor = args[0]
            result = super().__torch_function__(func, types, args, kwargs)
            attrs = dict(
                requires_grad=tensor.requires_grad,
                quant_state=tensor.quant_state,
                blocksize=tensor.blocksize,
                compress_statistics=tensor.compress_statistics,
                quant_type=tensor.quant_type,
                quant_storage=tensor.quant_storage,
                module=tensor.module,
                bnb_quantized=tensor.bnb_quantized,
            )
            if isinstance(result, tuple):
                return tuple(cls(data=chunk, **attrs) for chunk in result)
            return cls(data=result, **attrs)
        return super().__torch_function__(func, types, args, kwargs)


def _rebuild_params4bit(state: dict[str, Any]) -> Params4bit:
    new = Params4bit.__new__(Params4bit, data=state["data"])
    new.__setstate__(state)
    return new


class Int8Params(torch.nn.Parameter):
    """A weight that becomes int8 rows (LLM.int8()) when moved to a device, unless ``has_fp16_weights``.

    After quantization ``data`` and ``CB`` are the int8 (N, K) codes, ``SCB`` the float32 (N,) row
    absmax: ``W = CB * SCB[:, None] / 127``.
    """

    def __new__(
        cls,
        data: Tensor | None = None,
        requires_grad: bool = True,
        has_fp16_weights: bool = False,
        CB: Tensor | None = None,
        SCB: Tensor | None = None,
        **kwargs: Any,
    ) -> Int8Params:
        if data is None:
            data = torch.empty(0)
        obj = torch.Tensor._make_subclass(cls, data, requires_grad)
        obj.CB = CB
        obj.SCB = SCB
        obj.has_fp16_weights = has_fp16_weights
        return obj

    def _quantize(self, device: torch.device | None) -> Int8Params:
        if self.has_fp16_weights:
            return super().to(device)
        w = self.data.contiguous()
        if device is not None:
            w = w.to(device)
        CB, SCB, _ = F.int8_vectorwise_quant(w.to(torch.float16))
        self.data = CB
        self.CB = CB
        self.SCB = SCB
        return self

    def cpu(self) -> Int8Params:
        return self.to(device="cpu")

    def cuda(self, device=None, non_blocking: bool = False) -> Int8Params:
        return self.to(device="cuda" if device is None else device, non_blocking=non_blocking)

    def xpu(self, device=None, non_blocking: bool = False) -> Int8Params:
        return self.to(device="xpu" if device is None else device, non_blocking=non_blocking)

    def __getstate__(self) -> dict[str, Any]:
        return {
            "data": self.data,
            "requires_grad": self.requires_grad,
            "has_fp16_weights": self.has_fp16_weights,
            "CB": self.CB,
            "SCB": self.SCB,
        }

    def __reduce_ex__(self, protocol):
        return (_rebuild_int8params, (self.__getstate__(),))

    def __deepcopy__(self, memo):
        new = type(self).__new__(
            type(self),
            data=copy.deepcopy(self.data, memo),
            requires_grad=self.requires_grad,
            has_fp16_weights=self.has_fp16_weights,
            CB=None,
            SCB=copy.deepcopy(self.SCB, memo),
        )
        new.CB = new.data if self.CB is not None and self.CB is self.data else copy.deepcopy(self.CB, memo)
        return new

    def __copy__(self):
        return _rebuild_int8params(self.__getstate__())

    def to(self, *args, **kwargs):
        device, dtype, non_blocking = _parse_to(*args, **kwargs)
        is_quantized = self.data.dtype == torch.int8
        if not is_quantized and device is not None and device.type != "meta" and self.data.device.type == "cpu":
            return self._quantize(device)
        if is_quantized:
            dtype = None  # int8 codes are never cast
        new = Int8Params(
            self.data.to(device=device, dtype=dtype, non_blocking=non_blocking),
            requires_grad=self.requires_grad,
            has_fp16_weights=self.has_fp16_weights,
        )
        if is_quantized:
            new.CB = new.data
            if self.SCB is not None:
                new.SCB = self.SCB.to(device) if device is not None else self.SCB
        return new


def _rebuild_int8params(state: dict[str, Any]) -> Int8Params:
    new = Int8Params(state["data"], state["requires_grad"], state["has_fp16_weights"], SCB=state["SCB"])
    new.CB = new.data if state["CB"] is not None else None
    return new
