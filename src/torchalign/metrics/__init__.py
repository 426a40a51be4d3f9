"""Evaluation metrics (apart from the losses): overlap, surface distances, TRE, field quality, similarity.

All distances are world millimetres with the grid's spacing respected; missing labels are reported
with a status, never as 0 or NaN.
"""
from .evaluate import evaluate, label_metrics, summarise_labels, write_metrics
from .fields import curl_magnitude, error_summary, field_rmse, inverse_consistency, jacobian_stats
from .overlap import dice, jaccard, label_array, mean_dice
from .points import map_points, tre, tre_summary
from .similarity import mutual_information, ncc
from .surface import assd, hausdorff, surface, surface_distances, surface_metrics

__all__ = [
    "assd", "curl_magnitude", "dice", "error_summary", "evaluate", "field_rmse", "hausdorff", "mean_dice",
    "inverse_consistency", "jaccard", "jacobian_stats", "label_array", "label_metrics", "map_points",
    "mutual_information", "ncc", "summarise_labels", "surface", "surface_distances", "surface_metrics",
    "tre", "tre_summary", "write_metrics",
]
