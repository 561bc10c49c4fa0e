"""``PytorchLARS``: LARS written with plain torch ops (bitsandbytes ships it as the reference for its LARS)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.optim import Optimizer

from bnb_api.core.errors import BnbValueError


class PytorchLARS(Optimizer):
    """SGD with momentum whose update ``u`` is scaled to at most ``max_unorm * ||p||`` per parameter.

    Per step: ``d = g + weight_decay * p``; ``buf = d`` at the first step, then
    ``buf = momentum * buf + (1 - dampening) * d``; ``u = d + momentum * buf`` with ``nesterov``, else ``buf``
    (``d`` itself without momentum); ``p -= lr * min(1, max_unorm * ||p|| / ||u||) * u`` (no scaling when
    ``max_unorm == 0``). Float32 parameters only when ``max_unorm > 0`` (the norm is taken in their dtype).
    """

    def __init__(self, params, lr: float = 0.01, momentum: float = 0, dampening: float = 0,
                 weight_decay: float = 0, nesterov: bool = False, max_unorm: float = 0.02) -> None:  # fmt: skip
        for name, value in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay),
                            ("max_unorm", max_unorm)):  # fmt: skip
            if value < 0.0:
                raise BnbValueError(f"PytorchLARS: {name}={value} must be >= 0")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise BnbValueError("PytorchLARS: nesterov=True needs momentum > 0 and dampening=0")
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov,
                        max_unorm=max_unorm)  # fmt: skip
        super().__init__(params, defaults)

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("nesterov", False)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One update of every parameter with a gradient; returns the closure's loss, if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            momentum, max_unorm = group["momentum"], group["max_unorm"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad if group["weight_decay"] == 0 else p.grad.add(p, alpha=group["weight_decay"])
                update = d
                if momentum != 0:
                    state = self.state[p]
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = state["momentum_buffer"] = d.detach().clone()
                    else:
                        buf.mul_(momentum).add_(d, alpha=1 - group["dampening"])
                    update = d + momentum * buf if group["nesterov"] else buf
                scale = 1.0
                if max_unorm > 0.0:
                    if p.dtype != torch.float32:
                        raise BnbValueError(f"PytorchLARS: max_unorm needs float32 parameters, got {p.dtype}")
                    pnorm, unorm = torch.norm(p), torch.norm(update)
                    if unorm > max_unorm * pnorm:
                        scale = float(max_unorm * pnorm / unorm)
                p.add_(update, alpha=-group["lr"] * scale)
        return loss
