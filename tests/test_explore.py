"""`hf-lfi explore`: what the page shows for an image (read from the model's public outputs, checked against the
model, the loss and the metric), the explorer's data and teachers, clear errors for bad input, the page's handlers,
and the page itself in a real browser (headless Chromium through Selenium; skipped with a message without them)."""

import importlib.util
import runpy
import shutil
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_detr_kwargs
from datasets import Dataset
from synthetic import CLASS_NAMES, make_image_dataset
from test_attention_outputs import tiny_student
from transformers import DetrImageProcessorPil, ViTForImageClassification, ViTImageProcessorPil

import hf_lfi
from hf_lfi import InteractionTrainer, InteractionTrainingArguments, alignment_loss, cli, metrics
from hf_lfi.explore import ExploreError, Explorer, ExploreSettings, analyse_image, mean_gates
from hf_lfi.explore.figures import plot_card_figure, plot_view
from hf_lfi.interactions import MaskInteractionMapFn, mask_to_interaction_map
from hf_lfi.training import ImageClassificationTransform

REPO = Path(__file__).resolve().parents[1]
SIZE = 32  # images and model: 32 px, patches of 4 -> an 8 x 8 grid


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny I-ViT trained for a few steps with the alignment loss on synthetic images (mask teacher), its
    untrained ViT baseline, and a few validation rows written as a parquet split."""
    root = tmp_path_factory.mktemp("explore")
    train = make_image_dataset(16, size=SIZE, seed=0).map(MaskInteractionMapFn(grid=(8, 8)), batched=True)
    make_image_dataset(6, size=SIZE, seed=1).to_parquet(str(root / "data" / "validation.parquet"))
    processor = ViTImageProcessorPil(size={"height": SIZE, "width": SIZE})
    train.set_transform(
        ImageClassificationTransform(processor, map_column="interaction_map", valid_column="interaction_valid")
    )
    config = hf_lfi.IViTConfig(
        image_size=SIZE,
        patch_size=4,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        num_labels=3,
        id2label=dict(enumerate(CLASS_NAMES)),
        label2id={name: i for i, name in enumerate(CLASS_NAMES)},
    )
    torch.manual_seed(0)
    model = hf_lfi.IViTForImageClassification(config)
    args = InteractionTrainingArguments(
        output_dir=str(root / "run"),
        alignment_weight=1.0,
        max_steps=4,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        remove_unused_columns=False,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
    )
    InteractionTrainer(model=model, args=args, train_dataset=train).train()
    model.save_pretrained(root / "ivit")
    processor.save_pretrained(root / "ivit")
    ViTForImageClassification(config.base_config()).save_pretrained(root / "vit")
    processor.save_pretrained(root / "vit")
    return root


def settings(root, **overrides) -> ExploreSettings:
    values = dict(
        model=str(root / "ivit"),
        dataset=str(root / "data"),
        baseline=str(root / "vit"),
        teacher="mask",
        mask_teacher_grid=8,
    )
    return ExploreSettings(**{**values, **overrides})


@pytest.fixture(scope="module")
def explorer(trained):
    return Explorer.load(settings(trained))


def test_analysis_is_what_the_model_and_the_loss_say(explorer):
    analysis = explorer.analyse_row(2)
    model, row = explorer.model, explorer.rows[2]
    pixel_values = explorer.processor(images=[row["image"].convert("RGB")], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        out = model(pixel_values, output_interactions=True)
    student = torch.stack(out.interaction_maps)[:, 0]
    assert analysis.layers == [0, 1] and analysis.original.shape == (2, 4, 8, 8)
    torch.testing.assert_close(torch.from_numpy(analysis.student), student)
    # the student map is C_AGT read by the model's own reduction, heads averaged; C_VFM and C_F differ from it
    torch.testing.assert_close(torch.from_numpy(analysis.interaction_mean), student)
    for maps in (analysis.original, analysis.interaction, analysis.fused):
        np.testing.assert_allclose(maps.sum(axis=(2, 3)), 1.0, atol=1e-5)
    assert not np.allclose(analysis.original_mean, analysis.interaction_mean, atol=1e-4)
    torch.testing.assert_close(torch.from_numpy(analysis.gates), torch.stack(out.gates)[:, 0])
    # the alignment loss of training (mean over layers) is the mean of the per-layer KL the page shows
    teacher = mask_to_interaction_map(np.array(row["mask"]), (8, 8))
    assert analysis.teacher.status == "ok" and analysis.teacher.valid
    np.testing.assert_allclose(analysis.teacher.interaction_map, teacher.numpy(), atol=1e-3)  # float16 column
    loss = alignment_loss(list(out.interaction_maps), torch.from_numpy(analysis.teacher.interaction_map)[None])
    assert np.mean(analysis.kl) == pytest.approx(loss.item(), rel=1e-5)
    metric = metrics.load("interaction_alignment")
    expected = metric.compute(predictions=[student[1].numpy()], references=[np.array(row["mask"])])
    assert analysis.mask_alignment["student map"][1] == pytest.approx(expected)
    assert analysis.teacher_mask_alignment["iou_at_top_k"] == 1.0  # the mask teacher is the mask
    assert analysis.prediction.labels[0] == CLASS_NAMES[int(out.logits.argmax())]
    assert sorted(analysis.prediction.labels) == sorted(CLASS_NAMES)  # 3 classes: the top-5 is all of them
    assert analysis.baseline_prediction is not None and len(analysis.baseline_prediction.labels) == 3
    # per head: the maps of one head, the student reduction of that head's rows
    assert not np.allclose(analysis.maps(1, 0)["C_AGT"], analysis.maps(1, 3)["C_AGT"])
    assert set(analysis.maps(1, None)) == {"C_VFM", "C_AGT", "C_F", "student map"}


def test_split_gates_average_images_then_heads(explorer):
    images = explorer.rows["image"]
    gates = []
    with torch.no_grad():
        for image in images:
            inputs = explorer.processor(images=[image.convert("RGB")], return_tensors="pt")
            out = explorer.model(**inputs, output_interactions=True)
            gates.append(torch.stack(out.gates)[:, 0].mean(dim=1))  # [layers, 2]
    gates = torch.stack(gates)
    split = torch.from_numpy(explorer.split_gates)  # [layers, (mean, std), (g1, g2)]
    torch.testing.assert_close(split[:, 0], gates.mean(dim=0), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(split[:, 1], gates.std(dim=0), atol=1e-6, rtol=1e-4)
    seen = []
    mean_gates(explorer.model, explorer.processor, images, batch_size=4, progress=lambda *p: seen.append(p))
    assert seen == [(4, 6), (6, 6)]


def test_thumbnails_teacher_sources_and_notes(trained, explorer, tmp_path):
    captions = [caption for _, caption in explorer.thumbnails()]
    assert captions[0] == "#0 · red · teacher: ok" and len(captions) == 6
    # a dataset with its own map column: its maps and statuses; no teacher at all: a note, no KL
    rows = make_image_dataset(3, size=SIZE, seed=1).map(MaskInteractionMapFn(grid=(4, 4)), batched=True)
    rows = rows.map(lambda row, i: {"interaction_status": "no_foreground" if i == 1 else "ok"}, with_indices=True)
    rows.save_to_disk(str(tmp_path / "maps"))
    own = Explorer.load(settings(trained, dataset=str(tmp_path / "maps"), split="train", teacher=None, baseline=None))
    assert own.thumbnails()[1][1] == "#1 · green · teacher: no_foreground"
    assert own.analyse_row(0).teacher.interaction_map.shape == (4, 4)
    Dataset.from_dict({"image": rows["image"]}).save_to_disk(str(tmp_path / "plain"))
    plain = Explorer.load(
        settings(trained, dataset=str(tmp_path / "plain"), split="train", teacher=None, baseline=None)
    )
    assert "no teacher maps" in plain.notes[0] and "no closeness to masks" in plain.notes[1]
    analysis = plain.analyse_row(0)
    assert analysis.teacher is None and analysis.kl is None and analysis.mask_alignment == {}
    assert plain.thumbnails()[0][1] == "#0 · teacher: none"


def test_bad_input_is_a_clear_error(trained, explorer, tmp_path):
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(ExploreError, match="notes.png is not an image PIL can read"):
        explorer.analyse_upload(tmp_path / "notes.png")
    Dataset.from_dict({"text": ["a", "b"]}).save_to_disk(str(tmp_path / "text"))
    with pytest.raises(ExploreError, match="\\(train\\) has no image column 'image' \\(columns: \\['text'\\]\\)"):
        Explorer.load(settings(trained, dataset=str(tmp_path / "text"), split="train", teacher=None))
    with pytest.raises(ExploreError, match="has no split 'test' \\(splits: \\['validation'\\]\\)"):
        Explorer.load(settings(trained, split="test"))
    with pytest.raises(ExploreError, match="is a 'vit' model, not an hf_lfi I-model"):
        Explorer.load(settings(trained, model=str(trained / "vit")))
    with pytest.raises(ExploreError, match="Cannot load a model config from"):
        Explorer.load(settings(trained, model=str(tmp_path / "missing")))
    with pytest.raises(ExploreError, match="has no image processor"):
        hf_lfi.IViTForImageClassification.from_pretrained(trained / "ivit").save_pretrained(tmp_path / "bare")
        Explorer.load(settings(trained, model=str(tmp_path / "bare")))
    with pytest.raises(ExploreError, match="The mask teacher needs a mask column 'outline'"):
        Explorer.load(settings(trained, mask_column="outline"))


def test_model_baseline_and_data_by_hub_id(trained, hub_server):
    """Every name may be a Hub id: the I-model, its baseline and the dataset come from the test Hub on 127.0.0.1."""
    for name, kind in (("ivit", "model"), ("vit", "model"), ("data", "dataset")):
        hub_server.add_repo(f"org/tiny-{name}", trained / name, kind)
    explorer = Explorer.load(
        ExploreSettings("org/tiny-ivit", dataset="org/tiny-data", baseline="org/tiny-vit", teacher="mask")
    )
    local = Explorer.load(settings(trained))
    np.testing.assert_allclose(explorer.analyse_row(1).student, local.analyse_row(1).student, atol=1e-6)
    assert ("GET", "/api/models/org/tiny-ivit") in hub_server.requests
    assert any(path.endswith("validation.parquet") for _, path in hub_server.requests)
    with pytest.raises(ExploreError, match="No model 'org/missing' on the Hub"):
        Explorer.load(ExploreSettings("org/missing"))


def test_uploaded_image_and_the_online_vlm_teacher(trained, tmp_path):
    from tiny_llava import tiny_llava

    llava, processor = tiny_llava()
    llava.save_pretrained(tmp_path / "llava")
    processor.save_pretrained(tmp_path / "llava")
    online = Explorer.load(settings(trained, teacher=str(tmp_path / "llava"), baseline=None, num_images=2))
    assert online.thumbnails()[0][1] == "#0 · red · teacher: asked on view"
    analysis = online.analyse_row(0)
    assert "(online)" in analysis.teacher.source and analysis.teacher.interaction_map.shape == (4, 4)
    assert online.thumbnails()[0][1] == f"#0 · red · teacher: {analysis.teacher.status}"
    make_image_dataset(1, size=48, seed=3)[0]["image"].save(tmp_path / "mine.png")
    uploaded = online.analyse_upload(tmp_path / "mine.png")
    assert uploaded.title == "mine.png" and uploaded.mask is None and uploaded.teacher is not None
    assert uploaded.student.shape == (2, 8, 8)  # the processor resizes any image to the model's 32 px
    with pytest.raises(ExploreError, match="Cannot load the VLM teacher .*Unknown prompt 'riddle'"):
        Explorer.load(settings(trained, teacher=str(tmp_path / "llava"), teacher_prompt="riddle", baseline=None))


def test_detector_boxes_maps_on_the_feature_grid_and_teacher_placement(trained, tmp_path):
    """An I-DETR folder: the explorer loads it by its config's class; boxes, maps on the feature grid, the teacher
    map placed on the image's part of the grid as the trainer places it."""
    hf_lfi.IDetrForObjectDetection(hf_lfi.IDetrConfig(**tiny_detr_kwargs())).save_pretrained(tmp_path / "idetr")
    DetrImageProcessorPil(size={"shortest_edge": 48, "longest_edge": 64}).save_pretrained(tmp_path / "idetr")
    explorer = Explorer.load(settings(trained, model=str(tmp_path / "idetr"), baseline=None))
    assert type(explorer.model).__name__ == "IDetrForObjectDetection" and explorer.split_gates.shape == (2, 2, 2)
    analysis = explorer.analyse_row(0)
    prediction = analysis.prediction
    assert len(prediction.boxes) == 5 and prediction.scores == sorted(prediction.scores, reverse=True)
    assert analysis.original.shape == (2, 4, 6, 6) and analysis.student.shape == (2, 6, 6)  # 48 px at stride 8
    inputs = explorer.processor(images=[analysis.image], return_tensors="pt")
    with torch.no_grad():
        out = explorer.model(**inputs, output_interactions=True)
    teacher = torch.from_numpy(analysis.teacher.interaction_map)[None]
    placed = hf_lfi.training.place_teacher_maps(teacher, out.interaction_mask)
    expected = [alignment_loss([m], placed).item() for m in out.interaction_maps]
    assert analysis.kl == pytest.approx(expected, rel=1e-5)
    figure = plot_view(analysis, 1, 2)
    assert len(figure.subfigs[0].axes) == 6  # image with boxes, teacher, C_VFM, C_AGT, C_F, student map
    with pytest.raises(ExploreError, match="An online VLM teacher asks a classification question"):
        Explorer.load(settings(trained, model=str(tmp_path / "idetr"), baseline=None, teacher=str(tmp_path)))


@pytest.mark.parametrize("name", ["idinov2", "isiglip"])
def test_other_students_maps_are_their_own_student_maps(name):
    """I-DINOv2 (CLS and register keys dropped) and I-SigLIP (no CLS: mean of rows): the head-averaged C_AGT the page
    shows is the model's student map, and every per-head map is a distribution over the patch grid."""
    model = tiny_student(name)
    processor = ViTImageProcessorPil(size={"height": 28, "width": 28})
    analysis = analyse_image(model, processor, make_image_dataset(1, size=SIZE)[0]["image"])
    assert analysis.original.shape == (2, 4, 4, 4)
    np.testing.assert_allclose(analysis.interaction_mean, analysis.student, atol=1e-6)
    np.testing.assert_allclose(analysis.fused.sum(axis=(2, 3)), 1.0, atol=1e-5)


def test_analysis_of_a_model_under_sdpa_reads_the_materialised_maps(trained, explorer):
    """SDPA keeps no attention map: the analysis runs the model with eager attention (the same maps as a model loaded
    eager) and gives the model back with its own implementation."""
    model = hf_lfi.IViTForImageClassification.from_pretrained(trained / "ivit", attn_implementation="sdpa").eval()
    image = explorer.rows[1]["image"]
    analysis = analyse_image(model, explorer.processor, image)
    assert model.config._attn_implementation == "sdpa"
    expected = analyse_image(explorer.model, explorer.processor, image)
    for name in ("original", "interaction", "fused", "student", "gates"):
        np.testing.assert_allclose(getattr(analysis, name), getattr(expected, name), atol=1e-5)
    # a detector: only its own config switches; its ResNet backbone (which has no SDPA) keeps eager
    detector = hf_lfi.IDetrForObjectDetection(hf_lfi.IDetrConfig(**tiny_detr_kwargs())).eval()
    assert detector.config._attn_implementation == "sdpa"
    processor = DetrImageProcessorPil(size={"shortest_edge": 48, "longest_edge": 64})
    assert analyse_image(detector, processor, image).original.shape == (2, 4, 6, 6)
    assert detector.config._attn_implementation == "sdpa"
    assert detector.config.backbone_config._attn_implementation == "eager"


def test_figures_of_the_view_and_the_card(explorer, tmp_path):
    analyses = [explorer.analyse_row(i) for i in range(3)]
    view = plot_view(analyses[0], 0, None, explorer.split_gates, "mean of 6 validation images")
    assert [axis.get_title() for axis in view.subfigs[0].axes][1:3] == [
        "teacher C_VLM\nok",
        "C_VFM\nlayer 0 · mean of heads",
    ]
    card = plot_card_figure(analyses, explorer.split_gates)
    assert len(card.subfigs[0].axes) == 3 * 4 and card.subfigs[0].axes[2].get_title() == "student map (layer 1)"
    card.savefig(tmp_path / "card.png")
    assert (tmp_path / "card.png").stat().st_size > 10_000


# ------------------------------------------------------------------------------------------------------ the page
needs_gradio = pytest.mark.skipif(
    importlib.util.find_spec("gradio") is None, reason="the explore page needs gradio: pip install 'hf_lfi[explore]'"
)


@pytest.fixture(scope="module")
def page(trained):
    from hf_lfi.explore.app import ExploreApp

    return ExploreApp(settings(trained))


@needs_gradio
def test_page_handlers_show_the_view_and_report_errors_on_the_page(page, trained, tmp_path):
    import gradio as gr

    header, gallery, layer, head, status = page.start(progress=lambda *args, **kwargs: None)
    assert "IViTForImageClassification, interaction layers [0, 1]" in header and len(gallery) == 6
    assert layer.maximum == 1 and head.choices[0] == ("mean of heads", -1) and len(head.choices) == 5
    assert status == "Pick an image or upload one."
    analysis, maps, gates, predictions, alignment, download, status = page.first_view(
        1, -1, progress=lambda *a, **k: None
    )
    assert analysis.title == "validation #0 (red)" and maps.size[0] > 2 * maps.size[1]
    assert "| 1 | red" in predictions or "| rank | I-model | baseline |" in predictions
    assert "**1**" in alignment and "mask teacher" in alignment
    assert download.value["path"].endswith("validation-0-red-layer1-mean.png")
    assert status == "Showing validation #0 (red), layer 1, mean of heads."
    other = page.change_view(analysis, 0, 2)
    assert other[-1] == "Showing validation #0 (red), layer 0, head 2." and other[5].value["path"].endswith(
        "layer0-head2.png"
    )
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    failed = page.upload(str(tmp_path / "broken.jpg"), 1, -1, progress=lambda *a, **k: None)
    assert failed[-1] == "**Error:** broken.jpg is not an image PIL can read (cannot identify image file)."
    assert all(isinstance(output, type(gr.skip())) for output in failed[:-1])


@needs_gradio
def test_page_reports_a_bad_model_on_the_page(trained):
    from hf_lfi.explore.app import ExploreApp

    outputs = ExploreApp(settings(trained, model=str(trained / "vit"))).start(progress=lambda *a, **k: None)
    assert outputs[-1].startswith("**Error:** ") and "is a 'vit' model, not an hf_lfi I-model" in outputs[-1]


@needs_gradio
def test_space_app_builds_the_page_from_the_space_variables(trained, monkeypatch):
    import gradio as gr

    app = REPO / "examples" / "space" / "app.py"
    monkeypatch.delenv("HF_LFI_MODEL", raising=False)
    with pytest.raises(SystemExit, match="Set the Space variable HF_LFI_MODEL"):
        runpy.run_path(str(app))
    monkeypatch.setenv("HF_LFI_MODEL", str(trained / "ivit"))
    monkeypatch.setenv("HF_LFI_DATASET", str(trained / "data"))
    monkeypatch.setenv("HF_LFI_TEACHER", "mask")
    monkeypatch.setenv("HF_LFI_MASK_TEACHER_GRID", "8")
    monkeypatch.setenv("HF_LFI_NUM_IMAGES", "4")
    monkeypatch.setenv("HF_LFI_MASK_COLUMN", "mask")
    space = runpy.run_path(str(app))
    assert isinstance(space["demo"], gr.Blocks)
    assert space["settings"] == ExploreSettings(
        str(trained / "ivit"), str(trained / "data"), teacher="mask", num_images=4, mask_teacher_grid=8
    )
    monkeypatch.setenv("HF_LFI_NUM_IMAGES", "four")
    with pytest.raises(SystemExit, match="HF_LFI_NUM_IMAGES must be a whole number, got 'four'"):
        runpy.run_path(str(app))


@needs_gradio
def test_explore_command_serves_the_page_on_localhost(trained, monkeypatch):
    import gradio as gr

    served = []
    monkeypatch.setattr(gr.Blocks, "launch", lambda demo, **kwargs: served.append((demo, kwargs)))
    argv = [
        "explore",
        str(trained / "ivit"),
        "--dataset",
        str(trained / "data"),
        "--teacher",
        "mask",
        "--port",
        "7999",
    ]
    assert cli.main(argv) == 0
    ((demo, kwargs),) = served
    assert isinstance(demo, gr.Blocks) and kwargs == {"server_name": "127.0.0.1", "server_port": 7999}


@needs_gradio
def test_explore_command_passes_the_dataset_columns_and_the_teacher_settings(monkeypatch):
    from hf_lfi.explore import app

    built = []

    class Page:
        def launch(self, **kwargs):
            built.append(kwargs)

    monkeypatch.setattr(app, "build_app", lambda settings: built.append(settings) or Page())
    argv = ["explore", "org/i-vit", "--dataset", "org/birds", "--split", "test", "--baseline", "org/vit"]
    argv += ["--teacher", "mask", "--num-images", "8", "--image-column", "img", "--label-column", "species"]
    argv += [
        "--mask-column",
        "outline",
        "--map-column",
        "maps",
        "--prompt",
        "short",
        "--mask-teacher-grid",
        "16",
    ]
    assert cli.main(argv) == 0
    assert built == [
        ExploreSettings(
            "org/i-vit",
            dataset="org/birds",
            split="test",
            baseline="org/vit",
            teacher="mask",
            num_images=8,
            image_column="img",
            label_column="species",
            mask_column="outline",
            map_column="maps",
            teacher_prompt="short",
            mask_teacher_grid=16,
        ),
        {"server_name": "127.0.0.1", "server_port": 7860},
    ]


def test_explore_command_without_gradio_says_what_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # importing gradio fails
    monkeypatch.delitem(sys.modules, "hf_lfi.explore.app", raising=False)
    assert cli.main(["explore", "org/i-vit"]) == 2
    assert "hf-lfi explore needs Gradio" in capsys.readouterr().err


def _browser():
    """(chromium, chromedriver) paths, or a reason to skip."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        return None, "no chromium/chromedriver (Debian: apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return None, "no selenium: pip install selenium (in the [dev] extra)"
    return (chromium, driver), None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


BROWSER, NO_BROWSER = _browser()


@needs_gradio
@pytest.mark.skipif(BROWSER is None, reason=f"browser test skipped: {NO_BROWSER}")
def test_page_in_a_real_browser(trained, tmp_path):
    """Serve the page on 127.0.0.1 and drive headless Chromium: the first image's maps and gates appear; picking
    another image changes both; moving the layer and picking a head change the maps; a broken upload shows its
    error on the page; "Download figure" writes a PNG. Screenshots go to the test's temp folder."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    from hf_lfi.explore.app import build_app

    demo = build_app(settings(trained))
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    options = Options()
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1500,1100"):
        options.add_argument(argument)
    options.binary_location = BROWSER[0]
    options.add_experimental_option("prefs", {"download.default_directory": str(tmp_path / "downloads")})
    driver = webdriver.Chrome(service=Service(BROWSER[1]), options=options)
    try:
        wait = WebDriverWait(driver, 120)

        def source(element_id: str) -> str | None:
            images = driver.find_elements(By.CSS_SELECTOR, f"#{element_id} img")
            return images[0].get_attribute("src") if images else None

        def status() -> str:
            return driver.find_element(By.ID, "status").text

        driver.get(f"http://127.0.0.1:{port}/")
        wait.until(lambda _: source("maps") and source("gates") and "validation #0" in status())
        assert "IViTForImageClassification" in driver.find_element(By.ID, "header").text
        captions = driver.find_element(By.ID, "gallery").text
        assert "#0 · red · teacher: ok" in captions
        driver.save_screenshot(str(tmp_path / "first.png"))
        maps, gates = source("maps"), source("gates")

        driver.find_elements(By.CSS_SELECTOR, "#gallery button.thumbnail-item")[4].click()
        wait.until(lambda _: "validation #4" in status() and source("maps") != maps and source("gates") != gates)
        assert "Predictions on validation #4 (green)" in driver.find_element(By.ID, "predictions").text
        maps = source("maps")

        layer = driver.find_element(By.CSS_SELECTOR, "#layer input[type=number]")
        layer.send_keys(Keys.CONTROL, "a", Keys.NULL, "0", Keys.ENTER)
        wait.until(lambda _: "layer 0, mean of heads" in status() and source("maps") != maps)
        maps = source("maps")

        driver.find_element(By.CSS_SELECTOR, "#head input").click()
        driver.find_element(By.CSS_SELECTOR, "#head li[aria-label='head 2']").click()
        wait.until(lambda _: "layer 0, head 2" in status() and source("maps") != maps)
        driver.save_screenshot(str(tmp_path / "layer0-head2.png"))

        driver.find_element(By.ID, "download").click()
        wait.until(lambda _: list((tmp_path / "downloads").glob("*layer0-head2.png")))
        (downloaded,) = (tmp_path / "downloads").glob("*layer0-head2.png")
        assert downloaded.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

        (tmp_path / "broken.png").write_text("not an image")
        driver.find_element(By.CSS_SELECTOR, "#upload input[type=file], input[type=file]").send_keys(
            str(tmp_path / "broken.png")
        )
        wait.until(lambda _: "is not an image PIL can read" in status())
        assert "Traceback" not in driver.find_element(By.TAG_NAME, "body").text
        driver.save_screenshot(str(tmp_path / "error.png"))
    finally:
        driver.quit()
        demo.close()
