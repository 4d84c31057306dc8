"""The ``vqtool`` command line: a thin click group over the library.

Commands live one per module in :mod:`vqtool.commands` and are imported only
when invoked (or when their own ``--help`` is asked for), so ``vqtool --help``
never imports torch. To add a command, add a row to ``COMMANDS``.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

import click

from vqtool import __version__
from vqtool.errors import VqtoolError

# name -> (module under vqtool.commands, attribute, one-line help shown by `vqtool --help`)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "inspect": ("inspect", "command", "Show format, model, tensors, dtypes and sizes of a checkpoint."),
    "convert": ("convert", "command", "Convert a checkpoint between layouts (original Wan, ComfyUI, Diffusers)."),
    "quantize": ("quantize", "command", "Quantize a transformer to GGUF with a per-layer mixed-precision policy."),
    "policies": ("policies", "command", "List the built-in quantization policies and what each keeps."),
    "dequantize": ("dequantize", "command", "Turn a GGUF file back into full-precision safetensors."),
    "sat2hf": ("sat2hf", "command", "Convert a CogVideoX SAT folder to Diffusers (components or a full pipeline)."),
    "hf2sat": ("hf2sat", "command", "Convert a CogVideoX Diffusers folder to the SAT checkpoint layout."),
    "upload": ("upload", "command", "Publish a folder of variants to the Hugging Face Hub with a generated model card."),
    "family": ("family", "command", "Quantize a whole set of variants in one pass, validate them, write the card."),
    "lora": ("lora", "command", "LoRA adapters: export CogVideoX SAT LoRAs, extract LoRAs from fine-tunes."),
    "validate": ("validate", "command", "Compare quantized transformers with full precision on generated videos."),
    "check": ("check", "command", "Exit non-zero when a validation report shows a quality regression."),
    "demo": ("demo", "command", "Quantize the bundled tiny Wan model and validate it end to end (under a minute)."),
}

EPILOG = """\b
Examples:
  vqtool inspect Wan2.1-T2V-14B/                        # what is this? (headers only)
  vqtool convert Wan2.1-T2V-1.3B/ -o wan-diffusers/ --to diffusers
  vqtool sat2hf CogVideoX-5b-sat/ -o CogVideoX-5b/      # SAT -> Diffusers
  vqtool policies                                       # built-in quantization policies
  vqtool quantize Wan2.1-T2V-1.3B/ --policy mixed-q4,q4_k_m -o out/
  vqtool --debug inspect broken.safetensors             # full traceback on errors
"""


class LazyGroup(click.Group):
    """A click group that imports a command's module only when it is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[name]
        return getattr(importlib.import_module(f"vqtool.commands.{module}"), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _debug_enabled() -> bool:
    return os.environ.get("VQTOOL_DEBUG", "") not in ("", "0")


@click.group(cls=LazyGroup, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="vqtool")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug logging).")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors (or set VQTOOL_DEBUG=1).")
@click.pass_context
def cli(ctx: click.Context, verbose: int, debug: bool) -> None:
    """vqtool: turn open video diffusion checkpoints (Wan2.1, CogVideoX) into
    smaller files you can trust: map formats, quantize to GGUF with per-layer
    policies, and validate the result against full precision."""
    if debug:
        os.environ["VQTOOL_DEBUG"] = "1"
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if verbose < 2:
        quiet_third_party()


# Import-time chatter of optional dependencies that says nothing about the user's files
# (torchao's missing CUDA kernels, torch's pytree deprecations); shown again with -vv.
NOISY_LOGGERS = ("torchao", "torch.utils._pytree")


def quiet_third_party() -> None:
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: runs the group, turning VqtoolError into one line and an exit code."""
    try:
        cli.main(args=argv, prog_name="vqtool", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("vqtool: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except VqtoolError as exc:
        if _debug_enabled():
            raise
        click.echo(f"vqtool: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("vqtool: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # an internal bug: still one line unless debugging
        if _debug_enabled():
            raise
        click.echo(f"vqtool: internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", err=True)
        sys.exit(70)
    sys.exit(0)


if __name__ == "__main__":  # pragma: no cover
    main()
