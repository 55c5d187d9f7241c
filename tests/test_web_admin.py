"""The web admin page (issue 15, item 2) in a real browser: Debian's chromium, headless, driven by
selenium through Debian's chromium-driver (Makefile DEBS), against a real main host daemon with two
firmware phones straight at it.

The screenshot of the live status with the call in it is kept as an artifact:
$UPBX_ARTIFACTS/web-admin-status.png, else build/test-artifacts/ (docs/tests.md).
"""
import os
import shutil
import socket

import pytest

from upbx.host.directory import Directory
from upbx.tools.lab import ROOT, LoopbackExchange, write_noise_wav

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
ARTIFACTS = os.environ.get("UPBX_ARTIFACTS") or os.path.join(ROOT, "build", "test-artifacts")

pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason="needs Debian's chromium and chromium-driver (Makefile DEBS)")


def free_tcp_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1200,900", "--user-data-dir=%s" % (tmp_path / "profile")):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def rows(driver, selector):
    """[[id, cell text, ...]] of the table rows matching selector, read in one turn of the page's
    script (the live status is replaced every second: elements found earlier go stale)."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0])).map(function (r) {"
        " return [r.id].concat(Array.from(r.cells).map(function (c) { return c.textContent.trim(); })); });",
        selector)


def wait_until(driver, condition, what, timeout=30):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait
    return WebDriverWait(driver, timeout, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,)
                         ).until(lambda d: condition(d), "waited for " + what)


def test_sign_in_add_an_extension_and_watch_a_call_in_the_live_status(browser, tmp_path):
    from selenium.webdriver.common.by import By
    port = free_tcp_port()
    with LoopbackExchange(main_settings={"api_listen": "127.0.0.1:%d" % port}) as lab:
        lab.provision(sites=("c",), remote_sites=(), phones={"c": ["301", "302"]})
        token = lab.admin("token", "add", "ops", "--role", "admin")
        lab.start()
        base = "http://127.0.0.1:%d" % port
        lab.wait_for(lambda: lab.status("main"), "main host up")

        # a wrong token is refused, the right one signs in
        browser.get(base + "/")
        wait_until(browser, lambda d: d.find_elements(By.ID, "token"), "the sign-in form")
        browser.find_element(By.ID, "token").send_keys("upbx_wrong")
        browser.find_element(By.ID, "sign-in").click()
        wait_until(browser, lambda d: "not valid" in d.find_element(By.TAG_NAME, "main").text, "the refusal")
        browser.find_element(By.ID, "token").send_keys(token)
        browser.find_element(By.ID, "sign-in").click()
        wait_until(browser, lambda d: "ops (admin)" in d.find_element(By.TAG_NAME, "header").text, "the status page")

        # add an extension; its secret is shown once and it is listed (and in the directory)
        browser.get(base + "/extensions")
        form = browser.find_element(By.ID, "add-extension")
        form.find_element(By.NAME, "number").send_keys("350")
        form.find_element(By.NAME, "site").send_keys("c")
        form.find_element(By.NAME, "name").send_keys("Lobby")
        form.find_element(By.TAG_NAME, "button").click()
        wait_until(browser, lambda d: d.find_elements(By.ID, "ext-350"), "extension 350 listed")
        secret = browser.find_element(By.CSS_SELECTOR, "#secret code").text
        assert [c.text for c in browser.find_elements(By.CSS_SELECTOR, "#ext-350 td")][:3] == ["350", "c", "Lobby"]
        with Directory(lab.path("main.sqlite")) as d:
            assert d.extension("350").secret.hex() == secret and d.extension("350").name == "Lobby"
        # bad input: the page says which field, nothing is added
        form = browser.find_element(By.ID, "add-extension")
        form.find_element(By.NAME, "number").send_keys("351")
        form.find_element(By.NAME, "site").send_keys("nowhere")
        form.find_element(By.TAG_NAME, "button").click()
        wait_until(browser, lambda d: d.find_elements(By.ID, "error"), "the error")
        assert "unknown site 'nowhere' (site)" == browser.find_element(By.ID, "error").text
        assert not browser.find_elements(By.ID, "ext-351")

        # the live status: a call appears while it runs, without the page being loaded again
        browser.get(base + "/")
        wait_until(browser, lambda d: d.find_elements(By.ID, "site-c"), "site c in the status")
        browser.execute_script("window.upbxSameLoad = true;")
        wav = lab.path("301.wav")
        write_noise_wav(wav, 10, 301)
        callee = lab.phone("302", "--answer", "--exit-after-call", "--exit-after", "40", tag="web-callee")
        caller = lab.phone("301", "--send", wav, "--call", "302", "--call-after", "1", "--duration", "6",
                           "--exit-after-call", "--exit-after", "40", tag="web-caller")
        try:
            cells = wait_until(browser, lambda d: [r for r in rows(d, "tr[id^=call-]") if "answered" in r],
                               "the call, answered", 40)[0]
            assert cells[2:6] == ["301", "302", "answered", "relay"], cells
            assert browser.execute_script("return window.upbxSameLoad === true;")
            assert rows(browser, "#site-c")[0][2] == "up"
            assert {r[0] for r in rows(browser, "tr[id^=phone-]")} == {"phone-301", "phone-302"}
            # a second of the call's frames: its bandwidth shows in the screenshot too
            wait_until(browser, lambda d: any(int(r[6]) >= 60 for r in rows(d, "tr[id^=call-]")), "a second of frames")
            os.makedirs(ARTIFACTS, exist_ok=True)
            shot = os.path.join(ARTIFACTS, "web-admin-status.png")
            assert browser.save_screenshot(shot)
            with open(shot, "rb") as f:
                assert f.read(8) == b"\x89PNG\r\n\x1a\n"
            print("screenshot:", shot)
        finally:
            caller.wait(45)
            callee.wait(45)
        wait_until(browser, lambda d: not rows(d, "tr[id^=call-]"), "the call gone", 20)

        # its record on the call records page, and the export link keeps the filter
        browser.get(base + "/calls?extension=302")
        text = browser.find_element(By.TAG_NAME, "table").text
        assert "301 302 relay" in text and "normal clearing" in text
        assert browser.find_element(By.ID, "csv").get_attribute("href").endswith("/calls.csv?extension=302")
