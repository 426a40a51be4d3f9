"""QC figures (matplotlib, Agg) in world-oriented views; the HTML report lives in ``torchalign.report``."""
from .figures import (checkerboard, difference, grid_lines, image_slices, jacobian_map, label_contours, landmarks,
                      loss_curves, overlay, save_png, to_png)
from .views import View, views

__all__ = ["View", "checkerboard", "difference", "grid_lines", "image_slices", "jacobian_map", "label_contours",
           "landmarks", "loss_curves", "overlay", "save_png", "to_png", "views"]
