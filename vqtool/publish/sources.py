"""The released models a published file can come from: Hub repo, license, task and how it loads.

Keyed by vqtool's (family, variant) as the mapping tables name them (``vqtool inspect`` shows both).
A model card takes its base model and license from here unless the publisher names them
(``--base-model``, ``--license``); a tiny or custom model matches no row and needs both.
Licenses as the source repos declare them: Wan2.1 and CogVideoX-2B are Apache-2.0; the CogVideoX
5B / 1.5 weights use the CogVideoX License (``license: other``, link to the repo's LICENSE file).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SourceModel:
    repo_id: str  # the original release
    license: str  # Hub license id ("apache-2.0", "other")
    license_name: str | None = None  # for license: other
    license_link: str | None = None
    pipeline_tag: str = "text-to-video"
    diffusers_repo: str | None = None  # the Diffusers-format repo (config for from_single_file)
    pipeline_class: str | None = None  # the diffusers pipeline that runs it


_WAN = dict(license="apache-2.0")
_COG_LICENSE = dict(license="other", license_name="cogvideox-license")


def _cog(repo: str, **kw) -> SourceModel:
    return SourceModel(repo, license_link=f"https://huggingface.co/{repo}/blob/main/LICENSE", **_COG_LICENSE,
                       diffusers_repo=repo, **kw)


SOURCES: dict[tuple[str, str], SourceModel] = {}


def register(family: str, variant: str, source: SourceModel) -> None:
    if (family, variant) in SOURCES:
        raise ValueError(f"source model for {family}/{variant} registered twice")
    SOURCES[(family, variant)] = source


register("wan", "t2v-1.3B", SourceModel("Wan-AI/Wan2.1-T2V-1.3B", **_WAN, diffusers_repo="Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
                                        pipeline_class="WanPipeline"))
register("wan", "t2v-14B", SourceModel("Wan-AI/Wan2.1-T2V-14B", **_WAN, diffusers_repo="Wan-AI/Wan2.1-T2V-14B-Diffusers",
                                       pipeline_class="WanPipeline"))
# The 480P and 720P I2V releases share one architecture; the 480P one is named, publishers of a
# 720P file pass --base-model Wan-AI/Wan2.1-I2V-14B-720P.
register("wan", "i2v-14B", SourceModel("Wan-AI/Wan2.1-I2V-14B-480P", **_WAN, pipeline_tag="image-to-video",
                                       diffusers_repo="Wan-AI/Wan2.1-I2V-14B-480P-Diffusers",
                                       pipeline_class="WanImageToVideoPipeline"))
register("wan", "flf2v-14B", SourceModel("Wan-AI/Wan2.1-FLF2V-14B-720P", **_WAN, pipeline_tag="image-to-video",
                                         diffusers_repo="Wan-AI/Wan2.1-FLF2V-14B-720P-diffusers",
                                         pipeline_class="WanImageToVideoPipeline"))
register("wan", "vace-1.3B", SourceModel("Wan-AI/Wan2.1-VACE-1.3B", **_WAN, diffusers_repo="Wan-AI/Wan2.1-VACE-1.3B-diffusers",
                                         pipeline_class="WanVACEPipeline"))
register("wan", "vace-14B", SourceModel("Wan-AI/Wan2.1-VACE-14B", **_WAN, diffusers_repo="Wan-AI/Wan2.1-VACE-14B-diffusers",
                                        pipeline_class="WanVACEPipeline"))
register("cogvideox", "2b", SourceModel("THUDM/CogVideoX-2b", license="apache-2.0", diffusers_repo="THUDM/CogVideoX-2b",
                                        pipeline_class="CogVideoXPipeline"))
register("cogvideox", "5b", _cog("THUDM/CogVideoX-5b", pipeline_class="CogVideoXPipeline"))
register("cogvideox", "5b-i2v", _cog("THUDM/CogVideoX-5b-I2V", pipeline_tag="image-to-video",
                                     pipeline_class="CogVideoXImageToVideoPipeline"))
register("cogvideox", "1.5", _cog("THUDM/CogVideoX1.5-5B", pipeline_class="CogVideoXPipeline"))
register("cogvideox", "1.5-i2v", _cog("THUDM/CogVideoX1.5-5B-I2V", pipeline_tag="image-to-video",
                                      pipeline_class="CogVideoXImageToVideoPipeline"))

# Pipelines by family and kind, for files of custom sizes (the card's diffusers snippet).
PIPELINES = {("wan", "t2v"): "WanPipeline", ("wan", "i2v"): "WanImageToVideoPipeline",
             ("wan", "flf2v"): "WanImageToVideoPipeline", ("wan", "vace"): "WanVACEPipeline",
             ("cogvideox", "i2v"): "CogVideoXImageToVideoPipeline"}


def source_for(family: str | None, variant: str | None) -> SourceModel | None:
    """The released model of ``family``/``variant``, or None for custom sizes."""
    return SOURCES.get((family or "", variant or ""))


def pipeline_class(family: str | None, variant: str | None) -> str:
    known = source_for(family, variant)
    if known and known.pipeline_class:
        return known.pipeline_class
    kind = (variant or "").split("-")[0] if family == "wan" else ("i2v" if "i2v" in (variant or "") else "t2v")
    return PIPELINES.get((family or "", kind), "WanPipeline" if family == "wan" else "CogVideoXPipeline")
