"""The HTML report: one command writes a folder that refers to nothing outside
itself (three.js bundled, models and pictures beside the page), with a model
per chosen row (repeated ids included); and in a real headless Chromium,
opened from disk, the page logs no console error, its table sorts and
filters, and its 3D canvas renders the first model."""

from __future__ import annotations

import base64
import json
import re
import shutil
import time
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_results import build_demo

from jobs import report as report_job


@pytest.fixture
def report(tmp_path) -> Path:
    source = str(tmp_path / "out")
    build_demo(source, str(tmp_path / "catalog"))
    folder = tmp_path / "report"
    assert report_job.main(["--output", source, "--out", str(folder), "--cell", "48"]) == 0
    return folder


def test_report_folder_is_self_contained(report):
    page = (report / "index.html").read_text()
    references = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert references and all(not re.match(r"[a-z]+:", r) for r in references), references
    assert all((report / r).exists() for r in references)
    data = json.loads(re.search(r'<script id="data"[^>]*>(.*?)</script>', page, re.S).group(1))
    assert len(data["rows"]) == 9 and data["columns"][:3] == ["object_id", "category", "status"]
    # the worst 8 and each category's 2 worst: 8 distinct rows (the repeated id's two rows each)
    scripts = {m["script"] for m in data["models"]}
    assert len(data["models"]) == 8 and len(scripts) == 8
    assert all((report / s).exists() for s in scripts)
    assert (report / "assets" / "three-LICENSE.txt").read_text().startswith("The MIT License")
    assert {p.name for p in (report / "pictures").iterdir()} >= {"summary.png", "worst.png"}


def chromium_driver():
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip("chromium and chromedriver are not installed (.ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--use-angle=swiftshader",  # WebGL in software: no GPU here
        "--enable-unsafe-swiftshader",
        "--window-size=1200,900",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=options)


@pytest.mark.slow
def test_report_in_a_headless_browser(report):
    from selenium.webdriver.common.by import By

    browser = chromium_driver()
    try:
        browser.get((report / "index.html").as_uri())
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if browser.execute_script("return window.voxrayViewer && window.voxrayViewer.shown"):
                break
            time.sleep(0.2)
        shown = browser.execute_script("return window.voxrayViewer.shown")
        assert shown is not None, "the first model never rendered"
        # the canvas shows the object: many pixels away from the clear colour
        url = browser.execute_script(
            "return document.querySelector('#view canvas').toDataURL('image/png')"
        )
        canvas = np.asarray(Image.open(BytesIO(base64.b64decode(url.split(",")[1]))).convert("RGB"))
        drawn = np.abs(canvas.astype(int) - 0xF0).sum(-1) > 30
        assert drawn.mean() > 0.01, f"{drawn.sum()} drawn pixels"
        # sort by iou (click twice: descending), then filter to the failed row
        head = browser.find_elements(By.CSS_SELECTOR, "#rows th")
        column = [h.text for h in head].index("iou")
        browser.find_elements(By.CSS_SELECTOR, "#rows th")[column].click()
        browser.find_elements(By.CSS_SELECTOR, "#rows th")[column].click()
        cells = browser.find_elements(By.CSS_SELECTOR, f"#rows tbody td:nth-child({column + 1})")
        values = [float(c.text) for c in cells if c.text]
        assert len(values) == 8 and values == sorted(values, reverse=True)
        browser.find_element(By.ID, "status").send_keys("failed")
        rows = browser.find_elements(By.CSS_SELECTOR, "#rows tbody tr")
        assert len(rows) == 1 and "empty_views" in rows[0].text
        # another model from the list
        browser.find_elements(By.CSS_SELECTOR, "#models button")[1].click()
        time.sleep(1.0)
        assert browser.execute_script("return window.voxrayViewer.shown") != shown
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
    finally:
        browser.quit()
