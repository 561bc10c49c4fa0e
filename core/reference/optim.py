"""Reference optimizer steps: the update formulas of every optimizer, written once.

All math runs in float32 on flat views. 8-bit blockwise states are dequantized, updated and
requantized (nearest code of ``qmap``, new absmax per block); the parameter moves with the updated
float32 states, as in bitsandbytes. Every backend is tested against these functions.

Per optimizer (``g`` already multiplied by ``gnorm_scale``; ``c1 = 1 - beta1^step``, ``c2 = 1 - beta2^step``):

* adam:     g += wd*p;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  u = (m/c1) / (sqrt(v/c2) + eps)
* adamw, lamb: as adam without ``g += wd*p``; instead ``p *= 1 - lr*wd`` (decoupled)
* ademamix: m1 = b1 m1 + (1-b1) g;  m2 = b3 m2 + (1-b3) g;  v = b2 v + (1-b2) g^2;
            u = (m1/c1 + alpha m2) / (sqrt(v/c2) + eps);  decoupled weight decay
* momentum, lars: g += wd*p;  m = g at step 1, else b1 m + g;  u = m
* lion:     u = sign(b1 m + (1-b1) g);  m = b2 m + (1-b2) g;  decoupled weight decay
* rmsprop:  g += wd*p;  v = b1 v + (1-b1) g^2;  u = g / (sqrt(v) + eps)
* adagrad:  g += wd*p;  v = v + g^2;  u = g / (sqrt(v) + eps)

then ``p -= lr * s * u`` where ``s = min(1, max_unorm * ||p|| / ||u||)`` when ``max_unorm > 0`` and
``||p|| > 0`` (update clipping of LAMB / LARS), else 1.
"""

from __future__ import annotations

import math

import torch

from bnb_api.core.reference.blockwise import dequantize_flat, quantize_flat

COUPLED_WEIGHT_DECAY = ("adam", "momentum", "lars", "rmsprop", "adagrad")


def update_direction(
    optimizer: str, g: torch.Tensor, p: torch.Tensor, states: list[torch.Tensor], beta1: float, beta2: float,
    beta3: float, alpha: float, eps: float, weight_decay: float, step: int,
) -> torch.Tensor:  # fmt: skip
    """The update ``u`` (before lr and clipping); updates the float32 ``states`` in place."""
    if optimizer in COUPLED_WEIGHT_DECAY and weight_decay > 0:
        g = g + weight_decay * p
    if optimizer in ("adam", "adamw", "lamb"):
        m, v = states
        m.mul_(beta1).add_((1 - beta1) * g)
        v.mul_(beta2).add_((1 - beta2) * g * g)
        c1, c2 = 1 - beta1**step, 1 - beta2**step
        return (m / c1) / (torch.sqrt(v / c2) + eps)
    if optimizer == "ademamix":
        m1, m2, v = states
        m1.mul_(beta1).add_((1 - beta1) * g)
        m2.mul_(beta3).add_((1 - beta3) * g)
        v.mul_(beta2).add_((1 - beta2) * g * g)
        c1, c2 = 1 - beta1**step, 1 - beta2**step
        return (m1 / c1 + alpha * m2) / (torch.sqrt(v / c2) + eps)
    if optimizer in ("momentum", "lars"):
        (m,) = states
        if step == 1:
            m.copy_(g)
        else:
            m.mul_(beta1).add_(g)
        return m.clone()
    if optimizer == "lion":
        (m,) = states
        u = torch.sign(beta1 * m + (1 - beta1) * g)
        m.mul_(beta2).add_((1 - beta2) * g)
        return u
    if optimizer == "rmsprop":
        (v,) = states
        v.mul_(beta1).add_((1 - beta1) * g * g)
        return g / (torch.sqrt(v) + eps)
    if optimizer == "adagrad":
        (v,) = states
        v.add_(g * g)
        return g / (torch.sqrt(v) + eps)
    raise ValueError(f"unknown optimizer {optimizer!r}")


def clip_scale(u: torch.Tensor, p: torch.Tensor, max_unorm: float) -> torch.Tensor | float:
    """``min(1, max_unorm * ||p|| / ||u||)``, or 1 when clipping is off or ``||p|| == 0``.

    The norms are summed in float64 and rounded to float32 (a float32 sum of squares underflows for tiny
    parameters and would turn clipping off); the ratio is float32."""
    if max_unorm <= 0:
        return 1.0
    unorm = torch.linalg.vector_norm(u.double()).float()
    limit = max_unorm * torch.linalg.vector_norm(p.double()).float()
    clip = (limit > 0) & (unorm > limit)
    return torch.where(clip, limit / unorm.clamp(min=1e-38), torch.ones_like(unorm))


def apply_update(
    optimizer: str, p32: torch.Tensor, u: torch.Tensor, lr: float, weight_decay: float, max_unorm: float
) -> torch.Tensor:
    """New float32 parameter values: decoupled weight decay, then ``p - lr * s * u``."""
    scale = clip_scale(u, p32, max_unorm)
    if optimizer not in COUPLED_WEIGHT_DECAY and weight_decay > 0:
        p32 = p32 * (1 - lr * weight_decay)
    return p32 - lr * scale * u


def _state_views(optimizer: str, state1: torch.Tensor, state2: torch.Tensor | None, n: int) -> list[torch.Tensor]:
    views = list(state1.view(2, n)) if optimizer == "ademamix" else [state1.view(n)]
    if state2 is not None:
        views.append(state2.view(n))
    return views


def optimizer_step(
    optimizer: str, p: torch.Tensor, g: torch.Tensor, state1: torch.Tensor, state2: torch.Tensor | None,
    absmax1: torch.Tensor | None, absmax2: torch.Tensor | None, qmap1: torch.Tensor | None,
    qmap2: torch.Tensor | None, lr: float, beta1: float, beta2: float, beta3: float, alpha: float, eps: float,
    weight_decay: float, step: int, gnorm_scale: float = 1.0, max_unorm: float = 0.0, blocksize: int = 256,
) -> None:  # fmt: skip
    """Reference of ``bnb_api::optimizer_step`` (32-bit or 8-bit blockwise states, in place)."""
    n = p.numel()
    p32 = p.detach().reshape(-1).float()
    g32 = g.reshape(-1).float() * gnorm_scale
    eight_bit = state1.dtype == torch.uint8
    if eight_bit:
        codes = _state_views(optimizer, state1, state2, n)
        scales = list(absmax1.view(-1, absmax1.shape[-1])) + ([absmax2] if state2 is not None else [])
        maps = [qmap1] * (len(codes) - (state2 is not None)) + ([qmap2] if state2 is not None else [])
        states = [dequantize_flat(c, a, q, blocksize) for c, a, q in zip(codes, scales, maps)]
    else:
        states = _state_views(optimizer, state1, state2, n)
    u = update_direction(optimizer, g32, p32, states, beta1, beta2, beta3, alpha, eps, weight_decay, step)
    p.view(-1).copy_(apply_update(optimizer, p32, u, lr, weight_decay, max_unorm).to(p.dtype))
    if eight_bit:
        for value, c, a, q in zip(states, codes, scales, maps):
            new_codes, new_absmax = quantize_flat(value, q, blocksize)
            c.copy_(new_codes)
            a.copy_(new_absmax)


def optimizer_step_multi(
    optimizer, params, grads, state1, state2, absmax1, absmax2, qmap1, qmap2, lr, beta1, beta2, beta3, alpha, eps,
    weight_decay, step, gnorm_scale=1.0, max_unorm=0.0, blocksize=256,
) -> None:  # fmt: skip
    """Reference of ``bnb_api::optimizer_step_multi``: :func:`optimizer_step` per parameter."""
    for i, (p, g) in enumerate(zip(params, grads)):
        optimizer_step(
            optimizer, p, g, state1[i], state2[i] if state2 else None, absmax1[i] if absmax1 else None,
            absmax2[i] if absmax2 else None, qmap1, qmap2, lr, beta1, beta2, beta3, alpha, eps, weight_decay, step,
            gnorm_scale, max_unorm, blocksize,
        )  # fmt: skip


def bias_corrections(beta1: float, beta2: float, step: int) -> tuple[float, float]:
    """``(1 - beta1^step, 1 - beta2^step)`` as Python floats (shared by native wrappers)."""
    return 1 - math.pow(beta1, step), 1 - math.pow(beta2, step)
