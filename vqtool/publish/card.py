"""Model cards (the repo's README.md) generated from the files' own metadata and validation reports.

The card says what each file is (policy, size, bits per weight, PSNR/SSIM against full precision
from ``vqtool validate``), what stayed in high precision (types of each role's 2-D weights, per
file), how to load it (ComfyUI-GGUF, diffusers, vqtool's loader, torchao folders, LoRAs), and
where it comes from (base model, license, source files and hashes). Nothing in it is typed by
hand: rendering the same folder twice gives the same card.

Example::

    from vqtool.publish.card import CardInfo, render_card
    from vqtool.publish.variants import scan_folder
    scan = scan_folder("out/")
    print(render_card(scan, CardInfo(repo_id="me/wan-gguf")))
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from vqtool.errors import InputError
from vqtool.publish.reports import CandidateMetrics, format_psnr, format_ssim, metrics_by_file
from vqtool.publish.sources import SourceModel, pipeline_class, source_for
from vqtool.publish.variants import Scan, Variant

HIGH_PRECISION = ("F32", "F16", "BF16")


@dataclass
class CardInfo:
    """What the files cannot say about themselves: where they go and, for custom models, their origin."""

    repo_id: str = "ORG/NAME"
    title: str | None = None
    base_model: str | None = None  # overrides the released model found from family/variant
    license: str | None = None  # Hub license id; overrides the source's
    license_name: str | None = None
    license_link: str | None = None
    extra_tags: tuple[str, ...] = ()


@dataclass
class Origin:
    family: str | None
    variant: str | None
    source: SourceModel | None
    base_model: str | None
    license: str | None
    license_name: str | None = None
    license_link: str | None = None
    warnings: list[str] = field(default_factory=list)


def _human(n: float) -> str:
    from vqtool.inspect import human_bytes

    return human_bytes(n)


def origin(scan: Scan, info: CardInfo) -> Origin:
    """Family/variant shared by the files, the released model and license (``info`` overrides)."""
    models = {(v.family, v.variant) for v in scan.variants if v.kind != "lora" and v.family}
    warnings = []
    if len(models) > 1:
        warnings.append("files come from different models: " + ", ".join(f"{f}/{v}" for f, v in sorted(models)))
    family, variant = sorted(models)[0] if models else (None, None)
    src = source_for(family, variant)
    base = info.base_model or (src.repo_id if src else None)
    lic = info.license or (src.license if src and not info.base_model else None)
    o = Origin(family, variant, src, base, lic,
               info.license_name or (src.license_name if src and lic == src.license else None),
               info.license_link or (src.license_link if src and lic == src.license else None), warnings)
    if base is None:
        o.warnings.append(f"{family or 'unknown'}/{variant or 'unknown'} is not a released model vqtool knows: "
                          "pass --base-model ORG/NAME")
    if lic is None:
        o.warnings.append("no license known for these files: pass --license (a Hub license id, e.g. apache-2.0)")
    return o


def require_complete(o: Origin) -> None:
    """Refuse to publish a card without a base model and a license."""
    if o.license is None or o.base_model is None:
        raise InputError("; ".join(w for w in o.warnings if "pass --" in w))


def _front_matter(scan: Scan, o: Origin, info: CardInfo) -> list[str]:
    kinds = {v.kind for v in scan.variants}
    tags = ["vqtool", "quantized"] + (["gguf"] if "gguf" in kinds else []) + (["torchao"] if "torchao" in kinds else [])
    tags += (["lora"] if "lora" in kinds else []) + ([o.family] if o.family else []) + list(info.extra_tags)
    lines = ["---", f"license: {o.license or 'unknown'}"]
    if o.license_name:
        lines.append(f"license_name: {o.license_name}")
    if o.license_link:
        lines.append(f"license_link: {o.license_link}")
    if o.base_model:
        lines += [f"base_model: {o.base_model}", "base_model_relation: quantized"]
    lines.append(f"library_name: {'gguf' if 'gguf' in kinds else 'diffusers'}")
    lines.append(f"pipeline_tag: {o.source.pipeline_tag if o.source else 'text-to-video'}")
    lines += ["tags:", *(f"- {t}" for t in dict.fromkeys(tags)), "---", ""]
    return lines


def _variants_table(scan: Scan, metrics: dict[str, CandidateMetrics]) -> list[str]:
    rows = ["| File | Format | Policy | Size | Bits/weight | PSNR vs full precision | SSIM |",
            "|---|---|---|---:|---:|---:|---:|"]
    for v in scan.variants:
        if v.kind == "lora":
            continue
        m = metrics.get(v.key)
        bpw = f"{v.bits_per_weight:.2f}" if v.bits_per_weight else "n/a"
        name = f"`{v.name}/`" if v.kind == "torchao" else f"`{v.name}`"
        rows.append(f"| {name} | {v.kind.upper() if v.kind == 'gguf' else 'torchao'} | {v.policy or '?'} | "
                    f"{_human(v.bytes)} | {bpw} | {format_psnr(m.psnr if m else None)} | "
                    f"{format_ssim(m.ssim if m else None)} |")
    return rows


def _validation_note(scan: Scan, metrics: dict[str, CandidateMetrics]) -> list[str]:
    used = [m for m in metrics.values() if any(v.key == m.key for v in scan.variants)]
    if not used:
        return ["No validation report was found next to these files: PSNR/SSIM are n/a. "
                "Run `vqtool validate` and publish its report folder with them."]
    settings = used[0].settings
    run = ", ".join(f"{k} {v}" for k, v in settings.items() if k != "pipeline")
    reports = sorted({os.path.relpath(m.report, scan.folder).replace(os.sep, "/") for m in used})
    # The HTML report next to a report.json (plots, embedded videos) when it was published with it.
    reports = [p for r in reports for p in (r, r.removesuffix(".json") + ".html")
               if p == r or os.path.isfile(os.path.join(scan.folder, p))]
    return [f"PSNR and SSIM are means over the {used[0].videos or 'validation'} videos of `vqtool validate` "
            f"(same prompts, seeds, initial noise and text embeddings as the full-precision reference; {run or 'default settings'}); "
            "\"identical\" means bit-equal frames. Reports: " + ", ".join(f"[`{r}`]({r})" for r in reports) + "."]


def _precision_table(scan: Scan) -> list[str]:
    files = [v for v in scan.variants if v.kind != "lora" and v.roles]
    if not files:
        return []
    roles = sorted({r for v in files for r in v.roles})
    lines = ["| Role (2-D weights) | " + " | ".join(f"`{v.key}`" for v in files) + " |",
             "|---|" + "---|" * len(files)]
    for role in roles:
        cells = []
        for v in files:
            types = v.roles.get(role, {})
            cells.append(", ".join(f"{t}" + (f" x{n}" if len(types) > 1 else "") for t, n in sorted(types.items())) or "-")
        lines.append(f"| {role} | " + " | ".join(cells) + " |")
    return lines


def _usage(scan: Scan, o: Origin, info: CardInfo) -> list[str]:
    ggufs = [v for v in scan.variants if v.kind == "gguf"]
    torchao = [v for v in scan.variants if v.kind == "torchao"]
    loras = [v for v in scan.variants if v.kind == "lora"]
    diffusers_repo = (o.source.diffusers_repo if o.source else None) or "<the Diffusers repo of the base model>"
    pipe = pipeline_class(o.family, o.variant)
    cls = "WanTransformer3DModel" if o.family == "wan" else "CogVideoXTransformer3DModel"
    if o.family == "wan" and o.variant and o.variant.startswith("vace"):
        cls = "WanVACETransformer3DModel"
    out: list[str] = ["## How to use", ""]
    if ggufs:
        example = ggufs[0].name
        out += ["### ComfyUI (ComfyUI-GGUF)", ""]
        if o.family == "wan":
            out += [f"Install the ComfyUI-GGUF custom nodes, put a `.gguf` file (e.g. `{example}`) into "
                    "`ComfyUI/models/diffusion_models/` (or `models/unet/`), and load it with the **Unet Loader (GGUF)** "
                    "node in place of *Load Diffusion Model*; the VAE and text encoder come from the base model's release.", ""]
        else:
            out += ["ComfyUI-GGUF has no CogVideoX architecture: use diffusers with vqtool's loader below.", ""]
        out += ["### diffusers", "", "```python", "import torch", "from huggingface_hub import hf_hub_download",
                f"path = hf_hub_download(\"{info.repo_id}\", \"{example}\")"]
        if o.family == "wan":
            out += [f"from diffusers import GGUFQuantizationConfig, {cls}, {pipe}", "",
                    f"transformer = {cls}.from_single_file(",
                    "    path, quantization_config=GGUFQuantizationConfig(compute_dtype=torch.bfloat16),",
                    f"    config=\"{diffusers_repo}\", subfolder=\"transformer\", torch_dtype=torch.bfloat16)"]
        else:
            out += [f"from diffusers import {pipe}", "from vqtool.loader import load_gguf_transformer", "",
                    "# diffusers has no single-file loader for CogVideoX; vqtool's keeps the weights quantized",
                    "transformer = load_gguf_transformer(path, compute_dtype=torch.bfloat16, device=\"cuda\")"]
        out += [f"pipe = {pipe}.from_pretrained(\"{diffusers_repo}\", transformer=transformer, torch_dtype=torch.bfloat16)",
                "pipe.enable_model_cpu_offload()", "```", ""]
        if o.family == "wan":
            out += ["vqtool's own loader (`from vqtool.loader import load_gguf_transformer`) loads these files too, "
                    "keeping the weights quantized in memory.", ""]
    if torchao:
        sub = torchao[0].name
        out += ["### torchao folders", "",
                "Each `*/` folder is a Diffusers model quantized with torchao (needs `torchao`); load it as is:", "",
                "```python", "import torch", f"from diffusers import {cls}, {pipe}", "",
                f"transformer = {cls}.from_pretrained(\"{info.repo_id}\", subfolder=\"{sub}\", torch_dtype=torch.bfloat16)",
                f"pipe = {pipe}.from_pretrained(\"{diffusers_repo}\", transformer=transformer, torch_dtype=torch.bfloat16)",
                "```", ""]
    if loras:
        out += ["### LoRAs", "", "| File | Size | What |", "|---|---:|---|"]
        out += [f"| `{v.name}` | {_human(v.bytes)} | {v.note}{'; ' + v.description if v.description else ''} |" for v in loras]
        out += ["", "```python", f"pipe.load_lora_weights(\"{info.repo_id}\", weight_name=\"{loras[0].name}\")", "```", ""]
    return out


def _source_section(scan: Scan, o: Origin) -> list[str]:
    from vqtool import __version__

    out = ["## Source", ""]
    if o.base_model:
        out.append(f"- Base model: [{o.base_model}](https://huggingface.co/{o.base_model})"
                   + (f" ({o.family} {o.variant})" if o.family else ""))
    lic = o.license or "unknown"
    if o.license_link:
        lic = f"[{o.license_name or lic}]({o.license_link})"
    out.append(f"- License: {lic}, as the base model's; these files are derived from its weights.")
    seen = set()
    for v in scan.variants:
        for name, digest in zip(v.source.get("files") or [], v.source.get("sha256") or []):
            if (name, digest) not in seen and digest:
                seen.add((name, digest))
                out.append(f"- Source file `{name}` ({v.source.get('format') or 'unknown format'}): `{digest}`")
    policies = list(dict.fromkeys(v.policy for v in scan.variants if v.kind == "gguf" and v.policy))
    out.append(f"- Made with vqtool {__version__}"
               + (f": `vqtool quantize SRC --policy {','.join(policies)}` (one pass over the source)" if policies else "")
               + ".")
    return out + [""]


def render_card(scan: Scan, info: CardInfo, metrics: dict[str, CandidateMetrics] | None = None) -> str:
    """The README.md of a repo holding ``scan``'s files; ``metrics`` default to the scan's reports."""
    if metrics is None:
        metrics = metrics_by_file(scan.reports)
    o = origin(scan, info)
    title = info.title or f"{info.repo_id.split('/')[-1]}"
    base = f"[{o.base_model}](https://huggingface.co/{o.base_model})" if o.base_model else "a custom model"
    quantized = [v for v in scan.variants if v.kind != "lora"]
    lines = _front_matter(scan, o, info) + [f"# {title}", "",
             f"Quantized transformer variants of {base}, made and checked with vqtool: {len(quantized)} file(s)"
             + (f" and {len(scan.variants) - len(quantized)} LoRA(s)" if len(quantized) != len(scan.variants) else "")
             + ". Sizes, bits per weight and kept types are read from the files; quality from their validation reports.", ""]
    if quantized:
        lines += ["## Variants", "", *_variants_table(scan, metrics), "", *_validation_note(scan, metrics), ""]
        lines += list(dict.fromkeys(f"- **{v.policy}**: {v.description}" for v in quantized if v.description))
        lines += [f"- `{v.name}`: {v.note}" for v in quantized if v.note]
        lines += ["", "## What stays in high precision", "",
                  "Every file keeps norms, biases, modulation tables, the patch/text/time embeddings and the head in "
                  f"{'/'.join(HIGH_PRECISION)} (the layers quantization hurts most and that consumers expect in float); "
                  "the table gives the type of each role's 2-D weights per file (xN: number of tensors of that type).", ""]
        lines += list(dict.fromkeys(f"- **{v.policy}** keeps {v.keeps}" for v in quantized if v.keeps))
        lines += ["", *_precision_table(scan), ""]
    lines += _usage(scan, o, info)
    lines += _source_section(scan, o)
    return "\n".join(lines).rstrip() + "\n"
