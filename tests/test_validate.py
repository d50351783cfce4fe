"""`validate` beyond the local folders: the zoo read over HTTP from a local Hub, and the verdict thresholds fitted
on the training split written back into a thresholds file (comments kept) that `provenance` then runs with."""

import json
import shutil
import tomllib
from pathlib import Path

import pytest

import solarforensics.cli.zoo  # noqa: F401 - registers `zoo build` and `validate`
from solarforensics.datafiles import config_path


@pytest.fixture(scope="module")
def micro_zoo(tmp_path_factory) -> Path:
    from solarforensics.zoo.build import build_zoo

    zoo = tmp_path_factory.mktemp("validate") / "micro"
    build_zoo(zoo, "micro", seed=3)
    return zoo


def _validate(cli, zoo: Path, tmp_path: Path, *extra) -> dict:
    code, out, err = cli("validate", "--zoo", zoo, "--no-peer", "--permutations", "99", "--json",
                         "--out", tmp_path / "v.json", *extra)
    assert code == 0, err
    return json.loads(out)


def test_the_zoo_read_through_a_local_hub_gives_the_same_verdicts(cli, micro_zoo, tmp_path):
    local = _validate(cli, micro_zoo, tmp_path)
    hub = _validate(cli, micro_zoo, tmp_path, "--via-hub")
    assert local["zoo"]["read_through"] == "local folders"
    assert hub["zoo"]["read_through"] == "a local Hub server (HTTP range reads)"
    assert [(p["a"], p["b"], p["verdict"]) for p in hub["pairs"]] == [(p["a"], p["b"], p["verdict"])
                                                                       for p in local["pairs"]]
    for pair in hub["pairs"]:
        assert 0 < pair["bytes"] <= 1.05 * pair["planned_bytes"] + 64 * 1024  # tensors + headers, nothing more


def test_fitted_thresholds_are_written_back_with_comments_kept(cli, micro_zoo, tmp_path):
    thresholds = tmp_path / "verdict.toml"
    shutil.copy(config_path("verdict.toml"), thresholds)
    comments = [line for line in thresholds.read_text().splitlines() if line.startswith("#")]
    doc = _validate(cli, micro_zoo, tmp_path, "--thresholds", thresholds, "--write-thresholds")
    fitted = doc["thresholds"]["fitted"]
    assert doc["thresholds"]["written"] is True and doc["thresholds"]["file"] == str(thresholds)
    written = tomllib.loads(thresholds.read_text())
    assert written["status"] == "fitted" and "grid fit on 2 training pairs" in written["source"]
    assert written["derived"] == fitted["derived"] and written["independent"] == fitted["independent"]
    assert [line for line in thresholds.read_text().splitlines() if line.startswith("#")] == comments
    assert any("Written to" in s for s in doc["summary"]["statements"])

    code, out, err = cli("provenance", micro_zoo / "base", micro_zoo / "ft", "--thresholds", thresholds, "--json",
                         "--out", tmp_path / "p.json")
    assert code == 0, err
    used = json.loads(out)["thresholds"]
    assert used["status"] == "fitted" and used["derived"] == fitted["derived"]


def test_the_default_thresholds_file_is_left_alone_without_the_flag(cli, micro_zoo, tmp_path):
    before = config_path("verdict.toml").read_bytes()
    doc = _validate(cli, micro_zoo, tmp_path)
    assert doc["thresholds"]["written"] is False and config_path("verdict.toml").read_bytes() == before
    assert any("is not rewritten (--write-thresholds does)" in s for s in doc["summary"]["statements"])


def test_a_malformed_thresholds_file_is_one_line_and_untouched(cli, micro_zoo, tmp_path):
    thresholds = tmp_path / "verdict.toml"
    thresholds.write_text("status = 'x'\n[derived]\nlog10_p = -6.0\n")
    code, _, err = cli("validate", "--zoo", micro_zoo, "--no-peer", "--thresholds", thresholds, "--write-thresholds")
    assert code != 0 and len(err.strip().splitlines()) == 1 and "malformed" in err
    assert thresholds.read_text() == "status = 'x'\n[derived]\nlog10_p = -6.0\n"


def test_the_zoo_is_deterministic_from_its_seed(micro_zoo, tmp_path):
    from solarforensics.zoo.build import build_zoo

    again = tmp_path / "again"
    build_zoo(again, "micro", seed=3)
    other = tmp_path / "other-seed"
    build_zoo(other, "micro", seed=4)
    files = sorted(p.relative_to(micro_zoo) for p in micro_zoo.rglob("*.safetensors"))
    assert len(files) == 8
    assert all((micro_zoo / f).read_bytes() == (again / f).read_bytes() for f in files)
    assert all((micro_zoo / f).read_bytes() != (other / f).read_bytes() for f in files)
