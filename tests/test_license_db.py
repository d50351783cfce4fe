"""`license` against a maintained licence database (ScanCode's LicenseDB from PyPI): which licence a text starts
from, the clause diff against that one, and `license --history` over a repo's revisions."""

import json

import pytest
from gitrepos import commit, init

import solarforensics.cli.evidence  # noqa: F401  (registers the commands)
from solarforensics.checkpoints import build_checkpoint
from solarforensics.evidence.license_db import load_database, starts_from
from solarforensics.replicas.store import replica_store

DB = load_database()
APPENDED = "You may not use the Model or its outputs to train any other large language model."


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def model_with(folder, licence: str):
    build_checkpoint(folder, "llama", seed=0, tokenizer=False, num_shards=1)
    (folder / "LICENSE").write_text(licence, encoding="utf-8")
    return folder


def license_json(cli, *args) -> dict:
    code, stdout, stderr = cli("license", *args, "--json")
    assert code == 0, stderr
    return json.loads(stdout)


@pytest.mark.parametrize("key, spdx", [("llama-2-license-2023", "LicenseRef-scancode-llama-2-license-2023"),
                                       ("bsd-new", "BSD-3-Clause"), ("mit", "MIT"),
                                       ("bigscience-open-rail-m", "LicenseRef-scancode-bigscience-open-rail-m")])
def test_a_database_licence_is_recognised_as_itself(key, spdx):
    best = starts_from(DB.licences[key].text, DB)[0]
    assert (best["key"], best["spdx"], best["similarity"], best["contained"]) == (key, spdx, 1.0, 1.0)


def test_a_model_licence_with_an_appended_clause_starts_from_it_and_is_not_verbatim(cli, tmp_path):
    llama = DB.licences["llama-2-license-2023"].text
    doc = license_json(cli, model_with(tmp_path / "m", llama.rstrip() + "\n\n" + APPENDED + "\n"))
    assert doc["starts_from"] == "llama-2-license-2023" and doc["against"] == "llama-2-license-2023"
    assert doc["starts_from_similarity"] > 0.97 and doc["verbatim"] is False and doc["classification"] == "other"
    assert [t["text"] for t in doc["added_terms"]] == [APPENDED]
    assert doc["license_db"]["source"].startswith("ScanCode LicenseDB") and doc["license_db"]["licences"] > 1000
    assert doc["summary"]["statements"][0].startswith(
        "LICENSE starts from the Llama 2 Community License Agreement 2023 (llama-2-license-2023, SPDX "
        "LicenseRef-scancode-llama-2-license-2023)")
    plain = license_json(cli, model_with(tmp_path / "plain", llama))
    assert plain["verbatim"] is True and plain["added_terms"] == []


def test_text_that_is_no_known_licence_starts_from_nothing(cli, tmp_path):
    doc = license_json(cli, model_with(tmp_path / "m", "Do what you like with it, but say thanks.\n"))
    assert doc["starts_from"] is None and doc["starts_from_candidates"] == [] and doc["against"] == "apache-2.0"
    assert doc["classification"] == "other" and doc["verbatim"] is False


def test_licence_history_of_the_solar_replica_reads_the_release_text(cli, hub_server):
    hub_server(replica_store())
    doc = license_json(cli, "solar", "--history")
    release, renamed = doc["history"]
    assert (release["date"][:10], release["licence_title"], release["starts_from"]) == (
        "2025-12-31", "Solar-Apache License", "apache-2.0")
    assert release["verbatim"] is False and "use restriction" in release["effects"]
    assert any("Strategic Competitor" in t["text"] for t in release["added_terms"])
    assert (renamed["date"][:10], renamed["licence_title"]) == ("2026-01-16", "Upstage Solar License")
    assert "-# Solar-Apache License\n" in renamed["diff_vs_previous"] and \
        "+# Upstage Solar License\n" in renamed["diff_vs_previous"]
    assert not any("Strategic Competitor" in t["text"] for t in renamed["added_terms"])
    assert any(s.startswith("2025-12-31 ") for s in doc["summary"]["statements"])
    code, stdout, _ = cli("license", "solar", "--history")
    assert code == 0 and "Licence text at every revision where it changed" in stdout and "Solar-Apache" in stdout


def test_licence_history_follows_a_deletion_and_a_binary_licence(cli, tmp_path, hub_server):
    folder = init(tmp_path / "hub" / "acme" / "m")
    commit(folder, "mit", "2025-01-01T00:00:00Z", {"LICENSE": DB.licences["mit"].text})
    commit(folder, "binary", "2025-02-01T00:00:00Z", {"LICENSE": b"\x00\x01\x02"})
    commit(folder, "gone", "2025-03-01T00:00:00Z", {"LICENSE": None, "README.md": "# m\n"})
    hub_server(tmp_path / "hub")
    code, stdout, stderr = cli("license", "acme/m", "--history", "--json")
    assert code == 2 and stdout == "" and stderr.startswith("solarforensics: error:")  # no licence file now
    from solarforensics.evidence.license_history import licence_history

    records, warnings, _ = licence_history("acme/m")
    assert [(r["starts_from"], r["oid"] is None) for r in records] == [("mit", False), (None, True)]
    assert warnings[0].startswith("LICENSE at ") and warnings[0].endswith("not compared: binary content (NUL bytes), "
                                                                          "not diffed")
