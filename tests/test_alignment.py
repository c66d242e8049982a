import math

import pytest
import torch
from conftest import tiny_vit

from hf_lfi import IViTForImageClassification
from hf_lfi.modeling.conversion import is_interaction_parameter
from hf_lfi.training import alignment_loss, batch_teacher_maps, place_teacher_maps, resample_teacher_map


def random_maps(batch, h, w, dtype=torch.float64):
    return torch.softmax(torch.randn(batch, h * w, dtype=dtype), -1).view(batch, h, w)


def reference_kl(p, q, eps):
    """Loop-by-element D_KL(p || q) after smoothing, for one flattened pair."""
    k = len(p)
    total = 0.0
    for pi, qi in zip(p.tolist(), q.tolist()):
        ps, qs = (pi + eps) / (1 + eps * k), (qi + eps) / (1 + eps * k)
        total += ps * math.log(ps / qs)
    return total


def test_area_resampling_averages_blocks_and_renormalises():
    teacher = torch.rand(2, 24, 24, dtype=torch.float64)
    resampled = resample_teacher_map(teacher, (12, 12))
    blocks = teacher.view(2, 12, 2, 12, 2).sum(dim=(2, 4))
    torch.testing.assert_close(
        resampled.double(), (blocks / blocks.sum(dim=(1, 2), keepdim=True)), atol=1e-6, rtol=1e-5
    )
    odd = resample_teacher_map(teacher, (7, 5))  # non-integer ratio: still a distribution
    torch.testing.assert_close(odd.sum(dim=(1, 2)), torch.ones(2, dtype=torch.float64), atol=1e-6, rtol=0)
    assert torch.equal(resample_teacher_map(torch.zeros(1, 24, 24), (4, 4)), torch.zeros(1, 4, 4))


@pytest.mark.parametrize("direction", ["student_teacher", "teacher_student"])
@pytest.mark.parametrize("epsilon", [1e-6, 1e-2])
def test_loss_matches_reference(direction, epsilon):
    students = [random_maps(3, 4, 4), random_maps(3, 4, 4)]
    teacher = random_maps(3, 8, 8)
    weights = [0.25, 0.75]
    loss = alignment_loss(students, teacher, direction=direction, epsilon=epsilon, layer_weights=weights)

    expected = 0.0
    for weight, student in zip(weights, students):
        target = teacher.view(3, 4, 2, 4, 2).sum(dim=(2, 4))  # exact area resampling for a 2x ratio
        per_image = []
        for s, t in zip(student.flatten(1), target.flatten(1)):
            per_image.append(
                reference_kl(s, t, epsilon) if direction == "student_teacher" else reference_kl(t, s, epsilon)
            )
        expected += weight * sum(per_image) / len(per_image)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_default_is_mean_over_layers_and_zero_for_equal_maps():
    student = random_maps(2, 4, 4)
    assert alignment_loss([student], student).item() == pytest.approx(0.0, abs=1e-9)
    teacher = random_maps(2, 4, 4)
    one = alignment_loss([student], teacher)
    assert alignment_loss([student, student, student], teacher).item() == pytest.approx(one.item())


def test_invalid_rows_are_masked():
    students = [random_maps(4, 4, 4)]
    teacher = random_maps(4, 4, 4)
    valid = torch.tensor([True, False, True, True])
    teacher_with_empty = teacher.clone()
    teacher_with_empty[3] = 0  # an all-zero teacher map counts as invalid too
    masked = alignment_loss(students, teacher_with_empty, valid=valid)
    subset = alignment_loss([students[0][[0, 2]]], teacher[[0, 2]])
    assert masked.item() == pytest.approx(subset.item())

    student = random_maps(2, 4, 4).requires_grad_()
    nothing = alignment_loss([student], teacher[:2], valid=torch.tensor([False, False]))
    nothing.backward()
    assert nothing.item() == 0 and torch.equal(student.grad, torch.zeros_like(student))


@pytest.mark.parametrize(
    "teacher,message",
    [
        (torch.rand(2, 576), "must be \\(batch, height, width\\)"),
        (torch.full((2, 4, 4), float("nan")), "NaN or infinite"),
        (-torch.rand(2, 4, 4), "negative values"),
        (torch.rand(3, 4, 4), "expected \\(batch=3"),
    ],
)
def test_bad_teacher_maps_are_refused(teacher, message):
    with pytest.raises(ValueError, match=message):
        alignment_loss([random_maps(2, 4, 4)], teacher)


def _student_with(value_at_00):
    maps = random_maps(2, 4, 4)
    maps[0, 0, 0] = value_at_00
    return [maps]


@pytest.mark.parametrize(
    "student_maps,kwargs,message",
    [
        ("ok", {"direction": "forward"}, "direction must be one of"),
        ([], {}, "student_maps is empty"),
        (None, {}, "student_maps must be a list of .* output_interactions=True"),
        (random_maps(2, 4, 4), {}, "student_maps must be a list .* got a tensor of shape \\(2, 4, 4\\)"),
        ([random_maps(2, 4, 4).numpy()], {}, "student_maps\\[0\\] must be a floating-point torch.Tensor, got ndarray"),
        ([random_maps(2, 4, 4), random_maps(3, 4, 4)], {}, "student_maps\\[1\\] has shape \\(3, 4, 4\\)"),
        ([random_maps(2, 4, 4) * 3], {}, "student_maps\\[0\\] must sum to 1 .* row 0 sums to 3"),
        ([random_maps(2, 4, 4) * torch.tensor([1.0, 2.0]).view(2, 1, 1)], {}, "row 1 sums to 2"),
        (_student_with(float("nan")), {}, "student_maps\\[0\\] has NaN or infinite values"),
        (_student_with(-0.5), {}, "student_maps\\[0\\] has negative values"),
        ("ok", {"layer_weights": [1.0, 1.0]}, "2 layer_weights for 1 student_maps"),
        ("two", {"layer_weights": [1.0, -1.0]}, "layer_weights must be finite, non-negative and not all zero"),
        ("two", {"layer_weights": [0.0, 0.0]}, "layer_weights must be finite, non-negative and not all zero"),
        ("ok", {"layer_weights": [float("nan")]}, "layer_weights must be finite"),
        ("ok", {"epsilon": 0.0}, "epsilon must be in \\(0, 1\\), got 0.0"),
        ("ok", {"epsilon": -0.1}, "epsilon must be in \\(0, 1\\)"),
        ("ok", {"epsilon": float("nan")}, "epsilon must be in \\(0, 1\\)"),
        ("ok", {"epsilon": 1.0}, "epsilon must be in \\(0, 1\\)"),
        ("ok", {"epsilon": 0.1}, "epsilon=0.1 adds 1.6 of uniform mass over the 16 patches"),
        ("ok", {"valid": torch.tensor([True, False, True])}, "valid must be one flag per image, shape \\(2,\\)"),
        ("ok", {"valid": torch.tensor([0.5, 1.0])}, "valid must hold booleans"),
    ],
)
def test_bad_arguments_are_refused_naming_the_argument(student_maps, kwargs, message):
    """Inputs that gave NaN, 0 or a meaningless number (maps summing to 3, negative layer weights, epsilon 0 or 1)
    or an obscure broadcast error are refused, the message naming the argument."""
    student_maps = {"ok": [random_maps(2, 4, 4)], "two": [random_maps(2, 4, 4)] * 2}.get(
        student_maps if isinstance(student_maps, str) else "", student_maps
    )
    with pytest.raises(ValueError, match=message):
        alignment_loss(student_maps, random_maps(2, 4, 4), **kwargs)


def test_valid_may_be_a_list_and_teacher_maps_an_array():
    students, teacher = [random_maps(2, 4, 4)], random_maps(2, 4, 4)
    expected = alignment_loss(students, teacher, valid=torch.tensor([True, False]))
    assert alignment_loss(students, teacher.numpy(), valid=[True, False]).item() == pytest.approx(expected.item())


def test_low_precision_student_maps_are_accepted():
    student = random_maps(2, 14, 14, dtype=torch.float32)
    teacher = random_maps(2, 24, 24, dtype=torch.float32)
    full = alignment_loss([student], teacher)
    for dtype in (torch.bfloat16, torch.float16):
        assert alignment_loss([student.to(dtype)], teacher).item() == pytest.approx(full.item(), rel=5e-2)


def test_resample_checks_its_arguments():
    with pytest.raises(ValueError, match="grid must be two positive integers"):
        resample_teacher_map(random_maps(2, 4, 4), (0, 0))
    with pytest.raises(ValueError, match="teacher_map must be \\(batch, height, width\\), got shape \\(4, 4\\)"):
        resample_teacher_map(random_maps(1, 4, 4)[0], (2, 2))


def test_gradient_reaches_only_interaction_queries_and_gates():
    model = IViTForImageClassification.from_vit(tiny_vit()).train()
    out = model(torch.randn(2, 3, 30, 30), output_interactions=True)
    alignment_loss(out.interaction_maps, random_maps(2, 24, 24, dtype=torch.float32)).backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad and all(is_interaction_parameter(n) for n in with_grad)
    assert any("interaction_q_proj" in n for n in with_grad)


def test_float16_teacher_maps_are_accepted():
    teacher = random_maps(2, 24, 24, dtype=torch.float32)
    student = [random_maps(2, 6, 6, dtype=torch.float32)]
    torch.testing.assert_close(
        alignment_loss(student, teacher.half()), alignment_loss(student, teacher), atol=1e-3, rtol=1e-2
    )


def test_place_teacher_maps_respects_padding():
    teacher = torch.zeros(2, 4, 4)
    teacher[:, :, 2:] = 1.0 / 8  # mass on the right half of each image
    mask = torch.ones(2, 4, 6, dtype=torch.bool)
    mask[1, :, 3:] = False  # the second image covers only 3 of the 6 feature columns
    placed = place_teacher_maps(teacher, mask)
    assert placed.shape == (2, 4, 6)
    torch.testing.assert_close(placed.sum(dim=(1, 2)), torch.ones(2))
    assert placed[1, :, 3:].sum() == 0
    torch.testing.assert_close(placed[0], resample_teacher_map(teacher[:1], (4, 6))[0])
    torch.testing.assert_close(placed[1, :, :3], resample_teacher_map(teacher[1:], (4, 3))[0])
    with pytest.raises(ValueError, match="interaction_mask must be"):
        place_teacher_maps(teacher, mask[0])


def test_teacher_maps_on_different_grids_are_each_resampled_to_the_student_grid():
    """A list of maps on their own grids gives the loss of each map resampled to the student grid first."""
    student = [random_maps(3, 4, 4), random_maps(3, 2, 2)]
    maps = [random_maps(1, 6, 8)[0], random_maps(1, 8, 6)[0], torch.zeros(5, 5, dtype=torch.float64)]
    valid = torch.tensor([True, True, True])
    loss = alignment_loss(student, maps, valid)
    for direction in ("student_teacher", "teacher_student"):
        expected = sum(
            0.5
            * alignment_loss(
                [s[:2]], torch.cat([resample_teacher_map(m[None], s.shape[-2:]) for m in maps[:2]]), None, direction
            )
            for s in student
        )
        torch.testing.assert_close(alignment_loss(student, maps, valid, direction), expected)
    assert loss > 0  # the all-zero third map is left out, as in a tensor batch
    with pytest.raises(ValueError, match="teacher_map\\[1\\] must be a \\(height, width\\) tensor"):
        alignment_loss(student, [maps[0], maps[1][None], maps[2]])
    with pytest.raises(ValueError, match="negative values"):
        alignment_loss(student, [maps[0], -maps[1], maps[2]])
    mask = torch.ones(3, 4, 6, dtype=torch.bool)
    placed = place_teacher_maps(maps, mask)
    torch.testing.assert_close(placed[1], resample_teacher_map(maps[1][None], (4, 6))[0])
    assert batch_teacher_maps(maps[:1] * 2).shape == (2, 6, 8) and isinstance(batch_teacher_maps(maps), list)
