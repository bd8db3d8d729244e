"""A deliberately vulnerable little module: the scan example's target. Do not copy it."""

import subprocess

import yaml

DB_PASSWORD = "hunter2"


def run(command):
    """Run a command the caller gave us, through a shell."""
    return subprocess.call(command, shell=True)


def load(text):
    """Parse YAML with the loader that can build any Python object."""
    return yaml.load(text, Loader=yaml.Loader)


def calculate(expression):
    """Evaluate an expression typed by a user."""
    return eval(expression)
