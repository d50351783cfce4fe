"""One plain HTTP request to the local Hub, below any client library, for tests that inspect the wire."""

import http.client
from urllib.parse import urlsplit


def raw_request(url: str, method: str, path: str, headers: dict | None = None, timeout: float = 10):
    """(status, headers, body) over a fresh connection; the body read may raise when a fault cuts it."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        connection.request(method, path, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()
