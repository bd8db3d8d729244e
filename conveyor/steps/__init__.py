"""Built-in step types, one module each, registered under the ``conveyor.steps`` entry points.

Steps import only ``conveyor.orchestrator``; they reach sandboxes, artifacts and cloud
providers through the ``StepContext`` they are given.
"""
