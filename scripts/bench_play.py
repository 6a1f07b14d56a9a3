"""Step latency of `genie-robot play` as a player feels it, and the page's screenshots for docs/.

Starts `genie-robot play` on a model (the reference sim-rt1 by default) and drives its page in Debian's Chromium
(Playwright). From a held-out start frame it presses keys and times, per key press, (a) the engine call the
server reports (`latency_ms`: one `imagine` at batch 1) and (b) key-down to the new frame drawn in the history
strip (HTTP, PNG encoding and the browser included). Each setting is timed with previews off (the step alone)
and on (the step arrives while the previews of the last frame are being sampled, and must take the engine from
them). One JSON object as the last line; `--screenshots DIR` also writes the page after three steps with all 8
previews (play.png) and a bad upload's message (play_bad_upload.png).

    python scripts/bench_play.py [--ckpt sim-rt1] [--presses 10] [--screenshots docs]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

VENV_BIN = Path(sys.executable).parent
HELDOUT = "outputs/heldout/fractal20220817_data/0.1.0"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(port: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"genie-robot play exited with {proc.returncode}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/info", timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise SystemExit("genie-robot play did not come up")


def summary(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 1), "mean": round(statistics.fmean(values), 1),
            "min": round(min(values), 1), "max": round(max(values), 1), "n": len(values)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ckpt", default="sim-rt1")
    ap.add_argument("--start-data", default=HELDOUT)
    ap.add_argument("--presses", type=int, default=10, help="key presses per setting")
    ap.add_argument("--steps", default="25,8", help="MaskGIT steps per step to time ('' times nothing)")
    ap.add_argument("--screenshot-start", type=int, default=1, help="the held-out start frame of play.png")
    ap.add_argument("--screenshots", default=None, help="write play.png and play_bad_upload.png here")
    ap.add_argument("--json", action="store_true", help="accepted; the last line is always JSON")
    args = ap.parse_args()

    from playwright.sync_api import sync_playwright

    port = free_port()
    log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
    proc = subprocess.Popen([str(VENV_BIN / "genie-robot"), "play", f"ckpt={args.ckpt}", f"play.port={port}",
                             f"play.start_data={args.start_data}"], stdout=log, stderr=subprocess.STDOUT)
    results = []
    try:
        wait_up(port, proc)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector("#start-0")

            def set_controls(steps: int, previews: bool) -> None:
                page.fill("#steps", str(steps))
                page.dispatch_event("#steps", "change")
                page.wait_for_function(f"state && state.settings.steps === {steps}")
                if page.is_checked("#previews") != previews:
                    page.click("#previews")
                    page.wait_for_function(f"state && state.settings.previews === {str(previews).lower()}")

            def press(key: str) -> tuple[float, float]:
                n = page.locator("#history figure").count()
                page.wait_for_function("!document.querySelector('#action-1').disabled", timeout=120_000)
                t0 = time.perf_counter()
                page.keyboard.press(key)
                page.wait_for_function(f"document.querySelectorAll('#history figure').length === {n + 1} && "
                                       f"document.querySelector('#history figure.current img').complete",
                                       timeout=120_000)
                shown = (time.perf_counter() - t0) * 1000
                return page.evaluate("state.latencies_ms[state.latencies_ms.length - 1]"), shown

            for steps in [int(s) for s in args.steps.split(",") if s]:
                for previews in (False, True):
                    set_controls(steps, previews)
                    page.click(f"#start-{len(results) % 4}")
                    page.wait_for_function("state && state.frames === 1")
                    engine, shown = [], []
                    for i in range(args.presses):
                        if previews:  # the previews of the last frame are running when the key comes
                            page.wait_for_function("state && state.previews.length >= 1", timeout=120_000)
                        e, s = press(str(1 + (i * 3) % 8))
                        engine.append(e)
                        shown.append(s)
                        if len(engine) % 6 == 0:
                            page.click("#reset")  # stay within the window's worth of history
                            page.wait_for_function("state && state.frames === 1")
                    preview_ms = page.evaluate("Object.values(state.preview_ms)") if previews else []
                    results.append({"maskgit_steps": steps, "previews": previews, "engine_ms": summary(engine),
                                    "key_to_frame_ms": summary(shown),
                                    **({"preview_ms_each": summary(preview_ms)} if preview_ms else {})})
                    print(json.dumps(results[-1]), flush=True)

            if args.screenshots:
                out = Path(args.screenshots)
                set_controls(8, True)  # play.steps' default
                page.click(f"#start-{args.screenshot_start}")
                page.wait_for_function("state && state.frames === 1")
                for key in "358":
                    press(key)
                page.wait_for_function("state && state.previews.length === 8", timeout=120_000)
                page.wait_for_function("[...document.querySelectorAll('#actions img')].every(i => i.complete)")
                page.screenshot(path=str(out / "play.png"), full_page=True)
                bad = Path(tempfile.mkdtemp()) / "notes.txt"
                bad.write_text("not a picture")
                page.set_input_files("#upload", str(bad))
                page.wait_for_function("document.querySelector('#message').textContent.includes('not an image')")
                page.screenshot(path=str(out / "play_bad_upload.png"), clip={"x": 0, "y": 0, "width": 1280,
                                                                             "height": 420})
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print(json.dumps({"bench": "play", "ckpt": args.ckpt, "presses": args.presses, "machine": platform.processor()
                      or platform.machine(), "cpus": os.cpu_count(), "results": results}))


if __name__ == "__main__":
    main()
