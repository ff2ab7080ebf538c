-- ab.set_calibration_weights: $1..$5 in Weights' order (validated before).
UPDATE ab.calibration_weights
SET base = $1, source_reliability = $2, contextual_consistency = $3, temporal_coherence = $4,
    geographic_plausibility = $5
