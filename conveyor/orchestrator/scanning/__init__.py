"""Security scanning's pure core: findings, the severity scale, gates, SARIF, suppressions.

Scanners (``providers/scanners``) parse their native output into these models; the
scan steps (``steps/scan/``) gate on them and record them through ``ctx.findings``.
Nothing here runs a scanner or talks to a service: the store keeps findings
(``store/findings.py``).
"""
