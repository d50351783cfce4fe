"""Which files of a checkpoint hold the weights, decided the same way for a local folder and a Hub repo."""

from collections.abc import Callable

from solarforensics.errors import FormatError, NotFoundError, UnsafeFormatError
from solarforensics.sources.safetensors_format import TensorRef

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


class GGUFOnlyError(NotFoundError):
    """A folder or repo whose only weights are .gguf files: the caller opens one with the GGUF source."""

    def __init__(self, where: str, gguf_files: list[str]):
        self.gguf_files = gguf_files
        shown = ", ".join(gguf_files[:8]) + (", ..." if len(gguf_files) > 8 else "")
        super().__init__(f"{where}: no safetensors weights, but {len(gguf_files)} .gguf files ({shown})",
                         hint=f"name one: {where}/{gguf_files[0]}")


def refuse_pickle(name: str) -> None:
    raise UnsafeFormatError(
        f"{name} is a pickle-based checkpoint; solarforensics never unpickles (it can run arbitrary code)",
        "convert it to safetensors or use a repo that publishes .safetensors",
    )


def weight_files(files: list[str], read_json: Callable[[str], object], where: str) -> tuple[list[str], dict | None]:
    """The safetensors files to read and the index's weight map (None without an index)."""
    names = set(files)
    if INDEX in names:
        index = read_json(INDEX)
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise FormatError(f"{where}: {INDEX} has no valid weight_map")
        shards = sorted(set(weight_map.values()))
        absent = [s for s in shards if s not in names]
        if absent:
            raise NotFoundError(f"{where}: {INDEX} names shard {absent[0]} which is not in the repo")
        return shards, weight_map
    if SINGLE in names:
        return [SINGLE], None
    safetensors = sorted(f for f in files if f.endswith(".safetensors"))
    if safetensors:
        return safetensors, None
    ggufs = sorted(f for f in files if f.endswith(".gguf"))
    if ggufs:
        raise GGUFOnlyError(where, ggufs)
    pickles = sorted(f for f in files if f.endswith(PICKLE_SUFFIXES))
    if pickles:
        refuse_pickle(f"{where}/{pickles[0]}")
    shown = ", ".join(sorted(files)[:8]) or "no files"
    raise NotFoundError(f"{where}: no safetensors weights found (files: {shown})")


def check_index(weight_map: dict | None, tensors: dict[str, TensorRef], where: str) -> None:
    """Every tensor the index names must be in the shard it names: a lying index means wrong bytes later."""
    if weight_map is None:
        return
    for name, shard in weight_map.items():
        ref = tensors.get(name)
        if ref is None:
            raise FormatError(f"{where}: index maps {name!r} to {shard} but no shard header has it")
        if ref.file != shard:
            raise FormatError(f"{where}: index maps {name!r} to {shard} but it is in {ref.file}")


def merge_headers(headers: dict[str, dict[str, TensorRef]], where: str) -> dict[str, TensorRef]:
    tensors: dict[str, TensorRef] = {}
    for shard in sorted(headers):
        for name, ref in headers[shard].items():
            if name in tensors:
                raise FormatError(f"{where}: tensor {name!r} appears in both {tensors[name].file} and {shard}")
            tensors[name] = ref
    return tensors
