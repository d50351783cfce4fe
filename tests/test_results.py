"""The results contract: schema, scrubbing, atomic writes, and one-line errors when reading."""

import json
import os
import re
import stat
from pathlib import Path

import numpy as np
import pytest
from jsonschema import Draft202012Validator

from solarforensics.errors import ResultsError
from solarforensics.results.document import (
    SCHEMA_VERSION,
    default_out_path,
    new_document,
    read_document,
    schema,
    scrub_argv,
    slugify,
    validate_document,
    write_document,
)

SAMPLES = Path(__file__).parent / "sample_results"
SAMPLE_FILES = sorted(SAMPLES.glob("*.json"))


def schema_errors(doc: dict) -> list[str]:
    validator = Draft202012Validator(schema(), format_checker=Draft202012Validator.FORMAT_CHECKER)
    return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in validator.iter_errors(doc)]


def minimal_compare(**overrides) -> dict:
    doc = new_document(
        "compare", ["solarforensics", "compare", "a", "b"],
        models={"a": "a", "b": "b", "control": None}, groups=["layernorm"], layers_mode="same", rows=[],
        only_in_a=[], only_in_b=[], baselines={}, layer_matrices={},
        summary={"groups": {}, "statements": []},
    )
    doc.update(overrides)
    return doc


def test_schema_is_a_valid_draft_2020_12_schema():
    Draft202012Validator.check_schema(schema())
    assert schema()["properties"]["schema_version"]["const"] == SCHEMA_VERSION == 1


def test_there_is_a_sample_of_every_rendered_kind():
    kinds = {json.loads(path.read_text())["kind"] for path in SAMPLE_FILES}
    assert {"compare", "matrix", "inspect", "provenance", "license"} <= kinds


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda p: p.name)
def test_every_sample_validates_against_the_schema_and_the_builtin_checks(path):
    doc = json.loads(path.read_text())
    assert schema_errors(doc) == []
    assert validate_document(doc) == []
    assert read_document(path) == doc


def test_new_document_fills_the_common_keys():
    doc = new_document("inspect", ["solarforensics", "inspect", "x"], device="cpu")
    assert doc["schema_version"] == 1
    assert doc["kind"] == "inspect"
    assert doc["tool"]["name"] == "solarforensics" and doc["tool"]["version"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", doc["created_at"])
    assert doc["command"] == {"argv": ["solarforensics", "inspect", "x"]}
    assert (doc["device"], doc["accumulation_dtype"]) == ("cpu", "n/a")
    assert (doc["replica"], doc["complete"], doc["warnings"], doc["sources"]) == (False, True, [], [])


def test_a_compare_built_with_new_document_is_valid():
    assert schema_errors(minimal_compare()) == []
    assert validate_document(minimal_compare()) == []


def test_new_document_refuses_an_unknown_kind():
    with pytest.raises(ValueError, match="unknown results kind 'bench'"):
        new_document("bench", [])


def test_secrets_are_scrubbed_from_argv():
    argv = ["solarforensics", "compare", "a", "b", "--token", "hf_abcdefghijklmnop", "--hf-token=secret1",
            "--token=s2", "--endpoint", "http://x/?t=hf_ABCDEFGHIJ12", "--hf-token", "plain", "hf_short",
            "--endpoint=https://me:pw@proxy:8080/hub"]
    assert scrub_argv(argv) == ["solarforensics", "compare", "a", "b", "--token", "***", "--hf-token=***",
                                "--token=***", "--endpoint", "http://x/?…", "--hf-token", "***", "hf_short",
                                "--endpoint=https://proxy:8080/hub"]
    doc = new_document("compare", argv)
    assert "hf_abcdefghijklmnop" not in json.dumps(doc) and "secret1" not in json.dumps(doc)


def test_write_then_read_round_trips_and_turns_nan_and_inf_into_null(tmp_path):
    doc = minimal_compare(timings={"total": float("nan"), "fetch": float("inf"), "np": np.float32(0.5)},
                          warnings=[np.str_("w")], extra={"count": np.int64(3), "flag": np.bool_(True)})
    path = write_document(doc, tmp_path / "deep" / "er" / "out.json")
    assert path == tmp_path / "deep" / "er" / "out.json"
    back = read_document(path)
    assert back["timings"] == {"total": None, "fetch": None, "np": 0.5}
    assert back["extra"] == {"count": 3, "flag": True}
    assert back["warnings"] == ["w"]
    assert "NaN" not in path.read_text() and "Infinity" not in path.read_text()
    assert os.listdir(path.parent) == ["out.json"]


def test_written_files_follow_the_umask_not_private_temp_file_modes(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    path = write_document(minimal_compare(), tmp_path / "out.json")
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_a_failed_write_leaves_the_existing_file_untouched_and_no_temp_files(tmp_path):
    path = write_document(minimal_compare(), tmp_path / "out.json")
    before = path.read_bytes()
    with pytest.raises(ResultsError, match=r"document\.summary\.bad holds a object, which is not JSON"):
        write_document(minimal_compare(summary={"bad": object()}), path)
    with pytest.raises(ResultsError, match=r"key 3 in document\.summary is not a string"):
        write_document(minimal_compare(summary={3: "x"}), path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["out.json"]


def test_write_into_an_unwritable_place_is_a_results_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ResultsError, match=r"^cannot write .*file/out\.json: "):
        write_document(minimal_compare(), blocker / "out.json")


def read_error(path: Path) -> str:
    with pytest.raises(ResultsError) as info:
        read_document(path)
    message = info.value.one_line()
    assert "\n" not in message
    return message


def test_read_document_errors_are_one_line_and_say_what_is_wrong(tmp_path):
    assert read_error(tmp_path / "none.json") == f"results file {tmp_path / 'none.json'} does not exist"
    assert read_error(tmp_path) == f"results file {tmp_path} is a folder, not a JSON file"
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema_version": 1,\n "kind": }')
    assert read_error(bad) == f"results file {bad} is not valid JSON (line 2, column 10: Expecting value)"
    bad.write_bytes(b"\xff\xfe\x00")
    assert read_error(bad) == f"results file {bad} is not UTF-8 text; not a solarforensics results file"
    bad.write_text("[1, 2]")
    assert read_error(bad) == f"results file {bad} holds a JSON list, not a results document object"
    bad.write_text('{"kind": "compare"}')
    assert read_error(bad) == f"results file {bad} has no schema_version; it was not written by solarforensics"


def test_read_document_names_the_schema_version_it_cannot_read(tmp_path):
    path = tmp_path / "v2.json"
    path.write_text(json.dumps(dict(minimal_compare(), schema_version=2)))
    assert read_error(path) == (f"results file {path} was written by schema version 2; "
                                "this solarforensics reads version 1 — upgrade solarforensics to read it")
    path.write_text(json.dumps(dict(minimal_compare(), schema_version=0)))
    assert read_error(path).endswith("this solarforensics reads version 1 — re-run the command that produced it "
                                     "to regenerate it")


def test_read_document_rejects_a_document_missing_contract_keys(tmp_path):
    doc = minimal_compare()
    del doc["rows"]
    path = tmp_path / "r.json"
    path.write_text(json.dumps(doc))
    assert read_error(path) == f"results file {path} is not a valid results document: missing key 'rows'"
    assert any("'rows' is a required property" in e for e in schema_errors(doc))


def test_validate_document_checks_rows_and_verdicts_like_the_schema():
    sample = json.loads((SAMPLES / "compare-layernorm.json").read_text())
    del sample["rows"][2]["pearson"]
    assert validate_document(sample) == ["rows[2] is missing pearson"]
    assert any("'pearson' is a required property" in e for e in schema_errors(sample))
    provenance = json.loads((SAMPLES / "provenance-derived.json").read_text())
    provenance["verdict"] = "guilty"
    assert validate_document(provenance) == ["verdict 'guilty' is not one of derived, independent, inconclusive"]
    assert schema_errors(provenance) != []
    assert validate_document([]) == ["document is a list, expected an object"]
    assert validate_document(dict(minimal_compare(), kind="bench", replica="no")) == [
        "key 'replica' has type str", "kind 'bench' is not one of compare, matrix, inspect, provenance, validation, "
        "case, arch, tokenizer, license, fingerprint, scan, lineage, history, code"]


def test_default_out_paths_are_slugged_and_stay_inside_results():
    assert default_out_path("compare", ["hf:upstage/Solar-Open-100B@main", "zai-org/GLM-4.5-Air"], ["layernorm"]) == \
        Path("results/upstage--Solar-Open-100B-main-vs-zai-org--GLM-4.5-Air-layernorm.json")
    assert default_out_path("matrix", ["a", "b", "c"], ["layernorm", "attn-k"]) == \
        Path("results/matrix-a-b-c-layernorm_attn-k.json")
    assert default_out_path("inspect", ["./models/tiny"]) == Path("results/inspect-models--tiny.json")
    assert default_out_path("provenance", ["a", "b"], root=Path("/tmp/r")) == Path("/tmp/r/provenance-a-b.json")
    path = default_out_path("compare", ["../../etc/passwd", "..\\x"], ["*.weight"])
    assert path.parent == Path("results") and ".." not in path.name and "/" not in path.name
    assert slugify("...") == "model"
