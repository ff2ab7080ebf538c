\set uid random(1, 10000000)
SELECT ab.extract_entities_with_ab_testing(:text, :uid, NULL, NULL, 'bench', 'baseline_rule_based');
