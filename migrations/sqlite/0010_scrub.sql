-- Berth schema, version 10 (SQLite): what scrub found.
--
-- A blob whose stored bytes failed their check (digest mismatch, wrong
-- size, missing from storage) carries the time and the problem. Such a blob
-- is never served: reads answer that it is damaged. A verified upload of
-- the same digest (a push) writes fresh bytes and clears both columns in
-- the transaction that links it; so does a later scrub that finds the bytes
-- whole again.
ALTER TABLE blobs ADD COLUMN damaged_at INTEGER;
ALTER TABLE blobs ADD COLUMN damage TEXT;
