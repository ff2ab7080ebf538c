SELECT ab.submit_extraction_metrics('bench', 'llm_v2', '{"latency_ms": 12.5, "entities_processed": 4, "average_confidence": 0.8, "deduplication_rate": 0.1, "extraction_success": true}');
