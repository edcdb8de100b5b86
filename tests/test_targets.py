"""targets= / exclude=: names, dotted suffixes, regexes, types, predicates; and the errors."""
import re

import pytest
from torch import nn

from tunify import TunableParameter, tunify
from tunify.archs import NAFNet


def _nafnet():
    return NAFNet(width=8, middle_blk_num=1, enc_blk_nums=(1,), dec_blk_nums=(1,)).eval()


def _converted(tm):
    return set(tm.tunify_report.names())


def test_default_converts_convs_and_layer_scales_not_norms():
    names = _converted(tunify(_nafnet(), 2))
    assert "intro" in names and "encoders.0.0.conv2" in names and "encoders.0.0.beta" in names
    assert not any("norm" in n for n in names)


def test_exact_name_suffix_and_container():
    m = _nafnet()
    assert _converted(tunify(m, 2, targets=["intro"])) == {"intro"}
    assert _converted(tunify(m, 2, targets="conv1")) == {"encoders.0.0.conv1", "middle_blks.0.conv1", "decoders.0.0.conv1"}
    block = _converted(tunify(m, 2, targets=["middle_blks"]))
    assert "middle_blks.0.beta" in block and "middle_blks.0.sca.1" in block
    assert not any("norm" in n for n in block), "selecting a block keeps its norms plain"


def test_regex_type_predicate_and_exclude():
    m = _nafnet()
    assert _converted(tunify(m, 2, targets=re.compile(r".*conv[45]"))) == {
        f"{b}.conv{i}" for b in ("encoders.0.0", "middle_blks.0", "decoders.0.0") for i in (4, 5)}
    assert _converted(tunify(m, 2, targets=r"(intro|ending)")) == {"intro", "ending"}
    convs = _converted(tunify(m, 2, targets=[nn.Conv2d]))
    assert "intro" in convs and not any(n.endswith(("beta", "gamma")) for n in convs)
    picked = _converted(tunify(m, 2, targets=lambda name, mod: name.endswith("gamma")))
    assert picked == {"encoders.0.0.gamma", "middle_blks.0.gamma", "decoders.0.0.gamma"}
    rest = _converted(tunify(m, 2, exclude=["encoders", nn.ConvTranspose2d, "beta"]))
    assert not any(n.startswith("encoders") or n.endswith("beta") for n in rest) and "intro" in rest


def test_a_norm_named_explicitly_becomes_tunable():
    tm = tunify(_nafnet(), 2, targets=["middle_blks.0.norm1.weight"])
    assert _converted(tm) == {"middle_blks.0.norm1.weight"}
    assert isinstance(tm.model.middle_blks[0].norm1.parametrizations.weight[0], TunableParameter)


@pytest.mark.parametrize("spec, suggestion", [
    (["intr"], "'intro'"),
    (["conv_6"], "'conv5'"),
    ([r"enco.*\.convX"], None),
])
def test_unmatched_target_raises_with_closest_names(spec, suggestion):
    with pytest.raises(ValueError, match="matches no convertible layer") as err:
        tunify(_nafnet(), 2, targets=spec)
    if suggestion:
        assert f"Did you mean: {suggestion}" in str(err.value)
    assert "list_targets" in str(err.value)


def test_unmatched_exclude_and_bad_entries():
    with pytest.raises(ValueError, match="exclude entry 'decoder_s'"):
        tunify(_nafnet(), 2, exclude=["decoder_s"])
    with pytest.raises(TypeError, match="targets entries must be"):
        tunify(_nafnet(), 2, targets=[3.5])
    with pytest.raises(ValueError, match="nothing to convert"):
        tunify(nn.Sequential(nn.ReLU()), 2)
