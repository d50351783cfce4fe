"""Documentation a user can follow: the project carries its own methods page, cites its sources as the public knows
them, shows flags as flags, lists the local Hub's faults, suggests a near alias, and tells the Hub its version."""

import re
import tomllib
from pathlib import Path

import pytest

from solarforensics import __version__
from solarforensics.localhub.faults import FAULT_KINDS, FaultRule

ROOT = Path(__file__).resolve().parents[1]
OUTSIDE = re.compile(r"(\.\./|\b)shared/|/work/|seeds?/\d")


def test_the_readme_sends_readers_only_to_files_in_the_repository():
    readme = (ROOT / "README.md").read_text()
    assert not OUTSIDE.search(readme), OUTSIDE.search(readme)
    assert "docs/methods.md" in readme
    methods = (ROOT / "docs" / "methods.md").read_text()
    for subject in ("null", "shuffle", "reference null", "within-model baseline", "CKA", "matching", "Fisher",
                    "distillation", "independence is only shown against"):
        assert subject.lower() in methods.lower(), subject
    assert not OUTSIDE.search(methods)


def test_every_claim_cites_a_source_the_public_can_find():
    ledger = tomllib.loads((ROOT / "reference" / "claims.toml").read_text())
    for claim in ledger["claim"]:
        where = claim["where"]
        assert set(where) >= {"repo", "file", "date"}, claim["id"]
        text = " ".join(str(v) for v in where.values())
        assert not OUTSIDE.search(text) and "seed" not in text.lower(), (claim["id"], where)
    assert not OUTSIDE.search((ROOT / "reference" / "claims.toml").read_text())


@pytest.mark.parametrize("command", [(), ("compare",), ("provenance",), ("hub", "serve"), ("inspect",)])
def test_help_shows_boolean_flags_without_a_value(cli, command):
    code, out, _ = cli(*command, "--help")
    assert code == 0
    assert "<bool>" not in out and "BOOLEAN" not in out
    flags = re.findall(r"^\s+(--[a-z-]+)(.*)$", out, flags=re.M)
    assert flags and all(not rest.startswith((" <bool", " BOOL")) for _, rest in flags)


def test_hub_serve_help_lists_every_fault_kind_and_parameter(cli):
    code, out, _ = cli("hub", "serve", "--help")
    text = " ".join(out.split())
    assert code == 0
    for kind in FAULT_KINDS:
        assert f"{kind}:" in text, kind
    for name in FaultRule.__dataclass_fields__:
        if FaultRule.__dataclass_fields__[name].init and name not in ("kind", "pattern", "count"):
            assert f"{name}:" in text, name


def test_an_alias_typo_gets_a_suggestion_like_a_command_typo(cli):
    code, _, err = cli("compar")
    assert code == 2 and "Did you mean 'compare'?" in err
    code, _, err = cli("inspect", "solr")
    assert code == 2 and err == ("solarforensics: error: unknown model 'solr' (did you mean 'solar'? "
                                 "(see `solarforensics models`))\n")
    code, _, err = cli("inspect", "zzzzqqq")  # nothing near: the usual answer
    assert code == 2 and "cannot understand model spec" in err


def test_the_user_agent_sent_to_the_hub_carries_the_version(cli, hub_server, derived_pair_root, tmp_path):
    server = hub_server(derived_pair_root)
    code, _, err = cli("compare", "acme/a", "acme/b", "--tensors", "final-norm", "--permutations", "0",
                       "--out", tmp_path / "r.json")
    assert code == 0, err
    agents = {e["user_agent"] for e in server.stats()["log"]}
    assert agents and all(f"solarforensics/{__version__}" in (agent or "") for agent in agents), agents
