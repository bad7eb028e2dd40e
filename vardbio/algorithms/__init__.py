"""Fine-tuning algorithms, one module each with its config dataclass."""
from vardbio.algorithms.base import Algorithm, AlgorithmContext, FinalSamples
from vardbio.algorithms.best_of_n import BestOfN, BestOfNConfig
from vardbio.algorithms.ddpo import DDPO, DDPOConfig
from vardbio.algorithms.guidance import GuidanceConfig, ValueGuidance
from vardbio.algorithms.svdd import SVDD, SVDDConfig
from vardbio.algorithms.vard import VARD, VARDConfig

__all__ = [
    "Algorithm", "AlgorithmContext", "BestOfN", "BestOfNConfig", "DDPO", "DDPOConfig",
    "FinalSamples", "GuidanceConfig", "SVDD", "SVDDConfig", "VARD", "VARDConfig", "ValueGuidance",
]
