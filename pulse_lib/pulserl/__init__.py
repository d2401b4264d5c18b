"""PulseRL (Part III): offline RL for communication channel optimisation.

- :mod:`pulse_lib.pulserl.features`  the 63 observation features, in the release's order
- :mod:`pulse_lib.pulserl.data`      RLlib JSON SampleBatch reader/writer, Parquet,
  d3rlpy dataset
- :mod:`pulse_lib.pulserl.download`  resumable, verified download of the released logs
- :mod:`pulse_lib.pulserl.simulator` the surrogate: users, dynamics, logging policies,
  ground truth
- :mod:`pulse_lib.pulserl.agents`    d3rlpy helpers and a plain-PyTorch (quantile) CQL
- :mod:`pulse_lib.pulserl.evaluation` off-policy evaluation on tables: IS family, DM,
  FQE
- :mod:`pulse_lib.pulserl.datasets`  the real release when extracted, else the cached
  surrogate
"""

from __future__ import annotations

from pulse_lib.pulserl.features import FEATURE_NAMES, N_FEATURES

__all__ = ["FEATURE_NAMES", "N_FEATURES"]
