"""Each fault the local Hub can inject is visible on the wire, hits only what its rule selects, and then stops."""

import hashlib
import http.client
import json
from urllib.parse import urlsplit

import httpx2
import pytest
from huggingface_hub.utils import get_session, http_backoff
from raw_http import raw_request

from solarforensics.errors import SpecError
from solarforensics.localhub.faults import parse_fault

BLOB = bytes(range(256)) * 4
SHARD = "model-00001-of-00001.safetensors"
BLOB_URL = "/acme/tiny/resolve/main/weights.bin"
SHARD_URL = f"/acme/tiny/resolve/main/{SHARD}"


@pytest.fixture
def root(tmp_path):
    repo = tmp_path / "hub" / "acme" / "tiny"
    repo.mkdir(parents=True)
    (repo / "weights.bin").write_bytes(BLOB)
    (repo / SHARD).write_bytes(BLOB[::-1])
    (repo / "config.json").write_text("{}")
    return tmp_path / "hub"


def statuses(server, *paths: str, method: str = "GET") -> list[int]:
    return [raw_request(server.url, method, path)[0] for path in paths]


def test_429_then_success_through_http_backoff(hub_server, root):
    server = hub_server(root)
    server.faults.add("429", "*.bin", retry_after=0)
    response = http_backoff("GET", server.url + BLOB_URL, headers={"Range": "bytes=0-7"}, timeout=10)
    assert (response.status_code, response.content) == (206, BLOB[:8])
    assert [(e["status"], e["fault"]) for e in server.stats()["log"]] == [(429, "429"), (206, None)]
    server.faults.add("429", retry_after=7)
    status, headers, _ = raw_request(server.url, "GET", BLOB_URL)
    assert (status, headers["Retry-After"]) == (429, "7")


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_hit_count_requests_then_stop(hub_server, root, status):
    server = hub_server(root)
    server.faults.add(str(status), "weights.*", count=2)
    assert statuses(server, SHARD_URL, BLOB_URL, BLOB_URL, BLOB_URL) == [200, status, status, 200]


def test_patterns_counts_after_and_methods_select_requests(hub_server, root):
    server = hub_server(root)
    server.faults.add("503", "model-*", count=-1)
    assert statuses(server, SHARD_URL, BLOB_URL, SHARD_URL) == [503, 200, 503]
    server.faults.clear()
    server.faults.add("500", "weights.bin", after=2)
    assert statuses(server, BLOB_URL, BLOB_URL, BLOB_URL, BLOB_URL) == [200, 200, 500, 200]
    server.faults.add("502", methods=("HEAD",))
    assert statuses(server, BLOB_URL) == [200]
    assert statuses(server, BLOB_URL, BLOB_URL, method="HEAD") == [502, 200]
    assert statuses(server, "/api/models/acme/tiny") == [200]  # API calls are never faulted


def test_drop_resets_the_connection_mid_body(hub_server, root):
    server = hub_server(root)
    server.faults.add("drop", "weights.bin", count=2)
    with pytest.raises((http.client.IncompleteRead, ConnectionResetError)):
        raw_request(server.url, "GET", BLOB_URL)
    with pytest.raises(httpx2.TransportError):
        get_session().get(server.url + BLOB_URL, headers={"Range": "bytes=0-99"}, timeout=10)
    assert [(e["status"], e["bytes"], e["fault"]) for e in server.stats()["log"]] == [
        (200, 512, "drop"), (206, 50, "drop")]
    assert raw_request(server.url, "GET", BLOB_URL)[2] == BLOB


def test_truncate_sends_fewer_bytes_than_content_length(hub_server, root):
    server = hub_server(root)
    server.faults.add("truncate", "weights.bin")
    with pytest.raises(http.client.IncompleteRead) as cut:
        raw_request(server.url, "GET", BLOB_URL, {"Range": "bytes=100-299"})
    assert (cut.value.partial, cut.value.expected) == (BLOB[100:200], 100)
    assert server.stats()["bytes_served"] == 100


def test_ignore_range_answers_200_with_the_whole_file(hub_server, root):
    server = hub_server(root)
    server.faults.add("ignore-range", "weights.bin")
    status, headers, body = raw_request(server.url, "GET", BLOB_URL, {"Range": "bytes=0-7"})
    assert (status, headers["Content-Range"], body) == (200, None, BLOB)


def test_wrong_range_answers_a_shifted_range(hub_server, root):
    server = hub_server(root)
    server.faults.add("wrong-range", "weights.bin", count=2, shift=100)
    status, headers, body = raw_request(server.url, "GET", BLOB_URL, {"Range": "bytes=10-19"})
    assert (status, headers["Content-Range"], body) == (206, "bytes 110-119/1024", BLOB[110:120])
    status, headers, body = raw_request(server.url, "GET", BLOB_URL, {"Range": "bytes=1000-"})
    assert (status, headers["Content-Range"], body) == (206, "bytes 900-923/1024", BLOB[900:924])


def test_change_alters_bytes_and_etags_from_then_on(hub_server, root):
    server = hub_server(root)
    original = f'"{hashlib.sha256(BLOB).hexdigest()}"'
    server.faults.add("change", "weights.bin", after=1)
    first = raw_request(server.url, "GET", BLOB_URL, {"Range": "bytes=0-3"})
    second = raw_request(server.url, "GET", BLOB_URL, {"Range": "bytes=0-3"})
    head = raw_request(server.url, "HEAD", BLOB_URL)
    assert (first[1]["ETag"], first[2]) == (original, b"\x00\x01\x02\x03")
    assert second[2] == b"\xff\xfe\xfd\xfc" and second[1]["ETag"] != original
    assert head[1]["ETag"] == head[1]["X-Linked-Etag"] == second[1]["ETag"]
    assert raw_request(server.url, "GET", SHARD_URL)[2] == BLOB[::-1]  # other files keep their bytes
    server.faults.clear()
    assert raw_request(server.url, "HEAD", BLOB_URL)[1]["ETag"] == original


def test_slow_delays_the_answer_past_a_client_timeout(hub_server, root):
    server = hub_server(root)
    server.faults.add("slow", "weights.bin", delay_s=5)
    with pytest.raises(TimeoutError):
        raw_request(server.url, "GET", BLOB_URL, timeout=0.2)
    assert raw_request(server.url, "GET", BLOB_URL)[2] == BLOB


def test_in_cdn_mode_body_faults_wait_for_the_cdn_and_origin_selects(hub_server, root):
    server = hub_server(root, cdn=True)
    server.faults.add("ignore-range", "*.safetensors")
    response = http_backoff("GET", server.url + SHARD_URL, headers={"Range": "bytes=0-7"}, timeout=10)
    assert (response.status_code, response.content) == (200, BLOB[::-1])
    assert sorted((e["origin"], e["status"], e["fault"]) for e in server.stats()["log"]) == [
        ("cdn", 200, "ignore-range"), ("hub", 302, None)]
    server.faults.add("503", origin="cdn")
    status, headers, _ = raw_request(server.url, "GET", SHARD_URL)
    location = headers["Location"].removeprefix(server.cdn_url)
    assert status == 302 and statuses(server, SHARD_URL) == [302]
    assert [raw_request(server.cdn_url, "GET", location)[0] for _ in range(2)] == [503, 200]


def test_faults_can_be_set_over_http(hub_server, root):
    server = hub_server(root)
    parts = urlsplit(server.url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)

    def call(method, path, body=None):
        connection.request(method, path, body=json.dumps(body) if body is not None else None)
        response = connection.getresponse()
        return response.status, json.loads(response.read())

    status, rule = call("POST", "/_faults", {"kind": "502", "pattern": "weights.bin", "count": 3})
    assert (status, rule["kind"], rule["remaining"]) == (200, "502", 3)
    assert statuses(server, BLOB_URL) == [502]
    assert [r["remaining"] for r in call("GET", "/_faults")[1]] == [2]
    assert call("DELETE", "/_faults") == (200, {"ok": True})
    assert statuses(server, BLOB_URL) == [200]
    status, error = call("POST", "/_faults", {"kind": "teapot"})
    assert status == 400 and "unknown fault kind 'teapot'" in error["error"]
    connection.close()


def test_parse_fault_reads_the_cli_syntax():
    rule = parse_fault("429:*.safetensors:3:retry_after=2,origin=cdn")
    assert (rule.kind, rule.pattern, rule.count, rule.retry_after, rule.origin) == (
        "429", "*.safetensors", 3, 2, "cdn")
    assert (parse_fault("change").pattern, parse_fault("change").count) == ("*", 1)
    assert (parse_fault("drop::-1").pattern, parse_fault("drop::-1").count) == ("*", -1)
    slow = parse_fault("slow:model-00001*:2:delay_s=0.5,methods=GET+HEAD")
    assert (slow.delay_s, slow.methods, slow.pattern) == (0.5, ("GET", "HEAD"), "model-00001*")


@pytest.mark.parametrize(("text", "message"), [
    ("teapot", "unknown fault kind 'teapot'"),
    ("429:*:many", "bad fault '429:*:many': count 'many' is not a whole number"),
    ("429:*:1:colour=red", "bad fault '429:*:1:colour=red': 'colour=red' is not KEY=VALUE with KEY one of after, "
                           "retry_after, delay_s, shift, extra, methods, origin, repo"),
    ("429:*:1:retry_after", "bad fault '429:*:1:retry_after': 'retry_after' is not KEY=VALUE with KEY one of"),
])
def test_parse_fault_rejects_bad_specs_in_one_line(text, message):
    with pytest.raises(SpecError) as error:
        parse_fault(text)
    assert error.value.message.startswith(message)
    assert "\n" not in error.value.one_line()
