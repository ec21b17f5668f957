"""Training: auto-decoder latents, block coordinate descent, frequency marching, run folders."""
from flexview.train.config import TrainConfig
from flexview.train.session import TrainingSession
from flexview.train.trainer import Progress, Trainer

__all__ = ["Progress", "TrainConfig", "Trainer", "TrainingSession"]
