"""The execution store, the one owner of SQL: schema, migrations, the run transaction
with its named transitions, definitions, tokens, findings, retention reads and stats.

Its public face is below; everything else is the store's own business.
"""

from typing import TYPE_CHECKING

from conveyor.orchestrator.faces import lazy

if TYPE_CHECKING:
    from conveyor.orchestrator.store.definitions import Definition as Definition
    from conveyor.orchestrator.store.definitions import Definitions as Definitions
    from conveyor.orchestrator.store.findings import FindingQuery as FindingQuery
    from conveyor.orchestrator.store.findings import list_findings as list_findings
    from conveyor.orchestrator.store.findings import list_reports as list_reports
    from conveyor.orchestrator.store.records import EventRecord as EventRecord
    from conveyor.orchestrator.store.records import LogRecord as LogRecord
    from conveyor.orchestrator.store.records import NewRun as NewRun
    from conveyor.orchestrator.store.records import RunRecord as RunRecord
    from conveyor.orchestrator.store.records import StepRecord as StepRecord
    from conveyor.orchestrator.store.records import StepSeed as StepSeed
    from conveyor.orchestrator.store.sql import SqlStore as SqlStore
    from conveyor.orchestrator.store.stats import Stats as Stats
    from conveyor.orchestrator.store.tokens import Role as Role
    from conveyor.orchestrator.store.tokens import Token as Token
    from conveyor.orchestrator.store.tokens import Tokens as Tokens

__getattr__ = lazy(
    __name__,
    {
        "definitions": ["Definition", "Definitions"],
        "findings": ["FindingQuery", "list_findings", "list_reports"],
        "records": ["EventRecord", "LogRecord", "NewRun", "RunRecord", "StepRecord", "StepSeed"],
        "sql": ["SqlStore"],
        "stats": ["Stats"],
        "tokens": ["Role", "Token", "Tokens"],
    },
)
