"""Run the unittest suite and write a JUnit XML report (what CI systems display).

    python3 run_tests.py --report reports/junit.xml

Exits 0 when every test passed, 1 otherwise; the report is written either way.
"""

from __future__ import annotations

import argparse
import sys
import time
import unittest
import xml.etree.ElementTree as ET
from pathlib import Path


class Recorder(unittest.TextTestResult):
    """A text result that also remembers each test's outcome and duration."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.cases: list[tuple[unittest.TestCase, float, str | None, str]] = []
        self._started = 0.0

    def startTest(self, test: unittest.TestCase) -> None:  # noqa: N802
        self._started = time.perf_counter()
        super().startTest(test)

    def addSuccess(self, test: unittest.TestCase) -> None:  # noqa: N802
        super().addSuccess(test)
        self._record(test, None, "")

    def addFailure(self, test: unittest.TestCase, err: object) -> None:  # noqa: N802
        super().addFailure(test, err)  # type: ignore[arg-type]
        self._record(test, "failure", self.failures[-1][1])

    def addError(self, test: unittest.TestCase, err: object) -> None:  # noqa: N802
        super().addError(test, err)  # type: ignore[arg-type]
        self._record(test, "error", self.errors[-1][1])

    def _record(self, test: unittest.TestCase, kind: str | None, text: str) -> None:
        self.cases.append((test, time.perf_counter() - self._started, kind, text))


def junit(result: Recorder, seconds: float) -> ET.ElementTree:
    """The results as a JUnit XML document."""
    suite = ET.Element(
        "testsuite",
        name="webservice",
        tests=str(result.testsRun),
        failures=str(len(result.failures)),
        errors=str(len(result.errors)),
        time=f"{seconds:.3f}",
    )
    for test, duration, kind, text in result.cases:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=type(test).__name__,
            name=test._testMethodName,
            time=f"{duration:.3f}",
        )
        if kind is not None:
            ET.SubElement(case, kind, message=text.strip().splitlines()[-1]).text = text
    return ET.ElementTree(suite)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--report", type=Path, default=Path("reports/junit.xml"))
    args = parser.parse_args()
    suite = unittest.defaultTestLoader.discover(str(Path(__file__).parent))
    runner = unittest.TextTestRunner(resultclass=Recorder, verbosity=2, stream=sys.stdout)
    started = time.perf_counter()
    result = runner.run(suite)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    junit(result, time.perf_counter() - started).write(  # type: ignore[arg-type]
        args.report, encoding="utf-8", xml_declaration=True
    )
    print(f"report: {args.report}")
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
