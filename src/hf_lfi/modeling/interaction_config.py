"""The interaction-query hyperparameters shared by the I-ViT and I-DETR configurations (paper Eq. 3-9): checks and
the resolved layer list. Imports only the standard library, so it travels with the remote code of saved checkpoints."""

import dataclasses

GATE_GRANULARITIES = ("head", "layer", "none")
# what a saved config carries besides its fields, and DetrConfig's legacy backbone switches (read in __post_init__)
_BOOKKEEPING_KEYS = {"_name_or_path", "model_type", "output_attentions", "auto_map", "architectures", "transformers_version", "dtype"}
_LEGACY_KEYS = {"use_timm_backbone", "use_pretrained_backbone", "backbone", "backbone_kwargs"}


def check_known_keys(config) -> None:
    """Refuse keys that are no field of the config (a typo such as `gate_granularty` would otherwise be kept as an
    attribute that nothing reads)."""
    known = {field.name for field in dataclasses.fields(config)} | _BOOKKEEPING_KEYS | _LEGACY_KEYS
    unknown = sorted(set(config.to_dict()) - known)
    if unknown:
        raise ValueError(f"Unknown {type(config).__name__} keys {unknown}: not fields of the config (a typo?).")


def check_interaction_fields(config, num_layers: int, layer_field: str) -> None:
    """Validate `interaction_layers` (against `num_layers`, named by `layer_field`) and the gate fields of `config`; store the layers sorted. Raises ValueError naming the problem."""
    check_known_keys(config)
    if config.interaction_layers is not None:
        layers = list(config.interaction_layers)
        bad = [i for i in layers if not 0 <= i < num_layers]
        if bad:
            raise ValueError(
                f"interaction_layers names layer indices {bad} out of range: the model has "
                f"{layer_field}={num_layers} (valid indices 0..{num_layers - 1})."
            )
        if len(set(layers)) != len(layers):
            raise ValueError(f"interaction_layers has repeated indices: {layers}.")
        config.interaction_layers = sorted(layers)
    if config.gate_hidden_size < 0:
        raise ValueError(f"gate_hidden_size must be >= 0 (0 = linear gate), got {config.gate_hidden_size}.")
    if config.gate_granularity not in GATE_GRANULARITIES:
        raise ValueError(f"gate_granularity must be one of {GATE_GRANULARITIES}, got {config.gate_granularity!r}.")
    if config.gate_hidden_size > 0 and config.gate_form != "element":
        raise ValueError(
            f"gate_hidden_size={config.gate_hidden_size} applies to the per-element gate only; gate_form is "
            f"{config.gate_form!r} (set gate_hidden_size=0 or gate_form='element')."
        )


def resolve_interaction_layers(interaction_layers: list[int] | None, num_layers: int) -> list[int]:
    """The layers carrying interaction queries (`None` means all)."""
    return list(range(num_layers)) if interaction_layers is None else list(interaction_layers)


__all__ = ["GATE_GRANULARITIES", "check_interaction_fields", "check_known_keys", "resolve_interaction_layers"]
