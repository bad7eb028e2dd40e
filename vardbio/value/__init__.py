"""Time-conditioned value heads and their fitting."""
from vardbio.value.fitting import ValueFitConfig, ValueFitReport, fit_value, linex_loss
from vardbio.value.heads import DenoisedInput, ValueHead, VectorValueNet, with_value_input

__all__ = ["DenoisedInput", "ValueFitConfig", "ValueFitReport", "ValueHead", "VectorValueNet", "fit_value",
           "linex_loss", "with_value_input"]
