"""The guard: knows what the store should contain, notices when it does not, and says so.

- `alerts.py`: named alerts (PRODUCT.md), delivered through apprise URLs with resolve messages;
- `ledger.py`: the store's identity and high-water marks, kept with the backups (outside the
  database), so an emptied, replaced or rolled-back store is recognised;
- `checks.py`: the verdicts (pure functions of the store's facts and the ledger);
- `api.py`: the `Guard` watchdog and the server extension (readiness, auto-restore, metrics);
- `refuse.py`: memory routes answer 503 while the store is empty or replaced;
- `drill.py`: restore drills; `digest.py`: the daily digest.
"""
