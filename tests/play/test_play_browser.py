"""`genie-robot play` end to end: the CLI's server process, driven by a real headless Chromium (Debian's, through
Playwright), on the shipped reference exported to ONNX and held-out sim frames."""

from __future__ import annotations

import http.client
import io
import json
import os
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

CHROMIUM = Path(os.environ.get("GENIE_ROBOT_CHROMIUM", "/usr/bin/chromium"))


@pytest.fixture(scope="module")
def server(reference_export, heldout_sim, tmp_path_factory, launch_play):
    """`genie-robot play` on the reference export, with a second model that does not load (a bad manifest)."""
    broken = tmp_path_factory.mktemp("play") / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{not json")
    return launch_play([f"ckpt={reference_export}", f"play.start_data={heldout_sim}", f"play.models=[{broken}]",
                        f"play.cache_dir={broken.parent / 'cache'}"])


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium (apt-get install chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield b
        b.close()


def picture(path: Path) -> Path:
    """A 300x200 photo-like upload (not the model's size or aspect ratio)."""
    img = Image.new("RGB", (300, 200), (90, 120, 80))
    d = ImageDraw.Draw(img)
    d.rectangle((40, 60, 160, 180), fill=(230, 230, 225))
    d.ellipse((200, 40, 260, 100), fill=(200, 40, 40))
    img.save(path)
    return path


def frames_shown(page) -> int:
    return page.locator("#history figure").count()


def press_and_wait(page, key: str, frames_before: int) -> None:
    page.wait_for_function("!document.querySelector('#action-1').disabled", timeout=120_000)
    page.keyboard.press(key)
    page.wait_for_function(f"document.querySelectorAll('#history figure').length === {frames_before + 1}",
                           timeout=120_000)


def test_upload_three_steps_gif_and_a_bad_upload_in_chromium(server, browser, tmp_path):
    port, _ = server
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"http://127.0.0.1:{port}/")
    page.wait_for_selector("#starts img")  # held-out frames offered
    page.set_input_files("#upload", str(picture(tmp_path / "photo.png")))
    page.wait_for_function("document.querySelector('#source').textContent.includes('upload photo.png')")
    assert frames_shown(page) == 1
    for i, key in enumerate("358"):
        press_and_wait(page, key, 1 + i)
    assert page.locator("#history figcaption").all_inner_texts() == ["start", "1: key 3", "2: key 5", "3: key 8"]
    assert "MaskGIT steps" in page.locator("#latency").inner_text()  # the step's latency is shown

    # The three new frames exist, are the model's frames, and differ from each other and from the start.
    sid = page.evaluate("sessionStorage.getItem('genie-play-session')")
    shown = []
    for i in range(4):
        r = page.request.get(f"http://127.0.0.1:{port}/api/sessions/{sid}/frames/{i}.png")
        assert r.ok and r.headers["content-type"] == "image/png"
        shown.append(np.asarray(Image.open(io.BytesIO(r.body()))).astype(int))
    assert all(f.shape == (64, 80, 3) for f in shown)
    for a in range(4):
        for b in range(a + 1, 4):
            assert np.abs(shown[a] - shown[b]).mean() > 0.5, (a, b)

    # The GIF: every frame, captioned, with the actions in its comment.
    with page.expect_download() as download:
        page.click("#gif")
    gif = Image.open(download.value.path())
    assert gif.n_frames == 4
    assert json.loads(gif.info["comment"])["keys"] == [3, 5, 8]

    # Keys outside 1-8 and a file that is not an image: a message on the page, and the world is unchanged.
    page.keyboard.press("9")
    page.wait_for_function("document.querySelector('#message').textContent.includes('9 is not one of them')")
    (tmp_path / "notes.txt").write_text("not a picture")
    page.set_input_files("#upload", str(tmp_path / "notes.txt"))
    page.wait_for_function("document.querySelector('#message').textContent.includes('not an image')")
    assert page.locator("#message").is_visible() and frames_shown(page) == 4
    page.screenshot(path=str(tmp_path / "play.png"), full_page=True)

    # Undo and reset.
    page.click("#undo")
    page.wait_for_function("document.querySelectorAll('#history figure').length === 3")
    page.click("#reset")
    page.wait_for_function("document.querySelectorAll('#history figure').length === 1")
    page.close()


def test_tabs_keep_their_own_sessions_and_a_broken_model_is_a_message(server, browser, api):
    port, _ = server
    context = browser.new_context()
    tabs = [context.new_page(), context.new_page()]
    for tab in tabs:
        tab.goto(f"http://127.0.0.1:{port}/")
        tab.wait_for_selector("#start-0")
        tab.click("#start-0")
        tab.wait_for_selector("#live:not([hidden])")
    sids = [tab.evaluate("sessionStorage.getItem('genie-play-session')") for tab in tabs]
    assert sids[0] != sids[1]
    # The controls: MaskGIT steps and previews changed together (a blur's change event and a click) both hold.
    tabs[0].fill("#steps", "6")
    tabs[0].click("#previews")
    tabs[0].wait_for_function("state.settings.steps === 6 && state.settings.previews === false")
    assert api(port, "GET", f"/api/sessions/{sids[0]}")[1]["settings"]["steps"] == 6
    press_and_wait(tabs[0], "2", 1)
    assert "(6 MaskGIT steps" in tabs[0].locator("#latency").inner_text()
    assert frames_shown(tabs[1]) == 1 and api(port, "GET", f"/api/sessions/{sids[1]}")[1]["frames"] == 1

    # A lost connection: said on the page; when the server answers again the page re-reads its session.
    context.set_offline(True)
    tabs[0].keyboard.press("7")
    tabs[0].wait_for_function("document.querySelector('#message').textContent.includes('connection to the play "
                              "server lost')")
    context.set_offline(False)
    tabs[0].wait_for_function("document.querySelector('#message').hidden", timeout=30_000)
    assert frames_shown(tabs[0]) == 2

    # A model that does not load: said on the page; the other tab goes on playing.
    tabs[1].select_option("#model", "broken")
    tabs[1].wait_for_function("document.querySelector('#message').textContent.includes('model broken does not load')")
    press_and_wait(tabs[0], "4", 2)
    context.close()


def test_a_lost_connection_mid_step_keeps_the_step_and_the_server_serving(server, api):
    port, log = server
    status, state = api(port, "POST", "/api/sessions", {})
    sid = state["session"]
    assert api(port, "POST", f"/api/sessions/{sid}/start", {"heldout": 1})[0] == 200
    assert api(port, "POST", f"/api/sessions/{sid}/settings", {"steps": 64, "previews": False})[0] == 200
    # Send a step and hang up while it runs.
    conn = socket.create_connection(("127.0.0.1", port))
    body = json.dumps({"key": 6}).encode()
    conn.sendall(f"POST /api/sessions/{sid}/step HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    time.sleep(0.05)  # well inside a 64-step step, so the hang-up comes while it runs
    conn.close()
    # Other requests are served meanwhile, and the step is kept.
    assert api(port, "GET", "/api/info")[0] == 200
    deadline = time.monotonic() + 120
    while api(port, "GET", f"/api/sessions/{sid}")[1]["frames"] != 2:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert api(port, "GET", f"/api/sessions/{sid}")[1]["actions"] == [5]
    deadline = time.monotonic() + 10
    while "connection was lost during the step of key 6" not in log():
        assert time.monotonic() < deadline, log()[-3000:]
        time.sleep(0.2)

    # Bad requests get their reasons, as JSON, with the right status.
    assert api(port, "POST", f"/api/sessions/{sid}/step", {"key": 0}) == (
        400, {"error": "keys 1-8 choose a latent action; 0 is not one of them"})
    assert api(port, "GET", "/api/sessions/nope")[0] == 404
    assert api(port, "POST", f"/api/sessions/{sid}/start", {"heldout": 99})[0] == 400
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("POST", f"/api/sessions/{sid}/upload", body=b"\0" * (11 * 2**20))
    r = conn.getresponse()
    assert r.status == 413 and "the most this server takes is 10 MiB" in json.loads(r.read())["error"]
