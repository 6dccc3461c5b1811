-- Seed for realworld-actix-diesel (written for the corpus): 10k users,
-- 100k articles, 100k tags (500 distinct names), 100k favorites, 30k
-- comments, 20k follows. Comments are fewer: GET .../comments returns every
-- comment of every article (a labelled defect), so 100k would make each such
-- request return 100k rows.
BEGIN;
INSERT INTO users (email, username, password, bio, image)
SELECT 'user' || g || '@example.com', 'user' || g, 'not-a-hash-' || g, 'Writes about topic ' || (g % 97), NULL
FROM generate_series(1, 10000) g;

CREATE TEMP TABLE u AS SELECT id, row_number() OVER (ORDER BY email) AS rn FROM users;
CREATE INDEX ON u (rn);

INSERT INTO articles (author_id, slug, title, description, body, created_at)
SELECT u.id, 'article-' || g, 'Article number ' || g, 'A description of article ' || g,
       repeat('Lorem ipsum dolor sit amet, consectetur adipiscing elit. ', 8 + g % 16),
       now() - (g || ' minutes')::interval
FROM generate_series(1, 100000) g JOIN u ON u.rn = 1 + g % 10000;

CREATE TEMP TABLE a AS SELECT id, row_number() OVER (ORDER BY slug) AS rn FROM articles;
CREATE INDEX ON a (rn);

INSERT INTO tags (article_id, name)
SELECT a.id, 'tag-' || (g % 500) FROM generate_series(1, 100000) g JOIN a ON a.rn = 1 + (g * 7) % 100000;

INSERT INTO favorites (article_id, user_id)
SELECT a.id, u.id FROM generate_series(1, 100000) g
JOIN a ON a.rn = 1 + (g * 13) % 100000 JOIN u ON u.rn = 1 + (g * 31) % 10000
ON CONFLICT DO NOTHING;

INSERT INTO comments (article_id, author_id, body)
SELECT a.id, u.id, 'Comment ' || g || ': ' || repeat('nice post ', 1 + g % 5)
FROM generate_series(1, 30000) g JOIN a ON a.rn = 1 + (g * 17) % 100000 JOIN u ON u.rn = 1 + (g * 7) % 10000;

INSERT INTO follows (follower_id, followee_id)
SELECT f.id, t.id FROM generate_series(1, 20000) g
JOIN u f ON f.rn = 1 + g % 10000 JOIN u t ON t.rn = 1 + (g * 37 + 1) % 10000
WHERE f.id <> t.id ON CONFLICT DO NOTHING;
COMMIT;
