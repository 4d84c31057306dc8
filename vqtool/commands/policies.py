"""``vqtool policies``: the built-in quantization policies and what each keeps."""

from __future__ import annotations

import json

import click


@click.command("policies", epilog="""\b
Examples:
  vqtool policies               # every built-in policy, one line each
  vqtool policies mixed-q4      # its rules, in order
  vqtool policies --json
""")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def command(name, as_json):
    """List the built-in policies (or show one policy's rules). Every policy
    also keeps norms, biases, modulation tables, embeddings, the head and any
    non-2-D tensor in F32/F16, as the GGUF consumers require."""
    from vqtool.quant.plan import consumer_keep_roles
    from vqtool.quant.policy import builtin_policies, get_policy

    keep = consumer_keep_roles()
    if name:
        p = get_policy(name)
        if as_json:
            click.echo(json.dumps({**p.to_dict(), "always_kept_roles": list(keep)}, indent=2))
            return
        click.echo(f"{p.name}: {p.description}")
        if p.keeps:
            click.echo(f"  keeps: {p.keeps}")
        click.echo("  rules (first match wins):")
        for i, r in enumerate(p.rules, 1):
            click.echo(f"    {i}. {r.describe()}" + (f"   # {r.note}" if r.note else ""))
        click.echo(f"    default -> {p.default}")
        click.echo("  always kept in F32/F16 (roles): " + ", ".join(keep) + "; and every non-2-D tensor")
        return
    policies = builtin_policies().policies
    if as_json:
        click.echo(json.dumps({"policies": [p.to_dict() for p in policies.values()], "always_kept_roles": list(keep)}, indent=2))
        return
    width = max(map(len, policies))
    for p in policies.values():
        click.echo(f"{p.name:<{width}}  {p.description}")
    click.echo("\nEvery policy keeps in F32/F16: " + ", ".join(keep) + ", and every non-2-D tensor.")
