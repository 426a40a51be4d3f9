"""What every pair of a batch shares: the registration config and the evaluation/report options."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from .. import __version__
from ..config import RegistrationConfig


@dataclass(frozen=True)
class JobSettings:
    """Options of the per-pair job; picklable, so it travels to pool and Dask workers.

    ``torch_threads`` (None: leave the process's setting) and ``device`` decide where and how fast a
    pair runs, not what it writes, so they are not part of :meth:`fingerprint`.
    """

    config: RegistrationConfig
    labels: tuple[int, ...] | None = None
    points_space: str | None = None
    nan_to: float | None = None
    report: bool = False
    device: str = "cpu"
    torch_threads: int | None = None

    def fingerprint(self) -> str:
        """SHA-256 of everything that decides a pair's outputs besides its input files."""
        doc = {"config": self.config.model_dump(mode="json"), "labels": self.labels,
               "points_space": self.points_space, "nan_to": self.nan_to, "report": self.report,
               "torchalign": __version__}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
