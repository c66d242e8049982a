import pytest
import torch
from conftest import tiny_ivit_config
from datasets import Dataset
from transformers import ViTConfig, ViTForImageClassification

from hf_lfi import IViTForImageClassification
from hf_lfi.training import InteractionTrainer, InteractionTrainingArguments, alignment_loss


def converted_tiny_ivit():
    fields = {k: v for k, v in tiny_ivit_config().to_dict().items() if k in ViTConfig.__dataclass_fields__ and k != "model_type"}
    return IViTForImageClassification.from_vit(ViTForImageClassification(ViTConfig(**fields)))


def fixed_batch_dataset(n=4, with_maps=True):
    g = torch.Generator().manual_seed(0)
    columns = {
        "pixel_values": torch.randn(n, 3, 30, 30, generator=g).tolist(),
        "labels": torch.randint(0, 3, (n,), generator=g).tolist(),
        "extra_text": ["unused"] * n,
    }
    if with_maps:
        maps = torch.zeros(n, 24, 24)
        maps[:, 4:12, 6:14] = 1.0  # the teacher looks at one region
        columns["interaction_map"] = (maps / maps.sum(dim=(1, 2), keepdim=True)).tolist()
    return Dataset.from_dict(columns).with_format("torch")


def make_trainer(tmp_path, model, dataset, **overrides):
    args = InteractionTrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=4, learning_rate=5e-2, max_steps=8,
        logging_steps=1, report_to="none", use_cpu=True, save_strategy="no", seed=0, **overrides,
    )
    return InteractionTrainer(model=model, args=args, train_dataset=dataset)


def test_training_lowers_alignment_loss_and_logs_components(tmp_path):
    model = converted_tiny_ivit()
    dataset = fixed_batch_dataset()
    trainer = make_trainer(tmp_path, model, dataset)
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "alignment_loss" in entry]
    assert len(logs) == 8
    losses = [entry["alignment_loss"] for entry in logs]
    assert losses[-1] < losses[0] - 0.1 and all(b < a for a, b in zip(losses, losses[1:]))
    for key in ("task_loss", "gate_g1/layer_0", "gate_g2/layer_1"):
        assert key in logs[0]
    # the logged alignment loss is the function's value on the same batch before the step
    assert logs[0]["loss"] == pytest.approx(logs[0]["task_loss"] + logs[0]["alignment_loss"], rel=1e-4)


def test_missing_map_column_is_a_clear_error(tmp_path):
    trainer = make_trainer(tmp_path, converted_tiny_ivit(), fixed_batch_dataset(with_maps=False))
    with pytest.raises(ValueError, match="no 'interaction_map' column"):
        trainer.train()


@pytest.mark.parametrize(
    "overrides,message",
    [({"alignment_weight": -1.0}, "alignment_weight must be >= 0"), ({"alignment_direction": "kl"}, "alignment_direction")],
)
def test_bad_arguments_are_refused(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        InteractionTrainingArguments(output_dir=str(tmp_path), **overrides)


def test_alignment_layers_must_have_interaction_queries(tmp_path):
    with pytest.raises(ValueError, match="alignment_layers \\[5\\] carry no interaction queries"):
        make_trainer(tmp_path, converted_tiny_ivit(), fixed_batch_dataset(), alignment_layers=[5])
