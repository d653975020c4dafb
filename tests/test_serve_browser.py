"""``msd-triplet serve`` in a real headless Chromium (Debian's package, driven by Playwright).

The server runs in a thread on a free loopback port. Skipped when no Chromium is
installed, unless ``MSD_TRIPLET_REQUIRE_BROWSER=1`` (set by ``.ci/run``, which
installs it), where a missing browser fails. Page load and one query are timed
and printed to the test log.
"""

from __future__ import annotations

import os
import shutil
import threading
import time

import pytest

pytestmark = pytest.mark.slow

PAGE_SECONDS = 1.0  # the bound for page load and for one query, on 2 cores


def chromium_path() -> str | None:
    for candidate in (os.environ.get("MSD_TRIPLET_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    return None


@pytest.fixture(scope="module")
def server(tiny_run):
    from werkzeug.serving import make_server

    from msd_triplet.browse import RunBrowser
    from msd_triplet.webapp import create_app

    browser = RunBrowser(tiny_run, split="test")
    browser.warm_up()
    httpd = make_server("127.0.0.1", 0, create_app(browser, neighbours=5), threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.port}", browser
    httpd.shutdown()
    thread.join(10)


@pytest.fixture(scope="module")
def page(server):
    path = chromium_path()
    if path is None:
        if os.environ.get("MSD_TRIPLET_REQUIRE_BROWSER") == "1":
            pytest.fail("MSD_TRIPLET_REQUIRE_BROWSER=1 but no chromium found (apt-get install chromium)")
        pytest.skip("no chromium installed (apt-get install chromium); the browser tests need it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=path, args=["--no-sandbox"])
        context = chromium.new_context(viewport={"width": 1300, "height": 900})
        page = context.new_page()
        page.problems = []
        page.on("pageerror", lambda exc: page.problems.append(f"page error: {exc}"))
        page.on("console", lambda m: m.type == "error" and page.problems.append(f"console: {m.text}"))
        # media elements abort their own range requests when they reload: only other failures count
        page.on(
            "requestfailed",
            lambda r: r.resource_type != "media" and page.problems.append(f"request failed: {r.url} ({r.failure})"),
        )
        external = []
        page.route(
            lambda url: not url.startswith(server[0]), lambda route: (external.append(route.request.url), route.abort())
        )
        page.external = external
        yield page
        chromium.close()


def log(capsys, text: str) -> None:
    with capsys.disabled():
        print(f"\n[serve timing] {text}")


def test_page_loads_and_a_query_shows_neighbours_with_playable_audio(page, server, capsys):
    url, browser = server
    started = time.perf_counter()
    page.goto(url + "/")
    page.wait_for_selector("body[data-ready='1']")
    load = time.perf_counter() - started
    assert browser.run.name in page.text_content("#run-name")
    assert page.locator("#results li[data-track]").count() > 0

    artist = browser.tracks.loc[browser.track_ids[0], "artist"]
    page.fill("#search", artist)
    page.wait_for_selector("#results li[data-track]")
    first = page.locator("#results li[data-track]").first
    track = first.get_attribute("data-track")
    started = time.perf_counter()
    first.click()
    page.wait_for_selector(f"body[data-loaded='{track}'] #neighbours tbody tr")
    query = time.perf_counter() - started
    log(
        capsys,
        f"tiny run ({len(browser.track_ids)} tracks): page load {load * 1000:.0f} ms, "
        f"one query {query * 1000:.0f} ms (bound {PAGE_SECONDS * 1000:.0f} ms each)",
    )
    assert load <= PAGE_SECONDS and query <= PAGE_SECONDS

    rows = page.locator("#neighbours tbody tr")
    assert rows.count() == 5
    expected = [r["track_id"] for r in browser.neighbours(browser.track_query(track), 5)]
    assert [rows.nth(i).get_attribute("data-track") for i in range(5)] == expected
    sources = page.eval_on_selector_all("#neighbours audio", "els => els.map(e => e.src)")
    assert len(sources) == 10  # a segment and a whole-file player per row
    for source in sources[:4]:
        response = page.request.get(source)
        assert response.status == 200, source
        assert response.headers["content-type"].startswith("audio/"), response.headers
    # the browser itself decodes the segment and the file: their durations become known
    durations = page.eval_on_selector_all(
        "#neighbours tr:first-child audio",
        """els => Promise.all(els.map(a =>
        new Promise(done => { a.onloadedmetadata = () => done(a.duration); a.onerror = () => done(-1);
                              a.preload = "metadata"; a.load(); })))""",
    )
    features = browser.config.features
    assert abs(durations[0] - features.duration) < 0.05, durations
    assert durations[1] > features.offset + features.duration - 0.05, durations
    assert page.problems == [] and page.external == []


def test_map_renders_a_point_per_track_and_opens_one(page, server):
    url, browser = server
    page.goto(url + "/#map")
    page.wait_for_selector("#map-canvas[data-points]")
    assert int(page.get_attribute("#map-canvas", "data-points")) == len(browser.track_ids)
    coloured = page.evaluate("""() => { const c = document.getElementById('map-canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n; }""")
    assert coloured > 20 * len(browser.track_ids)  # every dot covers dozens of pixels
    assert page.locator("#legend li").count() >= 1
    point = page.evaluate("() => state.screen[0]")
    page.mouse.move(*page_point(page, point))
    assert not page.is_hidden("#tooltip")
    page.mouse.click(*page_point(page, point))
    track = page.evaluate("() => state.map.points[0][3]")
    page.wait_for_selector(f"body[data-loaded='{track}'] #neighbours tbody tr")
    assert page.problems == []


def page_point(page, point) -> tuple[float, float]:
    box = page.locator("#map-canvas").bounding_box()
    return box["x"] + point[0], box["y"] + point[1]


def test_bad_upload_shows_the_message(page, server, tmp_path):
    url, browser = server
    page.goto(url + "/#tracks")
    page.wait_for_selector("body[data-ready='1']")
    bad = tmp_path / "holiday-photo.mp3"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not audio" * 200)
    page.set_input_files("#upload", str(bad))
    with page.expect_response("**/api/query*") as answer:
        page.click("#upload-form button")
    assert answer.value.status == 422
    page.wait_for_selector("#message:not([hidden])")
    assert "holiday-photo.mp3: cannot decode audio" in page.text_content("#message")
    assert [p for p in page.problems if "422" not in p] == []
    page.problems.clear()  # the browser logs the expected 422 as a console error

    good = tmp_path / "my-song.wav"
    good.write_bytes(browser.audio_file(browser.track_ids[2]).read_bytes())
    page.set_input_files("#upload", str(good))
    page.click("#upload-form button")
    page.wait_for_selector("body[data-loaded='upload:my-song.wav'] #neighbours tbody tr")
    assert page.is_hidden("#message")
    assert page.locator("#neighbours tbody tr").first.get_attribute("data-track") == browser.track_ids[2]


def test_malformed_fragment_and_back_after_an_upload(page, server, tmp_path):
    url, browser = server
    page.goto(url + "/#track/50%")
    page.wait_for_selector("body[data-ready='1']")
    assert "malformed" in page.text_content("#message")

    first, second = browser.track_ids[0], browser.track_ids[1]
    page.goto(url + f"/#track/{first}")
    page.wait_for_selector(f"body[data-loaded='{first}']")
    song = tmp_path / "back.wav"
    song.write_bytes(browser.audio_file(second).read_bytes())
    page.set_input_files("#upload", str(song))
    page.click("#upload-form button")
    page.wait_for_selector("body[data-loaded='upload:back.wav']")
    page.go_back()
    page.wait_for_selector(f"body[data-loaded='{first}']")
    assert page.text_content("#query-title").startswith(browser.tracks.loc[first, "title"])
    page.go_forward()
    page.wait_for_function("() => document.getElementById('query-title').textContent.includes('back.wav')")
    assert page.problems == []


def test_run_view_shows_metrics_with_intervals_and_curves(page, server):
    url, browser = server
    page.goto(url + "/#run")
    page.wait_for_selector("#curves")
    page.wait_for_function("() => document.getElementById('curves').naturalWidth > 0")
    caption = page.text_content("#metrics-caption")
    if (browser.run / "metrics.json").is_file():
        assert "bootstrap" in caption
        assert page.locator("#metrics tbody tr").count() >= 4
    else:
        assert "Not evaluated yet" in caption
    assert page.problems == []
