"""Tensors from a Hugging Face Hub repo (or any endpoint speaking its protocol), read with exact, checked range requests.

The revision is resolved to a commit sha once and every URL is built from that sha, so a push during a run cannot mix
two versions. Every ranged answer must be a 206 whose Content-Range and length are exactly what was asked, and the
file's ETag must not change between reads: anything else stops the run with one clear line, never wrong bytes.
"""

import base64
import os
import re
import threading
from contextlib import contextmanager
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx2
from huggingface_hub import HfApi, get_token, hf_hub_url
from huggingface_hub import errors as hf_errors
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status, validate_repo_id

from solarforensics import __version__
from solarforensics.errors import AccessError, FormatError, NotFoundError, SpecError, TransferError, redact
from solarforensics.sources.base import FileRecord, Provenance, TensorSource
from solarforensics.sources.cache import RangeCache
from solarforensics.sources.http import MAX_RETRY_AFTER_S, RateLimited, with_retries
from solarforensics.sources.interrupt import check_cancelled, worker_pool
from solarforensics.sources.layout import check_index, merge_headers, weight_files
from solarforensics.sources.safetensors_format import header_length, parse_header
from solarforensics.sources.settings import setting

DEFAULT_ENDPOINT = "https://huggingface.co"
TIMEOUT_S = setting("SOLARFORENSICS_TIMEOUT")
HTTP_RETRIES = setting("SOLARFORENSICS_RETRIES")  # for 429/5xx/connection errors (huggingface_hub's backoff)
BODY_ATTEMPTS = 4  # for bodies cut short or ranges answered wrongly: the whole range is asked again
MIN_HEADER_PROBE = 4096
_HEX = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


@contextmanager
def hub_errors(repo: str, revision: str | None, endpoint: str):
    """Turn huggingface_hub / httpx2 exceptions into our one-line errors (never echoing a token)."""
    try:
        yield
    except hf_errors.GatedRepoError:
        raise AccessError(
            f"{repo} is gated and this token has no access (or no token was given)",
            "request access on the model page, then set HF_TOKEN or run `hf auth login`",
        ) from None
    except hf_errors.RepositoryNotFoundError:
        raise NotFoundError(
            f"repo {repo} not found at {endpoint}", "check the name; a private repo also needs HF_TOKEN"
        ) from None
    except hf_errors.RevisionNotFoundError:
        raise NotFoundError(f"revision {revision!r} not found in {repo}", "check the branch, tag or sha") from None
    except (hf_errors.RemoteEntryNotFoundError, hf_errors.EntryNotFoundError) as err:
        raise NotFoundError(f"a file was not found in {repo}: {_first_line(err)}") from None
    except hf_errors.DisabledRepoError:
        raise AccessError(f"{repo} is disabled on the Hub") from None
    except HFValidationError as err:
        raise SpecError(f"huggingface_hub refused a name for {repo}: {_first_line(err)}") from None
    except RateLimited as err:
        raise TransferError(f"rate limited by {endpoint}: it asks to wait {err.retry_after:g} s, longer than the "
                            f"{MAX_RETRY_AFTER_S:g} s a run waits", "retry later") from None
    except hf_errors.OfflineModeIsEnabled:
        raise TransferError(f"cannot read {repo}: HF_HUB_OFFLINE is set", "unset it to read from the Hub") from None
    except hf_errors.HfHubHTTPError as err:
        status = getattr(err.response, "status_code", None)
        if status == 429:
            after = err.response.headers.get("retry-after", "?")
            raise TransferError(f"rate limited by {endpoint} after retries (Retry-After: {after}s)", "retry later") from None
        raise TransferError(f"{endpoint} answered HTTP {status} for {repo}: {_first_line(err)}") from None
    except httpx2.HTTPError as err:
        raise TransferError(
            f"cannot reach {endpoint} ({type(err).__name__}: {_first_line(err) or 'no answer'})",
            "check the network or HF_ENDPOINT",
        ) from None


def check_repo_id(repo: str) -> None:
    """A SpecError unless `repo` is an owner/name that huggingface_hub accepts (no `..` or `--`, names of at most 96
    characters, ...): it would refuse it later, deep inside a request."""
    if not _REPO_ID.match(repo):
        raise SpecError(f"{repo[:120]!r} is not a Hub repo id (expected owner/name)")
    try:
        validate_repo_id(repo)
    except HFValidationError as err:
        raise SpecError(f"{repo[:120]!r} is not a valid Hub repo id: {_first_line(err)}") from None


def split_credentials(endpoint: str) -> tuple[str, str | None]:
    """(the endpoint without `user:pass@`, a Basic Authorization value for them or None); a SpecError for anything
    that is not an http(s) URL."""
    try:
        parts = urlsplit(endpoint.strip().rstrip("/"))
        parts.port  # noqa: B018 - a port that is not a number from 0 to 65535 raises here
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise SpecError(f"endpoint {redact(endpoint)[:120]!r} is not an http(s) URL",
                        "give --endpoint or HF_ENDPOINT as http(s)://host[:port]")
    if "@" not in parts.netloc:
        return urlunsplit(parts), None
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    basic = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode()
    return urlunsplit(parts._replace(netloc=host)), f"Basic {basic}"


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else ""


def hub_client(endpoint: str | None, token: str | None) -> tuple[str, dict, HfApi]:
    """(endpoint without credentials, request headers, HfApi) for an endpoint (default $HF_ENDPOINT, else the Hub)."""
    # Credentials written into the endpoint (http://user:pass@host) leave the URL for a Basic Authorization header,
    # as httpx would send them: the URL that is logged, recorded and shown in errors then holds none.
    endpoint, basic = split_credentials(endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT)
    token = token if token is not None else get_token()
    # The token lives only in these headers: never in URLs, logs, errors or results.
    extra = {"authorization": basic} if basic else None
    headers = build_hf_headers(token=token or False, library_name="solarforensics", library_version=__version__,
                               headers=extra)
    api = HfApi(endpoint=endpoint, token=token or False, library_name="solarforensics", library_version=__version__,
                headers=extra)
    return endpoint, headers, api


class HubSource(TensorSource):
    """A model repo on the Hub, pinned to one commit."""

    def __init__(
        self,
        repo: str,
        revision: str | None = None,
        *,
        spec: str | None = None,
        endpoint: str | None = None,
        token: str | None = None,
        cache: RangeCache | None = None,
        max_gap: int | None = None,
        workers: int | None = None,
    ):
        check_repo_id(repo)
        self.repo, self.name = repo, repo
        self.spec = spec or repo
        self.endpoint, self._headers, self._api = hub_client(endpoint, token)
        if max_gap is not None:
            self.max_gap = max_gap
        if workers is not None:
            self.workers = workers
        self.cache = cache
        self._etags: dict[str, str | None] = {}
        self._etag_lock = threading.Lock()
        with hub_errors(repo, revision, self.endpoint):
            info = with_retries(lambda: self._api.model_info(repo, revision=revision, files_metadata=True,
                                                             timeout=TIMEOUT_S), HTTP_RETRIES)
        if not info.sha:
            raise TransferError(f"{self.endpoint} gave no commit sha for {repo}; cannot pin the revision")
        self.commit = info.sha
        self.card_data = info.card_data.to_dict() if getattr(info, "card_data", None) else {}
        created = getattr(info, "created_at", None)
        self.created_at = created.isoformat() if hasattr(created, "isoformat") else created
        self.provenance = Provenance(
            spec=self.spec, kind="hub", repo=repo, endpoint=self.endpoint,
            requested_revision=revision or "main", resolved_commit=self.commit,
        )  # fmt: skip
        self.provenance.count(requests=1)
        self.cache_namespace = (self.endpoint, repo, self.commit)
        self._sizes = {s.rfilename: s.size for s in info.siblings or []}
        # What the commit says each file is: the LFS sha256 or the git blob id, which the served ETag must match.
        self._object_ids = {s.rfilename: (s.lfs.sha256 if s.lfs else s.blob_id) for s in info.siblings or []}
        self._open_weights()

    def _open_weights(self) -> None:
        """Find the weight files, read and check their headers; set `tensors` and `config`."""
        with worker_pool(1) as side:  # config.json travels while the headers are read
            config = side.submit(self.read_json, "config.json")
            shards, weight_map = weight_files(list(self._sizes), self.read_json, self.repo)
            self.tensors = merge_headers(self._read_headers(shards, weight_map), self.repo)
            check_index(weight_map, self.tensors, self.repo)
            self.config = config.result()

    def list_files(self) -> list[str]:
        return sorted(self._sizes)

    def file_sizes(self) -> dict[str, int]:
        """Every file of the repo at the pinned commit with its size, as the listing gave them (no request)."""
        return {name: size or 0 for name, size in self._sizes.items()}

    # -- headers ---------------------------------------------------------------------------------------------------

    def _read_headers(self, shards: list[str], weight_map: dict | None) -> dict:
        def one(shard: str):
            return shard, self._read_header(shard, _probe_size(shard, weight_map))

        with worker_pool(min(self.workers, len(shards))) as pool:
            return dict(pool.map(one, shards))

    def _read_header(self, shard: str, probe: int):
        size = self._file_size(shard)
        key = (*self.cache_namespace, "header", shard)
        cached = self.cache.get_json(key) if self.cache else None
        if cached is not None:
            self._remember_etag(shard, cached["etag"])
            self.provenance.files[shard] = FileRecord(shard, size, cached["etag"])
            self.provenance.count(cache_hits=1)
            header = bytes.fromhex(cached["header"])
        else:
            first = self._fetch(shard, 0, min(size, max(probe, MIN_HEADER_PROBE)))
            n = header_length(first, f"{self.repo}/{shard}", size)
            if len(first) < 8 + n:  # the guess was short: fetch only the rest
                first += self._fetch(shard, len(first), 8 + n)
            header = bytes(first[8 : 8 + n])
            if self.cache:
                self.cache.put_json(key, {"etag": self._etags.get(shard), "header": header.hex()})
        tensors, _ = parse_header(header, shard, size, where=f"{self.repo}/{shard}")
        return tensors

    def _file_size(self, file: str) -> int:
        size = self._sizes.get(file)
        if size is None:
            with hub_errors(self.repo, self.commit, self.endpoint):
                size = with_retries(lambda: self._api.get_hf_file_metadata(url=self._url(file), timeout=TIMEOUT_S),
                                    HTTP_RETRIES).size
            self.provenance.count(requests=1)
            self._sizes[file] = size
        return size

    # -- bytes -----------------------------------------------------------------------------------------------------

    def _url(self, file: str) -> str:
        return hf_hub_url(self.repo, file, revision=self.commit, endpoint=self.endpoint)

    def _fetch(self, file: str, start: int, end: int) -> bytearray:
        if end <= start:
            return bytearray()  # nothing to ask for (an empty file): a Range of bytes=0--1 would get a 416
        size = self._file_size(file)
        return self._intact(f"{file}: bytes {start}-{end - 1}", lambda: self._fetch_once(file, start, end, size))

    def _intact(self, what: str, read):
        """`read()` with the retry bounds for failed requests, and up to BODY_ATTEMPTS tries for bodies that were
        not exactly what was asked; every failure becomes one of our errors."""
        problem = ""
        for _ in range(BODY_ATTEMPTS):
            try:
                with hub_errors(self.repo, self.commit, self.endpoint):
                    return with_retries(read, HTTP_RETRIES)
            except _Retry as retry:
                problem = str(retry)
        raise TransferError(f"{self.repo}/{what} could not be read intact: {problem}")

    @contextmanager
    def _get(self, file: str, headers: dict):
        """One GET of a file at the pinned commit (redirects followed), its errors raised for `with_retries`."""
        headers = {**self._headers, **headers, "Accept-Encoding": "identity"}
        with get_session().stream("GET", self._url(file), headers=headers, timeout=TIMEOUT_S) as response:
            self.provenance.count(requests=1 + len(response.history))
            if response.status_code >= 400:
                response.read()
                hf_raise_for_status(response)
            self._check_etag(file, response)
            yield response

    def _fetch_once(self, file: str, start: int, end: int, size: int) -> bytearray:
        with self._get(file, {"Range": f"bytes={start}-{end - 1}"}) as response:
            if response.status_code == 200:
                raise TransferError(
                    f"{self.endpoint} ignored the Range header for {self.repo}/{file} and started sending the "
                    f"whole {size:,}-byte file; stopped without downloading it",
                    "use a server or proxy that supports range requests",
                )
            if response.status_code != 206:
                raise _Retry(f"HTTP {response.status_code} instead of 206")
            self._check_content_range(file, response.headers.get("content-range", ""), start, end, size)
            buf = self._body(response, end - start, "asked")
            self.provenance.count(nbytes=len(buf), ranges=1)
            return buf

    @staticmethod
    def _body(response, length: int, announced: str) -> bytearray:
        """Exactly `length` body bytes; a server sending more is cut off at `length`, never read to its end."""
        buf = bytearray(length)
        got = 0
        try:
            for chunk in response.iter_raw():
                check_cancelled()
                if got + len(chunk) > length:
                    raise _Retry(f"server sent more than the {length:,} bytes {announced}; stopped reading")
                buf[got : got + len(chunk)] = chunk
                got += len(chunk)
        except httpx2.TransportError as err:  # a broken body is asked again whole, by _intact
            raise _Retry(f"{type(err).__name__} while reading the body") from None
        if got != length:
            raise _Retry(f"body cut short ({got} of {length} bytes)")
        return buf

    def _check_content_range(self, file: str, value: str, start: int, end: int, size: int) -> None:
        match = _CONTENT_RANGE.fullmatch(value.strip())
        if not match:
            raise _Retry(f"missing or malformed Content-Range {value[:80]!r}")
        first, last, total = int(match[1]), int(match[2]), match[3]
        if (first, last) == (start, end - 1) and total != "*" and int(total) != size:
            raise TransferError(f"{self.repo}/{file} changed during the run (the commit lists {size:,} bytes, the "
                                f"server has {int(total):,})", "rerun; results are only valid for one version of a file")
        if (first, last) != (start, end - 1):
            raise _Retry(f"Content-Range {value!r} does not match the requested bytes {start}-{end - 1}/{size}")

    def _check_etag(self, file: str, response) -> None:
        hops = [*response.history, response]
        etag = None
        for hop in hops:  # the Hub's own answer (before any CDN redirect) carries the file's sha256 as X-Linked-Etag
            etag = hop.headers.get("x-linked-etag") or etag
        if etag is None:
            etag = response.headers.get("etag")
        etag = etag.strip().removeprefix("W/").strip('"') if etag else None
        self._remember_etag(file, etag)

    def _remember_etag(self, file: str, etag: str | None) -> None:
        with self._etag_lock:
            known = self._etags.setdefault(file, etag)
            record = self.provenance.files.setdefault(file, FileRecord(file, self._sizes.get(file, 0), etag))
            if record.etag is None:
                record.etag = etag
        if etag is not None and known is not None and etag != known:
            raise TransferError(
                f"{self.repo}/{file} changed during the run (ETag {known[:12]}… then {etag[:12]}…)",
                "rerun; results are only valid for one version of a file",
            )
        listed = self._object_ids.get(file)
        # Compared only when both are ids of one kind (sha256 or git sha1): a mirror's own ETags are not ids.
        if etag is not None and listed and len(etag) == len(listed) and _HEX.fullmatch(etag) and etag != listed:
            raise TransferError(
                f"{self.repo}/{file} changed during the run (the commit lists object {listed[:12]}…, the server "
                f"sent {etag[:12]}…)", "rerun; results are only valid for one version of a file",
            )

    def _read_small(self, filename: str, max_bytes: int) -> bytes | None:
        """A whole small file (config, index, tokenizer, licence): the same retry and time bounds as every request,
        read no further than the size the commit lists (or the limit), and cached by commit."""
        if filename not in self._sizes:
            return None
        size = self._sizes[filename]
        if size is not None and size > max_bytes:
            raise FormatError(f"{self.repo}/{filename}: {size:,} bytes, over the {max_bytes:,}-byte limit")
        key = (*self.cache_namespace, "file", filename)
        cached = self.cache.get(key, size) if self.cache is not None and size else None
        if cached is not None:
            self.provenance.count(cache_hits=1)
            return bytes(cached)
        data = self._intact(filename, lambda: self._get_small(filename, size, max_bytes))
        if self.cache is not None and size:
            self.cache.put(key, data)
        return bytes(data)

    def _get_small(self, filename: str, size: int | None, max_bytes: int) -> bytearray:
        with self._get(filename, {}) as response:
            if size is None:  # not listed with a size: read to the end, but never past the limit
                data = bytearray()
                for chunk in response.iter_raw():
                    check_cancelled()
                    data += chunk
                    if len(data) > max_bytes:
                        raise FormatError(f"{self.repo}/{filename}: over the {max_bytes:,}-byte limit")
            else:
                data = self._body(response, size, "the commit lists for it")
        return data  # not in bytes_transferred, which counts weight-file bytes (headers and tensors)


class _Retry(Exception):
    """A ranged answer that was not exactly what was asked; the range is asked again."""


def _probe_size(shard: str, weight_map: dict | None) -> int:
    """Guess a header's size from the index (JSON of ~100 bytes per tensor plus its name), so the first ranged read
    usually holds the whole header without reading far into the tensor data."""
    if weight_map is None:
        return 64 << 10
    names = [name for name, file in weight_map.items() if file == shard]
    # "name":{"dtype":"BF16","shape":[a,b],"data_offsets":[x,y]}, is the name plus ~72 bytes (measured); a short
    # guess costs one more request for the rest, a long one reads into the first tensor.
    return 8 + 64 + sum(len(name) + 74 for name in names)
