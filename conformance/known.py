"""Known failures of a backend: a plain-text file, one cell id per line with a ``#`` reason.

::

    # conformance/known_failures/mybackend.txt
    gemv_4bit[bfloat16-fp4-bs32]   # fp4 bs32 gemv rounds differently; fix tracked in issue 12

A known failure that fails is reported as "known failure" and does not fail the run; one that passes is
reported as "known failure (passed)" so the line can be removed. Ids that match no cell of the suite
raise a warning (a typo or a renamed cell would otherwise hide a failure silently).
Files for in-tree backends ship in ``bnb_api/conformance/known_failures/<backend>.txt``; an out-of-tree
backend passes its own file with ``--known-failures PATH``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources


@dataclass
class KnownFailures:
    """The known failures of one backend: ``reasons`` maps cell id to reason; ``source`` is the file."""

    backend: str
    reasons: dict[str, str] = field(default_factory=dict)
    source: str = ""

    @classmethod
    def empty(cls, backend: str) -> KnownFailures:
        return cls(backend)

    @classmethod
    def parse(cls, backend: str, text: str, source: str = "") -> KnownFailures:
        """Parse the file format: ``id  # reason`` per line; blank lines and ``#`` comment lines are skipped."""
        reasons: dict[str, str] = {}
        for line in text.splitlines():
            body, _, reason = line.partition("#")
            body = body.strip()
            if body:
                reasons[body] = reason.strip() or "no reason given"
        return cls(backend, reasons, source)

    @classmethod
    def load(cls, backend: str, path: str | None = None) -> KnownFailures:
        """From ``path``, else the packaged ``known_failures/<backend>.txt``, else none."""
        if path:
            if not os.path.isfile(path):
                raise FileNotFoundError(f"--known-failures {path!r}: no such file")
            with open(path, encoding="utf-8") as fh:
                return cls.parse(backend, fh.read(), path)
        packaged = resources.files("bnb_api.conformance").joinpath("known_failures", f"{backend}.txt")
        if packaged.is_file():
            return cls.parse(backend, packaged.read_text(encoding="utf-8"), str(packaged))
        return cls.empty(backend)

    def apply(self, result):
        """Turn a failing result of a known-failure cell into "known failure" (a passing one into "(passed)")."""
        from bnb_api.conformance.runner import FAILING, PASS, XFAIL, XPASS

        reason = self.reasons.get(result.id)
        if reason is None:
            return result
        if result.status in FAILING:
            result.message = f"known failure ({reason}): {result.message}"
            result.status = XFAIL
        elif result.status == PASS:
            result.status = XPASS
            result.message = f"listed as a known failure ({reason}) but passed: remove it from {self.source}"
        return result

    def unmatched(self, ids: list[str]) -> list[str]:
        """Warnings for listed ids that match no cell of the suite."""
        known = set(ids)
        return [
            f"known-failures {self.source or self.backend}: {cid!r} matches no test id of the suite"
            for cid in self.reasons
            if cid not in known
        ]
