"""DataOps stage: landing zone, validation, feature computation, Feast feature repo."""
