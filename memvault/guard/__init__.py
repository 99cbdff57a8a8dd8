"""The guard: knows what the store should contain, notices when it does not, and says so.

- `alerts.py`: named alerts (PRODUCT.md), delivered through apprise URLs with resolve messages;
- `ledger.py`: the store's identity and high-water marks, kept with the backups (outside the
  database), so an emptied or replaced store is recognised;
- `checks.py`: the checks run at startup and by the watchdog;
- `api.py`: the server extension (readiness check, watchdog, auto-restore of an empty store).
"""
