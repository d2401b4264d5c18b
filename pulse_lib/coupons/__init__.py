"""Budget-constrained coupon allocation (Part IV): the BCORLE(λ) setting, reproduced.

- :mod:`pulse_lib.coupons.simulator` the 30-day, 21-coupon, three-user-type simulator
  and its ground truth
- :mod:`pulse_lib.coupons.dataset`   the logged dataset and the λ-generalized sampler
- :mod:`pulse_lib.coupons.rbcq`      R-BCQ (discrete BCQ + REM, λ-conditioned); BCQ and
  REM as special cases
- :mod:`pulse_lib.coupons.reme`      REME, the multi-head λ-conditioned evaluator (FQE
  as a special case)
- :mod:`pulse_lib.coupons.budget`    finding λ* that spends the budget
- :mod:`pulse_lib.coupons.response_model` a model-based evaluator: next-day return
  classifier + policy rollouts
- :mod:`pulse_lib.coupons.convergence` what the logged data can resolve at λ = 0, and
  the λ = 0 convergence check built on it
- :mod:`pulse_lib.coupons.pipeline`  the two routes to λ*: one λ-generalized training,
  or retraining per λ
- :mod:`pulse_lib.coupons.baselines` discrete CQL from d3rlpy, λ-conditioned
- :mod:`pulse_lib.coupons.ope`       episode views, target probabilities and sequential
  doubly robust for coupon episodes
"""
