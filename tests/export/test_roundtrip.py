"""`agripatch export` round trip: the folder's contents, and the ONNX cascade against the PyTorch one."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from export_helpers import needs_onnx

pytestmark = pytest.mark.slow  # the session's export (fp32 + int8 of the tiny model) takes ~10 s


@pytest.fixture(scope="module")
def torch_predictor(tiny_model):
    from agripatch.predict.predictor import Predictor

    return Predictor.from_file(tiny_model, device="cpu")


@pytest.fixture(scope="module")
def onnx_predictor(exported):
    from agripatch.runtime.predictor import OnnxPredictor

    return OnnxPredictor(exported, threads=1)


def test_export_folder_holds_the_graphs_and_a_complete_cascade_json(exported, tiny_model):
    import onnx

    from agripatch.pipeline.bundle import load_model_file
    from agripatch.runtime.manifest import ExportManifest, file_sha256

    names = sorted(p.name for p in exported.iterdir())
    assert names == ["cascade.json", "classifier.int8.onnx", "classifier.onnx", "glance.int8.onnx", "glance.onnx"]
    assert not [p for p in exported.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left
    data = json.loads((exported / "cascade.json").read_text())
    bundle = load_model_file(tiny_model)
    pipe = bundle.pipeline
    assert data["format"] == "agripatch-export/1" and data["source"]["sha256"] == file_sha256(tiny_model)
    assert data["classes"] == bundle.classes and data["cascade"] == pipe.config.stored()
    assert data["thresholds"] == [0.9, 0.9, 0.9, 0.0]
    assert data["classifier"]["mean"] == list(pipe.classifier_mean)
    assert data["classifier"]["std"] == list(pipe.classifier_std)
    assert np.array_equal(np.array(data["cell_boxes"], np.float32), pipe.anchornet.cell_boxes(128, 128).numpy())
    assert data["decode_min_side"] == pipe.decode_min_side() and data["stage_macs"] == pipe.exit_macs().tolist()
    for variant in ("onnx", "onnx_int8"):
        for name in ("glance", "classifier"):
            entry = data["graphs"][variant][name]
            assert entry["sha256"] == file_sha256(exported / entry["file"])
            graph = onnx.load(str(exported / entry["file"]))
            dims = graph.graph.input[0].type.tensor_type.shape.dim
            assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3] + [128 if name == "glance" else 64] * 2
    manifest = ExportManifest.load(exported)
    assert manifest.variants() == ["onnx", "onnx_int8"] and manifest.config == pipe.config


def test_onnx_cascade_matches_pytorch_on_synthetic_photos(photos, torch_predictor, onnx_predictor):
    assert len(photos) >= 12
    ours = onnx_predictor.run([onnx_predictor.item(p, i) for i, p in enumerate(photos)])  # torch-free items
    ref = torch_predictor.run([torch_predictor.item(p, i) for i, p in enumerate(photos)])
    for a, b in zip(ours, ref):
        assert a.label == b.label and a.stage == b.stage and a.macs == b.macs
        assert np.array_equal(a.boxes, b.boxes) and np.array_equal(a.cells, b.cells)
        assert np.abs(a.probs - b.probs).max() <= 1e-4
        assert a.patch_logits.shape == b.patch_logits.shape and np.abs(a.patch_logits - b.patch_logits).max() <= 1e-4
        assert np.abs(a.box_scores - b.box_scores).max() <= 1e-5 and np.abs(a.cam - b.cam).max() <= 1e-5


def test_onnx_predictor_accepts_torch_items_and_gives_the_same_records(photos, torch_predictor, onnx_predictor):
    torch_items = [torch_predictor.item(p, i) for i, p in enumerate(photos[:4])]  # CHW tensors + torch glances
    for item, a, b in zip(torch_items, onnx_predictor.run(torch_items), torch_predictor.run(torch_items)):
        ra, rb = onnx_predictor.record(item, a), torch_predictor.record(item, b)
        assert [x["box"] for x in ra["boxes"]] == [x["box"] for x in rb["boxes"]]
        assert (ra["label"], ra["stage"], ra["macs"]) == (rb["label"], rb["stage"], rb["macs"])
        assert abs(ra["confidence"] - rb["confidence"]) <= 1e-4


def test_stage_probabilities_and_thresholds_match(photos, torch_predictor, onnx_predictor):
    items_t = [torch_predictor.item(p, i) for i, p in enumerate(photos)]
    items_o = [onnx_predictor.item(p, i) for i, p in enumerate(photos)]
    a, b = onnx_predictor.exit_probabilities(items_o), torch_predictor.exit_probabilities(items_t)
    assert np.array_equal(a.exit_macs, b.exit_macs) and np.abs(a.probs - b.probs).max() <= 1e-4
    onnx_predictor.thresholds = torch_predictor.thresholds = [0.0]  # everything exits at the glance
    try:
        assert [r.stage for r in onnx_predictor.run(items_o)] == [0] * len(items_o)
        shapes = [r.boxes.shape for r in torch_predictor.run(items_t)]
        assert [r.boxes.shape for r in onnx_predictor.run(items_o)] == shapes
    finally:
        onnx_predictor.thresholds = torch_predictor.thresholds = [0.9, 0.9, 0.9, 0.0]


def test_api_predict_gives_the_torch_records(photos, torch_predictor, onnx_predictor):
    sources = [str(photos[0]), np.asarray(torch_predictor.item(photos[1])["image"].permute(1, 2, 0)),
               str(photos[0].parent / "missing.jpg")]
    ours, ref = onnx_predictor.predict(sources), torch_predictor.predict(sources)
    assert ours[2]["error"] and ref[2]["error"]
    for a, b in zip(ours[:2], ref[:2]):
        assert a["label"] == b["label"] and [x["box"] for x in a["boxes"]] == [x["box"] for x in b["boxes"]]


def test_severity_from_an_export_without_a_map_is_refused_by_name(exported, photos, onnx_predictor):
    """Asking for severity from an export whose model had no symptom map names the fix; by default it is None."""
    from agripatch.errors import AgripatchError
    from agripatch.runtime.predictor import OnnxPredictor

    with pytest.raises(AgripatchError, match="measures no severity"):
        OnnxPredictor(exported, severity=True)
    assert onnx_predictor.predict([str(photos[0])])[0]["severity"] is None


def test_classifier_glance_cascade_matches_pytorch(tmp_path, photos):
    needs_onnx()
    from predict_helpers import make_model_file

    from agripatch.export.build import ExportOptions, export_model
    from agripatch.predict.predictor import Predictor
    from agripatch.runtime.predictor import OnnxPredictor

    model = make_model_file(tmp_path / "model.pt", glance="classifier", bias=2.0)
    export_model(ExportOptions(model=model, format="onnx", out=tmp_path / "export"))
    assert (tmp_path / "export" / "glance_classifier.onnx").is_file()
    torch_p, onnx_p = Predictor.from_file(model, device="cpu"), OnnxPredictor(tmp_path / "export", threads=1)
    for thresholds in ([0.9, 0.9, 0.9, 0.0], [0.0]):  # patches read, then every photo exits at the classifier glance
        torch_p.thresholds = onnx_p.thresholds = thresholds
        ours = onnx_p.run([onnx_p.item(p, i) for i, p in enumerate(photos)])
        ref = torch_p.run([torch_p.item(p, i) for i, p in enumerate(photos)])
        for a, b in zip(ours, ref):
            assert (a.label, a.stage) == (b.label, b.stage) and np.array_equal(a.boxes, b.boxes)
            assert np.abs(a.probs - b.probs).max() <= 1e-4


def test_full_image_exit_cascade_matches_pytorch(tmp_path, photos, photo_dir):
    """The full-image exit is exported as a third graph (int8 too) and the runtime reads whole photos as PyTorch
    does."""
    needs_onnx()
    from predict_helpers import make_model_file

    from agripatch.export.build import ExportOptions, export_model
    from agripatch.predict.predictor import Predictor
    from agripatch.runtime.predictor import OnnxPredictor

    model = make_model_file(tmp_path / "model.pt", full_image=True, bias=1.0)
    result = export_model(ExportOptions(model=model, format="onnx", out=tmp_path / "int8", int8=True, calibration=photo_dir))
    assert (tmp_path / "int8" / "full_image.onnx").is_file() and result.manifest["full_image"]["size"] == 40
    assert len(result.manifest["thresholds"]) == 5  # k + 2 exits survive the export
    torch_p, onnx_p = Predictor.from_file(model, device="cpu"), OnnxPredictor(tmp_path / "int8", threads=1)
    for thresholds in ([2.0, 2.0, 2.0, 2.0, 0.0], [0.9, 0.9, 0.9, 0.9, 0.0]):  # every photo reads the whole photo
        torch_p.thresholds = onnx_p.thresholds = thresholds
        ours = onnx_p.run([onnx_p.item(p, i) for i, p in enumerate(photos)])
        ref = torch_p.run([torch_p.item(p, i) for i, p in enumerate(photos)])
        assert {b.stage for b in ref} == {4} or thresholds[0] < 1
        for a, b in zip(ours, ref):
            assert (a.label, a.stage, a.macs) == (b.label, b.stage, b.macs) and np.abs(a.probs - b.probs).max() <= 1e-4
    data = json.loads((tmp_path / "int8" / "cascade.json").read_text())
    assert data["calibration"]["graphs"]["full_image"]["calibration_inputs"] == data["calibration"]["photos"]
    int8 = OnnxPredictor(tmp_path / "int8", int8=True, threads=1)
    int8.thresholds = [2.0, 2.0, 2.0, 2.0, 0.0]
    assert {p.stage for p in int8.run([int8.item(p, i) for i, p in enumerate(photos)])} == {4}


def test_int8_graphs_run_and_mostly_agree_with_fp32(exported, photos, onnx_predictor):
    from agripatch.runtime.predictor import OnnxPredictor

    int8 = OnnxPredictor(exported, int8=True, threads=1)
    assert int8.device.endswith("-int8")
    items = [onnx_predictor.item(p, i) for i, p in enumerate(photos)]
    fp32, q = onnx_predictor.run(items), int8.run(items)
    agree = np.mean([a.label == b.label for a, b in zip(fp32, q)])
    assert agree >= 0.75
    assert max(float(np.abs(a.probs - b.probs).max()) for a, b in zip(fp32, q)) <= 0.1
    data = json.loads((exported / "cascade.json").read_text())
    assert data["calibration"]["photos"] == 12
    assert data["calibration"]["graphs"]["classifier"]["calibration_inputs"] == 36  # K = 3 patches per photo


def test_leaf_prior_cascade_matches_pytorch(tmp_path, tiny_model, photos):
    needs_onnx()
    from agripatch.export.build import ExportOptions, export_model
    from agripatch.io.torchfile import load_object, save_object
    from agripatch.predict.predictor import Predictor
    from agripatch.runtime.predictor import OnnxPredictor

    obj = load_object(tiny_model)
    obj["cascade"] = {**obj["cascade"], "cell_prior": "leaf", "leaf_min_share": 0.5}
    model = save_object(obj, tmp_path / "leaf.pt")
    export_model(ExportOptions(model=model, format="onnx", out=tmp_path / "export"))
    torch_p, onnx_p = Predictor.from_file(model, device="cpu"), OnnxPredictor(tmp_path / "export", threads=1)
    plain = Predictor.from_file(tiny_model, device="cpu").run([torch_p.item(p, i) for i, p in enumerate(photos)])
    ours = onnx_p.run([onnx_p.item(p, i) for i, p in enumerate(photos)])
    ref = torch_p.run([torch_p.item(p, i) for i, p in enumerate(photos)])
    assert any(not np.array_equal(a.cells, b.cells) for a, b in zip(ref, plain))  # the prior changed some picks
    for a, b in zip(ours, ref):
        assert (a.label, a.stage) == (b.label, b.stage) and np.array_equal(a.cells, b.cells)
        assert np.array_equal(a.boxes, b.boxes) and np.abs(a.box_scores - b.box_scores).max() <= 1e-5


def test_tempered_cascade_matches_pytorch(tmp_path, tiny_model, photos):
    """A model file with fitted temperatures: both backends temper every exit the same way."""
    needs_onnx()
    from agripatch.export.build import ExportOptions, export_model
    from agripatch.io.torchfile import load_object, save_object
    from agripatch.pipeline.calibration import apply_temperature
    from agripatch.predict.predictor import Predictor
    from agripatch.runtime.predictor import OnnxPredictor

    obj = load_object(tiny_model)
    obj["cascade"] = {**obj["cascade"], "temperatures": [0.5, 2.0, 1.5, 3.0], "thresholds": [0.99, 0.6, 0.6, 0.0]}
    model = save_object(obj, tmp_path / "tempered.pt")
    export_model(ExportOptions(model=model, format="onnx", out=tmp_path / "export"))
    torch_p, onnx_p = Predictor.from_file(model, device="cpu"), OnnxPredictor(tmp_path / "export", threads=1)
    ours = onnx_p.run([onnx_p.item(p, i) for i, p in enumerate(photos)])
    ref = torch_p.run([torch_p.item(p, i) for i, p in enumerate(photos)])
    for a, b in zip(ours, ref):
        assert (a.label, a.stage) == (b.label, b.stage) and np.abs(a.probs - b.probs).max() <= 1e-4
        assert 0 <= b.plant_share <= 1 and abs(a.plant_share - b.plant_share) <= 1e-5  # the refusal rule's input
    plain = Predictor.from_file(tiny_model, device="cpu")
    items = [plain.item(p, i) for i, p in enumerate(photos)]
    raw, tempered = plain.exit_probabilities(items).probs, torch_p.exit_probabilities(items).probs
    for s, t in enumerate([0.5, 2.0, 1.5, 3.0]):
        np.testing.assert_allclose(tempered[:, s], apply_temperature(raw[:, s], t), atol=1e-5)


def test_off_leaf_classes_rank_by_the_class_map_alone_on_both_backends(tmp_path, tiny_model, photos):
    """A photo whose predicted class is off the leaf gets the cells the model without the prior picks; the others
    keep the leaf prior's picks; the ONNX runtime picks the same cells."""
    needs_onnx()
    from agripatch.export.build import ExportOptions, export_model
    from agripatch.io.torchfile import load_object, save_object
    from agripatch.pipeline.refusal import NOT_A_LEAF, Refusal
    from agripatch.predict.predictor import Predictor
    from agripatch.runtime.predictor import OnnxPredictor

    obj = load_object(tiny_model)
    leaf = save_object({**obj, "cascade": {**obj["cascade"], "cell_prior": "leaf", "leaf_min_share": 0.5}},
                       tmp_path / "leaf.pt")
    off = save_object({**obj, "cascade": {**obj["cascade"], "cell_prior": "leaf", "leaf_min_share": 0.5,
                                          "off_leaf_classes": [0]}}, tmp_path / "off.pt")
    runs = {name: Predictor.from_file(path, device="cpu") for name, path in
            (("plain", tiny_model), ("leaf", leaf), ("off", off))}
    out = {name: p.run([p.item(photo, i) for i, photo in enumerate(photos)]) for name, p in runs.items()}
    items = [runs["off"].item(photo, i) for i, photo in enumerate(photos)]
    located = runs["off"].pipeline.locate([item["image"] for item in items],
                                          torch.stack([item["glance"] for item in items]))
    glance_class = located.logits.argmax(axis=1).tolist()  # the class whose map ranks each photo's cells
    export_model(ExportOptions(model=off, format="onnx", out=tmp_path / "export"))
    onnx_p = OnnxPredictor(tmp_path / "export", threads=1)
    ours = onnx_p.run([onnx_p.item(p, i) for i, p in enumerate(photos)])
    checked = set()
    for a, plain, leafy, cls, onnx in zip(out["off"], out["plain"], out["leaf"], glance_class, ours):
        expected = plain if cls == 0 else leafy
        assert np.array_equal(a.cells, expected.cells) and np.array_equal(a.boxes, expected.boxes)
        assert np.array_equal(onnx.cells, a.cells) and (onnx.label, onnx.stage) == (a.label, a.stage)
        checked.add(cls == 0)
    assert checked == {True, False}  # photos of both kinds
    assert any(not np.array_equal(p.cells, q.cells) for p, q in zip(out["plain"], out["leaf"]))  # the prior acts
    # the refusal's bare rule exempts the same class: with every photo bare and between its thresholds, only the
    # photos answered with the off-leaf class pass, on both backends (answers alternated: the model says 1 to all)
    dims = out["off"][0].features.shape[0]
    bare = Refusal(np.zeros((2, dims)), np.eye(dims), float("inf"), 0.0, near_threshold=-1.0, min_plant_share=1.0)
    assert all(r.plant_share < 1.0 for r in out["off"] + ours)
    onnx_items = [onnx_p.item(p, i) for i, p in enumerate(photos)]
    for predictor, its, results in ((runs["off"], items, out["off"]), (onnx_p, onnx_items, ours)):
        predictor.refusal = bare
        answers = [dataclasses.replace(r, label=i % 2) for i, r in enumerate(results)]
        decisions = [predictor.record(item, r)["decision"] for item, r in zip(its, answers)]
        assert [d == NOT_A_LEAF for d in decisions] == [i % 2 == 1 for i in range(len(answers))]


def test_a_portrait_photo_is_read_as_the_landscape_one_it_turns_into_on_both_backends(tmp_path, tiny_model, photos):
    """A model that reads photos landscape: a portrait photo (a landscape one turned a quarter anticlockwise) is
    read turned back clockwise, so it gets the landscape photo's answer on both backends, with its boxes in its own
    pixels; a model that reads photos as they come reads it portrait."""
    needs_onnx()
    from PIL import Image

    from agripatch.export.build import ExportOptions, export_model
    from agripatch.io.images import read_image
    from agripatch.io.orientation import boxes_before_turn
    from agripatch.io.torchfile import load_object, save_object
    from agripatch.predict.predictor import Predictor
    from agripatch.runtime.predictor import OnnxPredictor

    wide = next(p for p in photos if p.name == "wide.png")  # 437 x 301
    tall = tmp_path / "tall.png"
    Image.fromarray(np.ascontiguousarray(np.rot90(read_image(wide), 1))).save(tall)
    obj = load_object(tiny_model)
    model = save_object({**obj, "cascade": {**obj["cascade"], "photo_orientation": "landscape"}}, tmp_path / "land.pt")
    export_model(ExportOptions(model=model, format="onnx", out=tmp_path / "export"))
    for predictor in (Predictor.from_file(model, device="cpu"), OnnxPredictor(tmp_path / "export", threads=1)):
        assert predictor.orientation == "landscape"
        landscape, portrait = predictor.predict([wide, tall])
        assert (landscape["turned"], portrait["turned"]) == (0, 90)
        assert (portrait["width"], portrait["height"]) == (landscape["height"], landscape["width"]) == (301, 437)
        assert (portrait["label"], portrait["stage"], portrait["confidence"]) == \
            (landscape["label"], landscape["stage"], landscape["confidence"])
        boxes = np.array([b["box"] for b in landscape["boxes"]])
        np.testing.assert_allclose([b["box"] for b in portrait["boxes"]], boxes_before_turn(boxes, (301, 437), 1),
                                   atol=0.011)
    as_taken = Predictor.from_file(tiny_model, device="cpu").predict([tall])[0]
    assert as_taken["turned"] == 0 and (as_taken["width"], as_taken["height"]) == (301, 437)


def test_a_turned_leaf_is_judged_on_its_nearest_turned_glance_on_both_backends(tmp_path, tiny_model, photos):
    """A refusal whose every class mean is an upright photo's glance features, with thresholds between that photo
    and its quarter-turned copy: without view turns the turned copy is not_a_leaf; with the recipe's turns (1-3)
    it is judged on the glance turned back, the upright photo's, on both backends; a photo nothing turns back
    stays refused."""
    needs_onnx()
    from PIL import Image

    from agripatch.export.build import ExportOptions, export_model
    from agripatch.io.images import read_image
    from agripatch.io.torchfile import load_object, save_object
    from agripatch.pipeline.refusal import NOT_A_LEAF, VIEW_MIN_PLANT_SHARE, Refusal
    from agripatch.predict.predictor import Predictor
    from agripatch.runtime.predictor import OnnxPredictor

    plain = Predictor.from_file(tiny_model, device="cpu")
    square = [p for p in photos if p.parent.name != "odd"]
    results = plain.run([plain.item(p, i) for i, p in enumerate(square)])
    leafy = [(p, r) for p, r in zip(square, results) if r.plant_share >= VIEW_MIN_PLANT_SHARE]
    assert len(leafy) >= 2, [r.plant_share for r in results]
    (upright_path, upright), (_, other) = leafy[0], leafy[1]
    upright_png, turned_png = tmp_path / "upright.png", tmp_path / "turned.png"
    Image.fromarray(read_image(upright_path)).save(upright_png)
    Image.fromarray(np.ascontiguousarray(np.rot90(read_image(upright_path)))).save(turned_png)
    features = plain.run([plain.item(p, i) for i, p in enumerate([upright_png, turned_png])])
    means = np.repeat(features[0].features[None].astype(np.float64), len(plain.classes), axis=0)
    rule = Refusal(means, np.eye(means.shape[1]), 0.0, 0.0, near_threshold=0.0, min_plant_share=0.0)
    turned_distance = float(rule.distances(features[1].features[None])[0])
    other_distance = float(rule.distances(other.features[None])[0])
    rule.distance_threshold = rule.near_threshold = threshold = min(turned_distance, other_distance) / 2
    assert rule.distances(features[0].features[None])[0] < threshold / 100
    obj = load_object(tiny_model)
    files = {}
    for name, turns in (("upright_only", ()), ("turns", (1, 2, 3))):
        rule.view_turns = turns
        files[name] = save_object({**obj, "refusal": rule.to_stored()}, tmp_path / f"{name}.pt")
    export_model(ExportOptions(model=files["turns"], format="onnx", out=tmp_path / "export"))
    sources = [upright_png, turned_png, leafy[1][0]]
    before = Predictor.from_file(files["upright_only"], device="cpu").predict(sources)
    assert [r["decision"] == NOT_A_LEAF for r in before] == [False, True, True]
    for predictor in (Predictor.from_file(files["turns"], device="cpu"), OnnxPredictor(tmp_path / "export", threads=1)):
        after = predictor.predict(sources)
        assert [r["decision"] == NOT_A_LEAF for r in after] == [False, False, True]
        assert after[1]["ood_distance"] < threshold / 100 and after[2]["ood_distance"] > threshold
        assert [r["label"] for r in after] == [r["label"] for r in before]  # the answers do not change
        glance = int(plain.pipeline.exit_macs()[0])  # only the photos beyond the threshold paid three more glances
        assert [r["refusal_macs"] for r in after] == [0, 3 * glance, 3 * glance]
        # the copy turned a quarter anticlockwise was judged on its glance turned three quarters more: upright
        assert [r["refusal_view"] for r in after][:2] == [None, "turn270"]
        assert [r["macs"] for r in after] == [r["macs"] for r in before]


def test_a_leaf_taken_a_stop_too_bright_is_judged_on_its_reexposed_glance_on_both_backends(tmp_path, tiny_model,
                                                                                          photos):
    """A refusal whose class means are a leaf photo's glance features, with thresholds between that photo and a copy
    taken a stop brighter (linear light x2, some of it clipped): without the exposure view the bright copy is
    not_a_leaf; with the view at the photo's own exposure level it is judged on its glance re-exposed, near the
    photo's, on both backends, paying one more glance; the answers do not change."""
    needs_onnx()
    from PIL import Image

    from agripatch.export.build import ExportOptions, export_model
    from agripatch.io.exposure import exposure, to_linear, to_srgb
    from agripatch.io.glance import glance_array
    from agripatch.io.images import read_image
    from agripatch.io.torchfile import load_object, save_object
    from agripatch.pipeline.refusal import NOT_A_LEAF, VIEW_MIN_PLANT_SHARE, Refusal
    from agripatch.predict.predictor import Predictor
    from agripatch.runtime.predictor import OnnxPredictor

    plain = Predictor.from_file(tiny_model, device="cpu")
    square = [p for p in photos if p.parent.name != "odd"]
    results = plain.run([plain.item(p, i) for i, p in enumerate(square)])
    leafy = [p for p, r in zip(square, results) if r.plant_share >= VIEW_MIN_PLANT_SHARE]
    assert leafy, [r.plant_share for r in results]
    leaf = read_image(leafy[0])
    bright = np.round(255 * to_srgb(to_linear(leaf / 255.0) * 2)).astype(np.uint8)
    as_taken_png, bright_png = tmp_path / "as_taken.png", tmp_path / "bright.png"
    Image.fromarray(leaf).save(as_taken_png)
    Image.fromarray(bright).save(bright_png)
    features = plain.run([plain.item(p, i) for i, p in enumerate([as_taken_png, bright_png])])
    assert features[1].plant_share >= VIEW_MIN_PLANT_SHARE  # still leafy, so the rule may look again
    means = np.repeat(features[0].features[None].astype(np.float64), len(plain.classes), axis=0)
    rule = Refusal(means, np.eye(means.shape[1]), 0.0, 0.0, near_threshold=0.0, min_plant_share=0.0)
    bright_distance = float(rule.distances(features[1].features[None])[0])
    rule.distance_threshold = rule.near_threshold = threshold = bright_distance / 2
    level = float(exposure(glance_array(leaf, plain.pipeline.config.glance_size)[None])[0])
    obj = load_object(tiny_model)
    files = {}
    for name, view_exposure in (("as_it_is", 0.0), ("reexposed", level)):
        rule.view_exposure = view_exposure
        files[name] = save_object({**obj, "refusal": rule.to_stored()}, tmp_path / f"{name}.pt")
    export_model(ExportOptions(model=files["reexposed"], format="onnx", out=tmp_path / "export"))
    before = Predictor.from_file(files["as_it_is"], device="cpu").predict([as_taken_png, bright_png])
    assert [r["decision"] == NOT_A_LEAF for r in before] == [False, True]
    assert [r["refusal_view"] for r in before] == [None, None]
    glance = int(plain.pipeline.exit_macs()[0])
    for predictor in (Predictor.from_file(files["reexposed"], device="cpu"),
                      OnnxPredictor(tmp_path / "export", threads=1)):
        after = predictor.predict([as_taken_png, bright_png])
        assert [r["decision"] == NOT_A_LEAF for r in after] == [False, False]
        assert after[1]["ood_distance"] < threshold / 4
        # the record reports the distance the cascade judged on, the same the rule computes from the features
        assert after[0]["ood_distance"] == pytest.approx(float(rule.distances(features[0].features[None])[0]),
                                                         rel=1e-3, abs=1e-3 * threshold)
        assert [r["label"] for r in after] == [r["label"] for r in before]
        assert [r["refusal_macs"] for r in after] == [0, glance]
        assert [r["refusal_view"] for r in after] == [None, "exposure"]
        assert [r["macs"] for r in after] == [r["macs"] for r in before]
