"""Every I-model compiles with `torch.compile(fullgraph=True)`, for inference and a training step, with
`output_interactions=True`, and the compiled model equals the eager one (outputs, student maps, gates, gradients).

Inductor compiles take minutes on a shared 2-core CPU: the default run checks one model with the `aot_eager` backend
(dynamo's full graph, forward and backward through AOTAutograd, no code generation); the `slow` tests run inductor on
every model. The DETR family's Hungarian matching (scipy) cannot be traced: its training step compiles the model and
computes DETR's loss on the compiled outputs.
"""

import pytest
import torch
from conftest import randomize_gates, tiny_detr_kwargs, tiny_ivit_config, tiny_segmentation_kwargs

from hf_lfi import (
    IConditionalDetrConfig,
    IConditionalDetrForObjectDetection,
    IDetrConfig,
    IDetrForObjectDetection,
    IDetrForSegmentation,
    IDinov2Config,
    IDinov2ForImageClassification,
    ISiglipConfig,
    ISiglipForImageClassification,
    IViTForImageClassification,
)

SHAPE = dict(image_size=14, patch_size=7, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_labels=3)


def _classification_inputs(size):
    return {"pixel_values": torch.randn(2, 3, size, size), "labels": torch.tensor([0, 2])}


def _detection_inputs():
    pixel_mask = torch.ones(2, 64, 48, dtype=torch.long)
    pixel_mask[1, :, 32:] = 0  # the second image padded on its right
    return {"pixel_values": torch.randn(2, 3, 64, 48), "pixel_mask": pixel_mask}


DETECTION_TARGETS = [
    {"class_labels": torch.tensor([0, 2]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.3, 0.3, 0.1, 0.2]])},
    {"class_labels": torch.tensor([1]), "boxes": torch.tensor([[0.4, 0.6, 0.3, 0.2]])},
]

MODELS = {  # name -> (model factory, inputs factory)
    "ivit": (lambda: IViTForImageClassification(tiny_ivit_config(image_size=8)), lambda: _classification_inputs(8)),
    "idinov2": (lambda: IDinov2ForImageClassification(IDinov2Config(**SHAPE)), lambda: _classification_inputs(14)),
    "isiglip": (
        lambda: ISiglipForImageClassification(ISiglipConfig(**SHAPE, intermediate_size=37)),
        lambda: _classification_inputs(14),
    ),
    "idetr": (lambda: IDetrForObjectDetection(IDetrConfig(**tiny_detr_kwargs(dropout=0.0))), _detection_inputs),
    "idetr-segmentation": (
        lambda: IDetrForSegmentation(IDetrConfig(**tiny_segmentation_kwargs(dropout=0.0))),
        _detection_inputs,
    ),
    "iconditional-detr": (
        lambda: IConditionalDetrForObjectDetection(IConditionalDetrConfig(**tiny_detr_kwargs(dropout=0.0))),
        _detection_inputs,
    ),
}


def _loss(model, outputs):
    """The task loss (classification: from the labels inside the forward; DETR family: DETR's Hungarian loss on the
    outputs, outside the compiled graph) plus an alignment-like term on every student map."""
    if outputs.loss is not None:
        task = outputs.loss
    elif isinstance(model, IDetrForSegmentation):
        task = outputs.logits.square().mean() + outputs.pred_boxes.sum() + outputs.pred_masks.square().mean()
    else:
        task = model.loss_function(
            outputs.logits, DETECTION_TARGETS, outputs.logits.device, outputs.pred_boxes, model.config, None, None
        )[0]
    weights = [torch.linspace(0, 1, m[0].numel()).view_as(m[0]) for m in outputs.interaction_maps]
    return task + sum((m * w).sum() for m, w in zip(outputs.interaction_maps, weights))


def check_compiled_equals_eager(name: str, backend: str) -> None:
    make_model, make_inputs = MODELS[name]
    # the students share one forward code object: without a reset, dynamo's recompile limit is reached by the fifth
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = make_model()
    randomize_gates(model)
    inputs = make_inputs()
    compiled = torch.compile(model, fullgraph=True, backend=backend)

    model.eval()  # inference
    with torch.no_grad():
        expected, actual = model(**inputs, output_interactions=True), compiled(**inputs, output_interactions=True)
    for key in ("logits", "interaction_maps", "gates"):
        torch.testing.assert_close(actual[key], expected[key], atol=1e-5, rtol=1e-4, msg=key)

    model.train()  # a training step: forward, loss, backward, optimizer step
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    results = []
    for run in (model, compiled):
        state = {n: p.detach().clone() for n, p in model.named_parameters()}
        outputs = run(**inputs, output_interactions=True)
        _loss(model, outputs).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        optimizer.step()
        optimizer.zero_grad()
        results.append((outputs, grads))
        with torch.no_grad():  # back to the same weights for the other run
            for n, p in model.named_parameters():
                p.copy_(state[n])
    (expected, expected_grads), (actual, actual_grads) = results
    torch.testing.assert_close(actual.logits, expected.logits, atol=1e-5, rtol=1e-4)
    assert actual_grads.keys() == expected_grads.keys() and any(".gate." in n for n in actual_grads)
    for n, grad in expected_grads.items():
        torch.testing.assert_close(actual_grads[n], grad, atol=1e-4, rtol=1e-3, msg=n)


def test_ivit_compiles_fullgraph_with_interactions():
    check_compiled_equals_eager("ivit", backend="aot_eager")


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_every_imodel_compiles_fullgraph_with_inductor(name):
    check_compiled_equals_eager(name, backend="inductor")
