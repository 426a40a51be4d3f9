"""The self-contained HTML QC report of a registration (``torchalign report OUTDIR``)."""
from .build import REPORT_NAME, build_report

__all__ = ["REPORT_NAME", "build_report"]
