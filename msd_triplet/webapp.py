"""``msd-triplet serve``: a Flask app over a :class:`msd_triplet.browse.RunBrowser`.

Routes (every answer JSON unless it is a page, a picture or audio; errors are
``{"error": message}`` with a 4xx status):

=============================  ====================================================
``GET /``                      the page (``web/index.html``; its script and style
                               under ``/static/``, nothing from the internet)
``GET /api/run``               run name, split, counts, facets, metrics.json
``GET /api/search?q=&limit=``  tracks whose id, names or tags contain ``q``
``GET /api/tracks/<id>?n=``    a track and its ``n`` nearest neighbours
``POST /api/query``            an uploaded audio file (form field ``audio``) and
                               its neighbours; 413 too large, 415 not an audio type,
                               422 not readable or too short
``GET /api/map?facet=``        the 2-D map, coloured by a facet's tags
``GET /audio/<id>/segment``    the segment the model saw, WAV
``GET /audio/<id>/file``       the whole file, with range requests
``GET /curves.svg``            the training curves
=============================  ====================================================

No parameter is used as a path: tracks are looked up by id in the run's data,
and their audio is checked to lie in the data or audio folders
(:meth:`RunBrowser.audio_file`).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Optional

from msd_triplet.browse import AUDIO_TYPES, NotFound, RunBrowser, check_upload_name
from msd_triplet.errors import ArgumentError, AudioError

#: Largest upload accepted by default (bytes): a 10-minute 320 kbit/s mp3 is 24 MB.
MAX_UPLOAD_BYTES = 50 * 1024 * 1024
WEB_FOLDER = Path(__file__).with_name("web")


def create_app(browser: RunBrowser, *, max_upload_bytes: int = MAX_UPLOAD_BYTES, neighbours: int = 10):
    """The Flask application serving ``browser``; run it with any WSGI server (``serve`` uses werkzeug's)."""
    from flask import Flask, Response, jsonify, request, send_file, send_from_directory
    from werkzeug.exceptions import HTTPException

    app = Flask("msd_triplet", static_folder=str(WEB_FOLDER / "static"), static_url_path="/static")
    app.config.update(MAX_CONTENT_LENGTH=max_upload_bytes, JSON_SORT_KEYS=False)
    app.json.sort_keys = False
    app.url_map.merge_slashes = False  # "//etc/passwd" is a 404, not a redirect to a cleaned path
    app.url_map.strict_slashes = False
    curves: dict[str, Optional[str]] = {}

    def error(status: int, message: str):
        response = jsonify(error=message)
        response.status_code = status
        return response

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if exc.code == 413:
            return error(413, f"upload too large: at most {max_upload_bytes / 2**20:.0f} MiB")
        if exc.code == 404:
            return error(404, f"{request.path[:100]}: no such page, file or API route")
        return error(exc.code or 500, exc.description or exc.name)

    @app.errorhandler(NotFound)
    def not_found(exc: NotFound):
        return error(404, str(exc))

    @app.errorhandler(ArgumentError)
    def bad_argument(exc: ArgumentError):
        return error(400, str(exc))

    @app.after_request
    def no_sniffing(response: Response) -> Response:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self'; "
            "media-src 'self' blob:; frame-ancestors 'none'",
        )
        return response

    @app.get("/")
    def index():
        return send_from_directory(WEB_FOLDER, "index.html", max_age=0)

    @app.get("/api/run")
    def run_summary():
        return jsonify(
            browser.summary()
            | {"neighbours": neighbours, "max_upload_bytes": max_upload_bytes, "audio_types": sorted(AUDIO_TYPES)}
        )

    @app.get("/api/search")
    def search():
        limit = _int_arg(request.args.get("limit"), "limit", 50, 1, 500)
        return jsonify(tracks=browser.search(request.args.get("q", ""), limit))

    @app.get("/api/tracks/<track_id>")
    def track(track_id: str):
        n = _int_arg(request.args.get("n"), "n", neighbours, 1, 100)
        query = browser.track_query(track_id)
        return jsonify(query=browser.describe(track_id), neighbours=browser.neighbours(query, n))

    @app.post("/api/query")
    def upload():
        n = _int_arg(request.args.get("n"), "n", neighbours, 1, 100)
        upload = request.files.get("audio")
        if upload is None or not upload.filename:
            return error(400, "no file: send the audio as the form field 'audio'")
        try:
            suffix = check_upload_name(Path(upload.filename).name)
        except ArgumentError as exc:
            return error(415, str(exc))
        name = _short(Path(upload.filename).name, suffix)
        handle, temporary = tempfile.mkstemp(suffix=suffix, prefix="msd-triplet-upload-")
        try:
            with os.fdopen(handle, "wb") as out:
                upload.save(out)
            if os.path.getsize(temporary) == 0:
                return error(422, f"{name}: empty file (0 bytes)")
            try:
                query = browser.audio_query(temporary, name)
            except AudioError as exc:
                return error(422, str(exc))
        finally:
            os.unlink(temporary)
        return jsonify(query={"label": name}, neighbours=browser.neighbours(query, n))

    @app.get("/api/map")
    def map_points():
        return jsonify(browser.map_points(request.args.get("facet", browser.facets[0])))

    @app.get("/audio/<track_id>/segment")
    def segment(track_id: str):
        try:
            wav = browser.segment_wav(track_id)
        except AudioError as exc:
            return error(422, str(exc))
        response = Response(wav, mimetype="audio/wav", headers={"Cache-Control": "max-age=3600"})
        return response.make_conditional(request, accept_ranges=True, complete_length=len(wav))  # seekable

    @app.get("/audio/<track_id>/file")
    def whole_file(track_id: str):
        path = browser.audio_file(track_id)
        return send_file(
            path,
            mimetype=AUDIO_TYPES.get(path.suffix.lower(), "application/octet-stream"),
            conditional=True,
            max_age=3600,
        )

    @app.get("/curves.svg")
    def training_curves():
        if "svg" not in curves:
            curves["svg"] = browser.curves_svg()
        if curves["svg"] is None:
            return error(404, "this run has no training log (log.csv)")
        return Response(curves["svg"], mimetype="image/svg+xml")

    return app


def _short(name: str, suffix: str, most: int = 120) -> str:
    """An uploaded file's name for messages: at most ``most`` characters, keeping its extension."""
    return name if len(name) <= most else name[: most - len(suffix) - 1] + "…" + suffix


def _int_arg(value: Optional[str], name: str, default: int, low: int, high: int) -> int:
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ArgumentError(f"{name}: {value[:20]!r} is not a whole number ({low} to {high})") from None
    if not low <= number <= high:
        raise ArgumentError(f"{name}: {number} is out of range; allowed {low} to {high}")
    return number


def serve(browser: RunBrowser, *, host: str = "127.0.0.1", port: int = 8765, say=print, **app_options) -> None:
    """Serve ``browser`` with werkzeug's threaded WSGI server until interrupted."""
    from werkzeug.serving import WSGIRequestHandler, make_server

    class Handler(WSGIRequestHandler):
        timeout = 30  # seconds a client may stall mid-request before its thread gives up

        def log_request(self, code="-", size="-") -> None:  # only failures, without terminal colours
            status = getattr(code, "value", code)
            if str(status).isdigit() and int(status) >= 400:
                say(f"{self.command} {self.path[:200]} -> {status}")

    server = make_server(host, port, create_app(browser, **app_options), threaded=True, request_handler=Handler)
    shown = f"[{host}]" if ":" in host else host
    say(
        f"serving {browser.run.name} ({len(browser.track_ids):,} {browser.split} tracks) at "
        f"http://{shown}:{server.port}/  (Ctrl-C to stop)"
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
