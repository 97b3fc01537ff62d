"""The correction loop end to end: predict a folder -> review page in Chromium -> corrections.csv ->
`datasets add-reviewed` -> a new training run learns from the reviewed photos."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys

import pytest

from agripatch.data.folder import scan_image_folder
from agripatch.data.splits import load_splits, make_splits, write_splits_csv
from agripatch.data.synth import generate_synthetic

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]
FAST = ["cascade.glance_size=96", "cascade.patch_size=48", "data.baseline_size=96", "data.workers=0",
        "stages.baseline.enabled=false", "stages.anchornet.batch_size=8", "stages.patches.batch_size=8"]


def _agripatch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agripatch", *args], capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_predict_review_correct_add_and_retrain(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package drives Chromium here")
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.skip("no chromium on PATH (apt-get install chromium)")
    from agripatch.engine.train import run_training

    data = tmp_path / "data"
    generate_synthetic(data, classes=3, per_class=8, size=128, seed=0)
    write_splits_csv(make_splits(scan_image_folder(data), val=0.25, test=0.0, seed=0), data / "splits.csv")
    run_training("smoke", data, tmp_path / "run", epochs=1, device="cpu", overrides=FAST, quiet=True)
    inbox = tmp_path / "inbox"
    generate_synthetic(inbox, classes=3, per_class=2, size=128, seed=5)
    (inbox / "boxes.csv").unlink()
    done = _agripatch("predict", "folder", str(inbox), "--model", str(tmp_path / "run" / "model.pt"),
                      "--out", str(tmp_path / "review"), "--recursive", "--workers", "0", "--device", "cpu", "--quiet")
    assert done.returncode == 0, done.stderr[-2000:]

    with sync_api.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_context(accept_downloads=True).new_page()
            page.goto((tmp_path / "review" / "index.html").resolve().as_uri())
            page.wait_for_selector('body[data-ready="1"]')
            cards = page.locator("main article.card")
            cards.nth(0).locator("button[data-act=confirm]").click()
            predicted = int(cards.nth(1).get_attribute("data-class"))
            other = ["healthy", "leaf_spot", "rust"][(predicted + 1) % 3]  # a class the model did not say
            cards.nth(1).locator("select").select_option(label=other)
            cards.nth(2).locator("button[data-act=not_a_leaf]").click()
            with page.expect_download() as info:
                page.locator("#download").click()
            info.value.save_as(tmp_path / "corrections.csv")
        finally:
            browser.close()

    with open(tmp_path / "corrections.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["action"] for row in rows] == ["confirm", "relabel", "not_a_leaf"]
    before = len(load_splits(data))
    added = _agripatch("datasets", "add-reviewed", str(tmp_path / "corrections.csv"), "--photos", str(inbox),
                       "--to", str(data))
    assert added.returncode == 0, added.stderr[-2000:]
    after = load_splits(data)
    assert len(after) == before + 2  # the confirmed and the relabelled photo; not the "not a leaf" one
    relabelled = rows[1]["path"].split("/")[-1]
    assert any(row.label == other and row.split == "train" and row.path.endswith(relabelled) for row in after)
    assert (inbox / rows[1]["path"]).is_file()  # copied, not moved
    # A new run trains on the grown dataset.
    model = run_training("smoke", data, tmp_path / "run2", epochs=1, device="cpu", overrides=FAST, quiet=True)
    assert model.is_file()
    assert sum(1 for line in (tmp_path / "run2" / "splits.csv").read_text().splitlines()[1:]) == before + 2
