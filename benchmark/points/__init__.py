"""What the tasks share: a run point turned into its model source, calibrated model, caches,
provenance and row columns. It imports the leaves and :mod:`benchmark.schema`, never a task."""
