"""The figures the reliability and security suites measure (docs/reliability.md). Each test
records what it saw with `report`; the session prints every figure at its end, and writes
them as JSON to the file named by PROCRECHE_FIGURES when it is set, so that the doc's
numbers come from a run and not from memory."""

from __future__ import annotations

import json
import os
from pathlib import Path

Figure = int | float | str | bool

FIGURES: dict[str, dict[str, Figure]] = {}


def report(suite: str, **figures: Figure) -> None:
    """`suite`: the docs/reliability.md heading the figures belong to."""
    FIGURES.setdefault(suite, {}).update(figures)


def lines() -> list[str]:
    return [
        f"{suite}: " + ", ".join(f"{name}={value}" for name, value in figures.items())
        for suite, figures in sorted(FIGURES.items())
    ]


def save() -> Path | None:
    target = os.environ.get("PROCRECHE_FIGURES")
    if not target or not FIGURES:
        return None
    path = Path(target)
    path.write_text(json.dumps(FIGURES, indent=2, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")
    return path
