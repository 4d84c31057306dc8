"""The mapping engine on its own: patterns, expressions, table schema, registries, errors, writer."""

from __future__ import annotations

import json

import pytest
import torch

from vqtool.errors import MappingError, OutputExistsError
from vqtool.mapping import load_registry, plan_conversion
from vqtool.mapping import transforms
from vqtool.mapping.patterns import Pattern, evaluate
from vqtool.mapping.tables import Registry, parse_table
from vqtool.mapping.writer import parse_size, shard_tensors, write_tensors
from vqtool.mapping.plan import PlannedTensor


def test_pattern_matches_whole_names_and_formats_back():
    p = Pattern("blocks.{i}.attn.{j}.weight")
    assert p.match("blocks.12.attn.0.weight") == {"i": 12, "j": 0}
    assert p.match("blocks.12.attn.0.weight.extra") is None
    assert p.match("xblocks.1.attn.0.weight") is None
    assert p.match("blocks.01.attn.0.weight") is None  # leading zeros would not round-trip
    assert p.format({"i": 3, "j": 4}) == "blocks.3.attn.4.weight"


def test_expressions_are_whitelisted():
    assert evaluate("4 * b + r", {"b": 2, "r": 1}) == 9
    assert evaluate("range(0, n, n // k) if k else None", {"n": 30, "k": 15}) == list(range(0, 30, 2))
    assert evaluate("'a' if x == 1 else 'b'", {"x": 2}) == "b"
    for bad in ("__import__('os')", "x.__class__", "open('f')", "[y for y in x]"):
        with pytest.raises(MappingError):
            evaluate(bad, {"x": 1})


def test_tables_reject_bad_roles_and_kinds():
    with pytest.raises(MappingError, match="unknown role"):
        parse_table('kind = "canonical"\nfamily="f"\ncomponent="c"\n[[tensor]]\npattern="a"\nrole="attn.foo"', "t")
    with pytest.raises(MappingError, match="kind"):
        parse_table('family="f"', "t")


def test_registry_rejects_duplicate_tables():
    reg = Registry()
    text = 'kind = "format"\nfamily="f"\ncomponent="c"\nformat="x"\nidentity=true'
    reg.add(parse_table(text, "a.toml"))
    with pytest.raises(MappingError, match="duplicate"):
        reg.add(parse_table(text, "b.toml"))


def test_transform_registry_rejects_duplicates():
    with pytest.raises(MappingError, match="already registered"):
        transforms.register("chunk")(lambda inputs: inputs)


def test_chunk_and_cat_are_inverse():
    x = torch.arange(24.0).reshape(6, 4)
    parts = transforms.chunk([x], parts=3, dim=0)
    assert torch.equal(transforms.cat(parts, dim=0)[0], x)
    r = transforms.reorder_chunks([x], parts=3, order=[2, 0, 1])[0]
    back = transforms.reorder_chunks([r], parts=3, order=[1, 2, 0])[0]
    assert torch.equal(back, x)


def test_shipped_tables_load():
    reg = load_registry()
    assert ("wan", "transformer") in reg.canonical
    assert ("wan", "transformer", "diffusers") in reg.formats


def test_sizes_parse():
    assert parse_size("5GB") == 5 * 10**9 and parse_size("2GiB") == 2 * 2**30 and parse_size("123") == 123
    with pytest.raises(MappingError):
        parse_size("lots")


def test_shards_split_greedily_and_keep_big_tensors_alone():
    ts = [PlannedTensor(f"t{i}", (n,), "U8", ()) for i, n in enumerate([4, 4, 10, 1])]
    assert [[t.name for t in s] for s in shard_tensors(ts, 8)] == [["t0", "t1"], ["t2"], ["t3"]]


def test_writer_streams_shards_with_index_readable_by_safetensors(tmp_path):
    from safetensors.torch import load_file

    tensors = {f"w{i}": torch.randn(64, 8, generator=torch.Generator().manual_seed(i)).to(torch.bfloat16)
               for i in range(5)}
    planned = [PlannedTensor(n, tuple(t.shape), "BF16", ()) for n, t in tensors.items()]
    res = write_tensors(iter(tensors.items()), planned, str(tmp_path / "out"), basename="m", max_shard_size=2048,
                        config_json={"a": 1}, progress=False)
    assert len(res.files) == 3 and res.index
    index = json.loads(open(res.index).read())
    loaded = {}
    for f in res.files:
        loaded.update(load_file(f))
    assert set(index["weight_map"]) == set(tensors)
    assert all(torch.equal(loaded[n], t) for n, t in tensors.items())
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temp files left
    with pytest.raises(OutputExistsError):
        write_tensors(iter(tensors.items()), planned, str(tmp_path / "out"), basename="m", progress=False)
    # --overwrite with one shard removes the stale shard set
    write_tensors(iter(tensors.items()), planned, str(tmp_path / "out"), basename="m", overwrite=True, progress=False)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["config.json", "m.safetensors"]


def test_writer_refuses_tensors_that_differ_from_the_plan(tmp_path):
    planned = [PlannedTensor("a", (2,), "F32", ())]
    with pytest.raises(MappingError, match="plan"):
        write_tensors(iter([("a", torch.zeros(3))]), planned, str(tmp_path / "x.safetensors"), progress=False)
    assert not list(tmp_path.iterdir())


def test_conversion_streams_one_source_tensor_per_rename():
    from vqtool.mapping import iter_converted
    from vqtool.testing import DictStore
    from vqtool.testing.wan import build_transformer, to_format

    reads: list[str] = []

    class CountingStore(DictStore):
        def _read(self, info):
            reads.append(info.name)
            return super()._read(info)

    store = CountingStore(to_format(build_transformer("t2v").state_dict(), "original"))
    plan = plan_conversion(store, "diffusers")
    assert not reads  # planning reads headers only
    for n, _ in enumerate(iter_converted(store, plan), start=1):
        assert len(reads) == n  # nothing is read ahead of what is written
    assert sorted(reads) == sorted(store.keys())


def test_pattern_format_then_match_round_trips_any_indices():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    p = Pattern("decoder.up_blocks.{b}.resnets.{r}.conv1.weight")

    @settings(max_examples=200, deadline=None)
    @given(st.integers(0, 10**6), st.integers(0, 10**6))
    def check(b, r):
        assert p.match(p.format({"b": b, "r": r})) == {"b": b, "r": r}

    check()
