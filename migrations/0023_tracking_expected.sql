-- A projector batch sends its handlers' statements with the move of its tracking rows
-- in one round trip, on the floors its runner knows (projections/projection.py
-- apply_batches); this refuses that batch (SQLSTATE NR001, rolled back, then applied
-- the two-round-trip way) when a row is missing or another transaction moved it beyond
-- its floor, so that nothing is applied twice.
CREATE OR REPLACE FUNCTION norn_expect_tracking(ok boolean) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT ok THEN
        RAISE EXCEPTION 'a tracking row is missing or past the batch''s floor'
            USING ERRCODE = 'NR001';
    END IF;
    RETURN ok;
END
$$;
