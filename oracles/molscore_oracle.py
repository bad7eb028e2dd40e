"""MolScore objectives as vardbio oracles: bring a REINVENT-style MolScore config unchanged.

MolScore (Thomas et al., J. Cheminform. 2024; MIT; optional extra:
`pip install 'vardbio[molscore]'`) describes an objective as a JSON config: scoring functions
(descriptors, similarities, substructures, ...), a score modifier per metric (raw, gauss,
lin_thresh, step, sigmoid, norm), an aggregation (single, amean, gmean, wsum, prod, wprod) and
optionally a diversity filter, a budget and termination rules. It also ships benchmark presets
(GuacaMol, MolOpt, MolExp, ...). `MolScoreOracle` scores designs with any such objective.

The value: MolScore's final aggregated score of each molecule, the column named after the
config's `scoring.method` that MolScore's `compute_score` writes: every metric passed
through its modifier, each non-filter metric floored at 1e-6 (MolScore does this so that a
geometric mean never reaches 0), aggregated with the weights, then multiplied by the metrics
marked `"filter": true`. It is the score MolScore itself returns for a config without a
diversity filter, higher is better.

What is switched off, and why. MolScore is also a campaign manager: it remembers every
molecule it has seen, penalises repeats, counts a budget and writes result files. vardbio's
runtime already does caching, counting and budgets, and its cache requires that a design's
score depend on the design alone (the oracle contract: deterministic, a batch scores as its
designs one by one). So this oracle runs only MolScore's scoring functions and its
`compute_score`, and never MolScore's stateful `score` loop:

- the diversity filter (`diversity_filter`) is not applied: it changes a molecule's score
  with what was generated before. Use vardbio's own diversity and uniqueness accounting
  (e.g. `budget_counting: unique_valid`). The oracle warns once and lists it in `ignored`;
- the budget and termination rules (`budget`, `termination_*`) are not applied: set
  `campaign.oracle_budget` instead (also listed in `ignored`);
- MolScore's memory of seen molecules (repeats scored from its table, the replay buffer) is
  not used: vardbio's cache serves repeats;
- logging to files, the monitor app and `load_from_previous` are off; MolScore's output
  folder is a private temporary directory, deleted with the oracle (or by `close()`);
- the `norm` modifier, whose min and max MolScore widens with every value it has seen, is
  accepted only with both `min` and `max` given, and then they stay fixed (a value outside
  [min, max] maps outside [0, 1] instead of stretching the range);
- the batch-dependent aggregations (`auto_wsum`, `auto_wprod`, `pareto_front`: a
  molecule's score depends on the rest of its batch) are refused.

Offline. Nothing may be downloaded at run time, so only scoring functions that run on RDKit
and local files are accepted: RDKit/molecular/linker descriptors, isomer scores, Tanimoto,
molecular and Levenshtein similarity, substructure match and filters, SillyBits,
applicability domain, chemistry and reaction filters, scikit-learn models from a local file,
bloom filters built from a local file. Everything else — PIDGIN (downloads 11 GB of models),
LegacyQSAR (MolOpt's DRD2, GSK3B and JNK3), RAScore, chemprop, ADMET-AI, AiZynthFinder and
MolSkill (each builds a conda environment at run time), docking, OpenEye, external servers,
bloom-filter presets (downloaded) — is refused with a message naming it, unless
`allow_external=True`, which runs them unchecked (they may download files, create
environments or call programs).

Invalid designs get NaN with the reason (MolScore itself would score them 0 and never call
its scoring functions). A scoring function that fails on a valid molecule follows MolScore's
own convention, usually 0.0 for that metric, which cannot be told apart from a real 0; a
similarity batch that hits MolScore's timeout (all 0.0 in MolScore) and an error raised by
MolScore become NaN with the reason.

Design: an RDKit Mol or a SMILES string, written to canonical SMILES and read back (as
MolScore canonicalises what it receives; explicit hydrogens, conformers and atom order do not
change a score); that SMILES is also the cache key.

Cost: importing MolScore takes ~3-5 s once per process; the GuacaMol/MolOpt objectives then
cost ~0.5-4 ms per molecule on one core, plus a few ms of pandas overhead per batch.
"""
from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import warnings
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from rdkit import Chem

from vardbio.reward.oracle import Oracle, OracleError, OracleResult
from vardbio_oracles.chem import smiles_key, to_mol

INSTALL_HINT = "pip install 'vardbio[molscore]'"

# Scoring functions that run on RDKit and local files only. The value, where given, is a
# check of the function's parameters that returns why this use would not be offline.
OFFLINE_FUNCTIONS: dict[str, Any] = {
    name: None for name in (
        "RDKitDescriptors", "MolecularDescriptors", "LinkerDescriptors", "Isomer",
        "TanimotoSimilarity", "MolecularSimilarity", "LevenshteinSimilarity",
        "SubstructureMatch", "SubstructureFilters", "SillyBits", "ApplicabilityDomain",
        "ChemistryFilter", "DecoratedReactionFilter", "SelectiveDecoratedReactionFilter",
        "SKLearnModel", "EnsembleSKLearnModel", "BloomFilter")
}
OFFLINE_FUNCTIONS["BloomFilter"] = lambda p: (
    f"its preset {p['preset']!r} is downloaded by molbloom at run time (give bloom_path or "
    "smiles_path to a local file instead)" if p.get("preset") else None)

# Why the functions MolScore has beyond OFFLINE_FUNCTIONS are refused (others: generic).
_CONDA = "it creates a conda/mamba environment at run time (installing into it needs the network)"
_NOT_OFFLINE = {
    "PIDGIN": "it downloads the PIDGINv5 models (11 GB) at run time",
    "LegacyQSAR": _CONDA + "; MolOpt's DRD2, GSK3B and JNK3 use it",
    **{name: _CONDA for name in ("RAScore_XGB", "ChemPropModel", "ADMETAI", "AiZynthFinder",
                                 "MolSkill")},
    "POSTServer": "it calls an external server",
}
BATCH_DEPENDENT_METHODS = ("auto_wsum", "auto_wprod", "pareto_front")
# Campaign-manager settings this oracle does not apply (see the module docstring).
_IGNORED_KEYS = ("diversity_filter", "budget", "termination_threshold",
                 "termination_patience", "termination_exit")
_PROBE = "CCO"  # scored once at construction to check that the objective yields a number

_IMPORTED: dict[str, Any] = {}
_IMPORT_LOCK = threading.Lock()


class _Collect(logging.Handler):
    """Keeps the log records it is given, from this thread only."""

    def __init__(self, level: int):
        super().__init__(level)
        self.thread = threading.get_ident()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.records.append(record)


def _import_molscore() -> dict[str, Any]:
    """molscore, its scoring functions and why the unavailable ones are unavailable; its
    import-time warnings about optional backends are kept, not printed."""
    with _IMPORT_LOCK:
        if _IMPORTED:
            return _IMPORTED
        loggers = [logging.getLogger(n) for n in ("molscore", "moleval")]
        saved = [lg.propagate for lg in loggers]
        keep = _Collect(logging.WARNING)
        for lg in loggers:
            lg.propagate = False
            lg.addHandler(keep)
        try:
            import molscore
            from molscore import scoring_functions, utils
            from molscore.manager import PRESETS, MolScore
        except ImportError as err:
            raise ImportError(f"the molscore oracle needs the optional extra: {INSTALL_HINT} "
                              f"({err})") from err
        finally:
            for lg, p in zip(loggers, saved):
                lg.propagate = p
                lg.removeHandler(keep)
        unavailable = {}
        for rec in keep.records:
            msg = rec.getMessage()
            if ": currently unavailable" in msg:
                unavailable[msg.split(":", 1)[0]] = msg.split("following:", 1)[-1].strip()
        _IMPORTED.update(
            version=getattr(molscore, "__version__", "unknown"), MolScore=MolScore,
            presets=PRESETS,
            functions={f.__name__ for f in scoring_functions.all_scoring_functions},
            modifiers={f.__name__ for f in utils.all_score_modifiers},
            methods={f.__name__ for f in utils.all_score_methods}, unavailable=unavailable)
        return _IMPORTED


def _plain(obj: Any) -> Any:
    """A JSON-like copy of nested mappings and sequences (dicts, lists, Hydra containers)."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, Sequence) and not isinstance(obj, (str, bytes)):
        return [_plain(v) for v in obj]
    return obj


def _canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _referenced_files(obj: Any) -> list[str]:
    """Strings inside the objective that name existing files (reference SMILES, models)."""
    if isinstance(obj, dict):
        return [p for v in obj.values() for p in _referenced_files(v)]
    if isinstance(obj, list):
        return [p for v in obj for p in _referenced_files(v)]
    if isinstance(obj, str) and len(obj) < 4096 and os.path.isfile(obj):
        return [obj]
    return []


def _finite(rows: Any, smiles: str, column: str) -> bool:
    """Whether the table has a finite number for this molecule in this column."""
    if column not in rows.columns:
        return False
    try:
        return bool(np.isfinite(float(rows.at[smiles, column])))
    except (TypeError, ValueError):
        return False


class MolScoreOracle(Oracle):
    """A MolScore objective as an oracle: MolScore's aggregated score per design, higher is
    better, NaN with the reason for an invalid design (see the module docstring for the
    value and for what of MolScore is switched off).

    Give exactly one of
      config: a path to a MolScore JSON config, or the config as a dict (the JSON's content);
      benchmark and task: a preset MolScore ships, e.g. benchmark="GuacaMol",
        task="Celecoxib_rediscovery" (MolScore's "GuacaMol:Celecoxib_rediscovery");
        `MolScoreOracle.presets()` lists them.
    allow_external: also run scoring functions that are not known to work offline (they may
      download files, create conda environments or call external programs); off by default.

    Raises ValueError for a missing or unreadable config, an unknown preset, a scoring
    function, modifier or aggregation that is unknown, unavailable in this installation,
    not offline or history-dependent, and an objective that does not give a number for a
    probe molecule; ImportError naming the extra when molscore is not installed.

    params(): where the objective came from (the file path as given, the dict's objective,
    or benchmark and task), `objective_sha256` (canonical JSON of the scoring functions and
    scoring sections, plus the content of every file they name) and `molscore_version`, so
    the cache key changes whenever the objective does. `ignored`: the settings of the config
    this oracle does not apply. Version 1.
    """

    name = "molscore"
    version = "1"
    units = "MolScore aggregated score (desirability, usually 0-1)"
    higher_is_better = True

    def __init__(self, config: str | os.PathLike | Mapping[str, Any] | None = None,
                 benchmark: str | None = None, task: str | None = None,
                 allow_external: bool = False):
        ms = _import_molscore()
        self.allow_external = bool(allow_external)
        if (config is None) == (benchmark is None and task is None):
            raise ValueError("molscore oracle: give either config (a MolScore JSON config "
                             "file or dict) or benchmark and task, not both or neither")
        if config is None:
            if not benchmark or not task:
                raise ValueError("molscore oracle: a preset needs both benchmark and task, "
                                 f"got benchmark={benchmark!r}, task={task!r}")
            raw = self._load_preset(ms, str(benchmark), str(task))
            self._source: dict[str, Any] = {"benchmark": str(benchmark), "task": str(task)}
        elif isinstance(config, Mapping):
            raw = _plain(config)
            self._source = {}
        elif isinstance(config, (str, os.PathLike)):
            raw = self._load_file(str(config))
            self._source = {"config": str(config)}
        else:
            raise ValueError("molscore oracle: config must be a path to a MolScore JSON file "
                             f"or a dict, got {type(config).__name__}")
        self._label = "/".join(self._source.values()) or "config dict"
        self.objective, self.ignored, self.task = self._objective(raw)
        if not self._source:
            self._source = {"config": self.objective}
        self._check(ms)
        files = sorted(set(_referenced_files(self.objective)))
        digest = hashlib.sha256(_canonical_json(self.objective).encode())
        for path in files:
            digest.update(f"\0{path}\0{_sha256_file(path)}".encode())
        self.objective_sha256 = digest.hexdigest()
        self.molscore_version = ms["version"]
        if self.ignored:
            warnings.warn(f"molscore oracle ({self._label}): not applied, as vardbio's runtime "
                          f"does caching, budgets and counting: {sorted(self.ignored)} "
                          "(use campaign.oracle_budget and budget_counting instead)",
                          UserWarning, stacklevel=2)
        self._setup()
        probe = self.score([_PROBE])
        if not np.isfinite(probe.values[0]):
            self.close()
            raise ValueError(f"molscore oracle ({self._label}): the objective gives no number "
                             f"for the probe molecule {_PROBE}: {probe.reasons[0]}")

    # -- configuration -------------------------------------------------------------------
    @staticmethod
    def presets() -> dict[str, list[str]]:
        """MolScore's benchmark presets: {benchmark: [task, ...]}."""
        return {b: sorted(p.name[:-len(".json")] for p in d.glob("*.json"))
                for b, d in _import_molscore()["presets"].items()}

    @staticmethod
    def _load_preset(ms: dict[str, Any], benchmark: str, task: str) -> dict[str, Any]:
        if benchmark not in ms["presets"]:
            raise ValueError(f"unknown MolScore benchmark {benchmark!r}; available: "
                             f"{', '.join(sorted(ms['presets']))}")
        path = ms["presets"][benchmark] / f"{task}.json"
        if not path.is_file():
            tasks = MolScoreOracle.presets()[benchmark]
            raise ValueError(f"unknown task {task!r} in MolScore benchmark {benchmark!r}; "
                             f"available: {', '.join(tasks)}")
        return json.loads(path.read_text())

    @staticmethod
    def _load_file(path: str) -> dict[str, Any]:
        if not os.path.isfile(path):
            hint = ""
            if ":" in path and not path.endswith(".json"):
                b, t = path.split(":", 1)
                hint = f" (for a MolScore preset use benchmark={b!r}, task={t!r})"
            raise ValueError(f"MolScore config file not found: {path!r}{hint}")
        try:
            with open(path) as f:
                raw = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"MolScore config {path!r} is not readable JSON: {err}") from err
        if not isinstance(raw, dict):
            raise ValueError(f"MolScore config {path!r} must hold a JSON object, "
                             f"got {type(raw).__name__}")
        return raw

    def _objective(self, raw: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], str]:
        """The parts that define the score (scoring functions that run, scoring), the
        campaign settings that are dropped, and the task name."""
        for key in ("scoring_functions", "scoring"):
            if key not in raw:
                raise ValueError(f"molscore oracle ({self._label}): the config has no "
                                 f"'{key}' section")
        scoring = raw["scoring"]
        if not isinstance(scoring, dict) or not isinstance(scoring.get("metrics"), list) \
                or "method" not in scoring:
            raise ValueError(f"molscore oracle ({self._label}): 'scoring' needs 'method' and "
                             "a list of 'metrics'")
        if not isinstance(raw["scoring_functions"], list):
            raise ValueError(f"molscore oracle ({self._label}): 'scoring_functions' must be "
                             "a list")
        functions = []
        for i, f in enumerate(raw["scoring_functions"]):
            if not isinstance(f, dict) or "name" not in f:
                raise ValueError(f"molscore oracle ({self._label}): scoring function {i} "
                                 "needs a 'name'")
            if f.get("run", True):
                functions.append({"name": f["name"], "run": True,
                                  "parameters": dict(f.get("parameters") or {})})
        ignored = {}
        for key in _IGNORED_KEYS:
            value = raw.get(key)
            if key == "diversity_filter":
                if isinstance(value, dict) and value.get("run"):
                    ignored[key] = value.get("name", "unnamed")
            elif value:
                ignored[key] = value
        objective = {"scoring_functions": functions, "scoring": scoring}
        return objective, ignored, str(raw.get("task") or "vardbio")

    def _check(self, ms: dict[str, Any]) -> None:
        label = f"molscore oracle ({self._label})"
        if not self.objective["scoring_functions"]:
            raise ValueError(f"{label}: no scoring function is set to run")
        for f in self.objective["scoring_functions"]:
            name = f["name"]
            if name not in ms["functions"] and name not in ms["unavailable"]:
                raise ValueError(f"{label}: {name!r} is not a MolScore {ms['version']} "
                                 "scoring function")
            if name not in OFFLINE_FUNCTIONS and not self.allow_external:
                why = _NOT_OFFLINE.get(name, "it needs model files, external programs or "
                                             "licences that vardbio does not check")
                raise ValueError(f"{label}: scoring function {name} does not run offline: "
                                 f"{why}. Pass allow_external=True to run it anyway")
            check = OFFLINE_FUNCTIONS.get(name)
            why = check(f["parameters"]) if check else None
            if why and not self.allow_external:
                raise ValueError(f"{label}: scoring function {name} does not run offline: "
                                 f"{why}. Pass allow_external=True to run it anyway")
            if name not in ms["functions"]:
                raise ValueError(f"{label}: scoring function {name} is unavailable in this "
                                 f"MolScore installation ({ms['unavailable'][name]})")
        method = self.objective["scoring"]["method"]
        if method in BATCH_DEPENDENT_METHODS:
            raise ValueError(f"{label}: aggregation {method!r} scores a molecule against the "
                             "rest of its batch, so a score would not depend on the design "
                             "alone (needed for caching); use amean, gmean, wsum, prod, "
                             "wprod or single")
        if method not in ms["methods"]:
            raise ValueError(f"{label}: unknown aggregation {method!r}; MolScore has "
                             f"{sorted(set(ms['methods']) - set(BATCH_DEPENDENT_METHODS))}")
        for m in self.objective["scoring"]["metrics"]:
            if not isinstance(m, dict) or "name" not in m or "modifier" not in m:
                raise ValueError(f"{label}: every metric needs a 'name' and a 'modifier', "
                                 f"got {m!r}")
            m.setdefault("parameters", {})
            m.setdefault("weight", 1.0)
            if m["modifier"] not in ms["modifiers"]:
                raise ValueError(f"{label}: metric {m['name']}: unknown modifier "
                                 f"{m['modifier']!r}; MolScore has {sorted(ms['modifiers'])}")
            if m["modifier"] == "norm" and not {"min", "max"} <= set(m["parameters"]):
                raise ValueError(f"{label}: metric {m['name']}: the 'norm' modifier needs "
                                 "fixed 'min' and 'max' parameters here (MolScore would "
                                 "take them from the molecules seen so far, so a score would "
                                 "depend on the history)")

    # -- MolScore instance ---------------------------------------------------------------
    def _setup(self) -> None:
        """A MolScore manager on a private temporary folder (built on first use, also in a
        worker process after unpickling)."""
        self._lock = threading.Lock()
        self._manager = None
        self._tmp: str | None = None
        self._finalizer = None
        self._batches = 0

    def _build(self):
        ms = _import_molscore()
        self._tmp = tempfile.mkdtemp(prefix="vardbio-molscore-")
        self._finalizer = weakref.finalize(self, shutil.rmtree, self._tmp, True)
        cfg = {"task": self.task, "output_dir": self._tmp, "load_from_previous": False,
               "logging": False, "monitor_app": False, "diversity_filter": {"run": False},
               **json.loads(json.dumps(self.objective))}
        path = os.path.join(self._tmp, "objective.json")
        with open(path, "w") as f:
            json.dump(cfg, f)
        logger = logging.getLogger("molscore")
        before = list(logger.handlers)
        try:
            manager = ms["MolScore"](model_name="vardbio", task_config=path,
                                     output_dir=self._tmp, add_run_dir=False)
        except Exception as err:  # noqa: BLE001 - MolScore raises many types
            raise ValueError(f"molscore oracle ({self._label}): MolScore could not build the "
                             f"objective: {type(err).__name__}: {err}") from err
        finally:
            for handler in logger.handlers[:]:
                if handler not in before:  # the log file and console handlers it adds
                    logger.removeHandler(handler)
                    handler.close()
        atexit.unregister(manager.write_scores)
        atexit.unregister(manager.kill_monitor)
        self._manager = manager
        return manager

    def close(self) -> None:
        """Delete MolScore's temporary folder and drop the manager (rebuilt if used again)."""
        with self._lock:
            self._manager = None
            if self._finalizer is not None:
                self._finalizer()
            self._tmp = self._finalizer = None

    def __enter__(self) -> "MolScoreOracle":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for key in ("_lock", "_manager", "_tmp", "_finalizer", "_batches"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._setup()

    # -- the oracle ----------------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        return {**self._source, "objective_sha256": self.objective_sha256,
                "molscore_version": self.molscore_version}

    def design_key(self, design: Any) -> str:
        """The canonical SMILES MolScore is given ("smi:..."); chem's smiles_key if none."""
        try:
            return "smi:" + self._smiles(design)
        except OracleError:
            return smiles_key(design)

    @staticmethod
    def _smiles(design: Any) -> str:
        """Canonical SMILES of the design read back from its own SMILES, so that explicit
        hydrogens, conformers and atom order of a Mol change neither score nor key."""
        written = Chem.MolToSmiles(to_mol(design))
        mol = Chem.MolFromSmiles(written)
        if mol is None:
            raise OracleError(f"the design's canonical SMILES does not parse: {written!r}")
        return Chem.MolToSmiles(mol)

    def score(self, designs: Sequence[Any]) -> OracleResult:
        n = len(designs)
        values = np.full(n, np.nan)
        reasons: list[str | None] = [None] * n
        smiles: list[str | None] = [None] * n
        for i, design in enumerate(designs):
            try:
                smiles[i] = self._smiles(design)
            except OracleError as err:
                reasons[i] = f"invalid molecule (MolScore would score it 0): {err}"
        todo = sorted({s for s in smiles if s is not None})
        if todo:
            try:
                scores, why = self._run(todo)
            except Exception as err:  # noqa: BLE001 - any MolScore failure fails the batch
                scores, why = {}, {s: f"MolScore failed: {type(err).__name__}: {err}"
                                   for s in todo}
            for i, s in enumerate(smiles):
                if s is None:
                    continue
                if s in scores and np.isfinite(scores[s]):
                    values[i] = scores[s]
                else:
                    reasons[i] = why.get(s, "MolScore returned no score for this molecule")
        return OracleResult(values, reasons)

    def _run(self, smiles: list[str]) -> tuple[dict[str, float], dict[str, str]]:
        """MolScore's scoring functions and compute_score on unique canonical SMILES:
        ({smiles: score}, {smiles: why there is no score})."""
        method = self.objective["scoring"]["method"]
        metrics = [m["name"] for m in self.objective["scoring"]["metrics"]]
        collect = _Collect(logging.WARNING)
        root = logging.getLogger()
        with self._lock:
            manager = self._manager or self._build()
            self._batches += 1
            names = [f"{self._batches}_{i}" for i in range(len(smiles))]
            root.addHandler(collect)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # pandas' chained-assignment notices
                    manager.run_scoring_functions(smiles=smiles, file_names=names)
                    table = manager.compute_score(manager.results_df.copy())
            finally:
                root.removeHandler(collect)
                manager.results_df = None
        timeouts = [r.getMessage() for r in collect.records if "timeout" in
                    r.getMessage().lower()]
        if timeouts:
            return {}, {s: f"MolScore: {timeouts[0]}" for s in smiles}
        scores, why = {}, {}
        rows = table.drop_duplicates(subset="smiles").set_index("smiles")
        for s in smiles:
            if s not in rows.index:
                continue
            value = float(np.asarray(rows.at[s, method], dtype=np.float64).reshape(-1)[0])
            scores[s] = value
            if not np.isfinite(value):
                missing = [m for m in metrics if not _finite(rows, s, m)]
                why[s] = (f"MolScore gave no value for metric(s) {missing}" if missing
                          else f"MolScore's {method} score is {value}")
        return scores, why
