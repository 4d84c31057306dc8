"""Format mappings: tables in ``mappings/``, the engine that applies them, and the safetensors writer.

Public API::

    identify(store) -> Identification | None      # layout + canonical graph, no data read
    build_graph(store) -> ModelGraph               # canonical graph; errors on unknown/missing names
    plan_conversion(store, "diffusers") -> ConversionPlan
    iter_converted(store, plan) -> iterator of (name, tensor), one group at a time
    convert_to_canonical(store) -> iterator of (canonical name, tensor)
    write_plan(store, plan, out, ...)              # streaming, sharded, atomic safetensors
    load_registry() -> Registry                    # every table, loaded once
"""

from vqtool.mapping.engine import Identification, build_graph, detect_table, expected_canonical, identify
from vqtool.mapping.plan import ConversionPlan, PlannedTensor, convert_to_canonical, iter_converted, plan_conversion
from vqtool.mapping.tables import Registry, load_registry

__all__ = [
    "ConversionPlan", "Identification", "PlannedTensor", "Registry", "build_graph", "convert_to_canonical",
    "detect_table", "expected_canonical", "identify", "iter_converted", "load_registry", "plan_conversion",
    "write_plan",
]


def __getattr__(name: str):
    if name == "write_plan":
        from vqtool.mapping.writer import write_plan

        return write_plan
    raise AttributeError(name)
