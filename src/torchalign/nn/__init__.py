"""Learning-based registration: networks that predict torchalign transforms, their data, training and use.

* :mod:`~torchalign.nn.unet` backbones (U-Net, encoder), :mod:`~torchalign.nn.heads` (dense
  velocity/displacement, affine), :class:`~torchalign.nn.models.RegistrationNet` (injected backbone).
* :mod:`~torchalign.nn.data` pair datasets, :mod:`~torchalign.nn.train` training and fine-tuning,
  :mod:`~torchalign.nn.checkpoint` safe checkpoints, :mod:`~torchalign.nn.config` validated settings,
  :mod:`~torchalign.nn.inference` prediction and outputs, :mod:`~torchalign.nn.evaluate` metrics.
"""
from .config import ModelConfig, TrainConfig
from .models import RegistrationNet, build_model

__all__ = ["ModelConfig", "RegistrationNet", "TrainConfig", "build_model"]
