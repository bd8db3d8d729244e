"""Pipelines as data: the YAML spec, loading with lines, the compiled plan, templates.

``Compiler.compile`` turns a pipeline file into ``ExecutionPlan``s; nothing past this
package ever sees YAML. Its public face is below.
"""

from conveyor.orchestrator.pipeline.plan import Compiled, Compiler, ExecutionPlan, Limits, PlanStep
from conveyor.orchestrator.pipeline.spec import format_path, parse
from conveyor.orchestrator.pipeline.templates import TemplateEngine

__all__ = [
    "Compiled",
    "Compiler",
    "ExecutionPlan",
    "Limits",
    "PlanStep",
    "TemplateEngine",
    "format_path",
    "parse",
]
