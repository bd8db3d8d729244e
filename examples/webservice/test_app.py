"""The service's tests: a real server on a free loopback port, real HTTP requests."""

from __future__ import annotations

import json
import threading
import unittest
import urllib.error
import urllib.request

from app import serve


class WebServiceTest(unittest.TestCase):
    """GET /health and / answer; anything else is a 404."""

    @classmethod
    def setUpClass(cls) -> None:
        cls.server = serve("127.0.0.1", 0)
        cls.base = f"http://127.0.0.1:{cls.server.server_address[1]}"
        threading.Thread(target=cls.server.serve_forever, daemon=True).start()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.server.shutdown()
        cls.server.server_close()

    def get(self, path: str) -> tuple[int, dict[str, str]]:
        try:
            with urllib.request.urlopen(self.base + path, timeout=5) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as error:
            return error.code, json.load(error)

    def test_health_says_ok(self) -> None:
        self.assertEqual(self.get("/health"), (200, {"status": "ok"}))

    def test_root_greets(self) -> None:
        status, body = self.get("/")
        self.assertEqual(status, 200)
        self.assertIn("hello", body["message"])

    def test_unknown_paths_are_not_found(self) -> None:
        self.assertEqual(self.get("/nope")[0], 404)


if __name__ == "__main__":
    unittest.main()
