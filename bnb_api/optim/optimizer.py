"""Optimizer base classes: state allocation (32-bit or 8-bit blockwise), per-parameter overrides, and
one fused ``optimizer_step_multi`` call per group of parameters that share their settings.

The update formulas live in the op (``bnb_api.core.reference.optim`` is their reference); these classes
only hold the state:

* ``state1`` / ``state2``: float32 like the parameter, or uint8 codes (signed dynamic map ``qmap1`` for
  the first moment, unsigned ``qmap2`` for the second, blocksize 256) with float32 ``absmax1`` /
  ``absmax2`` per block — 8-bit when ``optim_bits == 8`` and ``p.numel() >= min_8bit_size``;
* ``step``: a Python int per parameter (no device value is read in :meth:`step`);
* ``gnorm_vec``: the last 100 squared gradient norms when ``percentile_clipping < 100``.

A step groups the parameters of each param group by (state width, step count, device, settings) and
updates each bucket with one ``optimizer_step_multi`` call. Percentile clipping needs each parameter's
own gradient scale as a float, so it steps those parameters one by one and reads one value each.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Iterable
from itertools import chain
from typing import Any

import torch
from torch import Tensor

from bnb_api import functional as F
from bnb_api.core import ops as _ops
from bnb_api.core.errors import BnbValueError

BLOCKSIZE = 256
STATE_KEYS = ("state1", "state2", "absmax1", "absmax2", "qmap1", "qmap2", "gnorm_vec")


class MockArgs:
    """Attribute bag for the ``args`` argument (``optim_bits``, ``min_8bit_size``, ``max_unorm``, ...)."""

    def __init__(self, initial_data: dict[str, Any]) -> None:
        for key, value in initial_data.items():
            setattr(self, key, value)


class GlobalOptimManager:
    """Process-wide per-parameter optimizer overrides (e.g. 32-bit state for embeddings).

    ``mng = GlobalOptimManager.get_instance(); mng.register_parameters(model.parameters());
    mng.override_config(model.emb.weight, "optim_bits", 32)``.
    """

    _instance: GlobalOptimManager | None = None

    def __init__(self) -> None:
        raise RuntimeError("Call get_instance() instead")

    def initialize(self) -> None:
        self.pid2config: dict[int, dict[str, Any]] = {}
        self.index2config: dict[tuple[int, int], dict[str, Any]] = {}
        self.optimizer = None
        self.uses_config_override = False
        self.module_weight_config_triple: list[tuple[torch.nn.Module, str, dict[str, Any]]] = []

    @classmethod
    def get_instance(cls) -> GlobalOptimManager:
        if cls._instance is None:
            cls._instance = cls.__new__(cls)
            cls._instance.initialize()
        return cls._instance

    def register_parameters(self, params) -> None:
        """Record (group, index) positions of parameters that already have an override."""
        groups = list(params)
        if groups and not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for gindex, group in enumerate(groups):
            for pindex, p in enumerate(group["params"]):
                if id(p) in self.pid2config:
                    self.index2config[(gindex, pindex)] = self.pid2config[id(p)]

    def override_config(self, parameters, key: str | None = None, value: Any = None,
                        key_value_dict: dict[str, Any] | None = None) -> None:  # fmt: skip
        """Override hyper-parameters (``lr``, ``betas``, ``optim_bits``, ...) for ``parameters``."""
        self.uses_config_override = True
        if isinstance(parameters, Tensor):
            parameters = [parameters]
        if key is not None and value is not None:
            if key_value_dict is not None:
                raise BnbValueError("override_config: pass key/value or key_value_dict, not both")
            key_value_dict = {key: value}
        if key_value_dict is None:
            return
        for p in parameters:
            self.pid2config.setdefault(id(p), {}).update(key_value_dict)

    def register_module_override(self, module: torch.nn.Module, param_name: str, config: dict[str, Any]) -> None:
        """Override ``config`` for ``module.<param_name>`` once an optimizer sees it."""
        self.module_weight_config_triple.append((module, param_name, config))


_paged_warned: set[str] = set()


class Optimizer8bit(torch.optim.Optimizer):
    """Base of every bnb_api optimizer: overrides, state dicts without dtype casts, fused stepping."""

    def __init__(self, params, defaults: dict[str, Any], optim_bits: int = 32, is_paged: bool = False) -> None:
        super().__init__(params, defaults)
        self.initialized = False
        self.name2qmap: dict[str, Tensor] = {}
        self.is_paged = is_paged
        self.mng = GlobalOptimManager.get_instance()
        if is_paged:
            name = type(self).__name__
            if name not in _paged_warned:
                _paged_warned.add(name)
                warnings.warn(
                    f"{name}: paged optimizer state needs CUDA unified memory, which bnb_api does not manage; "
                    "the state is allocated as ordinary device memory (same results, no paging).",
                    stacklevel=3,
                )
        if optim_bits == 8:
            self.fill_qmap()

    def fill_qmap(self) -> None:
        self.name2qmap["dynamic"] = F.create_dynamic_map(signed=True)
        self.name2qmap["udynamic"] = F.create_dynamic_map(signed=False)

    def _qmap(self, name: str, device: torch.device) -> Tensor:
        if name not in self.name2qmap:
            self.fill_qmap()
        if self.name2qmap[name].device != device:
            self.name2qmap[name] = self.name2qmap[name].to(device)
        return self.name2qmap[name]

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)

    def load_state_dict(self, state_dict: dict[str, Any], move_to_device: bool = True) -> None:
        """Load a state from :meth:`state_dict`; states keep their dtype (8-bit codes stay codes) and move
        to their parameter's device."""
        groups = self.param_groups
        saved_groups = state_dict["param_groups"]
        if len(groups) != len(saved_groups):
            raise BnbValueError(
                f"load_state_dict: the state has {len(saved_groups)} param groups, the optimizer {len(groups)}"
            )
        for i, (g, sg) in enumerate(zip(groups, saved_groups)):
            if len(g["params"]) != len(sg["params"]):
                raise BnbValueError(
                    f"load_state_dict: param group {i} has {len(g['params'])} params, the state {len(sg['params'])}"
                )
        id_map = dict(
            zip(
                chain.from_iterable(g["params"] for g in saved_groups), chain.from_iterable(g["params"] for g in groups)
            )
        )
        state: defaultdict = defaultdict(dict)
        for k, v in state_dict["state"].items():
            if k not in id_map:
                state[k] = v
                continue
            param = id_map[k]
            new = {}
            for name, value in v.items():
                if isinstance(value, Tensor):
                    value = value.detach().clone()
                    if move_to_device:
                        value = value.to(param.device)
                new[name] = value
            state[param] = new
        param_groups = [dict(sg, params=g["params"]) for g, sg in zip(groups, saved_groups)]
        self.__setstate__({"state": state, "param_groups": param_groups})

    def check_overrides(self) -> None:
        """Turn module overrides (``register_module_override``) into parameter overrides."""
        for module, attr, config in self.mng.module_weight_config_triple:
            pmodule = getattr(module, attr)
            for gindex, group in enumerate(self.param_groups):
                for pindex, p in enumerate(group["params"]):
                    if p is pmodule:
                        self.mng.pid2config[id(p)] = config
                        self.mng.index2config[(gindex, pindex)] = config

    def _has_override(self, gindex: int, pindex: int, p: Tensor) -> bool:
        """Whether ``p`` may differ from its group's config (manager overrides, or a subclass's get_config)."""
        return (
            (gindex, pindex) in self.mng.index2config
            or id(p) in self.mng.pid2config
            or type(self).get_config is not Optimizer8bit.get_config
        )

    def get_config(self, gindex: int, pindex: int, group: dict[str, Any]) -> dict[str, Any]:
        """Hyper-parameters of one parameter: its group's, then the manager's overrides."""
        config = {
            "betas": group["betas"],
            "eps": group["eps"],
            "weight_decay": group["weight_decay"],
            "lr": group["lr"],
            "alpha": group.get("alpha", 0.0),
            "t_alpha": group.get("t_alpha"),
            "t_beta3": group.get("t_beta3"),
            "optim_bits": self.args.optim_bits,
            "min_8bit_size": self.args.min_8bit_size,
            "max_unorm": self.args.max_unorm,
            "percentile_clipping": getattr(self.args, "percentile_clipping", 100),
        }
        if (gindex, pindex) in self.mng.index2config:
            config.update(self.mng.index2config[(gindex, pindex)])
        p = group["params"][pindex]
        if id(p) in self.mng.pid2config:
            config.update(self.mng.pid2config[id(p)])
        return config

    # --- state -------------------------------------------------------------------------------------------
    def _state_shape(self, p: Tensor) -> tuple[int, ...]:
        return tuple(p.shape)

    @torch.no_grad()
    def init_state(self, group: dict[str, Any], p: Tensor, gindex: int, pindex: int) -> None:
        """Allocate ``state1`` (and ``state2``): 8-bit when configured and ``p`` is large enough."""
        config = self.get_config(gindex, pindex, group)
        bits = config["optim_bits"]
        if bits not in (8, 32):
            raise BnbValueError(f"{type(self).__name__}: optim_bits={bits} is not supported; expected 8 or 32")
        eight_bit = bits == 8 and p.numel() >= config["min_8bit_size"]
        state = self.state[p]
        state["step"] = 0
        shape1 = self._state_shape(p)
        dtype = torch.uint8 if eight_bit else torch.float32
        state["state1"] = torch.zeros(shape1, dtype=dtype, device=p.device)
        if self.two_state:
            state["state2"] = torch.zeros(p.shape, dtype=dtype, device=p.device)
        if eight_bit:
            nb = (p.numel() + BLOCKSIZE - 1) // BLOCKSIZE
            state["qmap1"] = self._qmap("dynamic", p.device)
            state["absmax1"] = torch.zeros((*shape1[: len(shape1) - p.dim()], nb), dtype=torch.float32, device=p.device)
            if self.two_state:
                state["qmap2"] = self._qmap("udynamic", p.device)
                state["absmax2"] = torch.zeros((nb,), dtype=torch.float32, device=p.device)
        if config["percentile_clipping"] < 100:
            state["gnorm_vec"] = torch.zeros((100,), dtype=torch.float32, device=p.device)

    def hyper(self, config: dict[str, Any], step: int) -> tuple[float, float, float, float]:
        """``(beta1, beta2, beta3, alpha)`` handed to the op at ``step`` (overridden per optimizer)."""
        betas = config["betas"]
        return float(betas[0]), float(betas[1]) if len(betas) > 1 else 0.0, 0.0, 0.0

    @torch.no_grad()
    def step(self, closure=None):
        """One optimization step; returns ``closure()``'s loss when a closure is given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if not self.initialized:
            self.check_overrides()
            self.initialized = True
        state_of = self.state.__getitem__
        for gindex, group in enumerate(self.param_groups):
            buckets: dict[tuple, list[Tensor]] = {}
            configs: dict[tuple, dict[str, Any]] = {}
            keys: dict[tuple, tuple] = {}  # config key -> itself: equal configs share one object, keyed by id
            group_config = None  # (config, id of its key) of the group's parameters without overrides, built once
            for pindex, p in enumerate(group["params"]):
                grad = p.grad
                if grad is None:
                    continue
                if grad.is_sparse:
                    raise BnbValueError(f"{type(self).__name__}: sparse gradients are not supported")
                state = state_of(p)
                if len(state) == 0:
                    self.init_state(group, p, gindex, pindex)
                if not p.is_contiguous():
                    p.data = p.data.contiguous()
                state["step"] += 1
                if self._has_override(gindex, pindex, p):
                    config = self.get_config(gindex, pindex, group)
                    config_id = _interned_id(keys, _config_key(config))
                else:
                    if group_config is None:
                        config = self.get_config(gindex, pindex, group)
                        group_config = (config, _interned_id(keys, _config_key(config)))
                    config, config_id = group_config
                key = (state["state1"].dtype, state["step"], p.is_cpu or p.device, config_id)  # cpu: no device object
                bucket = buckets.get(key)
                if bucket is None:
                    buckets[key] = bucket = []
                    configs[key] = config
                bucket.append(p)
            for key, params in buckets.items():
                self._update_bucket(params, configs[key], key[1])
        return loss

    def _update_bucket(self, params: list[Tensor], config: dict[str, Any], step: int) -> None:
        beta1, beta2, beta3, alpha = self.hyper(config, step)
        states = [self.state[p] for p in params]
        eight_bit = states[0]["state1"].dtype == torch.uint8
        two = self.two_state
        s1 = [s["state1"] for s in states]
        s2 = [s["state2"] for s in states] if two else []
        a1 = [s["absmax1"] for s in states] if eight_bit else []
        a2 = [s["absmax2"] for s in states] if eight_bit and two else []
        q1 = states[0].get("qmap1") if eight_bit else None
        q2 = states[0].get("qmap2") if eight_bit and two else None
        hp = (float(config["lr"]), beta1, beta2, beta3, alpha, float(config["eps"]), float(config["weight_decay"]))
        max_unorm = float(config["max_unorm"])
        grads = [p.grad for p in params]
        pclip = config["percentile_clipping"]
        if pclip >= 100:
            _ops.step_optimizer_multi(
                self.optimizer_name, params, grads, s1, s2, a1, a2, q1, q2, *hp, step, 1.0, max_unorm, BLOCKSIZE
            )
            return
        for i, p in enumerate(params):  # per-parameter gradient scale: one host read each
            _, _, scale = F.percentile_clipping(grads[i], states[i]["gnorm_vec"], step, pclip)
            _ops.step_optimizer(
                self.optimizer_name, p, grads[i], s1[i], s2[i] if two else None, a1[i] if eight_bit else None,
                a2[i] if eight_bit and two else None, q1, q2, *hp, step, float(scale), max_unorm, BLOCKSIZE,
            )  # fmt: skip


def _interned_id(keys: dict[tuple, tuple], key: tuple) -> int:
    """``id`` of the first key equal to ``key`` in ``keys`` (which keeps it alive): equal keys, equal ids, and
    a bucket key hashes an int instead of the whole configuration at every parameter."""
    return id(keys.setdefault(key, key))


def _config_key(config: dict[str, Any]) -> tuple:
    """A hashable key of a parameter's hyper-parameters: parameters with equal keys step in one call."""
    return tuple(sorted((k, _hashable(v)) for k, v in config.items()))


def _hashable(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(value)
    if isinstance(value, Tensor):
        return id(value)
    return value


def _make_args(args: Any, **values: Any) -> Any:
    if args is not None:
        for key, value in values.items():
            if not hasattr(args, key):
                setattr(args, key, value)
        return args
    return MockArgs(values)


def _check_common(name: str, lr: float, eps: float, weight_decay: float, betas: Iterable[float],
                  skip_zeros: bool, percentile_clipping: int) -> None:  # fmt: skip
    if not 0.0 <= lr:
        raise BnbValueError(f"{name}: lr={lr} must be >= 0")
    if not 0.0 <= eps:
        raise BnbValueError(f"{name}: eps={eps} must be >= 0")
    if not 0.0 <= weight_decay:
        raise BnbValueError(f"{name}: weight_decay={weight_decay} must be >= 0")
    for i, b in enumerate(betas):
        if not 0.0 <= b < 1.0:
            raise BnbValueError(f"{name}: betas[{i}]={b} must be in [0, 1)")
    if skip_zeros:
        raise BnbValueError(f"{name}: skip_zeros=True is not supported; pass skip_zeros=False")
    if not 0 < percentile_clipping <= 100:
        raise BnbValueError(f"{name}: percentile_clipping={percentile_clipping} must be in 1..100 (100 = off)")


class Optimizer2State(Optimizer8bit):
    """Optimizers with two states (Adam, AdamW, LAMB, AdEMAMix)."""

    two_state = True

    def __init__(self, optimizer_name: str, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, optim_bits: int = 32, args=None, min_8bit_size: int = 4096,
                 max_unorm: float = 0.0, skip_zeros: bool = False, is_paged: bool = False, alpha: float = 0.0,
                 t_alpha: int | None = None, t_beta3: int | None = None,
                 percentile_clipping: int = 100) -> None:  # fmt: skip
        name = type(self).__name__
        if isinstance(betas, str):  # bitsandbytes accepts "(0.9, 0.999)"
            betas = tuple(float(b) for b in betas.strip("()[] ").split(","))
        _check_common(name, lr, eps, weight_decay, betas, skip_zeros, percentile_clipping)
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, alpha=alpha, t_alpha=t_alpha,
                        t_beta3=t_beta3)  # fmt: skip
        super().__init__(params, defaults, optim_bits, is_paged)
        self.args = _make_args(args, optim_bits=optim_bits, min_8bit_size=min_8bit_size, max_unorm=max_unorm,
                               skip_zeros=skip_zeros, percentile_clipping=percentile_clipping)  # fmt: skip
        self.optimizer_name = optimizer_name

    def hyper(self, config: dict[str, Any], step: int) -> tuple[float, float, float, float]:
        betas = config["betas"]
        beta3 = float(betas[2]) if len(betas) > 2 else 0.0
        return float(betas[0]), float(betas[1]), beta3, float(config.get("alpha") or 0.0)


class Optimizer1State(Optimizer8bit):
    """Optimizers with one state (SGD momentum, LARS, Lion, RMSprop, Adagrad)."""

    two_state = False

    def __init__(self, optimizer_name: str, params, lr: float = 1e-3, betas=(0.9, 0.0), eps: float = 1e-8,
                 weight_decay: float = 0.0, optim_bits: int = 32, args=None, min_8bit_size: int = 4096,
                 max_unorm: float = 0.0, skip_zeros: bool = False, is_paged: bool = False,
                 percentile_clipping: int = 100) -> None:  # fmt: skip
        _check_common(type(self).__name__, lr, eps, weight_decay, betas, skip_zeros, percentile_clipping)
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults, optim_bits, is_paged)
        self.args = _make_args(args, optim_bits=optim_bits, min_8bit_size=min_8bit_size, max_unorm=max_unorm,
                               skip_zeros=skip_zeros, percentile_clipping=percentile_clipping)  # fmt: skip
        self.optimizer_name = optimizer_name
