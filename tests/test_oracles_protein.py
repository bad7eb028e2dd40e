"""Protein-sequence oracles: reference values and bad inputs."""
from __future__ import annotations

import numpy as np
import pytest
from Bio.SeqUtils.ProtParamData import DIWV

from vardbio_oracles.protein import (Aromaticity, Gravy, HelixPropensity, InstabilityIndex,
                                     IsoelectricPoint, NetCharge, SequenceStability)

# The protein used in Biopython's ProtParam tests, with values from ExPASy ProtParam (the
# reference implementation of Guruprasad et al. 1990) rounded to two decimals.
SEQ = ("MAEGEITTFTALTEKFNLPPGNYKKPKLLYCSNGGHFLRILPDGTVDGTRDRSDQHIQLQLSAESVGEVYIKSTETGQYLAMDTSGLL"
       "YGSQTPSEECLFLERLEENHYNTYTSKKHAEKNWFVGLKKNGSCKRGPRTHYGQKAILFLPLPV")


def test_reference_values():
    assert InstabilityIndex().score([SEQ]).values[0] == pytest.approx(41.98, abs=0.005)
    assert Gravy().score([SEQ]).values[0] == pytest.approx(-0.5974, abs=1e-4)
    assert IsoelectricPoint().score([SEQ]).values[0] == pytest.approx(7.72, abs=0.005)
    assert NetCharge(ph=7.72).score([SEQ]).values[0] == pytest.approx(0.0, abs=0.01)
    assert Aromaticity().score([SEQ]).values[0] == pytest.approx(0.10, abs=0.005)


def test_instability_index_is_the_original_formula():
    """II = 10 / L * sum of DIWV(x_i, x_i+1) over the L - 1 dipeptides (Guruprasad 1990)."""
    ii = 10.0 / len(SEQ) * sum(DIWV[a][b] for a, b in zip(SEQ, SEQ[1:]))
    assert InstabilityIndex().score([SEQ]).values[0] == pytest.approx(ii, rel=1e-12)


def test_stability_reward():
    s = SequenceStability()
    ii = InstabilityIndex().score([SEQ]).values[0]
    expected = 1.0 / (1.0 + np.exp((ii - 40.0) / 5.0))
    assert s.score([SEQ]).values[0] == pytest.approx(expected)
    assert s.higher_is_better and not InstabilityIndex().higher_is_better
    with pytest.raises(ValueError):
        SequenceStability(scale=0)


def test_helix_propensity_windows():
    """Helix formers (E, A, L, M) make every residue helical, helix breakers (G, P) none,
    and strand formers (V, I) lose to P_beta although their P_alpha passes the threshold."""
    o = HelixPropensity()
    helix, breaker, strand = o.score(["EALMEALMEALM", "GPGPGPGPGPGP", "VIVIVIVIVIVI"]).values
    assert helix == 1.0 and breaker == 0.0 and strand == 0.0
    # windows starting at 0..3 pass (the last has mean (3·1.51 + 3·0.57) / 6 = 1.04 >= 1.03),
    # the one at 4 does not (0.88): residues 0..8 are helical
    assert o.score(["EEEEEEGGGGGG"]).values[0] == pytest.approx(9 / 12)
    short = o.score(["EEEE"])
    assert np.isnan(short.values[0]) and "at least 6" in short.reasons[0]
    with pytest.raises(ValueError):
        HelixPropensity(window=0)


def test_net_charge_sign():
    res = NetCharge().score(["KKKKRRRR", "DDDDEEEE"]).values
    assert res[0] > 5 and res[1] < -5


@pytest.mark.parametrize("oracle", [InstabilityIndex(), Gravy(), IsoelectricPoint(), NetCharge(),
                                    Aromaticity(), SequenceStability(), HelixPropensity()])
def test_bad_sequences_give_nan_with_reason(oracle):
    res = oracle.score(["", "ACDXZ", "ACD1", None, "   "])
    assert np.isnan(res.values).all()
    assert "empty" in res.reasons[0] and "non-standard" in res.reasons[1]
    assert all(res.reasons)


def test_cleaning_and_key():
    o = Gravy()
    a, b = o.score(["acdef", " ACD EF\n"]).values
    assert a == b and o.design_key("acdef") == o.design_key("ACDEF")


@pytest.mark.parametrize("oracle", [InstabilityIndex(), Gravy(), IsoelectricPoint(), NetCharge(),
                                    Aromaticity(), SequenceStability(), HelixPropensity()])
def test_plugin_contract(oracle):
    from vardbio.testing import check_oracle_contract

    check_oracle_contract(oracle, [SEQ, "MKTAYIAKQR", "GGSAGG"], ["", "ACDXZ", None])
