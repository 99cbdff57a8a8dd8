"""Real protocol peers on 127.0.0.1 for tests: HTTP servers speaking the real wire formats."""
