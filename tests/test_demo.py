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
