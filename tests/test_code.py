"""`code`: a repo's Python files against transformers' modelling files (installed, never fetched) or a given file:
shared functions and classes, copyright lines, distinctive rules; and what it says it cannot tell (weights)."""

import json
import re

import pytest
from jsonschema import Draft202012Validator

import solarforensics.cli.evidence  # noqa: F401  (registers the commands)
from solarforensics.evidence.code import DISCLAIMER
from solarforensics.evidence.code_sources import family_files
from solarforensics.replicas.store import replica_store
from solarforensics.results.document import read_document, schema

GLM = next(f for f in family_files("glm4_moe") if f.name.endswith("modeling_glm4_moe.py"))


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def code_json(cli, *args) -> dict:
    code, stdout, stderr = cli("code", *args, "--json")
    assert code == 0, stderr
    return json.loads(stdout)


@pytest.fixture
def copied(tmp_path):
    """A model folder whose modelling file is GLM-4.5's, renamed, with a new header line and one function of its own."""
    folder = tmp_path / "acme-model"
    folder.mkdir()
    text = GLM.text.replace("Glm4Moe", "AcmeMoe").replace("glm4_moe", "acme_moe")
    text = "# Copyright 2025 The GLM4 & ZhipuAI.\n" + text + "\n\ndef acme_only(x):\n    return x * 3 + 1\n"
    (folder / "modeling_acme_moe.py").write_text(text)
    (folder / "broken.py").write_text("def oops(:\n    pass\n")
    (folder / "blob.py").write_bytes(b"\x00\x01 not python")
    (folder / "config.json").write_text('{"model_type": "acme_moe", "auto_map": {"AutoModel": "modeling_acme_moe.X"}}')
    return folder


def test_a_renamed_copy_of_glm_code_is_found_function_by_function(cli, copied, tmp_path):
    out = tmp_path / "code.json"
    doc = code_json(cli, copied, "--against", "glm4_moe", "--out", out)
    assert read_document(out) == doc and doc["kind"] == "code"
    assert [e.message for e in Draft202012Validator(schema()).iter_errors(doc)] == []
    assert doc["against"]["kind"] == "family" and doc["against"]["name"] == "glm4_moe"
    assert "transformers/models/glm4_moe/modeling_glm4_moe.py" in doc["against"]["files"]
    pairs = {(m["name"], m["reference_name"]): m for m in doc["matches"]}
    assert pairs[("AcmeMoeMoE.forward", "Glm4MoeMoE.forward")]["identical"] is True
    assert pairs[("AcmeMoeForCausalLM", "Glm4MoeForCausalLM")]["similarity"] == 1.0
    assert doc["identical_count"] == sum(m["identical"] for m in doc["matches"]) > 20
    assert "acme_only" not in {m["name"] for m in doc["matches"]}
    assert {"file": "modeling_acme_moe.py", "line": 1, "text": "Copyright 2025 The GLM4 & ZhipuAI.",
            "kind": "copyright"} in doc["headers"]
    skip = next(r for r in doc["rules"] if r["rule"] == "ignores checkpoint layers from a fixed index")
    assert skip["value"] == "92" and skip["in_reference"] is True and "model\\.layers\\.46" in skip["text"]
    status = {f["file"]: f["status"] for f in doc["files"]}
    assert status["broken.py"] == "not compared: Python syntax error at line 1 (invalid syntax)"
    assert status["blob.py"] == "not read: binary content (NUL bytes), not diffed"
    assert doc["loading_code"]["auto_map"] is True and doc["loading_code"]["files"] == []
    assert doc["summary"]["statements"][-1] == DISCLAIMER == doc["disclaimer"]


def test_against_a_file_and_unknown_references_end_in_one_line(cli, copied, tmp_path):
    reference = tmp_path / "ref.py"
    reference.write_text("def acme_only(y):\n    return y * 3 + 1\n")
    doc = code_json(cli, copied / "modeling_acme_moe.py", "--against", reference)
    assert [(m["name"], m["identical"]) for m in doc["matches"]] == [("acme_only", False)]
    assert doc["matches"][0]["similarity"] > 0.8
    before = sorted(tmp_path.glob("results/*"))
    code, stdout, stderr = cli("code", copied, "--against", "no_such_family")
    assert code == 2 and stdout == "" and re.fullmatch(
        r"solarforensics: error: transformers has no model family 'no_such_family' \(.*\)\n", stderr)
    assert sorted(tmp_path.glob("results/*")) == before  # nothing half-written
    notes = tmp_path / "notes.txt"
    notes.write_text("not code\n")
    code, _, stderr = cli("code", copied, "--against", notes)
    assert code == 2 and stderr.startswith(f"solarforensics: error: --against {notes} is not a Python file")
    (tmp_path / "refs").mkdir()
    (tmp_path / "refs" / "bad.py").write_text("class (:\n")
    doc = code_json(cli, copied, "--against", tmp_path / "refs")
    assert "reference bad.py: not compared: Python syntax error at line 1 (invalid syntax)" in doc["warnings"]


def test_the_solar_replica_is_loaded_by_transformers_solar_open_code(cli, hub_server):
    hub_server(replica_store())
    code, stdout, stderr = cli("code", "solar", "--against", "glm4_moe")
    assert code == 0, stderr
    assert "Shared code is about code, not weights" in stdout and "GLM4 & ZhipuAI" in stdout
    doc = read_document(next(__import__("pathlib").Path("results").glob("code-*.json")))
    assert doc["replica"] is True
    assert doc["loading_code"]["model_type"] == "solar_open" and doc["loading_code"]["files"]
    assert doc["rules"] == []  # transformers' solar_open sets _keys_to_ignore_on_load_unexpected = None
    assert any(r["value"] == "46" or r["value"] == "92" for r in doc["reference_rules"])
    assert doc["identical_count"] > 10 and doc["sources"][0]["resolved_commit"]
