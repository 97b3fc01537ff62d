"""Both backends run the one cascade core: PyTorch and ONNX Runtime decide alike on the same photos (fast loop:
an fp32 export of the tiny model, no int8)."""

from __future__ import annotations

import numpy as np
import pytest
from export_helpers import needs_onnx


@pytest.fixture(scope="module")
def fp32_export(tmp_path_factory, tiny_model):
    needs_onnx()
    from agripatch.export.build import ExportOptions, export_model

    out = tmp_path_factory.mktemp("fp32") / "tiny"
    export_model(ExportOptions(model=tiny_model, format="onnx", out=out))
    return out


def test_torch_and_onnxruntime_give_the_same_predictions(fp32_export, tiny_model, photos):
    from agripatch.predict.predictor import Predictor
    from agripatch.runtime.predictor import OnnxPredictor

    torch_p, onnx_p = Predictor.from_file(tiny_model, device="cpu"), OnnxPredictor(fp32_export, threads=1)
    for thresholds in ([0.9, 0.9, 0.9, 0.0], [0.0], [0.34, 0.5, 0.9, 0.0]):  # every exit reached, or none
        torch_p.thresholds = onnx_p.thresholds = thresholds
        ours = onnx_p.run([onnx_p.item(p, i) for i, p in enumerate(photos)])
        ref = torch_p.run([torch_p.item(p, i) for i, p in enumerate(photos)])
        for a, b in zip(ours, ref):
            assert (a.label, a.stage, a.macs) == (b.label, b.stage, b.macs)
            assert np.array_equal(a.cells, b.cells) and np.array_equal(a.boxes, b.boxes)
            assert np.abs(a.probs - b.probs).max() <= 1e-4
    items_t = [torch_p.item(p, i) for i, p in enumerate(photos)]
    items_o = [onnx_p.item(p, i) for i, p in enumerate(photos)]
    a, b = onnx_p.exit_probabilities(items_o), torch_p.exit_probabilities(items_t)
    assert a.probs.shape == b.probs.shape and np.abs(a.probs - b.probs).max() <= 1e-4
    assert np.abs(a.plant_share - b.plant_share).max() <= 1e-5


def test_evaluate_backend_onnxruntime_reports_what_torch_reports(photo_dir, tmp_path):
    import shutil

    from predict_helpers import make_model_file

    from agripatch.engine.evaluate import EvaluateOptions, run_evaluation
    from agripatch.export.build import ExportOptions, export_model

    needs_onnx()
    root = tmp_path / "data"
    for folder in sorted(p for p in photo_dir.iterdir() if p.is_dir() and p.name != "odd"):
        for split in ("train", "val", "test"):
            shutil.copytree(folder, root / split / folder.name)
    classes = sorted(p.name for p in (root / "test").iterdir())
    model = make_model_file(tmp_path / "model.pt", classes=classes, bias=1.0)
    export_model(ExportOptions(model=model, format="onnx", out=tmp_path / "export"))
    runs = {}
    for backend, model in (("torch", model), ("onnxruntime", tmp_path / "export")):
        runs[backend] = run_evaluation(EvaluateOptions(model=model, data=root, out=tmp_path / backend, device="cpu",
                                                       backend=backend))
    ours, ref = runs["onnxruntime"], runs["torch"]
    assert ours["num_images"] == ref["num_images"] == 12
    for key in ("top1", "all_patches_top1", "glance_top1", "exit_histogram", "thresholds", "mean_macs"):
        assert ours[key] == ref[key], key
    assert abs(ours["calibration"]["ece"] - ref["calibration"]["ece"]) <= 1e-4
    assert (ours["precision"], ref["precision"]) == ("float32", "float32")  # the tests pin float32 on every CPU
    assert sorted(p.name for p in (tmp_path / "onnxruntime").iterdir()) == sorted(p.name for p in (tmp_path / "torch").iterdir())


def test_evaluate_backend_onnxruntime_refuses_a_model_file(tiny_model, tmp_path):
    needs_onnx()
    from agripatch.engine.evaluate import EvaluateOptions, run_evaluation
    from agripatch.errors import AgripatchError

    with pytest.raises(AgripatchError, match="export folder with cascade.json"):
        run_evaluation(EvaluateOptions(model=tiny_model, data=tmp_path, out=tmp_path / "out", backend="onnxruntime"))
    with pytest.raises(AgripatchError, match="--int8"):
        run_evaluation(EvaluateOptions(model=tiny_model, data=tmp_path, out=tmp_path / "out", int8=True))
    with pytest.raises(AgripatchError, match="--precision 'fp16'"):
        run_evaluation(EvaluateOptions(model=tiny_model, data=tmp_path, out=tmp_path / "out", precision="fp16"))


def test_onnxruntime_pool_threads_sleep_between_calls(fp32_export):
    """Idle intra-op threads must not spin: between graph calls the cascade crops and decides exits on the same
    cores, and spinning threads halved its photos/s (benchmarks/README.md, "Where the cascade's time goes")."""
    from agripatch.runtime.predictor import OnnxPredictor

    predictor = OnnxPredictor(fp32_export, threads=2)
    for graph in predictor.graphs.values():
        options = graph.session.get_session_options()
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_onnxruntime_runs_a_large_cpu_batch_in_calls_of_cpu_call_rows(fp32_export):
    """A batch larger than CPU_CALL_ROWS is split into several calls (cache-sized on a CPU) whose joined outputs
    are those of the photos run one by one: every output, every row, in order."""
    from agripatch.runtime.graphs import CPU_CALL_ROWS
    from agripatch.runtime.predictor import OnnxPredictor

    graph = OnnxPredictor(fp32_export, threads=1).graphs["glance"]
    size = graph.session.get_inputs()[0].shape[-1]
    rows = 2 * CPU_CALL_ROWS + 3
    glances = np.random.default_rng(0).random((rows, 3, size, size), dtype=np.float32)
    session, calls = graph.session, []
    graph.session = _Recording(session, calls)
    joined = graph(glances)
    assert calls == [CPU_CALL_ROWS, CPU_CALL_ROWS, 3]
    for k, out in enumerate(joined):
        assert out.shape[0] == rows and out.dtype == np.float32
        one_by_one = np.concatenate([session.run(None, {graph.input_name: glances[i:i + 1]})[k] for i in range(rows)])
        assert np.abs(out - one_by_one).max() <= 1e-5


class _Recording:
    """An InferenceSession that records the batch size of every call (the real session computes)."""

    def __init__(self, inner, calls: list[int]):
        self.inner, self.calls = inner, calls

    def run(self, names, feeds):
        self.calls.append(len(next(iter(feeds.values()))))
        return self.inner.run(names, feeds)


def test_onnxruntime_reads_deferred_photos_as_torch_reads_decoded_ones(fp32_export, tiny_model, photos):
    """Items decoded for their glance only (``predict folder`` without review images) give the runtime the same
    answers as eager items give PyTorch: the one core decodes a photo when it first reads it, in either backend."""
    from agripatch.data.photos import photo_item
    from agripatch.io.deferred import DeferredPhoto
    from agripatch.predict.predictor import Predictor
    from agripatch.runtime.predictor import OnnxPredictor

    torch_p, onnx_p = Predictor.from_file(tiny_model, device="cpu"), OnnxPredictor(fp32_export, threads=1)
    for thresholds in ([0.9, 0.9, 0.9, 0.0], [0.0]):
        torch_p.thresholds = onnx_p.thresholds = thresholds
        # Decoded whole (the tiny model would take the glance's 1/2 decode for its patches too: nothing to defer)
        size = {"min_side": 300, "glance_size": onnx_p.glance_size}
        lazy = [photo_item(p, index=i, defer_full=True, **size) for i, p in enumerate(photos)]
        assert sum(isinstance(item["image"], DeferredPhoto) for item in lazy) >= 12
        ours = onnx_p.run(lazy)
        eager = [photo_item(p, index=i, **size) for i, p in enumerate(photos)]
        ref = torch_p.run(eager)
        for a, b, item in zip(ours, ref, lazy):
            assert (a.label, a.stage, a.macs) == (b.label, b.stage, b.macs)
            assert np.array_equal(a.boxes, b.boxes) and np.abs(a.probs - b.probs).max() <= 1e-4
            if isinstance(item["image"], DeferredPhoto):
                assert item["image"].decoded == (b.stage > 0)
        assert [onnx_p.record(i, r) for i, r in zip(lazy, ours)] == [onnx_p.record(i, r) for i, r in zip(eager, ours)]
