"""PulseRL in production (Part VI): the pipeline at scale, versioned, served and
monitored.

- :mod:`pulse_lib.production.events`     raw event logs of the surrogate, any size,
  streamed to Parquet by user shard
- :mod:`pulse_lib.production.pipeline`   events -> daily user states -> transitions ->
  training (Ray Tune) -> scoring every user (Ray Data) -> decisions
- :mod:`pulse_lib.production.versioning` content-hash manifests beside every artefact;
  agents that refuse data of another schema
- :mod:`pulse_lib.production.serving`    a FastAPI decision service with hot swap
- :mod:`pulse_lib.production.monitoring` action rates, drift, off-policy value, alerts

Ray is an optional extra (``pip install -e ".[scale]"``); the modules import it only
when a function needs it.
"""
