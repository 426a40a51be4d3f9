"""Learning-based registration: networks that predict torchalign transforms, their data, training and use.

* :mod:`~torchalign.nn.unet` backbones (U-Net, encoder), :mod:`~torchalign.nn.heads` (dense
  velocity/displacement, affine), :class:`~torchalign.nn.models.RegistrationNet` (injected backbone).
* :mod:`~torchalign.nn.data` pair datasets, :mod:`~torchalign.nn.synth` synthetic pairs (SynthMorph-style),
  :mod:`~torchalign.nn.train` training (validation, best checkpoint, schedules, AMP) and fine-tuning,
  :mod:`~torchalign.nn.checkpoint` safe checkpoints, :mod:`~torchalign.nn.config` validated settings,
  :mod:`~torchalign.nn.inference` prediction, bundled models (``synth2d``) and outputs,
  :mod:`~torchalign.nn.evaluate` metrics.
"""
from .config import ModelConfig, TrainConfig
from .inference import register_network
from .models import RegistrationNet, build_model

__all__ = ["ModelConfig", "RegistrationNet", "TrainConfig", "build_model", "register_network"]
