"""`python -m netlab.runtime.workloads NAME ARGS...`: the exec fallback for built-in workloads."""
import sys

from . import BUILTIN, run_builtin

sys.exit(run_builtin([BUILTIN, *sys.argv[1:]]))
