"""Local folders and single files read exactly what safetensors reads, with positioned reads, and refuse what we
never load."""

import json

import pytest
import torch
from safetensors.torch import save_file

from solarforensics.checkpoints import build_checkpoint, shard_files
from solarforensics.errors import FormatError, NotFoundError, SpecError, UnsafeFormatError
from solarforensics.sources.spec import open_source, parse_hub_spec


def test_a_sharded_folder_reads_every_tensor_exactly(tmp_path):
    folder = build_checkpoint(tmp_path / "m", "llama", seed=3, num_shards=3, tokenizer=False)
    source = open_source(str(folder))
    assert len(shard_files(folder)) == 3 and source.config["model_type"] == "llama"
    got = source.read_tensors(list(source.tensors))
    from safetensors import safe_open

    for shard in shard_files(folder):
        with safe_open(str(shard), "pt") as handle:
            for name in handle.keys():
                assert torch.equal(handle.get_tensor(name).view(torch.uint8), got[name].view(torch.uint8))
    assert source.provenance.kind == "local" and source.provenance.bytes_transferred > 0


def test_a_single_file_is_a_source(tmp_path):
    save_file({"w": torch.arange(4, dtype=torch.float32)}, str(tmp_path / "x.safetensors"))
    source = open_source(str(tmp_path / "x.safetensors"))
    assert source.read_tensors(["w"])["w"].tolist() == [0, 1, 2, 3]
    assert source.config is None


def test_pickle_files_are_refused_without_being_opened(tmp_path):
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04garbage")
    with pytest.raises(UnsafeFormatError, match="never unpickles"):
        open_source(str(tmp_path / "pytorch_model.bin"))
    with pytest.raises(UnsafeFormatError):
        open_source(str(tmp_path))
    with pytest.raises(UnsafeFormatError):
        open_source("model.pt")


def test_an_index_that_lies_about_a_shard_is_refused(tmp_path):
    folder = build_checkpoint(tmp_path / "m", "llama", seed=3, num_shards=2, tokenizer=False)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    name = next(iter(index["weight_map"]))
    shards = sorted(set(index["weight_map"].values()))
    index["weight_map"][name] = next(s for s in shards if s != index["weight_map"][name])
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(FormatError, match="index maps"):
        open_source(str(folder))


def test_a_truncated_shard_is_one_clear_error(tmp_path):
    save_file({"w": torch.zeros(1000)}, str(tmp_path / "model.safetensors"))
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[:-100])
    with pytest.raises(FormatError, match="beyond the end"):
        open_source(str(tmp_path))


def test_specs_are_understood_or_refused_clearly(tmp_path):
    assert parse_hub_spec("hf:owner/name@v1.0") == ("owner/name", "v1.0")
    assert parse_hub_spec("owner/name") == ("owner/name", None)
    assert parse_hub_spec("not a spec") is None
    with pytest.raises(SpecError, match="cannot understand"):
        open_source("nonsense")
    with pytest.raises(SpecError, match="empty"):
        open_source("  ")
    with pytest.raises(NotFoundError, match="no such file"):
        open_source(str(tmp_path / "absent.safetensors"))
    with pytest.raises(NotFoundError, match="no safetensors weights"):
        (tmp_path / "empty").mkdir()
        open_source(str(tmp_path / "empty"))
