-- Every statement here is a short OLTP query, sent unnamed (so never planned twice). JIT
-- compilation kicks in on cost estimates alone and can take longer than the query itself
-- (measured: a 7-day rollup went from ~15 ms to ~110 ms with JIT on). Off for this database;
-- a database-level setting survives the pooler's DISCARD ALL, unlike a session SET.
DO $$
BEGIN
    EXECUTE format('ALTER DATABASE %I SET jit = off', current_database());
END
$$;
