-- Seed for seaorm-axum (written for the corpus): 100k posts beside the
-- migrator's own.
INSERT INTO post (title, text)
SELECT 'Post number ' || g, repeat('Some text of post ' || g || '. ', 10 + g % 20)
FROM generate_series(1, 100000) g;
