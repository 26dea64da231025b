"""The page `amanuensis serve` serves at /, driven in headless Chromium through selenium.

Usage: web_page.py BASE_URL AUDIO MIC_WAV SCREENSHOT.png OUT.json

Picks AUDIO in the page's file field and transcribes it, reading the segments off the page as
they appear and the four downloads when it is done; then records from the microphone (Chromium's
fake device, playing MIC_WAV) and transcribes the recording. Writes what it read to OUT.json
and a screenshot of the page; tests/serve_clients.rs checks them.
"""

import json
import os
import sys
import tempfile
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

base_url, audio, mic_wav, screenshot, out = sys.argv[1:6]
CHROMIUM = os.environ.get("AMANUENSIS_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("AMANUENSIS_CHROMEDRIVER", "/usr/bin/chromedriver")

options = webdriver.ChromeOptions()
options.binary_location = CHROMIUM
for flag in [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1200,1000",
    "--user-data-dir=" + tempfile.mkdtemp(prefix="amanuensis-chromium-"),
    # The microphone: allowed without asking, and fed from a WAV file.
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--use-file-for-fake-audio-capture=" + mic_wav + "%noloop",
    "--autoplay-policy=no-user-gesture-required",
]:
    options.add_argument(flag)
driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
wait = WebDriverWait(driver, 180)
found = {}


def finished(_):
    text = driver.find_element(By.ID, "status").text
    return text if text.startswith(("Done", "Failed")) else False


def downloads():
    """The four downloads' contents, read from their blob URLs in the page."""
    return driver.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        const formats = ["txt", "srt", "vtt", "json"];
        Promise.all(formats.map((f) => fetch(document.getElementById("dl-" + f).href)
            .then((r) => r.text())))
          .then((texts) => done(Object.fromEntries(formats.map((f, i) => [f, texts[i]]))));
        """
    )


def segments():
    rows = driver.find_elements(By.CSS_SELECTOR, "#segments .segment")
    return [
        {
            "time": r.find_element(By.CLASS_NAME, "time").text,
            "text": r.find_elements(By.TAG_NAME, "span")[1].text,
        }
        for r in rows
    ]


try:
    driver.get(base_url + "/")
    found["title"] = driver.title
    # The models are listed once the page has asked the server.
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#model option"))
    found["models"] = [
        o.get_attribute("value") for o in driver.find_elements(By.CSS_SELECTOR, "#model option")
    ]
    found["languages"] = len(driver.find_elements(By.CSS_SELECTOR, "#language option"))
    # No key asked for by a server without one.
    found["key_field_shown"] = driver.find_element(By.ID, "key-label").is_displayed()

    driver.find_element(By.ID, "file").send_keys(os.path.abspath(audio))
    driver.find_element(By.ID, "go").click()
    # Segments show as they are decoded: the first is on the page before the end.
    status = wait.until(finished)
    found["file"] = {
        "status": status,
        "segments": segments(),
        "downloads": downloads() if status.startswith("Done") else None,
        "download_names": [
            driver.find_element(By.ID, "dl-" + f).get_attribute("download")
            for f in ["txt", "srt", "vtt", "json"]
        ],
    }
    driver.save_screenshot(screenshot)

    # The microphone: record while the fake device plays the file, then transcribe.
    driver.find_element(By.ID, "record").click()
    wait.until(lambda d: d.find_element(By.ID, "record").text == "Stop")
    time.sleep(float(os.environ.get("AMANUENSIS_RECORD_SECONDS", "12")))
    driver.find_element(By.ID, "record").click()
    wait.until(lambda d: "recording.wav" in d.find_element(By.ID, "chosen").text)
    driver.find_element(By.ID, "go").click()
    status = wait.until(finished)
    found["recording"] = {
        "chosen": driver.find_element(By.ID, "chosen").text,
        "status": status,
        "segments": segments(),
    }
finally:
    found["console"] = [
        entry.get("message") for entry in (driver.get_log("browser") or [])
    ] if hasattr(driver, "get_log") else []
    driver.quit()

with open(out, "w") as f:
    json.dump(found, f, indent=1)
