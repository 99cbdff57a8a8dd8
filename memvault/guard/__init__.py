"""The guard: knows what the store should contain, notices when it does not, and says so.

- `alerts.py`: named alerts (PRODUCT.md), delivered through apprise URLs with resolve messages;
- `ledger.py`: the store's identity and high-water marks, kept with the backups (outside the
  database), so an emptied, replaced or rolled-back store is recognised;
- `checks.py`: the verdicts (pure functions of the store's facts and the ledger);
- `lineages.py`: every lineage in the destinations, whether its writer is alive, which one a
  store is compared with; `forks.py`: two writers in one lineage;
- `watchdog.py`: the `Guard` (checks, alerts, ledger records, auto-restore);
  `backup_health.py`: backup ages and runs; `clock.py`: its injectable clocks;
- `api.py`: the server extension (writer lock, readiness, metrics);
- `refuse.py`: memory routes answer 503 while the store is empty or replaced;
- `drill.py`, `drill_job.py`: restore drills; `digest.py`: the daily digest.
"""
