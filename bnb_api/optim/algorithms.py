"""The optimizers, with bitsandbytes 0.50's class names, argument names and defaults.

Each family has a generic class (``optim_bits`` selects 32 or 8-bit state), ``*8bit`` and ``*32bit``
variants and, where bitsandbytes has them, ``Paged*`` variants (no paging in bnb_api: they warn once and
run unpaged). Arguments that bitsandbytes accepts but whose math the op does not implement raise a
``ValueError`` naming the argument instead of being ignored. ``percentile_clipping`` (1..100, 100 = off)
is an extra keyword: gradients are scaled down to the given percentile of the last 100 gradient norms.
"""

from __future__ import annotations

import math
from typing import Any

from bnb_api.core.errors import BnbValueError
from bnb_api.optim.optimizer import Optimizer1State, Optimizer2State


def _reject(name: str, arg: str, value: Any, allowed: Any, why: str) -> None:
    if value != allowed:
        raise BnbValueError(f"{name}: {arg}={value!r} is not supported ({why}); use {arg}={allowed!r}")


class _AdEMAMixBase(Optimizer2State):
    """AdEMAMix state: ``state1`` holds m1 and m2 as ``(2, *p.shape)``; alpha and beta3 follow their
    warm-up schedules (``t_alpha``, ``t_beta3``)."""

    def _state_shape(self, p):
        return (2, *p.shape)

    def hyper(self, config, step):
        beta1, beta2, beta3 = (float(b) for b in config["betas"])
        alpha = float(config["alpha"])
        if config.get("t_alpha"):
            alpha = min(step * alpha / config["t_alpha"], alpha)
        if config.get("t_beta3"):
            ln1, ln3 = math.log(beta1), math.log(beta3)
            scale = step / config["t_beta3"]
            beta3 = min(math.exp((ln1 * ln3) / ((1 - scale) * ln3 + scale * ln1)), beta3)
        return beta1, beta2, beta3, alpha


class Adam(Optimizer2State):
    """Adam with 32- or 8-bit state (``optim_bits``)."""

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas=(0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        optim_bits: int = 32,
        args=None,
        min_8bit_size: int = 4096,
        is_paged: bool = False,
        percentile_clipping: int = 100,
    ) -> None:
        _reject("Adam", "amsgrad", amsgrad, False, "AMSGrad is not implemented")
        super().__init__(
            "adam",
            params,
            lr,
            betas,
            eps,
            weight_decay,
            optim_bits,
            args,
            min_8bit_size,
            is_paged=is_paged,
            percentile_clipping=percentile_clipping,
        )


class Adam8bit(Optimizer2State):
    """Adam with 8-bit blockwise state."""

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas=(0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        optim_bits: int = 32,
        args=None,
        min_8bit_size: int = 4096,
        is_paged: bool = False,
        percentile_clipping: int = 100,
    ) -> None:
        _reject("Adam8bit", "amsgrad", amsgrad, False, "AMSGrad is not implemented")
        super().__init__(
            "adam",
            params,
            lr,
            betas,
            eps,
            weight_decay,
            8,
            args,
            min_8bit_size,
            is_paged=is_paged,
            percentile_clipping=percentile_clipping,
        )


class Adam32bit(Optimizer2State):
    """Adam with 32-bit state."""

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas=(0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        optim_bits: int = 32,
        args=None,
        min_8bit_size: int = 4096,
        is_paged: bool = False,
        percentile_clipping: int = 100,
    ) -> None:
        _reject("Adam32bit", "amsgrad", amsgrad, False, "AMSGrad is not implemented")
        super().__init__(
            "adam",
            params,
            lr,
            betas,
            eps,
            weight_decay,
            32,
            args,
            min_8bit_size,
            is_paged=is_paged,
            percentile_clipping=percentile_clipping,
        )


class PagedAdam(Optimizer2State):
    """Paged Adam with 32- or 8-bit state (``optim_bits``)."""

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas=(0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        optim_bits: int = 32,
        args=None,
        min_8bit_size: int = 4096,
        is_paged: bool = False,
        percentile_clipping: int = 100,
    ) -> None:
        _reject("PagedAdam", "amsgrad", amsgrad, False, "AMSGrad is not implemented")
        super().__init__(
            "adam",
            params,
            lr,
            betas,
            eps,
            weight_decay,
            optim_bits,
            args,
            min_8bit_size,
            is_paged=True,
            percentile_clipping=percentile_clipping,
        )


class PagedAdam8bit(Optimizer2State):
    """Paged Adam with 8-bit blockwise state."""

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas=(0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        optim_bits: int = 32,
        args=None,
        min_8bit_size: int = 4096,
        is_paged: bool = False,
        percentile_clipping: int = 100,
    ) -> None:
        _reject("PagedAdam8bit", "amsgrad", amsgrad, False, "AMSGrad is not implemented")
        super().__init__(
            "adam",
            params,
            lr,
            betas,
            eps,
            weight_decay,
            8,
            args,
            min_8bit_size,
            is_paged=True,
            percentile_clipping=percentile_clipping,
        )


class PagedAdam32bit(Optimizer2State):
    """Paged Adam with 32-bit state."""

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas=(0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        optim_bits: int = 32,
        args=None,
        min_8bit_size: int = 4096,
        is_paged: bool = False,
        percentile_clipping: int = 100,
    ) -> None:
        _reject("PagedAdam32bit", "amsgrad", amsgrad, False, "AMSGrad is not implemented")
        super().__init__(
            "adam",
            params,
            lr,
            betas,
            eps,
            weight_decay,
            32,
            args,
            min_8bit_size,
            is_paged=True,
            percentile_clipping=percentile_clipping,
        )


class AdamW(Optimizer2State):
    """AdamW with 32- or 8-bit state (``optim_bits``) and decoupled weight decay."""

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas=(0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        optim_bits: int = 32,
        args=None,
        min_8bit_size: int = 4096,
        is_paged: bool = False,
        percentile_clipping: int = 100,
    ) -> None:
        _reject("AdamW", "amsgrad", amsgrad, False, "AMSGrad is not implemented")
        super().__init__(
            "adamw",
            params,
            lr,
            betas,
            eps,
            weight_decay,
            optim_bits,
            args,
            min_8bit_size,
            is_paged=is_paged,
            percentile_clipping=percentile_clipping,
        )


class AdamW8bit(Optimizer2State):
    """AdamW with 8-bit blockwise state and decoupled weight decay."""

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas=(0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        optim_bits: int = 32,
        args=None,
        min_8bit_size: int = 4096,
        is_paged: bool = False,
        percentile_clipping: int = 100,
    ) -> None:
        _reject("AdamW8bit", "amsgrad", amsgrad, False, "AMSGrad is not implemented")
        super().__init__(
            "adamw",
            params,
            lr,
            betas,
            eps,
            weight_decay,
            8,
            args,
            min_8bit_size,
            is_paged=is_paged,
            percentile_clipping=percentile_clipping,
        )


class AdamW32bit(Optimizer2State):
    """AdamW with 32-bit state and decoupled weight decay."""

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas=(0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        optim_bits: int = 32,
        args=None,
        min_8bit_size: int = 4096,
        is_paged: bool = False,
        percentile_clipping: int = 100,
    ) -> None:
        _reject("AdamW32bit", "amsgrad", amsgrad, False, "AMSGrad is not implemented")
        super().__init__(
            "adamw",
            params,
            lr,
            betas,
            eps,
            weight_decay,
            32,
            args,
            min_8bit_size,
            is_paged=is_paged,
            percentile_clipping=percentile_clipping,
        )


class PagedAdamW(Optimizer2State):
    """Paged AdamW with 32- or 8-bit state (``optim_bits``) and decoupled weight decay."""

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas=(0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        optim_bits: int = 32,
        args=None,
        min_8bit_size: int = 4096,
        percentile_clipping: int = 100,
    ) -> None:
        _reject("PagedAdamW", "amsgrad", amsgrad, False, "AMSGrad is not implemented")
        super().__init__(
            "adamw",
            params,
            lr,
            betas,
            eps,
            weight_decay,
            optim_bits,
            args,
            min_8bit_size,
            is_paged=True,
            percentile_clipping=percentile_clipping,
        )


class PagedAdamW8bit(Optimizer2State):
    """Paged AdamW with 8-bit blockwise state and decoupled weight decay."""

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas=(0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        optim_bits: int = 32,
        args=None,
        min_8bit_size: int = 4096,
        percentile_clipping: int = 100,
    ) -> None:
        _reject("PagedAdamW8bit", "amsgrad", amsgrad, False, "AMSGrad is not implemented")
        super().__init__(
            "adamw",
            params,
            lr,
            betas,
            eps,
            weight_decay,
            8,
            args,
            min_8bit_size,
            is_paged=True,
            percentile_clipping=percentile_clipping,
        )


class PagedAdamW32bit(Optimizer2State):
    """Paged AdamW with 32-bit state and decoupled weight decay."""

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas=(0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        optim_bits: int = 32,
        args=None,
        min_8bit_size: int = 4096,
        percentile_clipping: int = 100,
    ) -> None:
        _reject("PagedAdamW32bit", "amsgrad", amsgrad, False, "AMSGrad is not implemented")
        super().__init__(
            "adamw",
            params,
            lr,
            betas,
            eps,
            weight_decay,
            32,
            args,
            min_8bit_size,
            is_paged=True,
            percentile_clipping=percentile_clipping,
        )


class AdEMAMix(_AdEMAMixBase):
    """AdEMAMix (two EMAs of the gradient, arXiv:2409.03137)."""

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float, float] = (0.9, 0.999, 0.9999),
        alpha: float = 5.0,
        t_alpha: int | None = None,
        t_beta3: int | None = None,
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        optim_bits: int = 32,
        min_8bit_size: int = 4096,
        is_paged: bool = False,
        percentile_clipping: int = 100,
    ) -> None:
        if len(betas) != 3:
            raise BnbValueError(f"AdEMAMix: betas={betas!r} must hold three values (beta1, beta2, beta3)")
        super().__init__(
            "ademamix",
            params,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            optim_bits=optim_bits,
            min_8bit_size=min_8bit_size,
            is_paged=is_paged,
            alpha=alpha,
            t_alpha=t_alpha,
            t_beta3=t_beta3,
            percentile_clipping=percentile_clipping,
        )


class AdEMAMix8bit(_AdEMAMixBase):
    """AdEMAMix (two EMAs of the gradient, arXiv:2409.03137)."""

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float, float] = (0.9, 0.999, 0.9999),
        alpha: float = 5.0,
        t_alpha: int | None = None,
        t_beta3: int | None = None,
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        min_8bit_size: int = 4096,
        is_paged: bool = False,
        percentile_clipping: int = 100,
    ) -> None:
        if len(betas) != 3:
            raise BnbValueError(f"AdEMAMix8bit: betas={betas!r} must hold three values (beta1, beta2, beta3)")
        super().__init__(
            "ademamix",
            params,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            optim_bits=8,
            min_8bit_size=min_8bit_size,
            is_paged=is_paged,
            alpha=alpha,
            t_alpha=t_alpha,
            t_beta3=t_beta3,
            percentile_clipping=percentile_clipping,
        )


class AdEMAMix32bit(_AdEMAMixBase):
    """AdEMAMix (two EMAs of the gradient, arXiv:2409.03137)."""

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float, float] = (0.9, 0.999, 0.9999),
        alpha: float = 5.0,
        t_alpha: int | None = None,
        t_beta3: int | None = None,
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        min_8bit_size: int = 4096,
        is_paged: bool = False,
        percentile_clipping: int = 100,
    ) -> None:
        if len(betas) != 3:
            raise BnbValueError(f"AdEMAMix32bit: betas={betas!r} must hold three values (beta1, beta2, beta3)")
        super().__init__(
            "ademamix",
            params,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            optim_bits=32,
            min_8bit_size=min_8bit_size,
            is_paged=is_paged,
            alpha=alpha,
            t_alpha=t_alpha,
            t_beta3=t_beta3,
            percentile_clipping=percentile_clipping,
        )


class PagedAdEMAMix(_AdEMAMixBase):
    """Paged AdEMAMix (two EMAs of the gradient, arXiv:2409.03137)."""

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float, float] = (0.9, 0.999, 0.9999),
        alpha: float = 5.0,
        t_alpha: int | None = None,
        t_beta3: int | None = None,
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        optim_bits: int = 32,
        min_8bit_size: int = 4096,
        percentile_clipping: int = 100,
    ) -> None:
        if len(betas) != 3:
            raise BnbValueError(f"PagedAdEMAMix: betas={betas!r} must hold three values (beta1, beta2, beta3)")
        super().__init__(
            "ademamix",
            params,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            optim_bits=optim_bits,
            min_8bit_size=min_8bit_size,
            is_paged=True,
            alpha=alpha,
            t_alpha=t_alpha,
            t_beta3=t_beta3,
            percentile_clipping=percentile_clipping,
        )


class PagedAdEMAMix8bit(_AdEMAMixBase):
    """Paged AdEMAMix (two EMAs of the gradient, arXiv:2409.03137)."""

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float, float] = (0.9, 0.999, 0.9999),
        alpha: float = 5.0,
        t_alpha: int | None = None,
        t_beta3: int | None = None,
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        min_8bit_size: int = 4096,
        percentile_clipping: int = 100,
    ) -> None:
        if len(betas) != 3:
            raise BnbValueError(f"PagedAdEMAMix8bit: betas={betas!r} must hold three values (beta1, beta2, beta3)")
        super().__init__(
            "ademamix",
            params,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            optim_bits=8,
            min_8bit_size=min_8bit_size,
            is_paged=True,
            alpha=alpha,
            t_alpha=t_alpha,
            t_beta3=t_beta3,
            percentile_clipping=percentile_clipping,
        )


class PagedAdEMAMix32bit(_AdEMAMixBase):
    """Paged AdEMAMix (two EMAs of the gradient, arXiv:2409.03137)."""

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float, float] = (0.9, 0.999, 0.9999),
        alpha: float = 5.0,
        t_alpha: int | None = None,
        t_beta3: int | None = None,
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        min_8bit_size: int = 4096,
        percentile_clipping: int = 100,
    ) -> None:
        if len(betas) != 3:
            raise BnbValueError(f"PagedAdEMAMix32bit: betas={betas!r} must hold three values (beta1, beta2, beta3)")
        super().__init__(
            "ademamix",
            params,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            optim_bits=32,
            min_8bit_size=min_8bit_size,
            is_paged=True,
            alpha=alpha,
            t_alpha=t_alpha,
            t_beta3=t_beta3,
            percentile_clipping=percentile_clipping,
        )


class LAMB(Optimizer2State):
    """LAMB: Adam with decoupled weight decay and a trust ratio (``max_unorm``)."""

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        bias_correction: bool = True,
        betas=(0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        adam_w_mode: bool = True,
        optim_bits: int = 32,
        args=None,
        min_8bit_size: int = 4096,
        max_unorm: float = 1.0,
        percentile_clipping: int = 100,
    ) -> None:
        _reject("LAMB", "bias_correction", bias_correction, True, "LAMB always bias-corrects")
        _reject("LAMB", "amsgrad", amsgrad, False, "AMSGrad is not implemented")
        _reject("LAMB", "adam_w_mode", adam_w_mode, True, "the LAMB step uses decoupled weight decay")
        super().__init__(
            "lamb",
            params,
            lr,
            betas,
            eps,
            weight_decay,
            optim_bits,
            args,
            min_8bit_size,
            max_unorm=max_unorm,
            percentile_clipping=percentile_clipping,
        )


class LAMB8bit(Optimizer2State):
    """LAMB: Adam with decoupled weight decay and a trust ratio (``max_unorm``)."""

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        bias_correction: bool = True,
        betas=(0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        adam_w_mode: bool = True,
        args=None,
        min_8bit_size: int = 4096,
        max_unorm: float = 1.0,
        percentile_clipping: int = 100,
    ) -> None:
        _reject("LAMB8bit", "bias_correction", bias_correction, True, "LAMB always bias-corrects")
        _reject("LAMB8bit", "amsgrad", amsgrad, False, "AMSGrad is not implemented")
        _reject("LAMB8bit", "adam_w_mode", adam_w_mode, True, "the LAMB step uses decoupled weight decay")
        super().__init__(
            "lamb",
            params,
            lr,
            betas,
            eps,
            weight_decay,
            8,
            args,
            min_8bit_size,
            max_unorm=max_unorm,
            percentile_clipping=percentile_clipping,
        )


class LAMB32bit(Optimizer2State):
    """LAMB: Adam with decoupled weight decay and a trust ratio (``max_unorm``)."""

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        bias_correction: bool = True,
        betas=(0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        adam_w_mode: bool = True,
        args=None,
        min_8bit_size: int = 4096,
        max_unorm: float = 1.0,
        percentile_clipping: int = 100,
    ) -> None:
        _reject("LAMB32bit", "bias_correction", bias_correction, True, "LAMB always bias-corrects")
        _reject("LAMB32bit", "amsgrad", amsgrad, False, "AMSGrad is not implemented")
        _reject("LAMB32bit", "adam_w_mode", adam_w_mode, True, "the LAMB step uses decoupled weight decay")
        super().__init__(
            "lamb",
            params,
            lr,
            betas,
            eps,
            weight_decay,
            32,
            args,
            min_8bit_size,
            max_unorm=max_unorm,
            percentile_clipping=percentile_clipping,
        )


class Lion(Optimizer1State):
    """Lion (sign of an interpolated momentum)."""

    def __init__(
        self,
        params,
        lr: float = 1e-4,
        betas=(0.9, 0.99),
        weight_decay: float = 0,
        optim_bits: int = 32,
        args=None,
        min_8bit_size: int = 4096,
        is_paged: bool = False,
        percentile_clipping: int = 100,
    ) -> None:
        super().__init__(
            "lion",
            params,
            lr,
            betas,
            0.0,
            weight_decay,
            optim_bits,
            args,
            min_8bit_size,
            is_paged=is_paged,
            percentile_clipping=percentile_clipping,
        )


class Lion8bit(Optimizer1State):
    """Lion (sign of an interpolated momentum)."""

    def __init__(
        self,
        params,
        lr: float = 1e-4,
        betas=(0.9, 0.99),
        weight_decay: float = 0,
        args=None,
        min_8bit_size: int = 4096,
        is_paged: bool = False,
        percentile_clipping: int = 100,
    ) -> None:
        super().__init__(
            "lion",
            params,
            lr,
            betas,
            0.0,
            weight_decay,
            8,
            args,
            min_8bit_size,
            is_paged=is_paged,
            percentile_clipping=percentile_clipping,
        )


class Lion32bit(Optimizer1State):
    """Lion (sign of an interpolated momentum)."""

    def __init__(
        self,
        params,
        lr: float = 1e-4,
        betas=(0.9, 0.99),
        weight_decay: float = 0,
        args=None,
        min_8bit_size: int = 4096,
        is_paged: bool = False,
        percentile_clipping: int = 100,
    ) -> None:
        super().__init__(
            "lion",
            params,
            lr,
            betas,
            0.0,
            weight_decay,
            32,
            args,
            min_8bit_size,
            is_paged=is_paged,
            percentile_clipping=percentile_clipping,
        )


class PagedLion(Optimizer1State):
    """Paged Lion (sign of an interpolated momentum)."""

    def __init__(
        self,
        params,
        lr: float = 1e-4,
        betas=(0.9, 0.99),
        weight_decay: float = 0,
        optim_bits: int = 32,
        args=None,
        min_8bit_size: int = 4096,
        percentile_clipping: int = 100,
    ) -> None:
        super().__init__(
            "lion",
            params,
            lr,
            betas,
            0.0,
            weight_decay,
            optim_bits,
            args,
            min_8bit_size,
            is_paged=True,
            percentile_clipping=percentile_clipping,
        )


class PagedLion8bit(Optimizer1State):
    """Paged Lion (sign of an interpolated momentum)."""

    def __init__(
        self,
        params,
        lr: float = 1e-4,
        betas=(0.9, 0.99),
        weight_decay: float = 0,
        args=None,
        min_8bit_size: int = 4096,
        percentile_clipping: int = 100,
    ) -> None:
        super().__init__(
            "lion",
            params,
            lr,
            betas,
            0.0,
            weight_decay,
            8,
            args,
            min_8bit_size,
            is_paged=True,
            percentile_clipping=percentile_clipping,
        )


class PagedLion32bit(Optimizer1State):
    """Paged Lion (sign of an interpolated momentum)."""

    def __init__(
        self,
        params,
        lr: float = 1e-4,
        betas=(0.9, 0.99),
        weight_decay: float = 0,
        args=None,
        min_8bit_size: int = 4096,
        percentile_clipping: int = 100,
    ) -> None:
        super().__init__(
            "lion",
            params,
            lr,
            betas,
            0.0,
            weight_decay,
            32,
            args,
            min_8bit_size,
            is_paged=True,
            percentile_clipping=percentile_clipping,
        )


class SGD(Optimizer1State):
    """SGD with momentum (``momentum=0``: plain SGD)."""

    def __init__(
        self,
        params,
        lr: float,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float = 0,
        nesterov: bool = False,
        optim_bits: int = 32,
        args=None,
        min_8bit_size: int = 4096,
        percentile_clipping: int = 100,
    ) -> None:
        _reject("SGD", "dampening", dampening, 0, "the momentum buffer adds the full gradient")
        _reject("SGD", "nesterov", nesterov, False, "Nesterov momentum is not implemented")
        super().__init__(
            "momentum",
            params,
            lr,
            (momentum, 0.0),
            0.0,
            weight_decay,
            optim_bits,
            args,
            min_8bit_size,
            percentile_clipping=percentile_clipping,
        )


class SGD8bit(Optimizer1State):
    """SGD with momentum (``momentum=0``: plain SGD)."""

    def __init__(
        self,
        params,
        lr: float,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float = 0,
        nesterov: bool = False,
        args=None,
        min_8bit_size: int = 4096,
        percentile_clipping: int = 100,
    ) -> None:
        _reject("SGD8bit", "dampening", dampening, 0, "the momentum buffer adds the full gradient")
        _reject("SGD8bit", "nesterov", nesterov, False, "Nesterov momentum is not implemented")
        super().__init__(
            "momentum",
            params,
            lr,
            (momentum, 0.0),
            0.0,
            weight_decay,
            8,
            args,
            min_8bit_size,
            percentile_clipping=percentile_clipping,
        )


class SGD32bit(Optimizer1State):
    """SGD with momentum (``momentum=0``: plain SGD)."""

    def __init__(
        self,
        params,
        lr: float,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float = 0,
        nesterov: bool = False,
        args=None,
        min_8bit_size: int = 4096,
        percentile_clipping: int = 100,
    ) -> None:
        _reject("SGD32bit", "dampening", dampening, 0, "the momentum buffer adds the full gradient")
        _reject("SGD32bit", "nesterov", nesterov, False, "Nesterov momentum is not implemented")
        super().__init__(
            "momentum",
            params,
            lr,
            (momentum, 0.0),
            0.0,
            weight_decay,
            32,
            args,
            min_8bit_size,
            percentile_clipping=percentile_clipping,
        )


class LARS(Optimizer1State):
    """LARS: SGD momentum with a layer-wise trust ratio (``max_unorm``)."""

    def __init__(
        self,
        params,
        lr: float,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float = 0,
        nesterov: bool = False,
        optim_bits: int = 32,
        args=None,
        min_8bit_size: int = 4096,
        max_unorm: float = 0.02,
        percentile_clipping: int = 100,
    ) -> None:
        _reject("LARS", "dampening", dampening, 0, "the momentum buffer adds the full gradient")
        _reject("LARS", "nesterov", nesterov, False, "Nesterov momentum is not implemented")
        super().__init__(
            "lars",
            params,
            lr,
            (momentum, 0.0),
            0.0,
            weight_decay,
            optim_bits,
            args,
            min_8bit_size,
            max_unorm=max_unorm,
            percentile_clipping=percentile_clipping,
        )


class LARS8bit(Optimizer1State):
    """LARS: SGD momentum with a layer-wise trust ratio (``max_unorm``)."""

    def __init__(
        self,
        params,
        lr: float,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float = 0,
        nesterov: bool = False,
        args=None,
        min_8bit_size: int = 4096,
        max_unorm: float = 0.02,
        percentile_clipping: int = 100,
    ) -> None:
        _reject("LARS8bit", "dampening", dampening, 0, "the momentum buffer adds the full gradient")
        _reject("LARS8bit", "nesterov", nesterov, False, "Nesterov momentum is not implemented")
        super().__init__(
            "lars",
            params,
            lr,
            (momentum, 0.0),
            0.0,
            weight_decay,
            8,
            args,
            min_8bit_size,
            max_unorm=max_unorm,
            percentile_clipping=percentile_clipping,
        )


class LARS32bit(Optimizer1State):
    """LARS: SGD momentum with a layer-wise trust ratio (``max_unorm``)."""

    def __init__(
        self,
        params,
        lr: float,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float = 0,
        nesterov: bool = False,
        args=None,
        min_8bit_size: int = 4096,
        max_unorm: float = 0.02,
        percentile_clipping: int = 100,
    ) -> None:
        _reject("LARS32bit", "dampening", dampening, 0, "the momentum buffer adds the full gradient")
        _reject("LARS32bit", "nesterov", nesterov, False, "Nesterov momentum is not implemented")
        super().__init__(
            "lars",
            params,
            lr,
            (momentum, 0.0),
            0.0,
            weight_decay,
            32,
            args,
            min_8bit_size,
            max_unorm=max_unorm,
            percentile_clipping=percentile_clipping,
        )


class RMSprop(Optimizer1State):
    """RMSprop (``alpha`` is the decay of the squared-gradient average)."""

    def __init__(
        self,
        params,
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum: float = 0,
        centered: bool = False,
        optim_bits: int = 32,
        args=None,
        min_8bit_size: int = 4096,
        percentile_clipping: int = 100,
    ) -> None:
        _reject("RMSprop", "momentum", momentum, 0, "RMSprop momentum is not implemented")
        _reject("RMSprop", "centered", centered, False, "centered RMSprop is not implemented")
        super().__init__(
            "rmsprop",
            params,
            lr,
            (alpha, 0.0),
            eps,
            weight_decay,
            optim_bits,
            args,
            min_8bit_size,
            percentile_clipping=percentile_clipping,
        )


class RMSprop8bit(Optimizer1State):
    """RMSprop (``alpha`` is the decay of the squared-gradient average)."""

    def __init__(
        self,
        params,
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum: float = 0,
        centered: bool = False,
        args=None,
        min_8bit_size: int = 4096,
        percentile_clipping: int = 100,
    ) -> None:
        _reject("RMSprop8bit", "momentum", momentum, 0, "RMSprop momentum is not implemented")
        _reject("RMSprop8bit", "centered", centered, False, "centered RMSprop is not implemented")
        super().__init__(
            "rmsprop",
            params,
            lr,
            (alpha, 0.0),
            eps,
            weight_decay,
            8,
            args,
            min_8bit_size,
            percentile_clipping=percentile_clipping,
        )


class RMSprop32bit(Optimizer1State):
    """RMSprop (``alpha`` is the decay of the squared-gradient average)."""

    def __init__(
        self,
        params,
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum: float = 0,
        centered: bool = False,
        args=None,
        min_8bit_size: int = 4096,
        percentile_clipping: int = 100,
    ) -> None:
        _reject("RMSprop32bit", "momentum", momentum, 0, "RMSprop momentum is not implemented")
        _reject("RMSprop32bit", "centered", centered, False, "centered RMSprop is not implemented")
        super().__init__(
            "rmsprop",
            params,
            lr,
            (alpha, 0.0),
            eps,
            weight_decay,
            32,
            args,
            min_8bit_size,
            percentile_clipping=percentile_clipping,
        )


class Adagrad(Optimizer1State):
    """Adagrad (sum of squared gradients)."""

    def __init__(
        self,
        params,
        lr: float = 1e-2,
        lr_decay: float = 0,
        weight_decay: float = 0,
        initial_accumulator_value: float = 0,
        eps: float = 1e-10,
        optim_bits: int = 32,
        args=None,
        min_8bit_size: int = 4096,
        percentile_clipping: int = 100,
    ) -> None:
        _reject("Adagrad", "lr_decay", lr_decay, 0, "learning-rate decay is not implemented")
        _reject("Adagrad", "initial_accumulator_value", initial_accumulator_value, 0, "the accumulator starts at 0")
        super().__init__(
            "adagrad",
            params,
            lr,
            (0.0, 0.0),
            eps,
            weight_decay,
            optim_bits,
            args,
            min_8bit_size,
            percentile_clipping=percentile_clipping,
        )


class Adagrad8bit(Optimizer1State):
    """Adagrad (sum of squared gradients)."""

    def __init__(
        self,
        params,
        lr: float = 1e-2,
        lr_decay: float = 0,
        weight_decay: float = 0,
        initial_accumulator_value: float = 0,
        eps: float = 1e-10,
        optim_bits: int = 8,
        args=None,
        min_8bit_size: int = 4096,
        percentile_clipping: int = 100,
    ) -> None:
        _reject("Adagrad8bit", "lr_decay", lr_decay, 0, "learning-rate decay is not implemented")
        _reject("Adagrad8bit", "initial_accumulator_value", initial_accumulator_value, 0, "the accumulator starts at 0")
        _reject("Adagrad8bit", "optim_bits", optim_bits, 8, "Adagrad8bit has 8-bit state")
        super().__init__(
            "adagrad",
            params,
            lr,
            (0.0, 0.0),
            eps,
            weight_decay,
            8,
            args,
            min_8bit_size,
            percentile_clipping=percentile_clipping,
        )


class Adagrad32bit(Optimizer1State):
    """Adagrad (sum of squared gradients)."""

    def __init__(
        self,
        params,
        lr: float = 1e-2,
        lr_decay: float = 0,
        weight_decay: float = 0,
        initial_accumulator_value: float = 0,
        eps: float = 1e-10,
        optim_bits: int = 32,
        args=None,
        min_8bit_size: int = 4096,
        percentile_clipping: int = 100,
    ) -> None:
        _reject("Adagrad32bit", "lr_decay", lr_decay, 0, "learning-rate decay is not implemented")
        _reject(
            "Adagrad32bit", "initial_accumulator_value", initial_accumulator_value, 0, "the accumulator starts at 0"
        )
        _reject("Adagrad32bit", "optim_bits", optim_bits, 32, "Adagrad32bit has 32-bit state")
        super().__init__(
            "adagrad",
            params,
            lr,
            (0.0, 0.0),
            eps,
            weight_decay,
            32,
            args,
            min_8bit_size,
            percentile_clipping=percentile_clipping,
        )
