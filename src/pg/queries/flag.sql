-- What evaluation needs of flag $1, and whether it has targeting rules or overrides.
SELECT jsonb_build_object('name', f.name, 'rollout_percentage', f.rollout_percentage, 'enabled', f.enabled,
                          'depends_on', f.depends_on, 'hashing', f.hashing, 'hashing_seed', f.hashing_seed,
                          'targeted', (EXISTS (SELECT 1 FROM ab.flag_rules r WHERE r.flag = f.name) OR EXISTS (SELECT 1 FROM ab.overrides o WHERE o.flag = f.name)))
FROM ab.flags f WHERE f.name = $1
