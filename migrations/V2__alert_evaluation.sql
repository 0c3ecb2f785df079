-- The rule logic of alert evaluation as SQL functions, so the evaluation statement reads like
-- the contract. Single-expression IMMUTABLE SQL functions: the planner inlines them.
-- (The same logic lives in Rust, functions/alert-eval/src/rule.rs; the tests check that both
-- agree.)

-- Whether a reading breaches a rule's threshold.
CREATE FUNCTION reading_breaches(comparator text, value numeric, threshold numeric)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE comparator
        WHEN 'gt' THEN value > threshold
        WHEN 'gte' THEN value >= threshold
        WHEN 'lt' THEN value < threshold
        WHEN 'lte' THEN value <= threshold
    END
$$;

-- Whether a reading is back at or past a rule's clear threshold (hysteresis).
CREATE FUNCTION reading_clears(comparator text, value numeric, clear_threshold numeric)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE
        WHEN comparator IN ('gt', 'gte') THEN value <= clear_threshold
        ELSE value >= clear_threshold
    END
$$;
