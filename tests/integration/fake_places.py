"""A fake Google Places server on loopback speaking both APIs.

It records every request (method, path, query, headers, body) and answers
as told: normally, slowly, with an HTTP or Google error, with bad JSON, with
a huge body, with a given body (raw), or not at all.
"""
import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NEW_PLACES = [
    {"id": "ChIJ-royce", "displayName": {"text": "Royce Hall", "languageCode": "en"},
     "shortFormattedAddress": "10745 Dickson Ct, Los Angeles",
     "formattedAddress": "10745 Dickson Ct, Los Angeles, CA 90095, USA",
     "types": ["performing_arts_theater", "point_of_interest", "establishment"],
     "location": {"latitude": 34.0729157, "longitude": -118.4421933},
     "rating": 4.8, "userRatingCount": 612, "businessStatus": "OPERATIONAL",
     "currentOpeningHours": {"openNow": True}},
    {"id": "ChIJ-diddy", "displayName": {"text": "Diddy Riese", "languageCode": "en"},
     "shortFormattedAddress": "926 Broxton Ave, Los Angeles",
     "types": ["bakery", "food", "store"],
     "location": {"latitude": 34.0630126, "longitude": -118.4468657},
     "rating": 4.7, "userRatingCount": 7310, "businessStatus": "OPERATIONAL",
     "priceLevel": "PRICE_LEVEL_INEXPENSIVE", "currentOpeningHours": {"openNow": False}},
    {"id": "ChIJ-hammer", "displayName": {"text": "Hammer Museum"},
     "formattedAddress": "10899 Wilshire Blvd, Los Angeles, CA 90024, USA",
     "types": ["museum"], "location": {"latitude": 34.0593, "longitude": -118.44325}},
]

LEGACY_RESULTS = [
    {"business_status": "OPERATIONAL",
     "geometry": {"location": {"lat": 34.0729157, "lng": -118.4421933}},
     "name": "Royce Hall", "place_id": "ChIJ-royce", "rating": 4.8,
     "types": ["point_of_interest"], "user_ratings_total": 612,
     "vicinity": "10745 Dickson Ct, Los Angeles"},
    {"geometry": {"location": {"lat": 34.063, "lng": -118.4468}},
     "name": "Diddy Riese", "place_id": "ChIJ-diddy", "types": ["bakery"],
     "vicinity": "926 Broxton Ave, Los Angeles"},
    {"geometry": {"location": {"lat": 34.0593, "lng": -118.44325}},
     "name": "Hammer Museum", "place_id": "ChIJ-hammer", "types": ["museum"],
     "vicinity": "10899 Wilshire Blvd, Los Angeles"},
]


class FakePlaces:
    def __init__(self):
        self.requests = []
        self.mode = "ok"          # ok, slow, http, google-error, bad-json, huge, hang, zero, raw
        self.raw = (200, b"{}")   # mode raw: this (HTTP status, body) as it is
        self.delay = 0.0
        self.http_status = 500
        self.error_status = "PERMISSION_DENIED"
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                self.handle_any(b"")

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                self.handle_any(self.rfile.read(n))

            def handle_any(self, body):
                url = urllib.parse.urlsplit(self.path)
                with fake.lock:
                    fake.requests.append({
                        "method": self.command, "path": url.path,
                        "query": urllib.parse.parse_qs(url.query), "raw_query": url.query,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "body": body})
                status, payload = fake.answer(self.command, url.path)
                if payload is None:       # never answer
                    time.sleep(30)
                    return
                if fake.delay:
                    time.sleep(fake.delay)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.handle_error = lambda request, address: None   # clients that hang up
        self.port = self.server.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def answer(self, method, path):
        legacy = path == "/maps/api/place/nearbysearch/json"
        if self.mode == "hang":
            return 200, None
        if self.mode == "raw":
            return self.raw
        if self.mode == "http":
            return self.http_status, b"<html>oops</html>"
        if self.mode == "bad-json":
            return 200, b'{"places": [ {"id": '
        if self.mode == "huge":
            return 200, b'{"places": [' + b'{"id": "x"},' * 500000 + b'{"id": "y"}]}'
        if self.mode == "google-error":
            if legacy:
                return 200, json.dumps({"error_message": "The provided API key is invalid.",
                                        "html_attributions": [], "results": [],
                                        "status": "REQUEST_DENIED"}).encode()
            return 403, json.dumps({"error": {"code": 403, "message": "API key not valid.",
                                              "status": self.error_status}}).encode()
        if self.mode == "zero":
            if legacy:
                return 200, json.dumps({"html_attributions": [], "results": [],
                                        "status": "ZERO_RESULTS"}).encode()
            return 200, b"{}"
        if legacy:
            return 200, json.dumps({"html_attributions": [], "results": LEGACY_RESULTS,
                                    "status": "OK"}).encode()
        return 200, json.dumps({"places": NEW_PLACES}).encode()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
