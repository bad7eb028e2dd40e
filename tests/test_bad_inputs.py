"""Bad inputs stop at the edge: one line naming the problem, and no oracle call.

Every case goes through the command line (`vardbio.cli.main` with argv, stderr captured) or
the Trainer, with a reward whose oracle is a plain counting function registered as an
entry point by a real (tiny) installed distribution, so the count of its calls proves that
nothing was paid: settings, checkpoints, resume states, designs and plugin mistakes.
"""
from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path

import pytest

import vardbio
from vardbio.cli import main
from vardbio.model.checkpoint import save_verified
from vardbio_models.toy import WEIGHTS

COUNTING_MODULE = '''
"""Oracles of the bad-input tests; CALLS counts every real call."""
CALLS = []


def counting(design, dim=8):
    CALLS.append(1)
    return float(sum(design))


def two_args(design, other):
    CALLS.append(1)
    return 0.0


def not_an_oracle():
    return 3.0


def failing(design):
    CALLS.append(1)
    raise ValueError("this oracle cannot score anything")
'''

ENTRY_POINTS = """\
[vardbio.oracles]
counting = counting_oracles:counting
two_args = counting_oracles:two_args
not_an_oracle = counting_oracles:not_an_oracle
failing = counting_oracles:failing
"""


@pytest.fixture(scope="module")
def counting(tmp_path_factory):
    """The counting_oracles module, installed as a distribution that registers its
    functions in the group vardbio.oracles."""
    site = tmp_path_factory.mktemp("site")
    (site / "counting_oracles.py").write_text(textwrap.dedent(COUNTING_MODULE))
    info = site / "counting_oracles-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: counting-oracles\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    module = importlib.import_module("counting_oracles")
    yield module
    sys.path.remove(str(site))
    sys.modules.pop("counting_oracles", None)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Bad files: checkpoints and resume states."""
    d = tmp_path_factory.mktemp("files")
    shipped = (WEIGHTS / "toy_gaussian8.pt").read_bytes()
    (d / "text.pt").write_text("this is not a checkpoint\n")
    (d / "empty.pt").write_bytes(b"")
    (d / "truncated.pt").write_bytes(shipped[: len(shipped) // 2])
    sealed = bytearray(save_verified({"format": "vardbio-model-1"}, d / "sealed.pt").read_bytes())
    sealed[40] ^= 0xFF  # one flipped byte inside a checksummed file
    (d / "corrupted.pt").write_bytes(bytes(sealed))
    (d / "sequence.pt").write_bytes((WEIGHTS / "toy_sequence_L8_V4.pt").read_bytes())
    for name, blob in {"garbage": b"\x00\x01not a resume state",
                       "other_config": None, "foreign": None}.items():
        last = d / name / "checkpoints" / "last.pt"
        last.parent.mkdir(parents=True)
        if blob is not None:
            last.write_bytes(blob)
    save_verified({"identity": "campaign: another\n", "next_iteration": 3}, d / "other_config" / "checkpoints" / "last.pt")
    save_verified({"format": "vardbio-model-1", "spec": {}, "state_dict": {}}, d / "foreign" / "checkpoints" / "last.pt")
    return d


BASE = ["campaign=toy_linear", "campaign.reward=[{oracle: counting}]", "progress=false", "report=false",
        "campaign.eval_samples=16", "campaign.iterations=2", "algorithm.value_samples=16", "algorithm.batch_size=4"]

# (case, overrides after BASE (or a whole argv for other commands), what the one line must say)
CLI_CASES = [
    ("budget zero", ["campaign.oracle_budget=0"], "campaign.oracle_budget must be an integer >= 1 (or null"),
    ("budget negative", ["campaign.oracle_budget=-3"], "campaign.oracle_budget must be an integer >= 1"),
    ("eval samples zero", ["campaign.eval_samples=0"], "campaign.eval_samples must be an integer >= 1, got 0"),
    ("iterations negative", ["campaign.iterations=-1"], "campaign.iterations must be an integer >= 0, got -1"),
    ("iterations not a number", ["campaign.iterations=abc"],
     "campaign.iterations=abc: Value 'abc' of type 'str' could not be converted to Integer"),
    ("beta not a number", ["algorithm.beta=abc"], "algorithm.beta must be a number, got 'abc'"),
    ("beta zero", ["algorithm.beta=0"], "VARD needs beta > 0"),
    ("batch size zero", ["algorithm.batch_size=0"], "batch_size must be >= 1"),
    ("batch size fractional", ["algorithm.batch_size=2.5"], "algorithm.batch_size must be an integer, got 2.5"),
    ("too few value samples", ["algorithm.value_samples=1"], "value_samples >= 2"),
    ("misspelt algorithm key", ["+algorithm.betta=0.2"], "unknown key(s) ['betta'] in algorithm"),
    ("budget below VARD's minimum", ["campaign.oracle_budget=1"], "campaign.oracle_budget) 1 is too small for vard"),
    ("rollout chunk zero", ["algorithm.rollout_chunk=0"], "rollout_chunk must be >= 1"),
    ("learning rate negative", ["algorithm.lr=-1"], "lr and max_grad_norm must be > 0"),
    ("nested algorithm key", ["algorithm.value.target=median"], "unknown value target 'median'"),
    ("unknown algorithm", ["algorithm=nope"], "algorithm/nope"),
    ("checkpoint_every zero", ["checkpoint_every=0"], "checkpoint_every must be an integer >= 1, got 0"),
    ("seed not a number", ["seed=abc"], "seed=abc: Value 'abc' of type 'str' could not be converted to Integer"),
    ("torch_threads negative", ["torch_threads=-1"], "torch_threads must be an integer >= 0, got -1"),
    ("budget counting", ["campaign.budget_counting=pmo"], "campaign.budget_counting must be one of"),
    ("aggregation", ["campaign.aggregation=mean"], "unknown aggregation 'mean'"),
    ("penalty without value", ["campaign.nan_policy=penalty"], "nan_policy 'penalty' needs a finite nan_penalty"),
    ("executor", ["campaign.oracle_runtime.executor=gpu"], "unknown executor 'gpu'"),
    ("retries", ["campaign.oracle_runtime.retries=-1"], "retries must be >= 0, got -1"),
    ("term weight", ["campaign.reward.0.weight=abc"], "could not be converted to Float full_key: campaign.reward[0].weight"),
    ("term transform", ["campaign.reward=[{oracle: counting, transform: {type: nope}}]"], "unknown transform"),
    ("override into a null entry", ["campaign.reward.0.transform={type: nope}"], "campaign.reward[0].transform"),
    ("no reward term", ["campaign.reward=[]"], "at least one"),
    ("unknown oracle", ["campaign.reward.0.oracle=nope"], "unknown oracle 'nope'; available:"),
    ("unknown oracle param", ["campaign.reward=[{oracle: counting, params: {nope: 1}}]"],
     "has no parameter(s) ['nope']"),
    ("unknown model", ["campaign.model.name=nope"], "unknown model 'nope'; available:"),
    ("unknown model option", ["+campaign.model.options.nope=1"], "nope"),
    ("value head input", ["+campaign.model.value_head.input=blurred"], "model.value_head.input must be one of"),
    ("mixed precision", ["accelerate.mixed_precision=fp8"], "accelerate.mixed_precision must be one of"),
    ("plugin: function of two designs", ["campaign.reward.0.oracle=two_args"], "needs ['design', 'other']: register a function of one design"),
    ("plugin: factory returning a float", ["campaign.reward.0.oracle=not_an_oracle"], "returned a float, not an Oracle"),
    ("--force outside run", ["sample", "--force"], "--force is an option of `vardbio run` only"),
    ("sample n zero", ["sample", "n=0"], "n must be an integer >= 1, got 0"),
    ("sample n not a number", ["sample", "n=abc"], "n must be an integer >= 1, got 'abc'"),
    ("report usage", ["report", "a", "b"], "usage: vardbio report <run_dir>"),
]

FILE_CASES = [  # (case, the override naming a file of `files`, what the one line must say)
    ("missing checkpoint", "campaign.model.checkpoint={d}/missing.pt", "model checkpoint not found"),
    ("text checkpoint", "campaign.model.checkpoint={d}/text.pt", "a text file, not a checkpoint"),
    ("empty checkpoint", "campaign.model.checkpoint={d}/empty.pt", "the file is empty"),
    ("truncated checkpoint", "campaign.model.checkpoint={d}/truncated.pt", "truncated"),
    ("corrupted checkpoint", "campaign.model.checkpoint={d}/corrupted.pt", "checksum mismatch"),
    ("checkpoint of another model", "campaign.model.checkpoint={d}/sequence.pt", "belongs to model 'toy_sequence'"),
    ("garbage resume state", "out_dir={d}/garbage", "cannot resume: resume state"),
    ("resume state of another run", "out_dir={d}/other_config", "holds a run with a different configuration"),
    ("foreign resume state", "out_dir={d}/foreign", "not a vardbio resume state"),
]


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and err[1] == "(set VARDBIO_DEBUG=1 for the full traceback)", err
    assert "Traceback" not in err[0]
    return err[0]


@pytest.mark.parametrize("overrides, message", [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_cli_bad_setting(counting, tmp_path, capsys, overrides, message):
    argv = overrides if overrides[0] in ("sample", "report") else \
        ["run", *BASE, f"out_dir={tmp_path / 'run'}", *overrides]
    calls = len(counting.CALLS)
    assert main(argv) == 2
    line = _one_line_error(capsys)
    assert message in line, line
    assert len(counting.CALLS) == calls, "no oracle call"
    assert not (tmp_path / "run" / "summary.json").exists()


@pytest.mark.parametrize("override, message", [c[1:] for c in FILE_CASES], ids=[c[0] for c in FILE_CASES])
def test_cli_bad_file(counting, files, tmp_path, capsys, override, message):
    override = override.format(d=files)
    out = [] if override.startswith("out_dir=") else [f"out_dir={tmp_path / 'run'}"]
    calls = len(counting.CALLS)
    assert main(["run", *BASE, *out, override]) == 2
    line = _one_line_error(capsys)
    assert message in line and "/" in line, line
    assert len(counting.CALLS) == calls, "no oracle call"


def _two_designs(a, b):
    return 0.0


TRAINER_CASES = [  # (case, Trainer args, keywords, message)
    ("budget zero", ("toy", "counting"), {"oracle_budget": 0}, "oracle_budget must be an integer >= 1"),
    ("eval samples zero", ("toy", "counting"), {"eval_samples": 0}, "eval_samples must be an integer >= 1"),
    ("iterations not an int", ("toy", "counting"), {"iterations": 2.0}, "iterations must be an integer >= 0"),
    ("budget counting", ("toy", "counting"), {"budget_counting": "pmo"}, "budget_counting must be one of"),
    ("reward function of two designs", ("toy", _two_designs), {}, "cannot be called with one design"),
    ("reward is a class", ("toy", vardbio.FunctionOracle), {}, "reward item 0 must be"),
    ("algorithm is a class", ("toy", "counting", vardbio.VARDConfig), {}, "algorithm must be an algorithm's config"),
    ("runtime key", ("toy", "counting"), {"oracle_runtime": {"workers": 2}}, "unknown key(s) ['workers']"),
    ("budget below one DDPO batch", ("toy", "counting", vardbio.DDPOConfig(batch_size=8)), {"oracle_budget": 5},
     "is too small for ddpo: it needs at least 8 oracle calls"),
    ("budget below one best-of-n design", ("toy", "counting", vardbio.BestOfNConfig(n=4)), {"oracle_budget": 3},
     "is too small for best_of_n"),
]


@pytest.mark.parametrize("args, kwargs, message", [c[1:] for c in TRAINER_CASES], ids=[c[0] for c in TRAINER_CASES])
def test_trainer_bad_setting(counting, tmp_path, args, kwargs, message):
    calls = len(counting.CALLS)
    with pytest.raises(ValueError) as err:
        vardbio.Trainer(*args, out_dir=tmp_path, progress=False, report=False,
                        model_options={"dataset": "gaussian8"}, **kwargs).train()
    text = str(err.value)
    assert message in text and "\n" not in text, text
    assert len(counting.CALLS) == calls, "no oracle call"


def test_cases_cover_at_least_25_bad_inputs():
    assert len(CLI_CASES) + len(FILE_CASES) + len(TRAINER_CASES) >= 25


def test_a_reward_failing_on_every_design_stops_after_the_first_chunk(counting, tmp_path, capsys):
    from vardbio.campaign.trainer import FIRST_CHUNK

    calls = len(counting.CALLS)
    argv = ["run", *BASE, "campaign.reward=[{oracle: failing}]", "campaign.eval_samples=256",
            f"out_dir={tmp_path}"]
    assert main(argv) == 2
    line = _one_line_error(capsys)
    assert f"failed on all of the first {FIRST_CHUNK} reference designs" in line
    assert f'{FIRST_CHUNK} × "failing: ValueError: this oracle cannot score anything"' in line, line
    assert len(counting.CALLS) - calls == FIRST_CHUNK, "only the first chunk was paid for"


def test_a_registered_plain_function_is_an_oracle(counting, tmp_path):
    """The entry point names a plain function; its params come from the term and enter the
    cache identity."""
    oracle = vardbio.registry.load("oracle", "counting")(dim=2)
    assert oracle.name == "counting" and oracle.params() == {"dim": 2}
    assert list(oracle.score([[1.0, 2.0], [0.5, 0.5]]).values) == [3.0, 1.0]
    summary = vardbio.Trainer("toy", "counting", vardbio.BestOfNConfig(n=2), model_options={"dataset": "gaussian2"},
                              eval_samples=8, out_dir=tmp_path, progress=False, report=False).train()
    assert summary["oracle_calls"] == 16 and summary["components_final"].keys() == {"counting"}
