"""Change control: `memvault preflight` judges a candidate configuration before it goes live."""

from memvault.preflight.candidate import Candidate, Difference, differences, load_candidate
from memvault.preflight.database import DatabaseProbe, probe_database
from memvault.preflight.run import run_preflight

__all__ = ["Candidate", "DatabaseProbe", "Difference", "differences", "load_candidate",
           "probe_database", "run_preflight"]
