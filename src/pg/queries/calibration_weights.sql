-- The configured calibration weights, in Weights' order.
SELECT jsonb_build_array(base, source_reliability, contextual_consistency, temporal_coherence,
                         geographic_plausibility)
FROM ab.calibration_weights
