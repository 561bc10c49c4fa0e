"""Quantized layers with bitsandbytes' names, arguments and state-dict keys.

* :class:`Linear4bit` / :class:`LinearNF4` / :class:`LinearFP4`: 4-bit weights (QLoRA). The weight is
  quantized when the module moves to a device (or at the first forward). One input row runs through
  ``gemv_4bit``; batches through ``dequantize_4bit`` + matmul. State dict: ``weight`` (packed bytes),
  ``weight.absmax``, ``weight.quant_map``, ``weight.nested_absmax``, ``weight.nested_quant_map``,
  ``weight.quant_state.bitsandbytes__nf4|fp4`` (JSON in uint8) — loadable back with ``load_state_dict``.
* :class:`Linear8bitLt`: LLM.int8() with ``threshold`` and ``has_fp16_weights``; state dict adds ``SCB``
  and ``weight_format`` (0 = row-major).
* Embeddings: :class:`Embedding`, :class:`StableEmbedding` (32-bit optimizer state, layer norm),
  :class:`Embedding8bit`, :class:`Embedding4bit` / :class:`EmbeddingNF4` / :class:`EmbeddingFP4`.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as tF
from torch import Tensor, nn

from bnb_api import functional as F
from bnb_api.autograd import MatmulLtState, matmul, matmul_4bit
from bnb_api.core.errors import BnbValueError
from bnb_api.nn.params import Int8Params, Params4bit

_QS_SUFFIXES = ("absmax", "quant_map", "nested_absmax", "nested_quant_map")


class StableEmbedding(nn.Embedding):
    """Embedding with Xavier init and a LayerNorm, whose weight always uses 32-bit optimizer state."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None,
                 max_norm: float | None = None, norm_type: float = 2.0, scale_grad_by_freq: bool = False,
                 sparse: bool = False, _weight: Tensor | None = None, device=None, dtype=None) -> None:  # fmt: skip
        super().__init__(num_embeddings, embedding_dim, padding_idx, max_norm, norm_type, scale_grad_by_freq,
                         sparse, _weight, device, dtype)  # fmt: skip
        self.norm = nn.LayerNorm(embedding_dim, device=device)
        from bnb_api.optim import GlobalOptimManager

        GlobalOptimManager.get_instance().register_module_override(self, "weight", {"optim_bits": 32})

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.weight)
        self._fill_padding_idx_with_zero()

    def forward(self, input: Tensor) -> Tensor:
        emb = tF.embedding(input, self.weight, self.padding_idx, self.max_norm, self.norm_type,
                           self.scale_grad_by_freq, self.sparse)  # fmt: skip
        return self.norm(emb.to(torch.get_default_dtype())).to(self.weight.dtype)


class Embedding(nn.Embedding):
    """``torch.nn.Embedding`` with Xavier init whose weight always uses 32-bit optimizer state."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None,
                 max_norm: float | None = None, norm_type: float = 2.0, scale_grad_by_freq: bool = False,
                 sparse: bool = False, _weight: Tensor | None = None, device=None) -> None:  # fmt: skip
        super().__init__(num_embeddings, embedding_dim, padding_idx, max_norm, norm_type, scale_grad_by_freq,
                         sparse, _weight, device=device)  # fmt: skip
        from bnb_api.optim import GlobalOptimManager

        GlobalOptimManager.get_instance().register_module_override(self, "weight", {"optim_bits": 32})

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.weight)
        self._fill_padding_idx_with_zero()


def fix_4bit_weight_quant_state_from_module(module: nn.Module) -> None:
    """Restore ``weight.quant_state`` from ``module.quant_state`` when a wrapper (e.g. FSDP) dropped it."""
    if getattr(module.weight, "quant_state", None) is not None:
        return
    if getattr(module, "quant_state", None) is None:
        return  # not quantized yet: the forward quantizes
    if not isinstance(module.weight, Params4bit):
        module.weight = Params4bit(module.weight, quant_storage=module.quant_storage, bnb_quantized=True)
    module.weight.quant_state = module.quant_state


def _ensure_quantized_4bit(module: nn.Module, device: torch.device) -> None:
    fix_4bit_weight_quant_state_from_module(module)
    weight = module.weight
    if isinstance(weight, Params4bit) and not weight.bnb_quantized:
        weight._quantize(device)


def _load_4bit_weight(module: nn.Module, state_dict: dict, prefix: str, error_msgs: list) -> None:
    """Take a quantized weight and its quant-state items out of ``state_dict`` (in place) and install
    them as a prequantized :class:`Params4bit` (nothing is unpickled: the state is JSON in uint8)."""
    packed_keys = [k for k in state_dict if k.startswith(prefix + "weight.quant_state.bitsandbytes__")]
    if not packed_keys:
        return
    weight = state_dict.pop(prefix + "weight")
    stats = {k[len(prefix + "weight.") :]: state_dict.pop(k) for k in packed_keys}
    for suffix in _QS_SUFFIXES:
        if prefix + "weight." + suffix in state_dict:
            stats[suffix] = state_dict.pop(prefix + "weight." + suffix)
    old = module.weight
    device = old.device if old.device.type != "meta" else weight.device
    try:
        module.weight = Params4bit.from_prequantized(weight, stats, requires_grad=False, device=device, module=module)
    except (ValueError, KeyError, TypeError) as exc:
        error_msgs.append(f"{prefix}weight: cannot load the 4-bit weight: {exc}")
        return
    module.quant_storage = weight.dtype


def _own_param(module: nn.Module, name: str) -> Tensor | None:
    """``getattr(module, name)`` for a registered parameter (or None slot) straight from ``_parameters``: a layer's
    forward reads its weight and bias at every call, and ``nn.Module.__getattr__`` costs about 0.4 us each."""
    params = module._parameters
    return params[name] if name in params else getattr(module, name)


class Linear4bit(nn.Linear):
    """QLoRA linear layer with a 4-bit (NF4/FP4) weight; ``compute_dtype`` is the matmul dtype."""

    def __init__(self, input_features: int, output_features: int, bias: bool = True,
                 compute_dtype: torch.dtype | None = None, compress_statistics: bool = True, quant_type: str = "fp4",
                 quant_storage: torch.dtype = torch.uint8, device=None) -> None:  # fmt: skip
        super().__init__(input_features, output_features, bias, device)
        self.weight = Params4bit(self.weight.data, requires_grad=False, compress_statistics=compress_statistics,
                                 quant_type=quant_type, quant_storage=quant_storage, module=self)  # fmt: skip
        self.compute_dtype = compute_dtype
        self.compute_type_is_set = compute_dtype is not None
        self.quant_state = None
        self.quant_storage = quant_storage

    def set_compute_type(self, x: Tensor) -> None:
        """Compute in ``x.dtype`` for float32/bfloat16 inputs (float16 keeps the configured dtype)."""
        if x.dtype in (torch.float32, torch.bfloat16):
            self.compute_dtype = x.dtype
        elif x.dtype == torch.float16 and self.compute_dtype in (None, torch.float32):
            what = "inference" if x.numel() == x.shape[-1] else "inference or training speed"
            warnings.warn(f"Input type into Linear4bit is torch.float16, but bnb_4bit_compute_dtype=torch.float32 "
                          f"(default). This will lead to slow {what}.", UserWarning, stacklevel=3)  # fmt: skip

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        quant_state = getattr(self.weight, "quant_state", None)
        if quant_state is not None:
            for k, v in quant_state.as_dict(packed=True).items():
                destination[prefix + "weight." + k] = v if keep_vars else v.detach()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):  # fmt: skip
        state_dict = dict(state_dict)
        _load_4bit_weight(self, state_dict, prefix, error_msgs)
        if prefix + "weight" not in state_dict and isinstance(self.weight, Params4bit) and self.weight.bnb_quantized:
            state_dict[prefix + "weight"] = self.weight  # the quantized weight was installed above
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        weight = _own_param(self, "weight")
        if getattr(weight, "quant_state", None) is None or not getattr(weight, "bnb_quantized", False):
            _ensure_quantized_4bit(self, x.device)
            weight = self.weight
        if not self.compute_type_is_set:
            self.set_compute_type(x)
            self.compute_type_is_set = True
        inp_dtype, compute_dtype = x.dtype, self.compute_dtype
        if compute_dtype is not None and compute_dtype != inp_dtype:
            x = x.to(compute_dtype)
        bias = _own_param(self, "bias")
        if bias is not None and bias.dtype != x.dtype:  # as bitsandbytes: the bias takes the compute dtype, in place
            bias.data = bias.data.to(x.dtype)
        out = matmul_4bit(x, F.plain_weight(weight), bias=bias, quant_state=weight.quant_state)
        return out if out.dtype == inp_dtype else out.to(inp_dtype)


class LinearFP4(Linear4bit):
    """:class:`Linear4bit` with ``quant_type='fp4'``."""

    def __init__(self, input_features: int, output_features: int, bias: bool = True,
                 compute_dtype: torch.dtype | None = None, compress_statistics: bool = True,
                 quant_storage: torch.dtype = torch.uint8, device=None) -> None:  # fmt: skip
        super().__init__(input_features, output_features, bias, compute_dtype, compress_statistics, "fp4",
                         quant_storage, device)  # fmt: skip


class LinearNF4(Linear4bit):
    """:class:`Linear4bit` with ``quant_type='nf4'`` (NormalFloat, QLoRA)."""

    def __init__(self, input_features: int, output_features: int, bias: bool = True,
                 compute_dtype: torch.dtype | None = None, compress_statistics: bool = True,
                 quant_storage: torch.dtype = torch.uint8, device=None) -> None:  # fmt: skip
        super().__init__(input_features, output_features, bias, compute_dtype, compress_statistics, "nf4",
                         quant_storage, device)  # fmt: skip


LINEAR_8BIT_WEIGHTS_FORMAT_MAPPING = {"row": 0}
INVERSE_LINEAR_8BIT_WEIGHTS_FORMAT_MAPPING = {0: "row"}


def maybe_rearrange_weight(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
    """Load-time hook: accept ``weight_format`` 0 / 'row' (the only layout) and drop the key."""
    if state_dict.get(f"{prefix}weight") is None:
        return
    weight_format = state_dict.pop(f"{prefix}weight_format", "row")
    if isinstance(weight_format, Tensor):
        weight_format = weight_format.item()
    if isinstance(weight_format, int):
        if weight_format not in INVERSE_LINEAR_8BIT_WEIGHTS_FORMAT_MAPPING:
            raise BnbValueError(f"weight_format={weight_format} is not supported; expected 0 (row-major)")
        weight_format = INVERSE_LINEAR_8BIT_WEIGHTS_FORMAT_MAPPING[weight_format]
    if weight_format != "row":
        raise BnbValueError(f"weight_format={weight_format!r} is not supported; expected 'row'")


class Linear8bitLt(nn.Linear):
    """LLM.int8() linear layer: int8 weight rows + outlier columns of the input (``threshold``) in 16/32-bit.

    With ``has_fp16_weights=False`` the weight is quantized when moved to a device; with ``True`` a float
    weight is trained and quantized on the fly.
    """

    def __init__(self, input_features: int, output_features: int, bias: bool = True, has_fp16_weights: bool = True,
                 threshold: float = 0.0, index=None, device=None) -> None:  # fmt: skip
        super().__init__(input_features, output_features, bias, device)
        self.state = MatmulLtState()
        self.index = index
        self.state.threshold = threshold
        self.state.has_fp16_weights = has_fp16_weights
        if threshold > 0.0 and not has_fp16_weights:
            self.state.use_pool = True
        self.weight = Int8Params(self.weight.data, has_fp16_weights=has_fp16_weights, requires_grad=has_fp16_weights)
        self._register_load_state_dict_pre_hook(maybe_rearrange_weight)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        scb = getattr(self.weight, "SCB", None)
        if scb is None:
            scb = self.state.SCB
        if not self.state.has_fp16_weights and scb is not None:
            destination[prefix + "SCB"] = scb if keep_vars else scb.detach()
            destination[prefix + "weight_format"] = torch.tensor(0, dtype=torch.uint8)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):  # fmt: skip
        scb_key = prefix + "SCB"
        if scb_key in state_dict and not self.state.has_fp16_weights:
            weight = state_dict.get(prefix + "weight")
            if weight is not None and weight.dtype == torch.int8 and self.weight.dtype != torch.int8:
                # loading a quantized checkpoint into a fresh module: take the codes as they are
                self.weight = Int8Params(weight.to(self.weight.device).clone(), requires_grad=False,
                                         has_fp16_weights=False)  # fmt: skip
                self.weight.CB = self.weight.data
                self.weight.SCB = torch.empty(weight.shape[0], dtype=torch.float32, device=self.weight.device)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)  # fmt: skip
        if scb_key in unexpected_keys:
            weight_scb = getattr(self.weight, "SCB", None)
            if weight_scb is None:
                weight_scb = self.state.SCB
            if weight_scb is None:
                error_msgs.append(f"{scb_key}: the module is not quantized; call .to(device) before load_state_dict")
                return
            weight_scb.copy_(state_dict[scb_key])
            if self.state.CB is not None:
                self.state.CB = self.weight.data
            unexpected_keys.remove(scb_key)

    def init_8bit_state(self) -> None:
        """Move ``CB``/``SCB`` from the weight into :attr:`state` (done at the first forward)."""
        self.state.CB = self.weight.CB
        self.state.SCB = self.weight.SCB
        self.weight.CB = None
        self.weight.SCB = None

    def to(self, *args, **kwargs):
        result = super().to(*args, **kwargs)
        device, _, _, _ = torch._C._nn._parse_to(*args, **kwargs)
        if device is not None:
            if result.state.CB is not None:
                result.state.CB = result.state.CB.to(device)
            if result.state.SCB is not None:
                result.state.SCB = result.state.SCB.to(device)
        return result

    def forward(self, x: Tensor) -> Tensor:
        state = self.state
        state.is_training = self.training
        weight = _own_param(self, "weight")
        if weight.CB is not None:
            self.init_8bit_state()
        if not state.has_fp16_weights and state.CB is None and weight.dtype != torch.int8:
            weight._quantize(x.device)  # first use without .to(device)
            self.init_8bit_state()
        bias = _own_param(self, "bias")
        if bias is not None and bias.dtype != x.dtype:
            bias.data = bias.data.to(x.dtype)
        out = matmul(x, weight, bias=bias, state=state)
        if not state.has_fp16_weights and state.CB is not None:
            weight.data = state.CB
        return out


class Embedding8bit(nn.Embedding):
    """Embedding whose rows are stored int8 with one float32 scale per row (quantized on ``.to(device)``)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, device=None, dtype=None) -> None:
        super().__init__(num_embeddings, embedding_dim, device=device, dtype=dtype)
        self.dtype = self.weight.data.dtype
        self.weight = Int8Params(self.weight.data, has_fp16_weights=False, requires_grad=False)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        raise NotImplementedError("Saving Embedding8bit module is not implemented (as in bitsandbytes)")

    def forward(self, input: Tensor) -> Tensor:
        if self.weight.dtype != torch.int8:
            self.weight._quantize(input.device)
        rows = tF.embedding(input, self.weight.data)
        scales = tF.embedding(input, self.weight.SCB.view(self.num_embeddings, 1))
        return (rows * (scales / 127.0)).to(self.dtype)


class Embedding4bit(nn.Embedding):
    """Embedding with 4-bit rows; when ``embedding_dim`` is a multiple of the blocksize only the looked-up
    rows are dequantized."""

    def __init__(self, num_embeddings: int, embedding_dim: int, dtype=None, quant_type: str = "fp4",
                 quant_storage: torch.dtype = torch.uint8, device=None) -> None:  # fmt: skip
        super().__init__(num_embeddings, embedding_dim, device=device, dtype=dtype)
        self.dtype = self.weight.data.dtype
        self.weight = Params4bit(self.weight.data, requires_grad=False, compress_statistics=None,
                                 quant_type=quant_type, quant_storage=quant_storage, module=self)  # fmt: skip
        self.quant_state = None
        self.quant_storage = quant_storage
        if embedding_dim % self.weight.blocksize != 0:
            warnings.warn(f"Embedding size {embedding_dim} is not divisible by block size {self.weight.blocksize}. "
                          "This will lead to slow inference.", UserWarning, stacklevel=2)  # fmt: skip

    def _forward_with_partial_dequantize(self, input: Tensor) -> Tensor:
        qs = self.weight.quant_state
        half = self.embedding_dim // 2
        packed = self.weight.data.view(torch.uint8).view(self.num_embeddings, half)
        rows = tF.embedding(input, packed).reshape(-1, 1)
        blocks_per_row = self.embedding_dim // qs.blocksize
        absmax = F._absmax_of(qs).float().view(self.num_embeddings, blocks_per_row)
        sub_absmax = tF.embedding(input, absmax).reshape(-1)
        out = torch.ops.bnb_api.dequantize_4bit(rows, sub_absmax, qs.blocksize, qs.quant_type,
                                                [*input.shape, self.embedding_dim], self.dtype)  # fmt: skip
        return out

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        raise NotImplementedError("Saving Embedding4bit module is not implemented (as in bitsandbytes)")

    def forward(self, input: Tensor) -> Tensor:
        _ensure_quantized_4bit(self, input.device)
        qs = self.weight.quant_state
        if self.embedding_dim % qs.blocksize == 0:
            return self._forward_with_partial_dequantize(input)
        weight = F.dequantize_4bit(self.weight.data, qs)
        return tF.embedding(input, weight).to(self.dtype)


class EmbeddingFP4(Embedding4bit):
    """:class:`Embedding4bit` with FP4."""

    def __init__(self, num_embeddings: int, embedding_dim: int, dtype=None, quant_storage: torch.dtype = torch.uint8,
                 device=None) -> None:  # fmt: skip
        super().__init__(num_embeddings, embedding_dim, dtype=dtype, quant_type="fp4", quant_storage=quant_storage,
                         device=device)  # fmt: skip


class EmbeddingNF4(Embedding4bit):
    """:class:`Embedding4bit` with NF4."""

    def __init__(self, num_embeddings: int, embedding_dim: int, dtype=None, quant_storage: torch.dtype = torch.uint8,
                 device=None) -> None:  # fmt: skip
        super().__init__(num_embeddings, embedding_dim, dtype=dtype, quant_type="nf4", quant_storage=quant_storage,
                         device=device)  # fmt: skip
