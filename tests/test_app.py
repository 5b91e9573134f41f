"""The web demo (``app.py``): its handler against ``inference.py``, and the real page in headless Chromium.

The browser tests start ``app.py`` as a user would and drive the page with Playwright in Debian's
Chromium (``/usr/bin/chromium``, installed by ``make install``; no browser download): a generated
clip is uploaded, and the classes and scores shown, the plot and the CSV download are checked
against ``inference.py`` on the same file and model; then a file that is not audio shows its
error; and a recording from Chromium's fake microphone (a beep) is tagged as the code of
``inference.py`` tags the same recording, fetched back from the page's player. When
the browser cannot run, the test fails with the reason. ``PASST_APP_SCREENSHOT=path.png`` also
keeps a screenshot of the result page (the README's picture was made so).
"""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from tiny_checkpoints import write_tiny_checkpoint

from helpers.inference.model import load_checkpoint
from helpers.inference.tagging import tag_files
from helpers.inference.web_demo import Demo

ROOT = Path(__file__).resolve().parents[1]
SR = 32000
CLASSES = ["speech", "dog bark", "rain", "siren", "guitar", "engine"]
CHROMIUM = "/usr/bin/chromium"
# what headless Chromium needs here: no sandbox as root, and no background traffic to a closed network
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  # a microphone that plays a beep, allowed without asking
                  "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    """A tiny 2 s-window checkpoint with class names, a 5.3 s clip (6 windows at 1 s hops), a bad file."""
    from audioset.synthetic import write_audio_file

    root = tmp_path_factory.mktemp("app")
    t = np.arange(round(5.3 * 22050)) / 22050
    clip = (0.3 * np.sin(2 * np.pi * 440 * t) * np.linspace(0.1, 1, t.size)).astype(np.float32)
    bad = root / "notes.wav"
    bad.write_text("this is not audio\n" * 40)
    return {"root": root, "ckpt": write_tiny_checkpoint(root / "tagger.ckpt", CLASSES, input_tdim=200, seed=5),
            "clip": write_audio_file(root / "street.mp3", clip, 22050), "bad": bad}


def run_inference(files: dict, *extra: str) -> dict:
    """``inference.py`` on the clip with the same model, hop and precision as the page; its JSON document."""
    out = files["root"] / "cli"
    proc = subprocess.run([sys.executable, str(ROOT / "inference.py"), str(files["clip"]), "--model", str(files["ckpt"]),
                           "--hop", "1", "--top-k", "3", "--device", "cpu", "--precision", "fp32", "--workers", "0",
                           "--json", f"{out}.json", "--csv", f"{out}.csv", *extra],
                          capture_output=True, text=True, cwd=files["root"], timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    document = json.loads(Path(f"{out}.json").read_text())
    document["csv_rows"] = list(csv.reader(Path(f"{out}.csv").open()))
    return document


def data_rows(rows: list[list[str]]) -> list[list[str]]:
    """CSV rows without the file column (the CLI names the path it was given, the page the file name)."""
    return [row[1:] for row in rows]


# ------------------------------------------------------------------------------ the handler
def test_handler_gives_what_inference_gives(files, tmp_path):
    expected = run_inference(files, "--embeddings", str(tmp_path / "emb.npy"))
    demo = Demo(load_checkpoint(files["ckpt"]).place("cpu", "fp32"), CLASSES, work_dir=tmp_path / "work")
    result = demo.analyse(str(files["clip"]), hop_s=1, top_k=3, embedding=True)
    top = expected["files"][0]["top"]
    assert list(result.top) == [t["class"] for t in top]
    np.testing.assert_allclose(list(result.top.values()), [t["mean"] for t in top], atol=1e-6)
    assert "street.mp3**: 5.30 s, 5 windows of 2 s every 1 s" in result.status
    names = sorted(f.name for f in result.files)
    assert names == ["street_embedding.npy", "street_over_time.png", "street_scores.csv", "street_scores.json"]
    page_csv = list(csv.reader((tmp_path / "work").glob("*/street_scores.csv").__next__().open()))
    assert data_rows(page_csv) == data_rows(expected["csv_rows"])
    page_json = json.loads(next((tmp_path / "work").glob("*/street_scores.json")).read_text())
    assert page_json["files"][0]["windows"] == expected["files"][0]["windows"]
    np.testing.assert_allclose(np.load(next((tmp_path / "work").glob("*/street_embedding.npy"))),
                               np.load(tmp_path / "emb.npy"), atol=1e-6)
    assert result.plot is not None and result.plot.stat().st_size > 1000
    one_window = demo.analyse(str(files["clip"]), window_s=2, hop_s=2, top_k=2)
    assert len(one_window.top) == 2 and "every 2 s" in one_window.status


def test_released_models_and_ensembles_open_in_the_page(files, tmp_path, monkeypatch):
    """Names resolve as in inference.py: a "released" tiny architecture (its release file in an
    offline torch hub cache) and an ensemble of it, named by AudioSet's labels (the cached list)."""
    import torch

    from audioset.synthetic import write_labels_csv
    from helpers.inference.cli import class_names_for
    from helpers.inference.model import load_model
    from helpers.inference.web_demo import build_page
    from models.build import get_model
    from models.hub_cache import cache_path
    from models.registry import ARCHS, ENSEMBLES, ArchConfig

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    arch = ArchConfig("tiny_release", "https://example.invalid/tiny.pt", "test only", embed_dim=32, depth=1,
                      num_heads=2, input_tdim=200)
    monkeypatch.setitem(ARCHS, arch.name, arch)
    monkeypatch.setitem(ENSEMBLES, "tiny_ensemble", (".0", ["tiny_release", "tiny_release"]))
    cache_path(arch.url).parent.mkdir(parents=True)
    torch.save(get_model(pretrained=False, depth=1, embed_dim=32, num_heads=2, input_tdim=200).state_dict(),
               cache_path(arch.url))
    (tmp_path / "torch" / "hub" / "audioset").mkdir()
    write_labels_csv(tmp_path / "torch" / "hub" / "audioset" / "class_labels_indices.csv", 527)
    for name in ("tiny_release", "tiny_ensemble"):
        model = load_model(name).place("cpu", "fp32")
        demo = Demo(model, class_names_for(model, None), work_dir=tmp_path / name)
        result = demo.analyse(str(files["clip"]), top_k=4)
        assert len(result.top) == 4 and all(name.startswith("Synthetic label") for name in result.top), name
        expected = next(tag_files(model, [files["clip"]]))
        assert list(result.top) == [demo.class_names[c] for c, _, _ in expected.top(4)]
        assert build_page(demo, None, None, 4, "sigmoid") is not None  # the page builds for it (not served)


def test_handler_explains_bad_input(files, tmp_path):
    demo = Demo(load_checkpoint(files["ckpt"]).place("cpu", "fp32"), CLASSES, work_dir=tmp_path)
    bad = demo.analyse(str(files["bad"]))
    assert bad.status.startswith("**Could not read notes.wav:** AudioDecodeError")
    assert str(files["root"]) not in bad.status  # the server's folders stay out of the page
    assert not bad.top and not bad.files and bad.plot is None
    too_long = demo.analyse(str(files["clip"]), window_s=30)
    assert "**Settings:** the window (--window) must be between" in too_long.status and not too_long.files
    assert demo.analyse(None).status == "Upload a file or record a clip first."


def test_page_says_what_went_wrong_instead_of_dying(files, tmp_path, monkeypatch, capsys):
    demo = Demo(load_checkpoint(files["ckpt"]).place("cpu", "fp32"), CLASSES, work_dir=tmp_path)

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("not enough memory")

    monkeypatch.setattr(demo, "analyse", out_of_memory)
    status, top, plot, downloads = demo.page_outputs(str(files["clip"]), None, None, 3, "sigmoid", False)
    assert status == "**Failed:** RuntimeError: not enough memory" and top is None and downloads is None
    assert "Traceback" in capsys.readouterr().err  # and the server's log has the details


@pytest.mark.slow
def test_demo_and_export_commands_do_not_import_sacred():
    code = "import sys, app, export, inference; print(sorted(m for m in sys.modules if m.split('.')[0] == 'sacred'))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"


# --------------------------------------------------------------------------------- the page
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(files):
    """``app.py`` on a free local port, as the README starts it; stopped after the module."""
    port = free_port()
    log = (files["root"] / "app.log").open("w")
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--model", str(files["ckpt"]), "--hop", "1",
                             "--top-k", "3", "--device", "cpu", "--precision", "fp32", "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, cwd=files["root"])
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 180
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"app.py exited with {proc.returncode}:\n{(files['root'] / 'app.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"app.py did not serve {url} within 180 s:\n{(files['root'] / 'app.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium driven by Playwright; a failure, never a skip, when it cannot start."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} not found: the browser test needs Debian's chromium package (`make install` "
                    f"installs it: apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as err:
        pytest.fail(f"playwright is not installed ({err}): run `make install`")
    with sync_playwright() as playwright:
        try:
            chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        except Exception as err:  # noqa: BLE001 - whatever stops the browser is the reason to report
            pytest.fail(f"headless Chromium ({CHROMIUM}) could not start: {err}")
        yield chromium
        chromium.close()


def new_page(browser, url: str):
    context = browser.new_context(viewport={"width": 1200, "height": 820}, permissions=["microphone"])
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(url)
    return page


@pytest.mark.slow
def test_page_tags_an_upload_like_inference_and_shows_errors(server, browser, files):
    expected = run_inference(files)
    page = new_page(browser, server)
    page.locator("#audio input[type=file]").set_input_files(str(files["clip"]))
    page.locator("#tag").click()
    page.locator("#status", has_text="tagged in").wait_for()

    # the bars: one meter per class, its exact score in `value`, in the order shown
    meters = page.locator("#top meter")
    shown = [(m.get_attribute("aria-label"), float(m.get_attribute("value"))) for m in meters.all()]
    top = expected["files"][0]["top"]
    assert [name for name, _ in shown] == [t["class"] for t in top]
    np.testing.assert_allclose([s for _, s in shown], [t["mean"] for t in top], atol=1e-6)
    assert page.locator("#top").get_by_text(f"{round(100 * top[0]['mean'])}%").first.is_visible()
    assert "5 windows of 2 s every 1 s" in page.locator("#status").inner_text()
    assert page.locator("#over-time img").is_visible()  # the classes over time, for more than one window

    # the CSV download, fetched through the page's own link, has inference.py's numbers
    link = page.locator("#downloads a[download='street_scores.csv']")
    response = page.request.get(link.get_attribute("href"))
    assert response.ok
    assert data_rows(list(csv.reader(io.StringIO(response.text())))) == data_rows(expected["csv_rows"])
    if os.environ.get("PASST_APP_SCREENSHOT"):
        page.screenshot(path=os.environ["PASST_APP_SCREENSHOT"], full_page=True)

    # a file that is not audio: its reason in the page, the previous result gone
    page.locator("#audio").get_by_label("Clear").click()
    page.locator("#audio input[type=file]").set_input_files(str(files["bad"]))
    page.locator("#tag").click()
    status = page.locator("#status", has_text="Could not read notes.wav")
    status.wait_for()
    assert "AudioDecodeError" in status.inner_text()
    assert page.locator("#top meter").count() == 0 and not page.locator("#over-time img").is_visible()
    page.context.close()


@pytest.mark.slow
def test_page_tags_a_recording(server, browser, files, tmp_path):
    page = new_page(browser, server)
    page.locator("#audio").get_by_label("Record audio").click()
    page.locator("#audio button", has_text="Record").first.click()
    page.wait_for_timeout(2500)
    page.locator("#audio button", has_text="Stop").first.click()
    page.locator("#audio a[download]").first.wait_for()  # the recording is in the player
    page.locator("#tag").click()
    page.locator("#status", has_text="tagged in").wait_for()
    shown = [(m.get_attribute("aria-label"), float(m.get_attribute("value"))) for m in page.locator("#top meter").all()]
    # the same recording, fetched from the player, tagged here by the code inference.py runs
    recording = tmp_path / "recording.wav"
    recording.write_bytes(page.request.get(page.locator("#audio a[download]").first.get_attribute("href")).body())
    result = next(tag_files(load_checkpoint(files["ckpt"]).place("cpu", "fp32"), [recording], hop=SR))
    assert result.ok and 1.5 < result.duration < 10, result.error
    assert [name for name, _ in shown] == [CLASSES[c] for c, _, _ in result.top(3)]
    np.testing.assert_allclose([s for _, s in shown], [mean for _, mean, _ in result.top(3)], atol=1e-6)
    page.context.close()
