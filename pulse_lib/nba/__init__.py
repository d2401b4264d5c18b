"""Part V: hybrid next-best-action (journey simulator, hybrid bandits, bounded offline
evaluation).

- :mod:`pulse_lib.nba.simulator`   users moving through journey stages; actions; logging
  policy
- :mod:`pulse_lib.nba.hybrid`      hybrid LinUCB / linear Thompson sampling;
  intent-based selector
- :mod:`pulse_lib.nba.experiments` the online loop and the four strategies of chapter 12
- :mod:`pulse_lib.nba.rules`       business rules (contact caps, cool-downs, exclusive
  offers) as masks
- :mod:`pulse_lib.nba.bounds`      high-confidence lower bounds on off-policy estimates;
  deploy rule
- :mod:`pulse_lib.nba.vw`          Vowpal Wabbit's contextual bandit behind the same
  interface
- :mod:`pulse_lib.nba.obd`         the Open Bandit Dataset sample bundled with ``obp``
"""
