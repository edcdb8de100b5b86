"""The demo for real: headless Chromium (Debian's chromium + chromedriver) uploads an image,
moves the λ control, and the page must show exactly what the Python API computes at that λ.
Bad input gets a message in the page, never a stack trace."""
import base64
import io
import json
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import perturb
from PIL import Image

from tunify import tunify
from tunify.archs import create_model
from tunify.demo import DemoApp, serve

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"


def _model(space="simplex", p=2):
    torch.manual_seed(0)
    tm = tunify(create_model("nafnet", width=8, middle_blk_num=1, enc_blk_nums=[1], dec_blk_nums=[1]),
                ["smooth", "grainy", "third"][:p], lam_space=space)
    perturb(tm, seed=4, scale=0.5)
    return tm.eval()


def _png(path, size=(72, 64), seed=0):
    rng = np.random.default_rng(seed)
    arr = (rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)
    Image.fromarray(arr).save(path)
    return torch.from_numpy(arr).permute(2, 0, 1).float() / 255


def _expected(tm, x, lam):
    with torch.no_grad():
        y = tm(x[None], lam=lam)[0].clamp(0, 1)
    return (y * 255).round().byte().permute(1, 2, 0).numpy()


def _decode(data_url):
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))).convert("RGB"))


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver_bin = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver_bin, "Debian's chromium and chromium-driver are needed: run scripts/setup.sh"
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic",
                f"--user-data-dir={tmp_path_factory.mktemp('chrome')}", "--window-size=1200,900"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_bin), options=opts)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def demo():
    tm = _model()
    server, _ = serve(tm, name="test model", port=0, background=True)
    host, port = server.server_address[:2]
    yield tm, f"http://{host}:{port}/"
    server.shutdown()
    server.server_close()


def _wait(driver, script, timeout=60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda d: d.execute_script(script))


def test_upload_move_the_slider_and_match_the_python_api(browser, demo, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    tm, url = demo
    browser.get(url)
    _wait(browser, "return document.querySelectorAll('#controls input[type=range]').length === 1")
    assert "smooth" in browser.find_element(By.ID, "meaning").text
    x = _png(tmp_path / "in.png")
    browser.find_element(By.ID, "file").send_keys(str(tmp_path / "in.png"))
    _wait(browser, "return window.tunifyState.runs >= 1")
    first = _decode(browser.find_element(By.ID, "output-img").get_attribute("src"))
    assert np.abs(first.astype(int) - _expected(tm, x, [0.5, 0.5]).astype(int)).max() <= 1
    slider = browser.find_element(By.CSS_SELECTOR, "#controls input[type=range]")
    slider.send_keys(Keys.END)  # a person moving the knob all the way to "grainy"
    _wait(browser, "const s = window.tunifyState; return !s.busy && s.shownLam && s.shownLam[1] === 1")
    moved = _decode(browser.find_element(By.ID, "output-img").get_attribute("src"))
    assert np.abs(moved.astype(int) - first.astype(int)).max() > 10, "the output did not change with λ"
    assert np.abs(moved.astype(int) - _expected(tm, x, [0.0, 1.0]).astype(int)).max() <= 1
    assert "λ = (0.00, 1.00)" in browser.find_element(By.ID, "lam").text
    assert browser.find_element(By.ID, "download").get_attribute("href").startswith("data:image/png")
    ms = browser.execute_script("return window.tunifyState.lastMs")
    assert 0 < ms < 5000
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "demo_browser.png"))
    print(f"slider move round trip in the browser: {ms:.0f} ms for a 72x64 image")


def test_bad_input_shows_a_message_not_a_traceback(browser, demo, tmp_path):
    from selenium.webdriver.common.by import By

    _, url = demo
    browser.get(url)
    _wait(browser, "return document.querySelectorAll('#controls input[type=range]').length === 1")
    (tmp_path / "notes.txt").write_text("not an image at all")
    browser.find_element(By.ID, "file").send_keys(str(tmp_path / "notes.txt"))
    _wait(browser, "return document.getElementById('error').textContent.length > 0")
    error = browser.find_element(By.ID, "error").text
    assert "not an image the demo can read" in error and "Traceback" not in browser.page_source
    Image.new("RGB", (2100, 2100), (90, 120, 200)).save(tmp_path / "huge.png")
    browser.find_element(By.ID, "file").send_keys(str(tmp_path / "huge.png"))
    _wait(browser, "return document.getElementById('error').textContent.includes('resize it')")
    _png(tmp_path / "ok.png")
    browser.find_element(By.ID, "file").send_keys(str(tmp_path / "ok.png"))
    _wait(browser, "return window.tunifyState.runs >= 1 && document.getElementById('error').textContent === ''")
    browser.execute_script("setLam([0.9, 0.9])")
    _wait(browser, "return document.getElementById('error').textContent.includes('sum to 1')")
    assert "Traceback" not in browser.page_source


def test_controls_follow_the_lam_space(browser):
    from selenium.webdriver.common.by import By

    for space, p, selector, count in (("box", 2, "#controls input[type=range]", 2), ("simplex", 3, "#triangle", 1)):
        server, _ = serve(_model(space, p), port=0, background=True)
        try:
            browser.get("http://%s:%d/" % server.server_address[:2])
            _wait(browser, f"return document.querySelectorAll('{selector}').length === {count}")
            assert len(browser.find_elements(By.CSS_SELECTOR, selector)) == count
        finally:
            server.shutdown()
            server.server_close()


def test_api_errors_are_json_messages(demo, tmp_path):
    _, url = demo

    def post(path, body, kind="application/json"):
        req = urllib.request.Request(url + path.lstrip("/"), data=body, headers={"Content-Type": kind})
        try:
            with urllib.request.urlopen(req) as res:  # loopback: the demo server this test started
                return res.status, json.loads(res.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    assert post("/api/run", b"{nope")[0] == 400
    for body in (b"[1, 2]", b"3", b'"text"', b"null"):  # JSON, but not an object
        status, reply = post("/api/run", body)
        assert status == 400 and "JSON object" in reply["error"], body
    status, body = post("/api/run", json.dumps({"id": "gone", "lam": [0.5, 0.5]}).encode())
    assert status == 400 and "upload the image again" in body["error"]
    _png(tmp_path / "a.png")
    status, up = post("/api/upload", (tmp_path / "a.png").read_bytes(), "application/octet-stream")
    assert status == 200 and up["width"] == 72
    status, body = post("/api/run", json.dumps({"id": up["id"], "lam": [0.7, 0.7]}).encode())
    assert status == 400 and "sum to 1" in body["error"]
    status, body = post("/api/run", json.dumps({"id": up["id"], "lam": [1.0, -0.2]}).encode())
    assert status == 400 and "negative" in body["error"]


def test_demo_app_latency_at_512(tmp_path):
    app = DemoApp(_model())
    buf = io.BytesIO()
    Image.new("RGB", (512, 512), (10, 200, 30)).save(buf, format="PNG")
    key = app.upload(buf.getvalue())["id"]
    app.run(key, [0.5, 0.5])
    times = [app.run(key, [t, 1 - t])["ms"] for t in (0.0, 0.3, 0.7, 1.0)]
    assert max(times) < 5000


def _sr_model():
    torch.manual_seed(0)
    tm = tunify(create_model("srvgg-compact", num_feat=8, num_conv=2, upscale=4), ["look", "fidelity"])
    perturb(tm, seed=5, scale=0.5)
    return tm.eval()


def test_super_resolution_upload_is_cropped_to_the_limit_and_scaled(tmp_path):
    tm = _sr_model()
    app = DemoApp(tm, max_input_pixels=40 * 30)
    assert app.info()["scale"] == 4 and app.info()["max_input_pixels"] == 1200
    x = _png(tmp_path / "big.png", size=(100, 80))
    up = app.upload((tmp_path / "big.png").read_bytes())
    w, h = up["width"], up["height"]
    assert w * h <= 1200 and w > h and "centre" in up["note"] and "100×80" in up["note"]
    crop = x[:, (80 - h) // 2 : (80 - h) // 2 + h, (100 - w) // 2 : (100 - w) // 2 + w]
    out = _decode(app.run(up["id"], [0.25, 0.75])["image"])
    assert out.shape == (4 * h, 4 * w, 3)
    assert np.abs(out.astype(int) - _expected(tm, crop, [0.25, 0.75]).astype(int)).max() <= 1
    _png(tmp_path / "s.png", size=(20, 16))
    small = app.upload((tmp_path / "s.png").read_bytes())
    assert small["note"] is None and (small["width"], small["height"]) == (20, 16)
    # the default limits: a ×4 model never makes more than MAX_OUTPUT_PIXELS per λ move
    from tunify.demo.server import MAX_OUTPUT_PIXELS
    assert DemoApp(tm).max_input_pixels * 16 <= MAX_OUTPUT_PIXELS


def test_port_in_use_moves_to_the_next_free_port():
    first, _ = serve(_model(), port=0, background=True)
    try:
        taken = first.server_address[1]
        second, _ = serve(_model(), port=taken, background=True)
        try:
            assert second.server_address[1] != taken and taken < second.server_address[1] <= taken + 20
        finally:
            second.shutdown()
            second.server_close()
    finally:
        first.shutdown()
        first.server_close()


def test_super_resolution_page_shows_both_at_the_output_size(browser, tmp_path):
    from selenium.webdriver.common.by import By

    tm = _sr_model()
    server, _ = serve(tm, name="sr model", port=0, background=True)
    try:
        browser.get("http://%s:%d/" % server.server_address[:2])
        _wait(browser, "return document.querySelectorAll('#controls input[type=range]').length === 1")
        # before an upload: no empty image frames, no download link, a hint of what to try
        assert not browser.find_element(By.ID, "images").is_displayed()
        assert "4× larger" in browser.find_element(By.ID, "status").text
        x = _png(tmp_path / "lr.png", size=(40, 32))
        browser.find_element(By.ID, "file").send_keys(str(tmp_path / "lr.png"))
        _wait(browser, "return window.tunifyState.runs >= 1")
        out = browser.find_element(By.ID, "output-img")
        assert browser.execute_script("return arguments[0].naturalWidth", out) == 160
        shown = browser.find_element(By.ID, "input-img")
        assert "lowres" in shown.get_attribute("class") and "shown ×4" in browser.find_element(By.ID, "input-caption").text
        assert abs(shown.size["width"] - out.size["width"]) <= 2  # side by side at one size
        got = _decode(out.get_attribute("src"))
        assert np.abs(got.astype(int) - _expected(tm, x, [0.5, 0.5]).astype(int)).max() <= 1
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "demo_sr_browser.png"))
    finally:
        server.shutdown()
        server.server_close()
