import json

import pytest
from conftest import tiny_ivit_config
from huggingface_hub.errors import StrictDataclassFieldValidationError

from hf_lfi import PRESET_NAMES, IViTConfig, parameter_report, preset_config
from hf_lfi.presets import PAPER_PARAMETERS


def test_serialisation_round_trip(tmp_path):
    config = tiny_ivit_config(
        interaction_layers=[1, 0],
        gate_hidden_size=4,
        gate_granularity="layer",
        gate_init_bias=3.0,
        freeze_backbone=True,
        interaction_map_reduction="mean",
    )
    assert config.interaction_layers == [0, 1]
    config.save_pretrained(tmp_path)
    loaded = IViTConfig.from_pretrained(tmp_path)
    for key in (
        "interaction_layers",
        "gate_hidden_size",
        "gate_granularity",
        "gate_init_bias",
        "freeze_backbone",
        "interaction_map_reduction",
        "hidden_size",
    ):
        assert getattr(loaded, key) == getattr(config, key), key
    assert IViTConfig(num_hidden_layers=3).interaction_layer_indices == [0, 1, 2]


@pytest.mark.parametrize(
    "overrides,error,message",
    [
        ({"interaction_layers": [0, 5]}, ValueError, "layer indices \\[5\\] out of range.*num_hidden_layers=2"),
        ({"interaction_layers": [-1]}, ValueError, "out of range"),
        ({"interaction_layers": [1, 1]}, ValueError, "repeated"),
        ({"gate_hidden_size": -1}, ValueError, "gate_hidden_size must be >= 0"),
        ({"gate_granularity": "token"}, StrictDataclassFieldValidationError, "gate_granularity"),
        ({"interaction_map_reduction": "max"}, StrictDataclassFieldValidationError, "interaction_map_reduction"),
        ({"interaction_layers": []}, ValueError, "interaction_layers is empty: the model would have no interaction"),
        ({"gate_init_bias": float("nan")}, ValueError, "gate_init_bias must be finite, got nan"),
        ({"gate_init_bias": float("inf")}, ValueError, "gate_init_bias must be finite, got inf"),
    ],
)
def test_invalid_config_is_refused(overrides, error, message):
    with pytest.raises(error, match=message):
        tiny_ivit_config(**overrides)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (dict(gate_granularity="none", gate_form="row"), "gate_granularity='none' has no gate.*gate_form='row'"),
        (dict(gate_granularity="none", gate_hidden_size=4), "no gate.*gate_hidden_size=4 would have no effect"),
        (dict(gate_granularity="none", gate_input_scale="none"), "no gate.*gate_input_scale='none'"),
        (dict(gate_granularity="none", gate_init_bias=2.0), "no gate.*gate_init_bias=2.0"),
        (dict(gate_form="row", gate_input_scale="none"), "gate_input_scale='none' applies to the per-element gate"),
        (dict(gate_form="scalar", gate_hidden_size=3), "gate_hidden_size=3 applies to the per-element gate only"),
    ],
)
@pytest.mark.parametrize("kind", ["ivit", "idetr"])
def test_fields_without_effect_are_refused_naming_them(kind, overrides, message):
    """A field that shapes a gate the configuration does not have would be silently ignored: refused."""
    from conftest import tiny_detr_kwargs

    from hf_lfi import IDetrConfig

    with pytest.raises(ValueError, match=message):
        tiny_ivit_config(**overrides) if kind == "ivit" else IDetrConfig(**tiny_detr_kwargs(**overrides))


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_preset_parameter_counts_match_paper(name):
    report = parameter_report(preset_config(name))
    paper_vit, paper_ivit = PAPER_PARAMETERS[name]
    assert abs(report["ivit_parameters"] - paper_ivit) / paper_ivit < 0.02
    assert abs(report["vit_parameters"] - paper_vit) / paper_vit < 0.02
    assert abs(report["overhead"] - report["expected_overhead"]) / report["expected_overhead"] < 0.01


def test_preset_overrides_and_unknown_name():
    config = preset_config("ivit-s-16", num_labels=200, interaction_layers=[11])
    assert (config.hidden_size, config.num_attention_heads, config.num_labels) == (384, 6, 200)
    report = parameter_report(config)
    assert report["overhead"] == report["expected_overhead"] == 384 * 384 + 384 + 6 * 6
    with pytest.raises(ValueError, match="Unknown preset 'ivit-h-14'"):
        preset_config("ivit-h-14")


@pytest.mark.parametrize(
    "overrides,gate_parameters",
    [
        (dict(), 6 * 6),  # per element, linear: W [2 x 2] + b [2] per head
        (dict(gate_hidden_size=4), 6 * (4 * 2 + 4 + 2 * 4 + 2)),  # hidden layer: W1, b1, W2, b2 per head
        (dict(gate_form="row"), 6 * (2 * 384 + 2)),  # reads the 384-wide token
        (dict(gate_form="scalar"), 6 * 2),
        (dict(gate_form="row", gate_granularity="layer"), 2 * 384 + 2),
        (dict(gate_granularity="none"), 0),
    ],
)
def test_parameter_report_counts_every_gate_form(overrides, gate_parameters):
    report = parameter_report(preset_config("ivit-s-16", interaction_layers=[11], **overrides))
    assert report["overhead"] == report["expected_overhead"] == 384 * 384 + 384 + gate_parameters


def test_unknown_config_keys_are_refused(tmp_path):
    from hf_lfi import IDetrConfig

    with pytest.raises(ValueError, match="Unknown IViTConfig keys \\['gate_granularty'\\]"):
        tiny_ivit_config(gate_granularty="layer")
    config = tiny_ivit_config().to_dict()
    (tmp_path / "config.json").write_text(json.dumps({**config, "gate_granularty": "layer"}))
    with pytest.raises(ValueError, match="Unknown IViTConfig keys \\['gate_granularty'\\]"):
        IViTConfig.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="Unknown IDetrConfig keys \\['encoder_layerz'\\]"):
        IDetrConfig(encoder_layerz=3)
