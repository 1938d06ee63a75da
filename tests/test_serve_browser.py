"""The web page of `ovdet serve` in a real browser: headless Chromium (Debian's `chromium` and
`chromium-driver`, which .ci/run installs) driven by Selenium.

The page is opened, a photo uploaded, classes typed, the form submitted; the boxes the page
draws must match the API's detections in number, class and place. A screenshot is saved to
$OVDET_ARTIFACTS (default: artifacts/ in the checkout) for people to look at.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest

from ovdet import Detector
from ovdet.serve.app import ServedModels, create_app
from ovdet.serve.background import serve_in_thread
from ovdet.serve.limits import ServeSettings

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER),
                                reason="no Chromium here (apt-get install chromium chromium-driver; .ci/run does)")
ARTIFACTS = Path(os.environ.get("OVDET_ARTIFACTS", Path(__file__).resolve().parent.parent / "artifacts"))
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
         "--window-size=1280,900"]


@pytest.fixture(scope="module")
def browser():
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not look for drivers online
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # console messages, for get_log
    for flag in FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def page_server(tiny_owlv2):
    load = lambda: ServedModels(Detector.from_pretrained(tiny_owlv2, precision="fp32", threshold=0.6))  # noqa: E731
    with serve_in_thread(create_app(load, ServeSettings())) as url:
        yield url


def drawn_boxes(driver) -> list[dict]:
    return driver.execute_script("""
        return [...document.querySelectorAll('#overlay g.box')].map(g => {
            const r = g.querySelector('rect');
            return {cls: g.dataset.className, score: Number(g.dataset.score),
                    box: ['x', 'y', 'width', 'height'].map(k => Number(r.getAttribute(k)))};
        });""")


def wait_for(driver, script: str, timeout: float = 60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(lambda d: d.execute_script(script))


def api(url, photo, classes, threshold):
    r = httpx.post(f"{url}/v1/detect", files={"image": (photo.name, photo.read_bytes())},
                   data={"classes": classes, "threshold": str(threshold)}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def assert_drawn_match(driver, answer):
    drawn = drawn_boxes(driver)
    assert len(drawn) == len(answer["detections"]) > 0
    for d, det in zip(drawn, answer["detections"]):
        x1, y1, x2, y2 = det["box"]
        assert d["cls"] == det["class_name"]
        assert d["box"] == pytest.approx([x1, y1, x2 - x1, y2 - y1], abs=0.01)
    rows = driver.execute_script("return [...document.querySelectorAll('#detections tbody tr')]"
                                 ".map(tr => tr.cells[1].textContent)")
    assert rows == [det["class_name"] for det in answer["detections"]]


def test_page_before_an_image_is_chosen_shows_no_broken_image_and_logs_no_errors(browser, page_server):
    browser.get_log("browser")  # drop what earlier pages logged
    browser.get(page_server + "/")
    wait_for(browser, "return document.readyState === 'complete'")
    preview = browser.find_element("id", "preview")
    assert not preview.is_displayed()  # was shown as a broken-image icon with its alt text
    shown_broken = browser.execute_script(
        "return [...document.images].filter(i => i.offsetParent !== null && !(i.complete && i.naturalWidth))"
        ".map(i => i.id || i.alt)")
    assert shown_broken == []
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []  # e.g. no 404 for /favicon.ico


def test_page_uploads_a_photo_and_draws_the_apis_detections(browser, page_server, chelsea_path):
    from selenium.webdriver.common.by import By

    browser.get(page_server + "/")
    wait_for(browser, "return document.getElementById('model-info').textContent.startsWith('Model:')")
    # every control has an accessible name: a <label for> or aria-label
    unlabelled = browser.execute_script("""
        return [...document.querySelectorAll('input, button, select, textarea')].filter(el =>
            !(el.labels && el.labels.length) && !el.getAttribute('aria-label') && !el.textContent.trim()
        ).map(el => el.id || el.outerHTML);""")
    assert unlabelled == []
    assert browser.find_element(By.ID, "threshold").get_attribute("value") == "0.6"  # the model's threshold

    browser.find_element(By.ID, "image").send_keys(str(chelsea_path))
    classes = browser.find_element(By.ID, "classes")
    classes.clear()
    classes.send_keys("cat, dog")
    browser.find_element(By.ID, "submit").click()
    wait_for(browser, "return document.getElementById('status').textContent.includes('detection(s)')")
    answer = api(page_server, chelsea_path, "cat, dog", 0.6)
    assert_drawn_match(browser, answer)
    size = browser.execute_script("const i = document.getElementById('preview'); return [i.naturalWidth, i.naturalHeight]")
    assert size == [answer["width"], answer["height"]]
    assert browser.find_element(By.ID, "download").is_enabled()

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "serve_page.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000

    # moving the threshold slider asks again and redraws
    browser.execute_script("const t = document.getElementById('threshold'); t.value = '0.65';"
                           "t.dispatchEvent(new Event('input'));")
    fewer = api(page_server, chelsea_path, "cat, dog", 0.65)
    assert len(fewer["detections"]) < len(answer["detections"])
    wait_for(browser, f"return document.querySelectorAll('#overlay g.box').length === {len(fewer['detections'])}")
    assert_drawn_match(browser, fewer)


def test_page_shows_api_errors(browser, page_server, chelsea_path):
    from selenium.webdriver.common.by import By

    browser.get(page_server + "/")
    browser.find_element(By.ID, "image").send_keys(str(chelsea_path))
    browser.find_element(By.ID, "classes").send_keys("cat, cat")
    browser.find_element(By.ID, "submit").click()
    wait_for(browser, "return document.getElementById('status').classList.contains('error')")
    status = browser.find_element(By.ID, "status").text
    assert "400" in status and "bad_classes" in status
    assert drawn_boxes(browser) == []
