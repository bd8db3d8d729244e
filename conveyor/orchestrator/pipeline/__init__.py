"""Pipelines as data: the YAML spec, loading with lines, the compiled plan, templates."""
