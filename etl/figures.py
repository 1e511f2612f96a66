"""A report that is its figures: a dict that --json prints as it is, and a text for a person."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Figures(ABC):
    """A report made of one dict of figures; each kind says how it reads (to_text)."""

    figures: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.figures)

    @abstractmethod
    def to_text(self) -> str:
        """What the command prints for a person (--json prints to_dict)."""
