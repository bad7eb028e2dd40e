"""Oracles, reward composition and the accounting of oracle calls."""
from vardbio.reward.evaluator import InProcessEvaluator, OracleEvaluator
from vardbio.reward.ledger import OracleBudgetExceeded, OracleLedger
from vardbio.reward.oracle import FunctionOracle, Oracle, OracleError, OracleResult, PerDesignOracle
from vardbio.reward.reward import Reward, RewardBatch, RewardTerm

__all__ = [
    "FunctionOracle", "InProcessEvaluator", "Oracle", "OracleBudgetExceeded", "OracleError",
    "OracleEvaluator", "OracleLedger", "OracleResult", "PerDesignOracle", "Reward",
    "RewardBatch", "RewardTerm",
]
