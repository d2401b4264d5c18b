"""The 63 observation features of PulseRL, in the order of the authors' released
code."""

from __future__ import annotations

#: Brazilian address states (plus the codes the release uses for unknown/other), in
#: order.
ADDRESS_STATES: tuple[str, ...] = (
    "RO",
    "TO",
    "RR",
    "AC",
    "AP",
    "AL",
    "AM",
    "BA",
    "CE",
    "DF",
    "ES",
    "GO",
    "MA",
    "MG",
    "MS",
    "MT",
    "PA",
    "PB",
    "PE",
    "PI",
    "PR",
    "RJ",
    "RN",
    "RS",
    "SC",
    "SE",
    "SP",
    "NC",
    "MI",
    "ZZ",
    "BN",
    "NF",
)
GENDERS: tuple[str, ...] = ("FEMALE", "MALE", "OTHER")
#: Funnel events whose recency is tracked (days since, and within a week / month /
#: year).
RECENCY_EVENTS: tuple[str, ...] = ("activation", "location", "visualization", "deal")

FEATURE_NAMES: tuple[str, ...] = (
    "user_obs_age_group",
    *(f"user_obs_add_{i}_{s}" for i, s in enumerate(ADDRESS_STATES)),
    *(f"user_obs_gen_{i}_{g}" for i, g in enumerate(GENDERS)),
    "obs_objective_agreement",
    "obs_objective_signup",
    "obs_score",
    "obs_user_activated",
    "obs_user_registered",
    "obs_debt_located",
    "obs_debt_visualized",
    "obs_deals",
    *(
        name
        for event in RECENCY_EVENTS
        for name in (
            f"obs_last_{event}",
            f"obs_last_{event}_week",
            f"obs_last_{event}_month",
            f"obs_last_{event}_year",
        )
    ),
    "obs_total_original_value",
    "obs_total_current_value",
    "obs_max_days_of_delay",
)
N_FEATURES: int = len(FEATURE_NAMES)
#: Column of each feature in an observation vector.
FEATURE_INDEX: dict[str, int] = {name: i for i, name in enumerate(FEATURE_NAMES)}
#: Column names of the next observation in the transition table.
NEXT_FEATURE_NAMES: tuple[str, ...] = tuple(f"next_{name}" for name in FEATURE_NAMES)

assert N_FEATURES == 63, N_FEATURES  # the release's observation width
