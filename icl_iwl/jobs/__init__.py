"""Jobs that `main.py` runs, chosen by `config.job`.

Each job module registers `run(config, workdir)`; importing this package
imports them all.
"""

from icl_iwl import registry

JOBS = registry.Registry('job')

# pylint: disable=g-import-not-at-top,wrong-import-position
from icl_iwl.jobs import augment  # noqa: E402,F401
from icl_iwl.jobs import eval_icl  # noqa: E402,F401
from icl_iwl.jobs import experiment  # noqa: E402,F401
from icl_iwl.jobs import score  # noqa: E402,F401
from icl_iwl.jobs import train  # noqa: E402,F401
