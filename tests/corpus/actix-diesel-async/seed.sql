-- Seed for actix-diesel-async (written for the corpus): 200k items with
-- predictable ids (md5 of 'item' || n as a uuid).
INSERT INTO items (id, name)
SELECT md5('item' || g)::uuid, 'Item number ' || g FROM generate_series(1, 200000) g;
