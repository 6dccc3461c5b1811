-- Seed for axum-diesel-async (written for the corpus): 100k users.
INSERT INTO users (name, hair_color)
SELECT 'user' || g, (ARRAY['black', 'brown', 'blond', 'red', NULL])[1 + g % 5]
FROM generate_series(1, 100000) g;
