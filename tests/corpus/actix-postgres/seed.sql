-- Seed for actix-postgres (written for the corpus): 100k users.
INSERT INTO testing.users (email, first_name, last_name, username)
SELECT 'user' || g || '@example.com', 'First' || (g % 1000), 'Last' || (g % 5000), 'user' || g
FROM generate_series(1, 100000) g;
