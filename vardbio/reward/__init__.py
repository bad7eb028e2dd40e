"""Oracles, reward composition and the accounting of oracle calls."""
from vardbio.reward.cache import OracleCache
from vardbio.reward.compose import (RewardTermConfig, RuntimeConfig, build_oracle, build_reward,
                                    build_runtime, build_term)
from vardbio.reward.evaluator import InProcessEvaluator, OracleEvaluator
from vardbio.reward.ledger import OracleBudgetExceeded, OracleLedger
from vardbio.reward.oracle import FunctionOracle, Oracle, OracleError, OracleResult, PerDesignOracle
from vardbio.reward.reward import Reward, RewardBatch, RewardTerm
from vardbio.reward.runtime import OracleRuntime
from vardbio.reward.transforms import (Clip, DoubleSigmoid, Identity, Linear, Sigmoid, Threshold,
                                       Transform, build_transform)

__all__ = [
    "Clip", "DoubleSigmoid", "FunctionOracle", "Identity", "InProcessEvaluator", "Linear",
    "Oracle", "OracleBudgetExceeded", "OracleCache", "OracleError", "OracleEvaluator",
    "OracleLedger", "OracleResult", "OracleRuntime", "PerDesignOracle", "Reward",
    "RewardBatch", "RewardTerm", "RewardTermConfig", "RuntimeConfig", "Sigmoid", "Threshold",
    "Transform", "build_oracle", "build_reward", "build_runtime", "build_term",
    "build_transform",
]
