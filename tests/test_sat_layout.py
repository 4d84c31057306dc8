"""The SAT folder layout rules in vqtool.sat: what is read from where, and what is refused."""

from __future__ import annotations

import pytest
import torch

from vqtool.errors import InputError, MappingError, OutputExistsError
from vqtool.sat import COMPONENT_PREFIXES, TRANSFORMER_FILE, open_sat, write_transformer, write_vae
from vqtool.testing.cogvideox import MetaStore

PREFIX = COMPONENT_PREFIXES["transformer"]


def test_writer_puts_latest_last_and_wraps_module_and_state_dict(tmp_path):
    sd = {"time_embed.0.weight": torch.randn(4, 4)}
    path = write_transformer(tmp_path, sd.items(), iteration="1000")
    assert path.endswith(f"1000/{TRANSFORMER_FILE}")
    assert (tmp_path / "transformer" / "latest").read_text() == "1000\n"
    state = torch.load(path, weights_only=True)
    assert list(state) == ["module"] and torch.equal(state["module"][PREFIX + "time_embed.0.weight"], sd["time_embed.0.weight"])
    write_vae(tmp_path, {"encoder.conv_in.conv.weight": torch.ones(2)}.items())
    assert list(torch.load(tmp_path / "vae" / "3d-vae.pt", weights_only=True)) == ["state_dict"]
    assert not list(tmp_path.rglob("*.tmp-*"))


def test_writer_refuses_to_replace_without_overwrite(tmp_path):
    write_transformer(tmp_path, [("a", torch.zeros(1))])
    with pytest.raises(OutputExistsError):
        write_transformer(tmp_path, [("a", torch.ones(1))])
    write_transformer(tmp_path, [("a", torch.ones(1))], overwrite=True)
    write_vae(tmp_path, [("b", torch.zeros(1))])
    with pytest.raises(OutputExistsError):
        write_vae(tmp_path, [("b", torch.ones(1))])


def test_full_finetune_file_opens_as_three_components(tmp_path):
    t5_key = "conditioner.embedders.0.transformer.shared.weight"
    write_transformer(tmp_path, [("time_embed.0.weight", torch.zeros(2))])
    path = tmp_path / "transformer" / "1" / TRANSFORMER_FILE
    state = torch.load(path, weights_only=True)
    state["module"][t5_key] = torch.ones(3)
    state["module"]["first_stage_model.encoder.conv_in.conv.weight"] = torch.ones(5)
    torch.save(state, path)
    comps = open_sat(tmp_path)
    assert set(comps) == {"transformer", "text_encoder", "vae"}
    assert comps["transformer"].keys() == ["time_embed.0.weight"]
    assert comps["text_encoder"].keys() == ["shared.weight"]
    assert torch.equal(comps["vae"].read("encoder.conv_in.conv.weight"), torch.ones(5))


def test_not_a_sat_folder_is_an_input_error(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    torch.save({"a": torch.zeros(1)}, tmp_path / "w.pt")
    with pytest.raises(InputError, match="not a SAT folder"):
        open_sat(tmp_path)


def test_sat_lora_checkpoint_is_refused_with_what_to_do(tmp_path):
    from vqtool.sat import check_not_lora

    store = MetaStore({PREFIX + "transformer.layers.0.attention.query_key_value.original.weight": (6, 2),
                       PREFIX + "transformer.layers.0.attention.query_key_value.matrix_A.0": (1, 2)})
    with pytest.raises(MappingError, match="merge_lora"):
        check_not_lora(store)
