"""`license`: licence files against the canonical Apache-2.0, section by section, and the card's declared licence."""

import io
import json
import re
import textwrap
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator
from rich.console import Console

import solarforensics.cli.evidence  # noqa: F401  (registers arch/tokenizer/license on the app)
from solarforensics.checkpoints import build_checkpoint
from solarforensics.datafiles import reference_path
from solarforensics.render.terminal import render_terminal
from solarforensics.results.document import new_document, read_document, schema

FIXTURES = Path(__file__).parent / "fixtures" / "licenses"
APACHE = reference_path("licenses", "apache-2.0.txt").read_text(encoding="utf-8")
SOLAR = (FIXTURES / "upstage-solar-license-2026-01-16.txt").read_text(encoding="utf-8")
SECTION_IDS = ["title", "1", "2", "3", "4", "5", "6", "7", "8", "9", "appendix"]
DISCLAIMER = "This is a textual comparison with the canonical Apache License 2.0 text, not legal advice."


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    """Default result files (results/...) land in the test's folder, not the checkout."""
    monkeypatch.chdir(tmp_path)


def license_schema_errors(doc: dict) -> list[str]:
    """The document against the common schema and the licence keys' own definition."""
    full = schema()
    kind = Draft202012Validator({"$ref": "#/$defs/license", "$defs": full["$defs"]})
    return [e.message for e in Draft202012Validator(full).iter_errors(doc)] + [e.message for e in kind.iter_errors(doc)]


def repo(folder: Path, licence: str | bytes | None, card: str | None = None, name: str = "LICENSE") -> Path:
    build_checkpoint(folder, "llama", seed=0, tokenizer=False, num_shards=1)
    if licence is not None:
        path = folder / name
        path.write_bytes(licence if isinstance(licence, bytes) else licence.encode("utf-8"))
    if card is not None:
        (folder / "README.md").write_text(f"---\n{card}\n---\n# A model\n", encoding="utf-8")
    return folder


def license_json(cli, *args) -> dict:
    code, stdout, stderr = cli("license", *args, "--json")
    assert code == 0, stderr
    return json.loads(stdout)


@pytest.fixture
def licence_hub(tmp_path, hub_server) -> Path:
    root = tmp_path / "hub"
    repo(root / "demo" / "apache", APACHE)
    repo(root / "demo" / "solar", SOLAR)
    repo(root / "demo" / "glm", None)
    hub_server(root)
    return root


def test_the_canonical_text_is_apache_verbatim(cli, licence_hub, tmp_path):
    out = tmp_path / "apache.json"
    doc = license_json(cli, "demo/apache", "--out", out)
    assert read_document(out) == doc and license_schema_errors(doc) == []
    assert doc["classification"] == "apache-2.0-verbatim" and doc["verbatim"] is True and doc["renamed"] is False
    assert [s["id"] for s in doc["sections"]] == SECTION_IDS
    assert {s["status"] for s in doc["sections"]} == {"identical"}
    assert doc["added"] == [] and doc["modified"] == [] and doc["removed"] == [] and doc["effects"] == []
    assert doc["title"] == "Apache License Version 2.0, January 2004 http://www.apache.org/licenses/"
    assert doc["declared"] == {"license": None, "license_name": None, "license_link": None, "source": None}
    assert doc["declared_matches"] is None and doc["declared_note"] == "the model card declares no licence"
    assert doc["reference"]["sha256"] == "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"
    assert doc["summary"]["statements"][-1] == DISCLAIMER
    assert doc["sources"][0]["kind"] == "hub" and doc["sources"][0]["resolved_commit"]


# sources/hub.py builds `card_data` with dict(info.card_data), which raises KeyError for any README front matter;
# `info.card_data.to_dict()` fixes it. Until then a Hub repo with a model card cannot be opened at all.


def test_the_card_of_a_hub_repo_comes_from_its_model_info(cli, tmp_path, hub_server):
    repo(tmp_path / "hub" / "demo" / "apache", APACHE, "license: apache-2.0\nlicense_link: LICENSE")
    hub_server(tmp_path / "hub")
    doc = license_json(cli, "demo/apache")
    assert doc["declared"] == {"license": "apache-2.0", "license_name": None, "license_link": "LICENSE",
                               "source": "model card metadata (Hub cardData)"}
    assert doc["declared_matches"] is True


def test_solar_licence_is_apache_with_naming_and_attribution_terms(cli, licence_hub, tmp_path):
    doc = license_json(cli, "demo/solar")
    assert license_schema_errors(doc) == []
    assert doc["classification"] == "apache-2.0-plus-terms" and doc["verbatim"] is False and doc["renamed"] is True
    assert doc["title"] == "Upstage Solar License" and doc["bytes"] == 12_546
    assert doc["identical_sections"] == ["1", "2", "3", "5", "7", "8", "9"]
    assert doc["modified"] == ["title", "4", "6", "appendix"] and doc["removed"] == []
    section = {s["id"]: s for s in doc["sections"]}
    assert section["4"]["added"] == [
        '(e) If You distribute or make available a Derivative Work that is an artificial intelligence model created, '
        'trained, fine-tuned, or otherwise improved using the Work (the "Derivative AI Model"), You must adhere to the '
        'following conditions:',
        '(i) The name of such Derivative AI Model must begin with "Solar" (e.g., "Solar-MyModel-v1"); and',
        '(ii) You must prominently display the phrase "Built with Solar" in any related websites, user interfaces, or '
        'documentation associated with the Derivative AI Model; and',
        '(iii) You must provide a copy of this License, including the original copyright notice and NOTICE file as '
        'included in the distribution of the Works, alongside the Derivative AI Model.',
    ]
    assert section["4"]["removed"] == [] and section["4"]["changed"] == []
    assert section["6"]["added"] == [
        'Any use of the "Solar" name under this License must not imply any sponsorship, endorsement, certification, '
        'or official relationship with the Licensor, nor mislead users into believing that a Derivative AI Model is an '
        'official product of the Licensor.']
    assert section["6"]["changed"][0]["inserted"].endswith("and as explicitly required for attribution in Section 4(e) "
                                                           "of this License.")
    assert section["title"]["removed"] == ["Apache License Version 2.0, January 2004 http://www.apache.org/licenses/"]
    assert section["title"]["added"][:2] == ["Upstage Solar License", "Preamble"]
    assert [e["effect"] for e in doc["effects"]] == [
        "naming requirement", "attribution / display", "use restriction", "trademark / endorsement",
        "AI-model obligations", "licence propagation"]
    carded = license_json(cli, repo(tmp_path / "solar", SOLAR, "license: other\nlicense_name: upstage-solar-license"))
    assert carded["declared"] == {"license": "other", "license_name": "upstage-solar-license", "license_link": None,
                                  "source": "README.md front matter"}
    assert carded["declared_matches"] is True
    claimed = license_json(cli, repo(tmp_path / "says-apache", SOLAR, "license: apache-2.0"))
    assert claimed["declared_matches"] is False
    assert claimed["declared_note"] == "the card says apache-2.0 but the text adds, changes or removes terms"


def test_the_terminal_view_says_it_is_not_legal_advice(cli, licence_hub):
    code, stdout, _ = cli("license", "demo/solar")
    assert code == 0
    assert "Textual comparison — not legal advice" in stdout and DISCLAIMER in stdout
    assert re.search(r"§4 +Redistribution +modified +10 +4 +0 +0", stdout)
    assert re.search(r"naming requirement +derived works or models must carry", stdout)


def apache_with(old: str, new: str) -> str:
    assert APACHE.count(old) == 1, old
    return APACHE.replace(old, new)


def markdown_rewrap(text: str) -> str:
    """The same words as Markdown: escaped numbered headings, 50-column wrapping, CRLF line ends."""
    out = []
    for paragraph in re.split(r"\n\s*\n", text):
        words = " ".join(paragraph.split())
        if re.match(r"\d\. ", words):
            words = "## " + words.replace(".", "\\.", 1)
        out.append(textwrap.fill(words, 50))
    return "\r\n\r\n".join(out) + "\r\n"


CLAUSE = ('(e) Any model trained or fine-tuned from the Work must carry "Acme" at the start of its name and must '
          'display "Powered by Acme" in its documentation.')
VARIANTS = {
    "added naming clause": (
        apache_with("      You may add Your own copyright statement", f"      {CLAUSE}\n\n      You may add Your own copyright statement"),
        {"classification": "apache-2.0-plus-terms", "modified": ["4"], "removed": [], "added": [CLAUSE]}),
    "modified clause": (
        apache_with("liable to You for damages, including", "liable to You for damages above EUR 100, including"),
        {"classification": "apache-2.0-plus-terms", "modified": ["8"], "removed": [], "added": []}),
    "removed section": (
        re.sub(r"   5\. Submission of Contributions\..*?(?=   6\. Trademarks)", "", APACHE, flags=re.S),
        {"classification": "apache-2.0-plus-terms", "modified": [], "removed": ["5"], "added": []}),
    "markdown re-wrap": (
        markdown_rewrap(APACHE), {"classification": "apache-2.0-verbatim", "modified": [], "removed": [], "added": []}),
    "filled appendix": (
        apache_with("Copyright [yyyy] [name of copyright owner]", "Copyright 2025 Zhipu AI"),
        {"classification": "apache-2.0-verbatim", "modified": ["appendix"], "removed": [],
         "added": ["Copyright 2025 Zhipu AI"]}),
    "mit": ((FIXTURES / "mit.txt").read_text(), {"classification": "other", "starts_from": "mit", "against": "mit",
                                                  "verbatim": True, "added_terms": []}),
    "terms after the appendix": (
        APACHE + "\nAdditional terms: You may not use the Work for military purposes.\n",
        {"classification": "apache-2.0-plus-terms", "verbatim": False, "modified": ["appendix"],
         "added_terms": [{"section": "appendix", "text": "Additional terms:", "kind": "new clause"},
                         {"section": "appendix", "text": "You may not use the Work for military purposes.",
                          "kind": "new clause"}]}),
    "terms after END OF TERMS": (
        apache_with("END OF TERMS AND CONDITIONS", "END OF TERMS AND CONDITIONS\n\n   Commercial use requires a "
                                               "paid licence from the Licensor."),
        {"classification": "apache-2.0-plus-terms", "verbatim": False, "modified": ["9"]}),
    "terms before the title": (
        "Use of this model for surveillance is prohibited.\n\n" + APACHE,
        {"classification": "apache-2.0-plus-terms", "verbatim": False, "modified": ["title"]}),
    "appendix boilerplate extended": (
        apache_with("you may not use this file except in compliance with the License.",
                    "you may not use this file except in compliance with the License and the Acme Use Policy."),
        {"classification": "apache-2.0-plus-terms", "verbatim": False, "modified": ["appendix"]}),
    "not a licence": ("# tiny-model\n\nA small model for tests.\n\n1. Install it.\n2. Run it.\n",
                      {"classification": "other", "identical_sections": []}),
    "empty": ("", {"classification": "other"}),
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_crafted_variants_and_texts_that_are_not_apache(cli, tmp_path, variant):
    text, expected = VARIANTS[variant]
    doc = license_json(cli, repo(tmp_path / "model", text))
    assert {key: doc[key] for key in expected} == expected
    if "verbatim" not in expected:
        assert doc["verbatim"] is (expected["classification"] == "apache-2.0-verbatim")
    assert license_schema_errors(doc) == []
    if variant == "added naming clause":
        assert [e["effect"] for e in doc["effects"]] == ["naming requirement", "attribution / display",
                                                         "AI-model obligations"]
    if variant == "modified clause":
        changed = next(s for s in doc["sections"] if s["id"] == "8")["changed"]
        assert [(c["deleted"], c["inserted"]) for c in changed] == [("damages,", "damages above EUR 100,")]
    if variant == "removed section":
        assert doc["identical_sections"] == ["1", "2", "3", "4", "6", "7", "8", "9"]
    if variant == "mit":
        assert doc["starts_from_spdx"] == "MIT" and doc["title"] == "MIT License" and doc["starts_from_similarity"] > 0.95
    if variant.startswith("terms after the appendix"):
        assert [e["effect"] for e in doc["effects"]] == ["use restriction"]


def test_card_and_text_disagreements_are_stated(cli, tmp_path):
    mit = license_json(cli, repo(tmp_path / "mit", (FIXTURES / "mit.txt").read_text(), "license: mit"))
    assert mit["declared_matches"] is True
    assert mit["declared_note"] == "the card says mit and the text is the MIT License word for word"
    against = license_json(cli, repo(tmp_path / "mit-vs-apache", (FIXTURES / "mit.txt").read_text(), "license: mit"),
                           "--against", "apache-2.0")
    assert against["declared_matches"] is None and against["removed"] == [str(n) for n in range(1, 10)]
    assert against["declared_note"] == "the card says mit; the text was compared with Apache-2.0 only, so this is not checked"
    assert mit["declared"]["source"] == "README.md front matter"
    other = license_json(cli, repo(tmp_path / "other", APACHE, "license: other\nlicense_name: my-own"))
    assert other["declared_matches"] is False
    broken = license_json(cli, repo(tmp_path / "broken", APACHE, "license: [unclosed"))
    assert broken["declared"]["source"] is None and broken["declared_matches"] is None
    assert broken["warnings"][0].startswith("README.md front matter is not valid YAML")
    british = license_json(cli, repo(tmp_path / "british", APACHE, name="LICENCE.md"))
    assert british["file"] == "LICENCE.md" and british["verbatim"] is True


def test_missing_binary_huge_and_unknown_reference_end_in_one_line(cli, licence_hub, tmp_path):
    code, stdout, stderr = cli("license", "demo/glm")
    assert code == 2 and stdout == ""
    assert stderr == ("solarforensics: error: demo/glm has no licence file (LICENSE*, LICENCE*) "
                      "(files there: config.json, model.safetensors)\n")
    code, _, stderr = cli("license", repo(tmp_path / "glm", None, "license: mit"))
    assert stderr == ("solarforensics: error: glm has no licence file (LICENSE*, LICENCE*); its model card "
                      "declares license: mit (files there: README.md, config.json, model.safetensors)\n")
    code, _, stderr = cli("license", repo(tmp_path / "nul", b"Apache License\x00\x00\x01"))
    assert code == 2 and stderr == "solarforensics: error: nul/LICENSE is binary (it holds NUL bytes), not licence text\n"
    code, _, stderr = cli("license", repo(tmp_path / "latin", b"Licen\xe7a \xff\xfe"))
    assert code == 2 and stderr == "solarforensics: error: latin: LICENSE is not UTF-8 text\n"
    code, _, stderr = cli("license", repo(tmp_path / "huge", "x" * ((1 << 20) + 1)))
    assert code == 2 and "over the 1,048,576-byte limit for LICENSE" in stderr and stderr.count("\n") == 1
    code, _, stderr = cli("license", "demo/apache", "--against", "no-such-licence")
    assert code == 2 and stderr.startswith("solarforensics: error: licence 'no-such-licence' is not in the licence "
                                           "database (ScanCode LicenseDB") and stderr.count("\n") == 1


def test_the_sample_document_follows_the_contract_and_renders():
    path = FIXTURES / "sample-license-document.json"
    doc = read_document(path)
    assert license_schema_errors(doc) == [] and doc["kind"] == "license"
    console = Console(file=io.StringIO(), width=200, color_system=None)
    render_terminal(doc, console)
    text = console.file.getvalue()
    assert re.search(r"§4 +Redistribution +modified +10 +4 +0 +0", text) and DISCLAIMER in text


def test_without_a_licence_file_the_case_runner_still_gets_a_document(tmp_path):
    from solarforensics.evidence.license import license_report

    fields = license_report(str(repo(tmp_path / "glm", None, "license: mit")), require_file=False)
    assert (fields["file"], fields["classification"], fields["verbatim"], fields["sections"]) == (None, None, False, [])
    assert fields["declared"]["license"] == "mit" and fields["declared_matches"] is None
    assert license_schema_errors(new_document("license", ["solarforensics", "license", "glm"], **fields)) == []
    assert fields["summary"]["statements"] == ["The repo has no licence file (LICENSE*, LICENCE*).",
                                               "Declared on the card: license: mit.", DISCLAIMER]
