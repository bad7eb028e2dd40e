"""Time-conditioned value heads and their fitting."""
from vardbio.value.fitting import ValueFitConfig, ValueFitReport, fit_value, linex_loss
from vardbio.value.heads import ValueHead, VectorValueNet

__all__ = ["ValueFitConfig", "ValueFitReport", "ValueHead", "VectorValueNet", "fit_value", "linex_loss"]
