"""xpu backend (registration only until its kernels land)."""


def register() -> None:
    """Nothing registered yet: the reference serves this device."""
