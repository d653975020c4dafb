"""How fast ``msd-triplet serve`` answers in a real browser, on a trained run (the demo's by default).

Usage::

    python benchmarks/serve.py [RUN] [--repeats 7] [--screenshots docs]

Starts the app on a free loopback port in this process and drives Debian's
Chromium with Playwright; every figure is wall time as the page sees it:

* page load: a fresh browser context (empty cache) from navigation until the
  page has its run summary and its first track list;
* one query: a click on a track until its neighbour table is drawn;
* one upload: a track's own audio file sent as an upload until the table is drawn;
* map: navigation to ``#map`` until every point is drawn.

The reference is the library call a user would script instead,
:func:`msd_triplet.embed.similar` for the same track (index cached), timed
in the same process; the script prints the median, the slowest, the issue's
bound (1 s) and the ratio to the reference. ``--screenshots DIR`` writes
``serve-track.png`` and ``serve-map.png`` (used by the README).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import threading
import time
from pathlib import Path

BOUND_SECONDS = 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", nargs="?", default="runs/demo", help="a trained run folder [default: runs/demo]")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--screenshots", type=Path, default=None, help="folder for serve-track.png, serve-map.png")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright
    from werkzeug.serving import make_server

    from msd_triplet.browse import RunBrowser
    from msd_triplet.embed import similar
    from msd_triplet.webapp import create_app

    chromium = os.environ.get("MSD_TRIPLET_CHROMIUM") or shutil.which("chromium")
    if not chromium:
        raise SystemExit("no chromium: apt-get install chromium")
    started = time.perf_counter()
    browser = RunBrowser(args.run, split="test", say=print)
    browser.warm_up()
    print(f"start-up (index, map, model): {time.perf_counter() - started:.1f} s")
    import logging

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    httpd = make_server("127.0.0.1", 0, create_app(browser), threaded=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.port}"
    tracks = list(browser.track_ids[: args.repeats])
    times: dict[str, list[float]] = {"page load": [], "one query": [], "one upload": [], "map": []}

    with sync_playwright() as playwright:
        chrome = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        for track in tracks:
            context = chrome.new_context(viewport={"width": 1400, "height": 900})
            page = context.new_page()
            t0 = time.perf_counter()
            page.goto(url + "/")
            page.wait_for_selector("body[data-ready='1'] #results li[data-track]")
            times["page load"].append(time.perf_counter() - t0)

            page.fill("#search", track)
            page.wait_for_selector(f"#results li[data-track='{track}']")
            t0 = time.perf_counter()
            page.click(f"#results li[data-track='{track}']")
            page.wait_for_selector(f"body[data-loaded='{track}'] #neighbours tbody tr")
            times["one query"].append(time.perf_counter() - t0)

            page.set_input_files("#upload", str(browser.audio_file(track)))
            name = browser.audio_file(track).name
            t0 = time.perf_counter()
            page.click("#upload-form button")
            page.wait_for_selector(f"body[data-loaded='upload:{name}'] #neighbours tbody tr")
            times["one upload"].append(time.perf_counter() - t0)

            t0 = time.perf_counter()
            page.goto(url + "/#map")
            page.wait_for_selector("#map-canvas[data-points]")
            times["map"].append(time.perf_counter() - t0)
            context.close()

        if args.screenshots:
            args.screenshots.mkdir(parents=True, exist_ok=True)
            page = chrome.new_page(viewport={"width": 1400, "height": 900})
            page.goto(url + f"/#track/{tracks[0]}")
            page.wait_for_selector(f"body[data-loaded='{tracks[0]}'] #neighbours tbody tr")
            page.screenshot(path=str(args.screenshots / "serve-track.png"), full_page=True)
            page.goto(url + "/#map")
            page.wait_for_selector("#map-canvas[data-points]")
            point = page.evaluate("() => state.screen[Math.floor(state.screen.length / 2)]")
            box = page.locator("#map-canvas").bounding_box()
            page.mouse.move(box["x"] + point[0], box["y"] + point[1])
            page.screenshot(path=str(args.screenshots / "serve-map.png"))
            print(f"wrote {args.screenshots / 'serve-track.png'} and {args.screenshots / 'serve-map.png'}")
        chrome.close()
    httpd.shutdown()

    reference = []
    for track in tracks:
        t0 = time.perf_counter()
        similar(track, browser.run, n=10, split="test")
        reference.append(time.perf_counter() - t0)
    ref = statistics.median(reference)
    print(
        f"\n{args.run}: {len(browser.track_ids)} test tracks, {args.repeats} repeats; "
        f"reference: embed.similar() median {ref * 1000:.0f} ms"
    )
    print("| step | median | slowest | bound | median / similar() |")
    print("|---|---|---|---|---|")
    for step, values in times.items():
        print(
            f"| {step} | {statistics.median(values) * 1000:.0f} ms | {max(values) * 1000:.0f} ms | "
            f"{BOUND_SECONDS * 1000:.0f} ms | {statistics.median(values) / ref:.2f}× |"
        )


if __name__ == "__main__":
    main()
